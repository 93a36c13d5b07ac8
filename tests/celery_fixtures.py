"""Real parts for the Celery executor tests: Redis, RabbitMQ, signing identities, site workers.

* :func:`start_redis` runs Debian's ``redis-server`` on a random 127.0.0.x and free port with
  its own directory (no persistence), stopped by ``stop()``.
* :func:`start_rabbitmq` runs Debian's ``rabbitmq-server`` (and its own ``epmd``) on
  loopback only, with its own directories; ``stop()`` ends exactly those processes.
* :func:`make_identity` makes an RSA key and self-signed certificate with the ``openssl``
  commands docs/sites.md gives; :func:`cert_store` a directory of trusted certificates.
* :class:`SiteWorker` runs the real ``fleet worker`` CLI as a subprocess (its own process
  group, HOME and log file); ``kill()`` sends SIGKILL, ``stop()`` SIGINT (Ctrl-C).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLEET = str(Path(sys.executable).parent / "fleet")
REDIS_SERVER = "/usr/bin/redis-server"
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
EPMD = shutil.which("epmd") or "/usr/bin/epmd"


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _wait_port(address: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# ------------------------------------------------------------------------------ Redis


@dataclass
class RedisServer:
    """A running ``redis-server``: ``url`` (``redis://ADDR:PORT/0``), ``address``, ``port``."""

    address: str
    port: int
    dir: Path
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"redis://{self.address}:{self.port}/0"

    def client(self):
        import redis

        return redis.Redis(host=self.address, port=self.port, db=0, socket_timeout=5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)


def start_redis(address: str | None = None) -> RedisServer:
    """Start ``redis-server`` in the foreground on ``address`` (random 127.0.0.x) and a free
    port, no RDB/AOF files, its own working directory. Raises RuntimeError with its log."""
    for _ in range(5):
        addr = address or f"127.0.0.{random.randint(2, 250)}"
        port = _free_port(addr)
        d = Path(tempfile.mkdtemp(prefix="fleet-redis-"))
        log = d / "redis.log"
        proc = subprocess.Popen([REDIS_SERVER, "--bind", addr, "--port", str(port), "--dir", str(d),
                                 "--save", "", "--appendonly", "no", "--protected-mode", "no",
                                 "--daemonize", "no", "--logfile", str(log), "--databases", "4"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        if _wait_port(addr, port, 10, proc):
            return RedisServer(addr, port, d, proc)
        text = log.read_text(errors="replace") if log.exists() else ""
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        shutil.rmtree(d, ignore_errors=True)
        if "Address already in use" not in text:
            raise RuntimeError(f"redis-server did not start on {addr}:{port}:\n{text}")
    raise RuntimeError("redis-server: no free port after 5 tries")


# ---------------------------------------------------------------------------- RabbitMQ


@dataclass
class RabbitServer:
    """A running RabbitMQ node on 127.0.0.1: ``url`` (``amqp://guest:guest@127.0.0.1:PORT//``)."""

    port: int
    dir: Path
    proc: subprocess.Popen
    epmd: subprocess.Popen

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def stop(self) -> None:
        for p in (self.proc, self.epmd):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
        # the node's own helpers (erl_child_setup, inet_gethost) are in its process group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def rabbitmq_available() -> bool:
    return os.path.exists(RABBITMQ_SERVER) and os.path.exists(EPMD)


def start_rabbitmq(timeout: float = 60.0) -> RabbitServer:
    """Start a RabbitMQ node (user ``rabbitmq``) listening on 127.0.0.1 only: AMQP on a free
    port, Erlang distribution on another, its own ``epmd`` on a third (a child of this
    process, not a daemon), guest allowed from loopback. Raises RuntimeError with its log."""
    d = Path(tempfile.mkdtemp(prefix="fleet-rabbit-"))
    amqp, dist, epmd_port = (_free_port("127.0.0.1") for _ in range(3))
    (d / "rabbitmq.conf").write_text("loopback_users = none\nlisteners.tcp.default = 127.0.0.1:%d\n" % amqp)
    (d / "enabled_plugins").write_text("[].\n")
    pw = pwd.getpwnam("rabbitmq")
    for p in (d,):
        os.chown(p, pw.pw_uid, pw.pw_gid)
    os.chown(d / "rabbitmq.conf", pw.pw_uid, pw.pw_gid)
    os.chown(d / "enabled_plugins", pw.pw_uid, pw.pw_gid)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(d), "LANG": "C.UTF-8",
        "RABBITMQ_NODENAME": f"fleet{amqp}@localhost", "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(amqp), "RABBITMQ_DIST_PORT": str(dist),
        "ERL_EPMD_ADDRESS": "127.0.0.1", "ERL_EPMD_PORT": str(epmd_port),
        "RABBITMQ_MNESIA_BASE": str(d / "mnesia"), "RABBITMQ_LOG_BASE": str(d / "log"),
        "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq"), "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(d / "pid"),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }
    drop = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups"]
    epmd = subprocess.Popen([*drop, EPMD, "-address", "127.0.0.1", "-port", str(epmd_port)], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = open(d / "server.out", "wb")
    proc = subprocess.Popen([*drop, RABBITMQ_SERVER], env=env, cwd=d, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    server = RabbitServer(amqp, d, proc, epmd)
    if not _wait_port("127.0.0.1", amqp, timeout, proc):
        text = (d / "server.out").read_text(errors="replace")
        server.stop()
        raise RuntimeError(f"rabbitmq-server did not start on 127.0.0.1:{amqp}:\n{text[-3000:]}")
    return server


# ---------------------------------------------------------------------- signing identities


@dataclass
class Identity:
    """An RSA signing key (0600) and its self-signed certificate."""

    key: Path
    cert: Path


def make_identity(directory: Path, cn: str, *, days: int = 2, serial: int | None = None) -> Identity:
    """``openssl req -x509 -newkey rsa:2048 -nodes ...``: docs/sites.md's command with a shorter key (test speed)
    (``serial``: a fixed certificate serial number, e.g. to impersonate another's id)."""
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / f"{cn}.key", directory / f"{cn}.pem"
    cmd = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
           "-days", str(days), "-subj", f"/CN={cn}"]
    if serial is not None:
        cmd += ["-set_serial", str(serial)]
    subprocess.run(cmd, check=True, capture_output=True)
    key.chmod(0o600)
    return Identity(key, cert)


def cert_store(directory: Path, *certs: Path) -> Path:
    """A directory holding a copy of each certificate (one PEM per file)."""
    directory.mkdir(parents=True, exist_ok=True)
    for c in certs:
        shutil.copy(c, directory / c.name)
    return directory


@dataclass
class Signers:
    """The controller's and two sites' identities and the stores each side trusts."""

    controller: Identity
    sites: dict[str, Identity]
    controller_store: Path   # the sites' certificates (verifies results)
    worker_store: Path       # the controller's certificate (verifies jobs)


def make_signers(directory: Path, sites=("a", "b")) -> Signers:
    ctl = make_identity(directory / "ids", "fleet-controller")
    ids = {s: make_identity(directory / "ids", f"fleet-site-{s}") for s in sites}
    return Signers(ctl, ids, cert_store(directory / "controller-trusts", *(i.cert for i in ids.values())),
                   cert_store(directory / "worker-trusts", ctl.cert))


# ------------------------------------------------------------------------------ workers


@dataclass
class SiteWorker:
    """A real ``fleet worker`` process; ``log_path`` holds its stderr and stdout."""

    site: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    started: list = field(default_factory=list)

    def start(self, ready: bool = True, timeout: float = 60.0) -> "SiteWorker":
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, env=self.env, stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append(self.proc.pid)
        if ready:
            self.wait_for(" ready", timeout)
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, text: str, timeout: float = 30.0, count: int = 1) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if log.count(text) >= count:
                return log
            if self.proc is not None and self.proc.poll() is not None and log.count(text) < count:
                raise RuntimeError(f"worker {self.site} exited ({self.proc.returncode}) before {text!r}:\n{log}")
            time.sleep(0.1)
        raise RuntimeError(f"worker {self.site}: no {text!r} within {timeout} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL the worker (the whole process: its job threads die with it)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        return self.proc.returncode


def worker(tmp: Path, site: str, broker: str, signers: Signers, *, known_hosts: Path | None = None,
           concurrency: int = 8, max_deadline: float = 600.0, extra: list[str] | None = None,
           env: dict[str, str] | None = None, name: str | None = None) -> SiteWorker:
    """A (not yet started) ``fleet worker`` for ``site`` with its own identity and HOME."""
    home = tmp / f"home-{site}"
    (home / ".ssh").mkdir(parents=True, exist_ok=True, mode=0o700)
    ident = signers.sites[site]
    args = [FLEET, "worker", "--broker", broker, "--site", site, "--concurrency", str(concurrency),
            "--key", str(ident.key), "--cert", str(ident.cert), "--cert-store", str(signers.worker_store),
            "--max-deadline", str(max_deadline), "--name", name or f"fleet-{site}@test"]
    if known_hosts is not None:
        args += ["--known-hosts", str(known_hosts)]
    args += list(extra or [])
    e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
         "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    e.update(env or {})
    return SiteWorker(site, args, e, tmp / f"worker-{site}.log")


# ----------------------------------------------------------------------------- devices


@dataclass
class Devices:
    """Real sshd "devices" with an inventory: ``servers`` by host name, ``inventory`` (YAML,
    ``fleet_site`` per host), ``known_hosts`` (every device's key), ``key`` (the login key)."""

    servers: dict
    inventory: Path
    known_hosts: Path
    key: Path

    def stop(self) -> None:
        for s in self.servers.values():
            s.stop()


def start_devices(base: Path, sites: dict[str, str | None], extra_vars: dict[str, dict] | None = None,
                  sshd_config: dict[str, str] | None = None, log_level: str = "ERROR") -> Devices:
    """One real sshd per host of ``sites`` (host -> its fleet_site, None: no site), all on
    random 127.0.0.x with one login key; the inventory names them with ansible_host/port/
    user/key and ``fleet_site``. ``extra_vars``: more host variables; ``sshd_config``: extra
    sshd config text per host; ``log_level``: sshd's (``INFO`` logs every accepted login)."""
    import yaml

    from tests.sshd import keygen, start_sshd

    base.mkdir(parents=True, exist_ok=True)
    key = base / "login_ed25519"
    keygen(key, "fleet-celery-test")
    servers = {}
    try:
        for host in sites:
            servers[host] = start_sshd(base / host, user_key_path=key, log_level=log_level,
                                       extra_config=(sshd_config or {}).get(host, ""))
    except BaseException:
        for s in servers.values():
            s.stop()
        raise
    hosts = {}
    for host, site in sites.items():
        s = servers[host]
        v = {"ansible_host": s.address, "ansible_port": s.port, "ansible_user": s.user,
             "ansible_ssh_private_key_file": str(key)}
        if site is not None:
            v["fleet_site"] = site
        v.update((extra_vars or {}).get(host, {}))
        hosts[host] = v
    inv = base / "inventory.yml"
    inv.write_text(yaml.safe_dump({"all": {"children": {"boards": {"hosts": hosts}}}}, sort_keys=False))
    kh = base / "known_hosts"
    kh.write_text("".join(s.known_hosts_line + "\n" for s in servers.values()))
    return Devices(servers, inv, kh, key)


def selection_of(devices: Devices, limit: str | None = None, forks: int = 10):
    """A :class:`fleet.selection.DeviceSelection` over ``devices`` (host keys checked
    against their known_hosts)."""
    from fleet.selection import DeviceSelection
    from fleet.ssh import SSHSettings

    return DeviceSelection((str(devices.inventory),), limit, forks,
                           SSHSettings(known_hosts=(devices.known_hosts,), connect_timeout=10.0))


def controller_signing(signers: Signers):
    from fleet.executor.app import Signing

    return Signing.from_options(signers.controller.key, signers.controller.cert, signers.controller_store)


# ------------------------------------------------------------------------ pytest fixtures

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def redis_server():
    """A real redis-server for the module's tests."""
    r = start_redis()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def signers(tmp_path_factory) -> Signers:
    """Throwaway identities: the controller's and sites a, b, c, z (openssl, docs/sites.md)."""
    return make_signers(tmp_path_factory.mktemp("signing"), sites=("a", "b", "c", "z"))
