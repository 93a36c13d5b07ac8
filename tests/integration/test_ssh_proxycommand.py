"""ProxyCommand against real servers: a device sshd inside a network namespace that only a
jump sshd can reach, and OpenSSH's ``ssh -W`` as the proxy, as for a device behind NAT."""

from __future__ import annotations

import logging
import os
import shlex
import time
from pathlib import Path

import pytest

from fleet.facts import gather
from fleet.inventory import Host
from fleet.ssh import HostKeyChanged, SSHSettings, Unreachable, connect, target_for
from tests.sshd import keygen, netns, start_inetd_sshd, start_sshd


def _children(comm: str) -> list[tuple[int, str]]:
    """Our child processes named ``comm`` as (pid, state): zombies count (not reaped)."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1: stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
        if int(ppid) == me and name == comm:
            found.append((int(entry), state))
    return found


@pytest.fixture(scope="module")
def behind_nat(tmp_path_factory):
    """(device sshd inside a namespace, jump sshd on host loopback, user key)."""
    tmp = tmp_path_factory.mktemp("nat")
    user_key = tmp / "user_key"
    keygen(user_key)
    with netns() as ns:
        device = start_sshd(tmp, netns=ns, user_key_path=user_key)
        jump = start_inetd_sshd(tmp, ns, user_key_path=user_key)
        try:
            yield device, jump, user_key
        finally:
            jump.stop()
            device.stop()


def proxy_command(jump, key: Path, jump_kh: Path) -> str:
    return (f"ssh -W %h:%p -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes "
            f"-o UserKnownHostsFile={jump_kh} -i {key} {jump.user}@{jump.address} -p {jump.port}")


def device_host(device, key: Path, args: str = "", name: str = "natdev") -> Host:
    vars = {"ansible_host": device.address, "ansible_port": device.port, "ansible_user": device.user,
            "ansible_ssh_private_key_file": str(key)}
    if args:
        vars["ansible_ssh_common_args"] = args
    return Host(name=name, vars=vars)


def test_proxy_command_reaches_device_behind_nat(behind_nat, ssh_home, tmp_path, caplog):
    device, jump, key = behind_nat
    jump_kh = tmp_path / "jump_known_hosts"
    jump_kh.write_text(jump.known_hosts_line + "\n")
    kh = tmp_path / "known_hosts"
    kh.write_text(device.known_hosts_line + "\n")  # the device's own name: [127.0.0.1]:PORT
    st = SSHSettings(known_hosts=(kh,), connect_timeout=10, retries=1)

    with pytest.raises(Unreachable):  # not reachable directly from here
        connect(target_for(device_host(device, key), st), st)

    args = "-o " + shlex.quote("ProxyCommand=" + proxy_command(jump, key, jump_kh))
    target = target_for(device_host(device, key, args), st)
    assert target.proxy_command.startswith(f"ssh -W {device.address}:{device.port} ")
    assert target.known_hosts_name == f"[{device.address}]:{device.port}"
    caplog.set_level(logging.INFO, logger="fleet.ssh")
    with connect(target, st) as s:
        pid = s.proxy_pid
        assert pid and Path(f"/proc/{pid}/comm").read_text().strip() == "ssh"  # exec'd: no shell left
        facts = gather(s, False)  # the probe itself, through the proxy
        assert facts["uname_m"] == os.uname().machine
        r = s.run("echo $SSH_CONNECTION")
        # the device saw the connection come from inside its namespace (the jump's -W)
        assert r.stdout.split()[2:] == [b"127.0.0.1", str(device.port).encode()]
    assert not Path(f"/proc/{pid}").exists(), "ProxyCommand process not stopped and reaped"
    assert _children("ssh") == []
    text = caplog.text
    assert "via ProxyCommand" in text and f"matches {kh}:1" in text

    # accept-new records the device's key under the device's name, not the jump's
    fresh = tmp_path / "fresh_known_hosts"
    st_new = SSHSettings(known_hosts=(fresh,), accept_new=True, connect_timeout=10, retries=1)
    with connect(target_for(device_host(device, key, args), st_new), st_new) as s:
        assert s.run("true").exit_status == 0
    assert fresh.read_text() == device.known_hosts_line + "\n"


def test_proxy_command_from_ssh_config(behind_nat, ssh_home, tmp_path):
    device, jump, key = behind_nat
    jump_kh = tmp_path / "jump_known_hosts"
    jump_kh.write_text(jump.known_hosts_line + "\n")
    kh = tmp_path / "known_hosts"
    kh.write_text(device.known_hosts_line + "\n")
    (ssh_home / ".ssh" / "config").write_text(
        f"Host natdev-alias\n    HostName {device.address}\n    Port {device.port}\n"
        f"    ProxyCommand {proxy_command(jump, key, jump_kh)}\n"
    )
    st = SSHSettings(known_hosts=(kh,), connect_timeout=10, retries=1)
    host = Host(name="natdev", vars={"ansible_host": "natdev-alias", "ansible_user": device.user,
                                     "ansible_ssh_private_key_file": str(key)})
    with connect(target_for(host, st), st) as s:
        assert s.run("id -un").stdout == b"fleettest\n"
    assert _children("ssh") == []


def test_proxy_command_wrong_device_key_refused(behind_nat, ssh_home, tmp_path):
    device, jump, key = behind_nat
    jump_kh = tmp_path / "jump_known_hosts"
    jump_kh.write_text(jump.known_hosts_line + "\n")
    other = keygen(tmp_path / "other_host").split()
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[{device.address}]:{device.port} {other[0]} {other[1]}\n")
    args = "-o " + shlex.quote("ProxyCommand=" + proxy_command(jump, key, jump_kh))
    for accept_new in (False, True):
        st = SSHSettings(known_hosts=(kh,), accept_new=accept_new, connect_timeout=10, retries=1)
        with pytest.raises(HostKeyChanged) as ei:
            connect(target_for(device_host(device, key, args), st), st)
        assert (ei.value.path, ei.value.line) == (str(kh), 1)
        assert _children("ssh") == []  # the failed connection's proxy is stopped and reaped


def test_failing_proxy_command_is_reported_with_its_stderr(behind_nat, ssh_home, tmp_path):
    device, jump, key = behind_nat
    jump_kh = tmp_path / "jump_known_hosts"
    jump_kh.write_text(jump.known_hosts_line + "\n")
    wrong = tmp_path / "wrong_key"
    keygen(wrong)
    kh = tmp_path / "known_hosts"
    kh.write_text(device.known_hosts_line + "\n")
    st = SSHSettings(known_hosts=(kh,), connect_timeout=10, retries=3)
    args = "-o " + shlex.quote("ProxyCommand=" + proxy_command(jump, wrong, jump_kh))
    t0 = time.monotonic()
    with pytest.raises(Unreachable) as ei:
        connect(target_for(device_host(device, key, args), st), st)
    msg = str(ei.value)
    assert msg.startswith("natdev: ") and "ProxyCommand exited with status 255" in msg
    assert "Permission denied" in msg  # the proxy's own stderr
    assert ei.value.attempts == 1 and time.monotonic() - t0 < 8
    assert _children("ssh") == []

    # a proxy that never speaks SSH: bounded by the connect timeout, then stopped
    st = SSHSettings(known_hosts=(kh,), connect_timeout=1, retries=1)
    t0 = time.monotonic()
    with pytest.raises(Unreachable, match="no SSH handshake|SSH protocol banner|timed out"):
        connect(target_for(device_host(device, key, "-o 'ProxyCommand=sleep 30'"), st), st)
    assert time.monotonic() - t0 < 6
    assert _children("sleep") == []
