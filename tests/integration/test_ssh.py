"""fleet.ssh against real OpenSSH sshd servers on loopback (and one test-owned netns): basics,
host keys, authentication, reachability, jump hosts, ssh config."""

from __future__ import annotations

import os
import platform
import re
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import paramiko
import pytest

from fleet import ssh
from fleet.ssh import known_hosts as ssh_known_hosts
from fleet.inventory import Host
from fleet.ssh import (
    AuthenticationFailed,
    CommandTimeout,
    HostKeyChanged,
    HostKeyRevoked,
    HostKeyUnknown,
    SSHSettings,
    Unreachable,
    connect,
    target_for,
)
from tests.sshd import keygen, netns, start_inetd_sshd, start_sshd


def host_for(server, name="dev1", **extra) -> Host:
    vars = {
        "ansible_host": server.address,
        "ansible_port": server.port,
        "ansible_user": server.user,
        "ansible_ssh_private_key_file": str(server.user_key_path),
    }
    vars.update(extra)
    return Host(name=name, vars=vars, groups=("all",), source="test")


def known_hosts(tmp_path, *lines, name="known_hosts") -> Path:
    p = tmp_path / name
    p.write_text("".join(line + "\n" for line in lines))
    return p


def settings(kh: Path | None = None, **kw) -> SSHSettings:
    kw.setdefault("connect_timeout", 5.0)
    return SSHSettings(known_hosts=(kh,) if kh else (), **kw)


# ------------------------------------------------------------------------- basics


def test_probe_command_runs(sshd, ssh_home, tmp_path):
    st = settings(known_hosts(tmp_path, sshd.known_hosts_line))
    t0 = time.monotonic()
    with connect(target_for(host_for(sshd), st), st) as s:
        r = s.run("uname -m")
        assert (r.exit_status, r.stdout, r.stderr) == (0, platform.machine().encode() + b"\n", b"")
        r = s.run("echo out; echo err >&2; id -un; exit 3")
        assert r.exit_status == 3
        assert r.stdout == b"out\nfleettest\n" and r.stderr == b"err\n"
    assert time.monotonic() - t0 < 5


def test_large_stdin_and_both_streams_do_not_deadlock(sshd, ssh_home, tmp_path):
    # 3 MiB through stdin echoed to stdout while 3 MiB go to stderr: more than the 2 MiB
    # channel window, so reading one stream to its end first would hang.
    st = settings(known_hosts(tmp_path, sshd.known_hosts_line))
    data = os.urandom(3 << 20)
    with connect(target_for(host_for(sshd), st), st) as s:
        r = s.run("head -c 3145728 /dev/zero >&2; cat", stdin=data, timeout=30)
    assert r.exit_status == 0
    assert r.stdout == data
    assert r.stderr == b"\0" * (3 << 20)


def test_command_timeout_keeps_partial_output(sshd, ssh_home, tmp_path):
    st = settings(known_hosts(tmp_path, sshd.known_hosts_line), command_timeout=30)
    with connect(target_for(host_for(sshd), st), st) as s:
        t0 = time.monotonic()
        with pytest.raises(CommandTimeout) as ei:
            s.run("echo started; sleep 20", timeout=0.5)
        assert time.monotonic() - t0 < 2
        assert ei.value.stdout == b"started\n"
        assert "dev1" in str(ei.value) and "timed out" in str(ei.value)
        assert s.run("echo still-usable").stdout == b"still-usable\n"


# ---------------------------------------------------------------------- host keys


def test_unknown_host_refused_then_accept_new_records_it(sshd, ssh_home):
    ssh_dir = ssh_home / ".ssh"
    ssh_dir.rmdir()  # accept-new must create ~/.ssh (0700) and known_hosts (0600)
    host = host_for(sshd)
    st = settings()
    with pytest.raises(HostKeyUnknown) as ei:
        connect(target_for(host, st), st)
    msg = str(ei.value)
    assert msg.startswith("dev1: ")
    assert "--accept-new" in msg and re.search(r"SHA256:[A-Za-z0-9+/]{43}", msg)
    assert ei.value.attempts == 1  # host-key failures are never retried
    assert not (ssh_dir / "known_hosts").exists()

    st_new = settings(accept_new=True)
    target = target_for(host, st_new)
    assert target.strict_host_key_checking == "accept-new"
    with connect(target, st_new) as s:
        assert s.run("true").exit_status == 0
    kh = ssh_dir / "known_hosts"
    assert kh.read_text() == sshd.known_hosts_line + "\n"
    assert stat.S_IMODE(kh.stat().st_mode) == 0o600
    assert stat.S_IMODE(ssh_dir.stat().st_mode) == 0o700

    # now known: strict mode connects, and the file is not appended to again
    with connect(target_for(host, st), st) as s:
        assert s.run("true").exit_status == 0
    assert kh.read_text().count("\n") == 1


