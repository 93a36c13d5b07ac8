"""ProxyCommand to a lab board through a real ``ssh -W`` jump, as a device behind NAT is
reached: the jump is a real OpenSSH sshd on a random 127.0.0.x (tests/sshd.py) that
forwards only to the x86 board's sshd (``PermitOpen``); the inventory host carries the
ProxyCommand in ``ansible_ssh_common_args`` as Ansible users write it.

It proves: fleet probes and reads facts of the board through the jump (the jump's log
shows the forwarded channel); the host key checked is the board's, under the board's own
name (a known_hosts with the jump's key only, or another key under the board's name, is
refused); the proxy process is gone when fleet exits.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from fleet.lab.util import wait_for
from tests import reportschema
from tests.labfixture import FLEET, Lab
from tests.sshd import start_sshd

pytestmark = pytest.mark.lab

BOARD = "x86"


def _proxies(marker: str) -> list[int]:
    """Processes whose command line holds ``marker`` (the jump's address and port)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd and "ProxyCommand" not in cmd and int(entry) != os.getpid():
                found.append(int(entry))
    return found


@pytest.fixture(scope="module")
def jump(lab: Lab, tmp_path_factory):
    board = lab.device(BOARD)["address"]
    tmp = tmp_path_factory.mktemp("jump")
    s = start_sshd(tmp / "sshd", log_level="DEBUG1",
                   extra_config=f"AllowTcpForwarding yes\nPermitOpen {board}:22\n")
    kh = tmp / "jump_known_hosts"
    kh.write_text(s.known_hosts_line + "\n")
    yield s, kh, board, tmp
    s.stop()


def _inventory(lab: Lab, jump, known_hosts: Path) -> Path:
    s, jump_kh, board, tmp = jump
    proxy = (f"ssh -W %h:%p -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes "
             f"-o UserKnownHostsFile={jump_kh} -i {s.user_key_path} -p {s.port} {s.user}@{s.address}")
    inv = tmp / f"inventory-{known_hosts.name}.yaml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"behind-nat": {
        "ansible_host": board, "ansible_port": 22, "ansible_user": lab.status["ssh_user"],
        "ansible_ssh_private_key_file": lab.key,
        "ansible_ssh_common_args": f"-o ProxyCommand={shlex.quote(proxy)} -o UserKnownHostsFile={known_hosts}",
    }}}}))
    return inv


def _fleet(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    return subprocess.run([*FLEET, *args], capture_output=True, text=True, timeout=180, env=env)


def _board_line(lab: Lab, board: str) -> str:
    return next(line for line in Path(lab.known_hosts).read_text().splitlines() if line.split()[0] == board)


def test_probe_and_facts_through_an_ssh_w_jump(lab: Lab, jump):
    s, jump_kh, board, tmp = jump
    kh = tmp / "board_known_hosts"
    kh.write_text(_board_line(lab, board) + "\n")
    inv = _inventory(lab, jump, kh)
    marker = f"-p {s.port} {s.user}@{s.address}"
    decoy = subprocess.Popen(["sh", "-c", "sleep 60", "ssh", marker])  # the scan below can see one
    try:
        # the decoy's command line is the one to see once it has exec'ed (until then /proc
        # shows the forked copy of this process): seen once under CI load
        wait_for(lambda: _proxies(marker), 10, interval=0.05)
        assert _proxies(marker) == [decoy.pid]
    finally:
        decoy.kill()
        decoy.wait()
    log_before = len(s.log())
    t0 = time.monotonic()
    r = _fleet("probe", "-i", str(inv), "--json", "-vv")
    assert r.returncode == 0, r.stdout + r.stderr
    doc, = reportschema.loads(r.stdout, "probe-json")
    assert doc["host"] == "behind-nat" and doc["detection"]["platform"] == "linux/amd64"
    # the ProxyCommand ran, and the board's key was checked under the board's name
    assert f"behind-nat: connecting to {board}:22 via ProxyCommand" in r.stderr
    assert f"of {board} matches {kh}:1" in r.stderr
    assert "ProxyCommand started (pid" in r.stderr and "ProxyCommand (pid" in r.stderr
    # the jump forwarded the connection to the board
    forwarded = s.log()[log_before:]
    assert f"{board}" in forwarded and "direct-tcpip" in forwarded, forwarded[-2000:]
    # no proxy process left behind by fleet
    assert _proxies(marker) == []
    f = _fleet("facts", "-i", str(inv), "--json")
    assert f.returncode == 0, f.stderr
    facts, = reportschema.loads(f.stdout, "facts-json")
    assert facts["facts"]["uname_m"] == "x86_64"
    assert _proxies(marker) == []
    assert time.monotonic() - t0 < 120


def test_the_key_checked_is_the_boards_under_its_own_name(lab: Lab, jump):
    s, jump_kh, board, tmp = jump
    # only the jump's key: the board is unknown (the jump's key says nothing about it)
    only_jump = tmp / "only_jump_known_hosts"
    only_jump.write_text(jump_kh.read_text())
    r = _fleet("probe", "-i", str(_inventory(lab, jump, only_jump)), "--json")
    assert r.returncode == 1
    doc, = reportschema.loads(r.stdout, "probe-json")
    assert f"host key of {board} is unknown" in doc["error"]
    # another board's key under this board's name: changed, refused
    other = _board_line(lab, lab.device("pi4-64")["address"]).split(None, 1)[1]
    wrong = tmp / "wrong_known_hosts"
    wrong.write_text(f"{board} {other}\n")
    r = _fleet("probe", "-i", str(_inventory(lab, jump, wrong)), "--json")
    assert r.returncode == 1
    doc, = reportschema.loads(r.stdout, "probe-json")
    assert f"the host key of {board} has CHANGED" in doc["error"]
    assert _proxies(f"-p {s.port} {s.user}@{s.address}") == []
