"""A hostile or broken device, a shared report directory, a dead registry, and Ctrl-C, all
against the real console script and real OpenSSH sshds (tests/sshd.py): fleet prints the
device's text as data, stops promptly and says what it has, and its ``--json`` stdout is one
JSON document whatever happens."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.sshd import start_sshd

FLEET = Path(sys.executable).with_name("fleet")
HOSTILE = ("This account is currently not available. [/usr/sbin/nologin] [link=http://evil.example]x[/link] "
           "\\033[2J\\033]8;;http://evil.example\\007click\\033]8;;\\007")


def _env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    e = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "DOCKER_HOST", "FLEET_REPORT_DIR")}
    e.update(HOME=str(home), COLUMNS="250", XDG_STATE_HOME=str(tmp_path / "state"))
    return e


def _inventory(tmp_path: Path, server, n: int = 1) -> tuple[Path, Path]:
    inv = tmp_path / "inventory.ini"
    inv.write_text("[boards]\n" + "".join(
        f"dev-{i} ansible_host={server.address} ansible_port={server.port} ansible_user={server.user} "
        f"ansible_ssh_private_key_file={server.user_key_path}\n" for i in range(n)))
    kh = tmp_path / "known_hosts"
    kh.write_text(server.known_hosts_line + "\n")
    return inv, kh


@pytest.fixture
def nologin(tmp_path):
    """A device whose login prints a nologin-style line with markup and terminal escapes."""
    s = start_sshd(tmp_path / "sshd", extra_config=f"ForceCommand printf '{HOSTILE}\\n'; exit 1")
    yield s
    s.stop()


def test_device_text_is_printed_as_data_never_markup_or_terminal_control(nologin, tmp_path):
    inv, kh = _inventory(tmp_path, nologin)
    cp = subprocess.run([str(FLEET), "probe", "-i", str(inv), "--known-hosts", str(kh)], capture_output=True,
                        text=True, timeout=120, env=_env(tmp_path))
    assert cp.returncode == 1, cp.stderr  # the device failed; the run did not crash
    assert "Traceback" not in cp.stderr and "MarkupError" not in cp.stderr
    out = cp.stdout
    assert "dev-0" in out and "[/usr/sbin/nologin]" in out and "[link=http://evil.example]x[/link]" in out
    assert "\x1b" not in out and "\x07" not in out  # no escape sequence reaches the terminal
    assert "\\x1b[2J" in out  # ... it is shown instead
    cp = subprocess.run([str(FLEET), "probe", "-i", str(inv), "--known-hosts", str(kh), "--json"],
                        capture_output=True, text=True, timeout=120, env=_env(tmp_path))
    doc = json.loads(cp.stdout)
    assert doc[0]["host"] == "dev-0" and "[/usr/sbin/nologin]" in doc[0]["error"]
    assert "no FLEET-PROBE/1 header" in doc[0]["error"]


@pytest.fixture
def slow(tmp_path):
    """A device whose every command hangs for a minute."""
    s = start_sshd(tmp_path / "sshd", extra_config="ForceCommand sleep 60")
    yield s
    s.stop()


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_ctrl_c_stops_a_probe_at_once_and_prints_what_it_has(slow, tmp_path, as_json):
    inv, kh = _inventory(tmp_path, slow, n=6)
    args = [str(FLEET), "probe", "-i", str(inv), "--known-hosts", str(kh), "--forks", "3"] + (["--json"] if as_json else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path))
    time.sleep(3)  # three devices are in their 60 s command, three wait for a fork
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 10, "the run waited for the devices' command timeout"
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    if as_json:
        doc = json.loads(out)
        assert [d["host"] for d in doc] == [f"dev-{i}" for i in range(6)]
        assert all("interrupted" in d["error"] for d in doc)
    else:
        assert all(f"dev-{i}" in out for i in range(6)) and "interrupted" in out


def test_report_directory_owned_by_another_user_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("needs root to give a directory to another user (CI runs as root)")
    shared = tmp_path / "reports"
    shared.mkdir(mode=0o700)
    os.chown(shared, 65534, 65534)  # nobody
    inv = tmp_path / "inv.yaml"
    inv.write_text("all:\n  hosts:\n    d1:\n      ansible_host: 127.0.0.1\n      ansible_port: 9\n")
    cp = subprocess.run([str(FLEET), "verify", "127.0.0.1:9/x/y:1", "-i", str(inv), "--report-dir", str(shared),
                         "--json"], capture_output=True, text=True, timeout=60, env=_env(tmp_path))
    assert cp.returncode == 2 and "owned by uid 65534" in cp.stderr
    assert json.loads(cp.stdout)["exit_status"] == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_json_on_a_failure_before_any_device_is_one_error_document(tmp_path):
    """The registry does not answer: verify fails before any device work, and --json still
    prints one document with the error, its kind and the exit status."""
    inv = tmp_path / "inv.yaml"
    inv.write_text("all:\n  hosts:\n    d1:\n      ansible_host: 127.0.0.1\n      ansible_port: 9\n")
    ref = f"127.0.0.1:{_closed_port()}/fleet/hello:1"
    cp = subprocess.run([str(FLEET), "verify", ref, "-i", str(inv), "--json"], capture_output=True, text=True,
                        timeout=120, env=_env(tmp_path))
    assert cp.returncode == 1, cp.stderr
    doc = json.loads(cp.stdout)
    assert set(doc) == {"error", "kind", "exit_status"} and doc["exit_status"] == 1
    assert doc["kind"].startswith("failure:") and "127.0.0.1" in doc["error"]
    # and a bad playbook (usage) the same way
    bad = tmp_path / "p.yaml"
    bad.write_text("name: [\n")
    cp = subprocess.run([str(FLEET), "plan", str(bad), "--platform", "linux/amd64", "--json"], capture_output=True,
                        text=True, timeout=60, env=_env(tmp_path))
    doc = json.loads(cp.stdout)
    assert cp.returncode == 2 and doc["exit_status"] == 2 and doc["kind"].startswith("usage:")
    assert "p.yaml:1" in doc["error"] or "p.yaml:2" in doc["error"]