def test_accept_new_from_many_threads_records_one_line(sshd, ssh_home, tmp_path):
    kh = tmp_path / "kh"
    st = settings(kh, accept_new=True)
    target = target_for(host_for(sshd), st)
    errors = []

    def one():
        try:
            with connect(target, st) as s:
                s.run("true")
        except Exception as e:  # collected, asserted below
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert kh.read_text() == sshd.known_hosts_line + "\n"


def test_strict_no_accepts_without_recording(sshd, ssh_home):
    st = settings()
    host = host_for(sshd, ansible_ssh_common_args="-o StrictHostKeyChecking=no")
    target = target_for(host, st)
    assert target.strict_host_key_checking == "no"
    with connect(target, st) as s:
        assert s.run("true").exit_status == 0
    assert not (ssh_home / ".ssh" / "known_hosts").exists()


def test_changed_host_key_refused_even_with_accept_new(sshd, ssh_home, tmp_path):
    other = keygen(tmp_path / "other_host_key").split()
    kh = known_hosts(
        tmp_path, "# fleet test", f"[{sshd.address}]:{sshd.port} {other[0]} {other[1]}"
    )
    before = kh.read_text()
    for st in (settings(kh), settings(kh, accept_new=True)):
        with pytest.raises(HostKeyChanged) as ei:
            connect(target_for(host_for(sshd), st), st)
        msg = str(ei.value)
        assert "CHANGED" in msg and "man-in-the-middle" in msg
        assert f"{kh}:2" in msg and (ei.value.path, ei.value.line) == (str(kh), 2)
        assert ei.value.attempts == 1
    assert kh.read_text() == before


def test_known_hosts_with_markers_and_hashed_entries(sshd, ssh_home, tmp_path):
    ca = keygen(tmp_path / "ca").split()
    revoked = keygen(tmp_path / "revoked").split()
    # ssh-keygen -H hashes the host name the way ssh(1) does with HashKnownHosts yes
    plain = known_hosts(tmp_path, sshd.known_hosts_line, name="plain")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(plain)], check=True, capture_output=True)
    hashed = plain.read_text().strip()
    assert hashed.startswith("|1|") and sshd.address not in hashed
    kh = known_hosts(
        tmp_path,
        "# comment",
        f"@cert-authority *.example.com {ca[0]} {ca[1]}",
        f"@revoked * {revoked[0]} {revoked[1]}",
        "this line is not a key",
        f"[{sshd.address}]:{sshd.port} ssh-ed25519 !!!not-base64!!!",
        hashed,
    )
    # paramiko's own loader gives up on such a file (paramiko#771)
    with pytest.raises(paramiko.hostkeys.InvalidHostKey):
        paramiko.HostKeys(str(kh))
    st = settings(kh)
    with connect(target_for(host_for(sshd), st), st) as s:
        assert s.run("true").exit_status == 0


def test_revoked_host_key_refused(sshd, ssh_home, tmp_path):
    key = sshd.host_key_pub.split()
    kh = known_hosts(tmp_path, sshd.known_hosts_line, f"@revoked * {key[0]} {key[1]}")
    for st in (settings(kh), settings(kh, accept_new=True)):
        with pytest.raises(HostKeyRevoked) as ei:
            connect(target_for(host_for(sshd), st), st)
        assert f"{kh}:2" in str(ei.value)


def test_known_hosts_parsed_once_per_process(sshd, ssh_home, tmp_path, monkeypatch):
    kh = known_hosts(tmp_path, sshd.known_hosts_line)
    st = settings(kh)
    calls = []
    real = ssh_known_hosts.parse_known_hosts
    monkeypatch.setattr(ssh_known_hosts, "parse_known_hosts", lambda p, sig: calls.append(p) or real(p, sig))
    target = target_for(host_for(sshd), st)
    for _ in range(3):
        with connect(target, st) as s:
            s.run("true")
    assert calls.count(kh) == 1


# ----------------------------------------------------------------- authentication


