"""Hostile and legacy inputs against real OpenSSH sshd servers (one regression test each):
bracketed known_hosts patterns, endless output, IdentitiesOnly with a crowded ssh-agent,
weak algorithms, closing a session from another thread; plus the -v/-vv diagnostics."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fleet.inventory import Host
from fleet.ssh import (
    AuthenticationFailed,
    HostKeyChanged,
    NegotiationFailed,
    OutputTooLarge,
    SessionClosed,
    SSHSettings,
    connect,
    target_for,
)
from tests.sshd import keygen, start_sshd


def host_for(server, name="dev1", **extra) -> Host:
    vars = {
        "ansible_host": server.address,
        "ansible_port": server.port,
        "ansible_user": server.user,
        "ansible_ssh_private_key_file": str(server.user_key_path),
    }
    vars.update(extra)
    return Host(name=name, vars=vars, groups=("all",), source="test")


def kh_file(tmp_path, *lines, name="known_hosts") -> Path:
    p = tmp_path / name
    p.write_text("".join(line + "\n" for line in lines))
    return p


def settings(kh: Path | None = None, **kw) -> SSHSettings:
    kw.setdefault("connect_timeout", 5.0)
    return SSHSettings(known_hosts=(kh,) if kh else (), **kw)


# ------------------------------------------------------------ 1. known_hosts brackets


def test_changed_key_under_bracketed_wildcard_is_refused(sshd, ssh_home, tmp_path):
    """``[127.0.0.*]:PORT`` names the device as ssh(1) reads it; a different key there is a
    CHANGED key, also with --accept-new (it used to count as unknown and get appended)."""
    prefix = sshd.address.rsplit(".", 1)[0]
    other = keygen(tmp_path / "other").split()
    kh = kh_file(tmp_path, f"[{prefix}.*]:{sshd.port} {other[0]} {other[1]}")
    before = kh.read_text()
    for st in (settings(kh), settings(kh, accept_new=True)):
        with pytest.raises(HostKeyChanged) as ei:
            connect(target_for(host_for(sshd), st), st)
        assert (ei.value.path, ei.value.line) == (str(kh), 1)
    assert kh.read_text() == before
    # OpenSSH agrees: same file, ssh(1) refuses with its own warning
    proc = subprocess.run(
        ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
         "-o", f"UserKnownHostsFile={kh}", "-o", "GlobalKnownHostsFile=/dev/null", "-i", str(sshd.user_key_path),
         "-p", str(sshd.port), f"{sshd.user}@{sshd.address}", "true"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode != 0 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in proc.stderr
    # the right key under the same pattern is accepted in strict mode
    key = sshd.host_key_pub.split()
    kh2 = kh_file(tmp_path, f"[{prefix}.?*]:{sshd.port},!nothing {key[0]} {key[1]}", name="kh2")
    st = settings(kh2)
    with connect(target_for(host_for(sshd), st), st) as s:
        assert s.run("true").exit_status == 0


# ------------------------------------------------------------ 4. unbounded output


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class _PeakRSS:
    def __init__(self):
        self.base = _rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss())

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    @property
    def growth(self) -> int:
        return self.peak - self.base


@pytest.mark.parametrize("limit", [4 << 20, None])
def test_endless_output_is_cut_at_the_limit(sshd, ssh_home, tmp_path, limit):
    """``yes`` never stops: the run ends with OutputTooLarge naming the device and the
    limit, in bounded time and memory, and the session stays usable. ``None`` checks the
    default limit (64 MiB)."""
    st = settings(kh_file(tmp_path, sshd.known_hosts_line), command_timeout=60)
    with connect(target_for(host_for(sshd), st), st) as s:
        kw = {} if limit is None else {"max_output": limit}
        want = limit or (64 << 20)
        t0 = time.monotonic()
        with _PeakRSS() as mem, pytest.raises(OutputTooLarge) as ei:
            s.run("yes fleet-endless-output", **kw)
        elapsed = time.monotonic() - t0
        e = ei.value
        assert str(e).startswith("dev1: ") and str(want) in str(e)
        assert e.limit == want and len(e.stdout) + len(e.stderr) == want
        assert e.stdout.startswith(b"fleet-endless-output\n")
        assert elapsed < 10, elapsed
        assert mem.growth < 300 << 20, mem.growth
        assert s.run("echo still-usable").stdout == b"still-usable\n"
    # output at the limit exactly is fine; one byte more is not
    with connect(target_for(host_for(sshd), st), st) as s:
        assert len(s.run("head -c 1000 /dev/zero", max_output=1000).stdout) == 1000
        with pytest.raises(OutputTooLarge):
            s.run("head -c 999 /dev/zero; echo err >&2", max_output=1000)


def test_a_channel_closed_while_data_still_arrives_leaves_the_session_usable(sshd, ssh_home, tmp_path):
    """Closing a channel whose command still streams (the output limit, a timeout) races
    paramiko's transport thread, which feeds the data already on the way into the channel's
    pipe: when the pipe's descriptors are closed first, that write fails with EBADF, the
    transport thread dies ("Socket exception: Bad file descriptor") and every later command
    on the session fails (paramiko#1700, #2271; seen once in CI). Many closes in a row, each
    while ``yes`` streams, then the session still runs commands."""
    st = settings(kh_file(tmp_path, sshd.known_hosts_line), command_timeout=60)
    with connect(target_for(host_for(sshd), st), st) as s:
        for _ in range(300):
            with pytest.raises(OutputTooLarge):
                s.run("yes", max_output=1 << 15)
            assert s.transport.is_active()
        assert s.run("echo still-usable").stdout == b"still-usable\n"


# ------------------------------------------------------------ 10. IdentitiesOnly


@pytest.fixture
def agent(tmp_path):
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(500):
            if sock.exists():
                break
            time.sleep(0.01)
        yield sock
    finally:
        proc.kill()
        proc.wait()


def _ssh_add(sock: Path, key: Path) -> None:
    subprocess.run(["ssh-add", "-q", str(key)], env=dict(os.environ, SSH_AUTH_SOCK=str(sock)), check=True,
                   capture_output=True)


def _auth_log(server, since: int) -> str:
    time.sleep(0.3)  # let sshd flush its log
    return server.log()[since:]


def test_identities_only_with_a_crowded_agent(ssh_home, tmp_path, agent, monkeypatch):
    right = tmp_path / "right"
    keygen(right, "right-key")
    server = start_sshd(tmp_path, user_key_path=right, log_level="VERBOSE")
    try:
        wrong = []
        for n in range(5):  # added first: the agent lists them before the right key
            w = tmp_path / f"wrong{n}"
            keygen(w, f"wrong-{n}")
            _ssh_add(agent, w)
            wrong.append(w)
        _ssh_add(agent, right)
        right.unlink()  # only right.pub stays on disk; the agent holds the private half
        monkeypatch.setenv("SSH_AUTH_SOCK", str(agent))
        st = settings(kh_file(tmp_path, server.known_hosts_line))
        base = {"ansible_host": server.address, "ansible_port": server.port, "ansible_user": server.user,
                "ansible_ssh_private_key_file": str(right)}
        time.sleep(0.2)

        # control: without IdentitiesOnly every agent key is offered, wrong ones first
        seen = len(server.log())
        with connect(target_for(Host(name="d", vars=base), st), st) as s:
            assert s.run("true").exit_status == 0
        assert _auth_log(server, seen).count("Failed publickey") == 5

        # IdentitiesOnly: only the agent key matching right.pub is offered
        only = dict(base, ansible_ssh_common_args="-o IdentitiesOnly=yes")
        target = target_for(Host(name="d", vars=only), st)
        assert target.identities_only
        seen = len(server.log())
        with connect(target, st) as s:
            assert s.run("id -un").stdout == b"fleettest\n"
        log = _auth_log(server, seen)
        assert log.count("Failed publickey") == 0 and log.count("Accepted publickey") == 1, log

        # IdentitiesOnly with a file the server does not accept: the agent's right key is
        # not offered behind its back
        other = dict(base, ansible_ssh_private_key_file=str(wrong[0]),
                     ansible_ssh_common_args="-o IdentitiesOnly=yes")
        seen = len(server.log())
        with pytest.raises(AuthenticationFailed) as ei:
            connect(target_for(Host(name="d", vars=other), st), st)
        assert ei.value.tried == (str(wrong[0]),)
        assert "IdentitiesOnly" in str(ei.value)
        log = _auth_log(server, seen)
        assert log.count("Failed publickey") == 1 and "Accepted" not in log, log
    finally:
        server.stop()


# ------------------------------------------------------------ 11. weak algorithms


def _openssh_client(server, key: Path, *opts: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "GlobalKnownHostsFile=/dev/null", *opts, "-i", str(key),
         "-p", str(server.port), f"{server.user}@{server.address}", "true"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("server_config,optin,kind,alg", [
    ("Ciphers aes128-cbc\nMACs hmac-sha1", "-o Ciphers=+aes128-cbc -o MACs=+hmac-sha1", "cipher", "aes128-cbc"),
    ("Ciphers 3des-cbc", "-c +3des-cbc", "cipher", "3des-cbc"),
    # (a non-AEAD cipher: with chacha20/aes-gcm OpenSSH negotiates no MAC at all)
    ("Ciphers aes128-ctr\nMACs hmac-md5", "-o MACs=+hmac-md5", "mac", "hmac-md5"),
])
def test_weak_algorithms_refused_unless_opted_in(ssh_home, tmp_path, server_config, optin, kind, alg):
    server = start_sshd(tmp_path, extra_config=server_config)
    try:
        key = server.user_key_path
        # OpenSSH 9.2's client refuses this server too, and accepts it with the same opt-in
        assert "no matching" in _openssh_client(server, key).stderr
        assert _openssh_client(server, key, *optin.split()).returncode == 0

        st = settings(kh_file(tmp_path, server.known_hosts_line), retries=3)
        t0 = time.monotonic()
        with pytest.raises(NegotiationFailed) as ei:
            connect(target_for(host_for(server), st), st)
        e = ei.value
        assert time.monotonic() - t0 < 3 and e.attempts == 1
        assert e.kind == kind and alg in e.offered and alg not in e.allowed
        msg = str(e)
        assert msg.startswith("dev1: ") and alg in msg and f"+{alg}" in msg and f"{server.address}:{server.port}" in msg

        host = host_for(server, ansible_ssh_common_args=optin)
        with connect(target_for(host, st), st) as s:
            assert s.run("true").exit_status == 0
            negotiated = s.transport.local_cipher if kind == "cipher" else s.transport.local_mac
            assert negotiated == alg
    finally:
        server.stop()


# ------------------------------------------------------------ close from another thread


def test_close_from_another_thread_unblocks_run(sshd, ssh_home, tmp_path):
    st = settings(kh_file(tmp_path, sshd.known_hosts_line), command_timeout=60)
    s = connect(target_for(host_for(sshd), st), st)
    box: dict = {}

    def worker():
        t0 = time.monotonic()
        try:
            s.run("echo started; sleep 30")
        except BaseException as e:  # examined below
            box["error"] = e
        box["elapsed"] = time.monotonic() - t0

    threads = [threading.Thread(target=worker)]
    threads[0].start()
    time.sleep(0.5)
    closers = [threading.Thread(target=s.close) for _ in range(4)]  # concurrent closes are fine
    for c in closers:
        c.start()
    for c in closers:
        c.join(5)
    threads[0].join(5)
    assert not threads[0].is_alive()
    assert isinstance(box.get("error"), SessionClosed), box
    assert str(box["error"]).startswith("dev1: session closed while running")
    assert box["elapsed"] < 3
    assert s.closed and not s.transport.is_active()
    with pytest.raises(SessionClosed):
        s.run("true")
    s.close()  # idempotent


# ------------------------------------------------------------ diagnostics


def test_verbose_logging_names_decisions_and_masks_secrets(sshd, ssh_home, tmp_path, caplog):
    kh = kh_file(tmp_path, "# first line", sshd.known_hosts_line)
    st = settings(kh)
    caplog.set_level(logging.DEBUG, logger="fleet.ssh")
    with connect(target_for(host_for(sshd), st), st) as s:
        secret = "hunter2 token"  # quoted in the command line: the quoted form is masked whole
        r = s.run(f"printf %s {shlex.quote(secret)} | wc -c; cat >/dev/null", stdin=b"stdin-secret-bytes",
                  secret_args=[secret])
        assert r.stdout == b"13\n"
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    debug = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert any(f"connecting to {sshd.address}:{sshd.port}" in m for m in info), info
    assert any(f"matches {kh}:2" in m for m in info), info
    assert any(f"authenticated as {sshd.user}@{sshd.address}:{sshd.port} with {sshd.user_key_path}" in m
               for m in info), info
    assert "dev1: run: printf %s <secret> | wc -c; cat >/dev/null" in debug
    assert "exit status 0, 3 bytes stdout, 0 bytes stderr" in debug
    assert "hunter2" not in caplog.text and "stdin-secret" not in caplog.text
