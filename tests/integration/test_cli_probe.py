"""`fleet probe` / `fleet facts`: the real console script against two real OpenSSH sshds on
different 127.0.0.x addresses (tests/sshd.py). Each device is this machine seen through
its login user's /bin/sh, so its decided platform must be this machine's (linux/amd64 on
the project's x86_64 machines)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests import reportschema
from tests.sshd import start_sshd

FLEET = Path(sys.executable).with_name("fleet")
THIS_PLATFORM = {"x86_64": "linux/amd64", "aarch64": "linux/arm64"}[platform.machine()]


def fleet(*args: str, env: dict[str, str], stdin: bytes | None = None) -> subprocess.CompletedProcess:
    cmd = [str(FLEET)] if FLEET.exists() else [sys.executable, "-c", "from fleet.cli import main; main()"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=120, input=stdin)


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    """Two sshds on distinct loopback addresses; yields (servers, inventory, known_hosts)."""
    base = tmp_path_factory.mktemp("cli-probe")
    servers = []
    try:
        while len(servers) < 2:
            s = start_sshd(base / f"d{len(servers)}")
            if servers and s.address == servers[0].address:
                s.stop()  # the helper picked the same random 127.0.0.x: try another
                continue
            servers.append(s)
        inv = base / "inventory.ini"
        inv.write_text(
            "[boards]\n"
            + "".join(
                f"dev-{n} ansible_host={s.address} ansible_port={s.port} ansible_user={s.user} "
                f"ansible_ssh_private_key_file={s.user_key_path}\n"
                for n, s in zip("ab", servers)
            )
        )
        kh = base / "known_hosts"
        kh.write_text("".join(s.known_hosts_line + "\n" for s in servers))
        yield servers, inv, kh
    finally:
        for s in servers:
            s.stop()


@pytest.fixture
def env(tmp_path):
    """The CLI's environment: an empty HOME (no ~/.ssh of the real user), no agent, a wide
    table, and the device-like PATH is the login shell's business, not ours."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    e = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "DOCKER_HOST")}
    e.update(HOME=str(home), COLUMNS="250")
    return e


@pytest.fixture(scope="module")
def probe_json(devices, tmp_path_factory):
    """One `fleet probe --json` run over both devices, shared by the tests that read it."""
    servers, inv, kh = devices
    home = tmp_path_factory.mktemp("home")
    e = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "DOCKER_HOST")}
    e["HOME"] = str(home)
    return fleet("probe", "-i", str(inv), "--known-hosts", str(kh), "--json", env=e)


def test_probe_table(devices, env):
    servers, inv, kh = devices
    r = fleet("probe", "-i", str(inv), "--known-hosts", str(kh), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.startswith("│ dev-")}
    assert set(rows) == {"dev-a", "dev-b"}
    for name, s in zip(("dev-a", "dev-b"), servers):
        cells = [c.strip() for c in rows[name].split("│")[1:-1]]
        assert cells[1] == f"{s.address}:{s.port}"
        assert cells[2] == platform.machine()
        assert cells[3].startswith("64-bit LE x86-64 (amd64)")
        assert cells[5] == THIS_PLATFORM
    assert "2 devices: 2 decided, 0 undecided, 0 unreachable/failed" in r.stdout
    assert "Traceback" not in r.stderr


def test_probe_json_matches_this_machine(devices, probe_json):
    servers, inv, kh = devices
    r = probe_json
    assert r.returncode == 0, r.stderr
    docs = reportschema.loads(r.stdout, "probe-json")  # stdout is exactly one JSON document
    assert [d["host"] for d in docs] == ["dev-a", "dev-b"]
    dpkg = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    with open(os.path.realpath(shutil.which("od", path="/usr/bin:/bin")), "rb") as f:
        od_header = f.read(20).hex()
    for d, s in zip(docs, servers):
        assert set(d) == {"host", "address", "ok", "facts", "detection", "error", "engine_via", "cost", "worker",
                          "site"}
        assert d["ok"] is True and d["error"] is None
        assert (d["worker"], d["site"]) == ("local", None)  # probed from this machine (--executor local)
        # the login cannot open the engine's socket: the probe's docker CLI section ran, one
        # process (the probe script) on one exec channel plus the refused socket channel
        assert d["engine_via"] == "cli" and d["cost"]["remote_processes"] == 1
        assert d["address"] == f"{s.address}:{s.port}"
        assert d["detection"]["platform"] == THIS_PLATFORM
        assert d["facts"]["uname_m"] == platform.machine()
        assert d["facts"]["dpkg_arch"] == dpkg
        assert d["facts"]["elf_header"] == od_header  # the login shell's od read itself
        # the login user is not root and not in the docker group: no engine facts, or the
        # CLI's error (e.g. permission denied) when a host engine is running
        assert not {"engine_arch", "engine_os", "engine_version"} & d["facts"].keys()