def test_wrong_key_fails_fast_without_retry(ssh_home, tmp_path):
    server = start_sshd(tmp_path, log_level="VERBOSE")
    try:
        wrong = tmp_path / "wrong_key"
        keygen(wrong)
        kh = known_hosts(tmp_path, server.known_hosts_line)
        st = settings(kh, retries=3)
        host = host_for(server, ansible_ssh_private_key_file=str(wrong))
        time.sleep(0.1)
        seen_before = len(server.log())  # after the readiness probe's connection
        t0 = time.monotonic()
        with pytest.raises(AuthenticationFailed) as ei:
            connect(target_for(host, st), st)
        elapsed = time.monotonic() - t0
        msg = str(ei.value)
        assert msg.startswith("dev1: ")
        assert f"fleettest@{server.address}:{server.port}" in msg and str(wrong) in msg
        assert ei.value.attempts == 1 and elapsed < 2
        time.sleep(0.2)  # let sshd flush its log
        new_log = server.log()[seen_before:]
        assert new_log.count("Connection from") == 1, new_log  # one TCP connection
        assert new_log.count("Failed publickey") == 1, new_log  # one key offered
    finally:
        server.stop()


def test_key_held_only_by_ssh_agent(sshd, ssh_home, tmp_path, monkeypatch):
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if sock.exists():
                break
            time.sleep(0.01)
        key = tmp_path / "agent_only_key"
        shutil_copy(sshd.user_key_path, key)
        env = dict(os.environ, SSH_AUTH_SOCK=str(sock))
        subprocess.run(["ssh-add", "-q", str(key)], env=env, check=True, capture_output=True)
        key.unlink()  # the key now exists only inside the agent
        kh = known_hosts(tmp_path, sshd.known_hosts_line)
        st = settings(kh)
        host = Host(
            name="dev1",
            vars={"ansible_host": sshd.address, "ansible_port": sshd.port, "ansible_user": sshd.user},
        )
        target = target_for(host, st)
        assert target.key_files == ()
        with pytest.raises(AuthenticationFailed):  # without the agent there is no key
            connect(target, st)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        with connect(target, st) as s:
            assert s.run("id -un").stdout == b"fleettest\n"
    finally:
        agent.kill()
        agent.wait()


def shutil_copy(src: Path, dst: Path) -> None:
    dst.write_bytes(Path(src).read_bytes())
    dst.chmod(0o600)


# ------------------------------------------------------------------- reachability


def test_closed_port_is_unreachable_after_bounded_retries(ssh_home, tmp_path):
    addr = "127.0.0.1"
    with socket.socket() as s:  # a port nobody listens on
        s.bind((addr, 0))
        port = s.getsockname()[1]
    host = Host(name="down1", vars={"ansible_host": addr, "ansible_port": port, "ansible_user": "x"})
    st = settings(retries=3)
    t0 = time.monotonic()
    with pytest.raises(Unreachable) as ei:
        connect(target_for(host, st), st)
    elapsed = time.monotonic() - t0
    assert ei.value.attempts == 3
    assert elapsed < ssh.RETRY_BUDGET
    msg = str(ei.value)
    assert msg.startswith("down1: ") and f"{addr}:{port}" in msg and "refused" in msg.lower()


