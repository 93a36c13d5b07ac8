"""Start real OpenSSH sshd servers for tests (loopback or a test-owned network namespace).

``start_sshd(tmp_path, address=None, ...) -> SshdServer`` runs ``/usr/sbin/sshd -D -e -f
CONFIG`` on 127.0.0.x with a fresh ed25519 host key, public-key logins only, and a
dedicated login user :data:`TEST_USER` (shell /bin/sh) so root's bash start-up files
(``pyenv init`` here, which takes a global lock) are never read.

``start_sshd(..., netns=NAME)`` runs it inside network namespace NAME, where the host
cannot reach it; ``start_inetd_sshd(tmp_path, netns=NAME)`` accepts on a host loopback
address and hands each connection to ``sshd -i`` running inside NAME, i.e. a jump host that
is the only way into the namespace. ``netns()`` creates/deletes such a namespace.

Every server is stopped by ``stop()``, which kills exactly the processes it started.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
TEST_USER = "fleettest"
TEST_USER_HOME = "/var/lib/fleettest"


def ensure_test_user() -> str:
    """Create the login user once (system account, /bin/sh, password ``*``: key-only but not
    "locked", which sshd with ``UsePAM no`` would refuse). Safe across concurrent test runs."""
    with open("/tmp/fleet-test-user.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if subprocess.run(["getent", "passwd", TEST_USER], capture_output=True).returncode != 0:
            subprocess.run(
                ["useradd", "--system", "--create-home", "--home-dir", TEST_USER_HOME,
                 "--shell", "/bin/sh", TEST_USER],
                check=True, capture_output=True,
            )
            subprocess.run(["usermod", "-p", "*", TEST_USER], check=True, capture_output=True)
    return TEST_USER


def keygen(path: Path, comment: str = "fleet-test") -> str:
    """Generate an unencrypted ed25519 key at ``path``; return the public key line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True, capture_output=True,
    )
    return Path(str(path) + ".pub").read_text().strip()


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def random_loopback() -> str:
    """A random 127.0.0.x (x in 2..250); the whole 127/8 is loopback on Linux."""
    return f"127.0.0.{random.randint(2, 250)}"