def test_facts_json_round_trips_through_detect(devices, env, tmp_path, probe_json):
    servers, inv, kh = devices
    r = fleet("facts", "-i", str(inv), "--known-hosts", str(kh), "--json", env=env)
    assert r.returncode == 0, r.stderr
    docs = reportschema.loads(r.stdout, "facts-json")
    assert [sorted(d) for d in docs] == [["facts", "host"], ["facts", "host"]]
    f = tmp_path / "facts.json"
    f.write_text(r.stdout)
    d = fleet("detect", str(f), "--json", env=env)
    assert d.returncode == 0, d.stderr
    detected = reportschema.loads(d.stdout, "detect-json")
    assert [(x["host"], x["detection"]["platform"]) for x in detected] == [
        ("dev-a", THIS_PLATFORM), ("dev-b", THIS_PLATFORM)]
    # the same decision as `fleet probe` made on the devices (warnings may differ: a host
    # engine started by another test in between changes engine_error)
    keys = ("platform", "bitness", "endianness", "kernel_machine", "evidence")
    assert [[x["detection"][k] for k in keys] for x in detected] == [
        [x["detection"][k] for k in keys] for x in json.loads(probe_json.stdout)]
    # human form: one row per fact
    t = fleet("facts", "-i", str(inv), "--known-hosts", str(kh), "--limit", "dev-a", env=env)
    assert t.returncode == 0
    assert "uname_m" in t.stdout and platform.machine() in t.stdout and "dev-b" not in t.stdout


def test_unknown_host_key_fails_only_that_device(devices, env, tmp_path):
    servers, inv, _ = devices
    kh = tmp_path / "known_hosts"
    kh.write_text(servers[0].known_hosts_line + "\n")  # dev-b's key is not known
    r = fleet("probe", "-i", str(inv), "--known-hosts", str(kh), "--json", env=env)
    assert r.returncode == 1
    a, b = reportschema.loads(r.stdout, "probe-json")
    assert a["ok"] is True and a["detection"]["platform"] == THIS_PLATFORM
    assert b["ok"] is False and b["facts"] is None and b["detection"] is None
    assert "--accept-new" in b["error"]
    t = fleet("probe", "-i", str(inv), "--known-hosts", str(kh), env=env)
    assert t.returncode == 1
    assert "2 devices: 1 decided, 0 undecided, 1 unreachable/failed" in t.stdout
    assert "--accept-new" in t.stdout
    # `fleet facts --json` keeps the failed device as {"host", "facts": null, "error"},
    # which `fleet detect` reads back as undecided with that reason
    f = fleet("facts", "-i", str(inv), "--known-hosts", str(kh), "--json", env=env)
    assert f.returncode == 1
    fa, fb = reportschema.loads(f.stdout, "facts-json")
    assert fa["facts"]["uname_m"] == platform.machine() and "error" not in fa
    assert fb["facts"] is None and "--accept-new" in fb["error"]
    (tmp_path / "facts.json").write_text(f.stdout)
    d = fleet("detect", str(tmp_path / "facts.json"), "--json", env=env)
    assert d.returncode == 1
    da, db = reportschema.loads(d.stdout, "detect-json")
    assert da["detection"]["platform"] == THIS_PLATFORM
    assert db["detection"]["platform"] is None and "--accept-new" in db["detection"]["error"]
    # --accept-new records the new key in the known_hosts file and the device succeeds
    r = fleet("probe", "-i", str(inv), "--known-hosts", str(kh), "--accept-new", "--json", env=env)
    assert r.returncode == 0, r.stdout
    assert servers[1].host_key_pub.split()[1] in kh.read_text()


def test_unreachable_device(devices, env, tmp_path):
    servers, inv, kh = devices
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind((servers[0].address, 0))
        closed = s.getsockname()[1]
    inv2 = tmp_path / "inv.ini"
    inv2.write_text(inv.read_text() + f"dev-c ansible_host={servers[0].address} ansible_port={closed}\n")
    r = fleet("probe", "-i", str(inv2), "--known-hosts", str(kh), "--timeout", "2", "--json", env=env)
    assert r.returncode == 1
    docs = {d["host"]: d for d in reportschema.loads(r.stdout, "probe-json")}
    assert docs["dev-a"]["ok"] and docs["dev-b"]["ok"]
    assert not docs["dev-c"]["ok"] and docs["dev-c"]["facts"] is None
    assert docs["dev-c"]["error"]


def test_limit(devices, env):
    servers, inv, kh = devices
    r = fleet("probe", "-i", str(inv), "--known-hosts", str(kh), "--limit", "dev-b", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert [d["host"] for d in reportschema.loads(r.stdout, "probe-json")] == ["dev-b"]
    r = fleet("probe", "-i", str(inv), "--known-hosts", str(kh), "--limit", "nosuchhost", env=env)
    assert r.returncode == 2
    assert "nosuchhost" in r.stderr and "Traceback" not in r.stderr


def test_malformed_inventory_exit_2(env, tmp_path):
    bad = tmp_path / "bad.ini"
    bad.write_text("[boards]\ndev-a ansible_host=127.0.0.1\n[boards\ndev-b\n")
    for cmd in ("probe", "facts"):
        r = fleet(cmd, "-i", str(bad), env=env)
        assert r.returncode == 2
        assert f"{bad}:3:" in r.stderr
        assert "Traceback" not in r.stderr and r.stdout == ""
    r = fleet("probe", env=env)
    assert r.returncode == 2 and "-i/--inventory" in r.stderr
    r = fleet("probe", "-i", str(tmp_path / "missing.ini"), env=env)
    assert r.returncode == 2 and "missing.ini" in r.stderr