def test_silently_dropping_target_times_out(ssh_home, tmp_path):
    # A listener whose accept queue is full: the kernel drops further SYNs without an
    # answer, as a firewall or a powered-off device behind a router would.
    addr = "127.0.0.1"
    srv = socket.socket()
    srv.bind((addr, 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    filler = socket.create_connection((addr, port))
    try:
        host = Host(name="silent1", vars={"ansible_host": addr, "ansible_port": port, "ansible_user": "x"})
        st = settings(connect_timeout=0.5, retries=2)
        t0 = time.monotonic()
        with pytest.raises(Unreachable) as ei:
            connect(target_for(host, st), st)
        elapsed = time.monotonic() - t0
        assert "timed out" in str(ei.value) and f"{addr}:{port}" in str(ei.value)
        assert ei.value.attempts == 2
        assert 1.0 <= elapsed < 3.0
    finally:
        filler.close()
        srv.close()


def test_proxy_jump_into_namespace(ssh_home, tmp_path):
    user_key = tmp_path / "user_key"
    keygen(user_key)
    with netns() as ns:
        target_srv = start_sshd(tmp_path, netns=ns, user_key_path=user_key)
        jump = start_inetd_sshd(tmp_path, ns, user_key_path=user_key)
        try:
            kh = known_hosts(tmp_path, jump.known_hosts_line, target_srv.known_hosts_line)
            st = settings(kh, retries=1)
            base = {
                "ansible_host": target_srv.address,  # 127.0.0.1 inside the namespace
                "ansible_port": target_srv.port,
                "ansible_user": "fleettest",
                "ansible_ssh_private_key_file": str(user_key),
            }
            # the target's address is not reachable from here ...
            with pytest.raises(Unreachable):
                connect(target_for(Host(name="nsdev", vars=base), st), st)
            # ... only through the jump host, given either way
            for args in (
                f"-o ProxyJump=fleettest@{jump.address}:{jump.port}",
                f"-J fleettest@{jump.address}:{jump.port} -o ServerAliveInterval=5",
            ):
                host = Host(name="nsdev", vars=dict(base, ansible_ssh_common_args=args))
                target = target_for(host, st)
                assert [(h.hostname, h.port) for h in target.proxy_jump] == [(jump.address, jump.port)]
                with connect(target, st) as s:
                    r = s.run("echo $SSH_CONNECTION")
                    assert r.exit_status == 0
                    # sshd inside the namespace saw the client as its own loopback
                    assert r.stdout.split()[2:] == [b"127.0.0.1", str(target_srv.port).encode()]
                    assert s.run("uname -m").stdout.strip() == platform.machine().encode()
        finally:
            jump.stop()
            target_srv.stop()


def test_proxy_jump_host_key_is_verified(sshd, ssh_home, tmp_path):
    # jump host unknown -> refused before anything is forwarded
    other = start_sshd(tmp_path, user_key_path=sshd.user_key_path)
    try:
        kh = known_hosts(tmp_path, sshd.known_hosts_line)  # the jump's key is missing
        st = settings(kh)
        host = host_for(sshd, ansible_ssh_common_args=f"-J fleettest@{other.address}:{other.port}")
        with pytest.raises(HostKeyUnknown) as ei:
            connect(target_for(host, st), st)
        assert "jump" in str(ei.value) and f"[{other.address}]:{other.port}" in str(ei.value)
    finally:
        other.stop()


# ------------------------------------------------------------- target resolution


def test_ssh_config_is_honoured(sshd, ssh_home, tmp_path):
    kh1 = known_hosts(tmp_path, "# empty", name="kh_first")
    kh2 = known_hosts(tmp_path, sshd.known_hosts_line, name="kh_second")
    cfg = tmp_path / "ssh_config"
    cfg.write_text(
        f"Host mydevice\n"
        f"    HostName {sshd.address}\n"
        f"    User {sshd.user}\n"
        f"    Port {sshd.port}\n"
        f"    IdentityFile {sshd.user_key_path}\n"
        f"    UserKnownHostsFile {kh1} {kh2}\n"
        f"Host *\n"
        f"    User nobody-else\n"
        f"    StrictHostKeyChecking yes\n"
    )
    st = SSHSettings(ssh_config=cfg, connect_timeout=5)
    host = Host(name="mydevice", vars={})
    target = target_for(host, st)
    assert (target.hostname, target.port, target.user) == (sshd.address, sshd.port, sshd.user)
    assert target.key_files == (sshd.user_key_path,)
    assert target.known_hosts_files == (kh1, kh2)
    with connect(target, st) as s:
        assert s.run("id -un").stdout == b"fleettest\n"

    # inventory variables beat the ssh config, as ssh(1) command-line options do
    host = Host(
        name="mydevice",
        vars={
            "ansible_port": 2222,
            "ansible_user": "admin",
            "ansible_ssh_extra_args": f"-o UserKnownHostsFile='{kh2}' -o Port=1 -i /k2",
            "ansible_ssh_private_key_file": "/k1",
        },
    )
    target = target_for(host, st)
    assert (target.hostname, target.port, target.user) == (sshd.address, 2222, "admin")
    assert target.key_files == (Path("/k1"), Path("/k2"), sshd.user_key_path)
    assert target.known_hosts_files == (kh2,)


def test_accept_new_updates_parsed_copy_without_reparse(sshd, ssh_home, tmp_path, monkeypatch):
    kh = known_hosts(tmp_path, "# header")
    calls = []
    real = ssh_known_hosts.parse_known_hosts
    monkeypatch.setattr(ssh_known_hosts, "parse_known_hosts", lambda p, sig: calls.append(p) or real(p, sig))
    st = settings(kh, accept_new=True)
    target = target_for(host_for(sshd), st)
    with connect(target, st) as s:
        s.run("true")
    assert kh.read_text() == "# header\n" + sshd.known_hosts_line + "\n"
    (entry,) = ssh_known_hosts.lookup_known([kh], target.known_hosts_name)
    assert (entry.path, entry.line) == (str(kh), 2)
    with connect(target, SSHSettings(known_hosts=(kh,))) as s:
        s.run("true")
    assert calls == [kh]
