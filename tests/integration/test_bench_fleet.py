"""The benchmark's loopback fleet harness (bench/loopfleet.py) keeps working.

Starts a 3-device loopback fleet (real OpenSSH sshd, key-only login of the dedicated
user, generated host keys) and checks that what it generates works: the Ansible YAML
inventory with the real ``fleet probe`` CLI (host keys checked against the generated
known_hosts), the ssh_config with the OpenSSH client, and the paramiko floor; and that
stopping it ends exactly the sshd processes it started. The benchmark itself is not part
of the test suite (bench/README.md).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import loopfleet  # noqa: E402

FIRST = "127.0.9.1"  # the benchmark's default is 127.0.1.1: a bench run may be going on


@pytest.fixture
def small_fleet(tmp_path):
    fl = loopfleet.LoopFleet(tmp_path / "fleet", 3, port=loopfleet.free_port(FIRST), first=FIRST)
    fl.start()
    yield fl
    fl.stop()


def test_addresses_skip_network_and_broadcast_octets():
    a = loopfleet.addresses(260, "127.0.1.250")
    assert a[:6] == ["127.0.1.250", "127.0.1.251", "127.0.1.252", "127.0.1.253", "127.0.1.254", "127.0.2.1"]
    assert len(a) == len(set(a)) == 260
    with pytest.raises(ValueError):
        loopfleet.addresses(3, "127.255.255.253")


def test_generated_inventories_work_with_fleet_probe(small_fleet):
    fl = small_fleet
    inv = fl.write_inventories(3)
    assert len(fl.pids()) == 1  # 3 addresses: one sshd process (16 per process)

    r = subprocess.run([str(ROOT / ".venv/bin/fleet"), "probe", "-i", str(inv["yaml"]), "--forks", "3", "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert sorted(d["host"] for d in doc) == ["dev0001", "dev0002", "dev0003"]
    assert not [d for d in doc if d.get("error")], doc

    # the OpenSSH client row: host key checked against the generated known_hosts
    for addr in fl.addrs:
        r = subprocess.run(["ssh", "-F", str(fl.ssh_config), addr, "uname", "-m"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stdout.strip(), r.stderr

    # the paramiko floor, and its refusal of a host key not in known_hosts
    floor = [sys.executable, str(ROOT / "bench/floor.py"), str(inv["hosts"]), "--port", str(fl.port),
             "--user", fl.user, "--key", str(fl.client_key), "--forks", "3"]
    r = subprocess.run([*floor, "--known-hosts", str(fl.known_hosts)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] == 3, r.stdout + r.stderr
    empty = fl.dir / "empty_known_hosts"
    empty.write_text("")
    r = subprocess.run([*floor, "--known-hosts", str(empty)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and json.loads(r.stdout)["failed"] == 3

    # the pyinfra inventory is plain Python naming the same devices and known_hosts
    tree = ast.parse(inv["pyinfra"].read_text())
    ns: dict = {}
    exec(compile(tree, str(inv["pyinfra"]), "exec"), ns)  # noqa: S102 - our own generated file
    assert [(h, d["ssh_hostname"], d["ssh_strict_host_key_checking"]) for h, d in ns["loopback"]] == [
        (f"dev000{i}", a, "yes") for i, a in enumerate(fl.addrs, 1)]


def test_stop_ends_only_its_own_sshd(tmp_path):
    fl = loopfleet.LoopFleet(tmp_path / "f", 17, port=loopfleet.free_port(FIRST), first=FIRST)
    fl.start()
    pids = fl.pids()
    assert len(pids) == 2  # 17 addresses need two processes
    # a pid file pointing at a process that is not this fleet's sshd is left alone
    decoy = subprocess.Popen(["sleep", "30"])
    try:
        fl._pidfile(0).write_text(f"{decoy.pid}\n")
        fl.stop()
        assert decoy.poll() is None
        assert not Path(f"/proc/{pids[1]}").exists()
    finally:
        decoy.kill()
        decoy.wait()
        # pids[0] lost its pid file to the decoy: end it here through the same cmdline check
        if loopfleet._pid_alive_with(pids[0], str(fl._cfg(0))):
            import os
            import signal
            os.kill(pids[0], signal.SIGTERM)


@pytest.mark.skipif(not Path("/var/run/docker.sock").is_socket(), reason="no Docker engine on this host")
def test_engine_fleet_lets_fleet_reach_the_engine_over_its_api(tmp_path):
    """``engine=True``: the login may use the host engine and sshd allows the streamlocal
    channel, so fleet's probe reads the engine through the API (the benchmark's default)."""
    fl = loopfleet.LoopFleet(tmp_path / "f", 2, port=loopfleet.free_port(FIRST), first=FIRST, engine=True)
    fl.start()
    try:
        assert fl.user == loopfleet.ENGINE_USER
        inv = fl.write_inventories(2)
        r = subprocess.run([str(ROOT / ".venv/bin/fleet"), "probe", "-i", str(inv["yaml"]), "--json"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert [d["engine_via"] for d in doc] == ["api", "api"], doc
        assert all(d["cost"]["path"] == "streamlocal" for d in doc)
    finally:
        fl.stop()