# --------------------------------------------------------------- network namespaces

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(name: str, fn, *args):
    """Run ``fn(*args)`` on a short-lived thread that has joined netns ``name``.

    setns(2) changes only the calling thread, and the thread ends afterwards, so the test
    process itself never leaves its namespace. Sockets made there stay in ``name``.
    """
    box: dict = {}

    def run():
        try:
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            finally:
                os.close(fd)
            box["value"] = fn(*args)
        except BaseException as e:  # handed back to the caller
            box["error"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


@contextlib.contextmanager
def netns():
    """A fresh network namespace (loopback up, nothing else) deleted on exit."""
    name = f"fleet-t-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


# -------------------------------------------------------------------------- sshd


@dataclass
class SshdServer:
    """A running test sshd.

    ``address``/``port`` where it listens (inside ``netns`` when set); ``host_key_pub`` the
    ``ssh-ed25519 AAAA...`` line; ``known_hosts_line`` ``[address]:port ssh-ed25519 ...``;
    ``user``/``user_key_path`` a login that works; ``log_path`` sshd's stderr.
    """

    address: str
    port: int
    host_key_pub: str
    host_key_path: Path
    user: str
    user_key_path: Path
    known_hosts_line: str
    config_path: Path
    log_path: Path
    workdir: Path
    netns: str | None = None
    proc: subprocess.Popen | None = None
    _children: list = field(default_factory=list)
    _listener: socket.socket | None = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """Kill exactly the processes this server started, then remove its files."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread
            self._listener.close()
            self._listener = None
        for p in ([self.proc] if self.proc else []) + list(self._children):
            if p.poll() is None:
                p.kill()
            p.wait(timeout=5)
        self._children.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _config_text(workdir: Path, address: str, port: int | None, log_level: str, extra: str) -> str:
    lines = [
        f"HostKey {workdir}/host_ed25519",
        f"PidFile {workdir}/sshd.pid",
        f"AuthorizedKeysFile {workdir}/authorized_keys",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin no",
        f"AllowUsers {TEST_USER}",
        "MaxStartups 200:30:400",
        "PrintMotd no",
        "PrintLastLog no",
        f"LogLevel {log_level}",
    ]
    if port is not None:
        lines[:0] = [f"ListenAddress {address}:{port}"]
    return "\n".join(lines) + "\n" + (extra.strip() + "\n" if extra else "")


def _prepare(tmp_path: Path, authorized_keys, user_key_path: Path | None):
    ensure_test_user()
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege-separation dir
    # sshd reads AuthorizedKeysFile as the login user, and pytest's tmp_path is 0700
    # root-only, so the server's files live in their own world-traversable directory.
    workdir = Path(tempfile.mkdtemp(prefix="fleet-sshd-", dir="/tmp"))
    workdir.chmod(0o755)
    host_pub = keygen(workdir / "host_ed25519", "fleet-test-host")
    if user_key_path is None:
        user_key_path = Path(tmp_path) / f"user_ed25519_{workdir.name}"
        keygen(user_key_path, "fleet-test-user")
    if authorized_keys is None:
        keys = [Path(str(user_key_path) + ".pub").read_text().strip()]
    else:
        keys = list(authorized_keys)
    ak = workdir / "authorized_keys"
    ak.write_text("\n".join(keys) + "\n")
    ak.chmod(0o644)
    return workdir, host_pub, user_key_path


def _banner_ready(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5) as s:
            s.settimeout(1.0)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def start_sshd(
    tmp_path,
    address: str | None = None,
    *,
    extra_config: str = "",
    authorized_keys=None,
    user_key_path: Path | None = None,
    log_level: str = "ERROR",
    netns: str | None = None,
    wrap: list[str] | None = None,
) -> SshdServer:
    """Start ``sshd -D -e`` on ``address`` (random 127.0.0.x if None) and a free port.

    ``authorized_keys``: public key lines (default: a generated user key, or the ``.pub``
    of ``user_key_path``). ``extra_config`` is appended (e.g. ``Match`` blocks).
    ``wrap``: a command that execs its arguments (so the pid stays sshd's), e.g.
    ``unshare -m`` to give the "device" its own mounts.
    Waits until the SSH banner is served; raises RuntimeError with sshd's log otherwise.
    """
    workdir, host_pub, user_key_path = _prepare(tmp_path, authorized_keys, user_key_path)
    for _ in range(5):
        addr = address or ("127.0.0.1" if netns else random_loopback())
        # in a namespace, also pick a port free on the host's loopback, so that a direct
        # connection attempt from the host is refused rather than reaching someone else
        port = _free_port("127.0.0.1" if netns else addr)
        cfg = workdir / "sshd_config"
        cfg.write_text(_config_text(workdir, addr, port, log_level, extra_config))
        log = workdir / "sshd.log"
        cmd = list(wrap or []) + [SSHD, "-D", "-e", "-f", str(cfg)]
        if netns:
            cmd = ["ip", "netns", "exec", netns] + cmd  # ip execs sshd: same pid
        with open(log, "ab") as logf:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        server = SshdServer(
            address=addr, port=port, host_key_pub=host_pub,
            host_key_path=workdir / "host_ed25519", user=TEST_USER,
            user_key_path=Path(user_key_path),
            known_hosts_line=f"[{addr}]:{port} {' '.join(host_pub.split()[:2])}",
            config_path=cfg, log_path=log, workdir=workdir, netns=netns, proc=proc,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            ready = in_netns(netns, _banner_ready, addr, port) if netns else _banner_ready(addr, port)
            if ready:
                return server
            time.sleep(0.02)
        text = server.log()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if "Address already in use" not in text:
            shutil.rmtree(workdir, ignore_errors=True)
            raise RuntimeError(f"sshd did not start on {addr}:{port}:\n{text}")
    shutil.rmtree(workdir, ignore_errors=True)
    raise RuntimeError("sshd: no free port after 5 tries")


def start_inetd_sshd(tmp_path, netns: str, address: str | None = None, *, log_level: str = "ERROR",
                     user_key_path: Path | None = None) -> SshdServer:
    """A jump host into ``netns``: accept on host ``address`` and run ``sshd -i`` inside
    ``netns`` for each connection (inetd style), so its forwarded connections originate
    inside the namespace."""
    workdir, host_pub, user_key_path = _prepare(tmp_path, None, user_key_path)
    addr = address or random_loopback()
    listener = socket.socket()
    listener.bind((addr, 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    cfg = workdir / "sshd_config"
    cfg.write_text(_config_text(workdir, addr, None, log_level, ""))
    log = workdir / "sshd.log"
    server = SshdServer(
        address=addr, port=port, host_key_pub=host_pub, host_key_path=workdir / "host_ed25519",
        user=TEST_USER, user_key_path=Path(user_key_path),
        known_hosts_line=f"[{addr}]:{port} {' '.join(host_pub.split()[:2])}",
        config_path=cfg, log_path=log, workdir=workdir, netns=netns, _listener=listener,
    )

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # listener closed by stop()
            with conn, open(log, "ab") as logf:
                p = subprocess.Popen(
                    ["ip", "netns", "exec", netns, SSHD, "-i", "-e", "-f", str(cfg)],
                    stdin=conn.fileno(), stdout=conn.fileno(), stderr=logf,
                )
            server._children.append(p)

    threading.Thread(target=serve, daemon=True, name=f"inetd-{addr}:{port}").start()
    return server
