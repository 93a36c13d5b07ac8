"""A loopback fleet for benchmarks: N SSH "devices" on 127.0.1.1 ... 127.0.1.N.

One OpenSSH sshd configuration per 16 loopback addresses (sshd serves at most 16
``ListenAddress`` lines per process: it logs "Too many listen sockets" and ignores the
rest), all sharing one port, all of 127.0.0.0/8 being on ``lo`` without configuration.
Each sshd process has its own generated ed25519 host key, so a known_hosts file of a
fleet of 1000 holds 1000 lines and 63 distinct keys, as a real fleet's would hold N keys.

Logins are key-only, for a dedicated login user (shell /bin/sh, a home with no dotfiles):
root's bash start-up files run ``pyenv init`` on this machine and took 15-39 s per login
under load here (``pyenv init`` takes a global lock). With ``engine=True`` the devices give their logins the host's Docker engine as a device gives its user its
own: the login is ``fleetbench-dock``, a member of group ``docker`` (the engine socket is
root:docker 0660), and sshd allows local forwarding, so fleet opens its
``direct-streamlocal`` channel to the engine's socket (OpenSSH refuses those channels
under ``AllowTcpForwarding no``, channels.c). With ``engine=False`` (the
default) the login is ``fleetbench``, which the engine refuses, and forwarding is off:
every engine request fails, as on a device whose user may not use Docker (the benchmark
runs before the Engine API were measured that way).
``MaxStartups`` is raised so F parallel handshakes are not dropped by sshd's default
10:30:100 early-drop rule.

Generated in the run directory:

- ``inventory-N.yml``: Ansible YAML inventory (used by fleet and by Ansible); hosts
  ``dev0001`` ... with ``ansible_host``/``ansible_port``/``ansible_user``/
  ``ansible_ssh_private_key_file`` and ``-o UserKnownHostsFile=...`` in
  ``ansible_ssh_common_args``.
- ``pyinfra-N.py``: the same hosts as a pyinfra Python inventory (host key checking on).
- ``hosts-N.txt``: one address per line (OpenSSH client row, paramiko floor).
- ``known_hosts``, ``ssh_config`` (for the ``ssh`` client), ``client_key``.

It stops only what it started: every sshd is found through its pid file and killed only
if ``/proc/PID/cmdline`` still names this fleet's configuration file.

CLI: ``python bench/loopfleet.py up --n 50 --dir DIR`` / ``down --dir DIR``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
PER_PROCESS = 16  # OpenSSH's MAX_LISTEN_SOCKS
DEFAULT_USER = "fleetbench"
DEFAULT_HOME = Path("/var/lib/fleetbench")
#: The login of devices whose engine the login may use (member of the socket's group).
ENGINE_USER = "fleetbench-dock"
ENGINE_GROUP = "docker"


def addresses(n: int, first: str = "127.0.1.1") -> list[str]:
    """N consecutive loopback addresses from ``first``, skipping .0 and .255 host octets.

    Raises ValueError if they would leave 127.0.0.0/8.
    """
    out: list[str] = []
    a = ipaddress.IPv4Address(first)
    loop = ipaddress.IPv4Network("127.0.0.0/8")
    while len(out) < n:
        if a not in loop:
            raise ValueError(f"{n} addresses from {first} leave 127.0.0.0/8")
        if int(a) & 0xFF not in (0, 255):
            out.append(str(a))
        a += 1
    return out


def ensure_user(name: str = DEFAULT_USER, home: Path = DEFAULT_HOME, groups: tuple[str, ...] = ()) -> pwd.struct_passwd:
    """Create the dedicated login user if missing (system user, /bin/sh, empty home), a
    member of ``groups``.

    Its password field is ``*`` (not the locked ``!``): sshd with ``UsePAM no`` refuses
    a locked account even for key logins.
    """
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", str(home),
             "--shell", "/bin/sh", name],
            check=False, capture_output=True,
        )
        pw = pwd.getpwnam(name)  # raises if another process's useradd also failed
        subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
    import grp

    for g in groups:
        if name not in grp.getgrnam(g).gr_mem:
            subprocess.run(["usermod", "-a", "-G", g, name], check=True, capture_output=True)
    h = Path(pw.pw_dir)
    (h / ".ssh" / "keys").mkdir(parents=True, exist_ok=True)
    for p in (h, h / ".ssh", h / ".ssh" / "keys"):
        os.chown(p, pw.pw_uid, pw.pw_gid)
        p.chmod(0o755 if p == h else 0o700)
    return pw


def _keygen(path: Path, comment: str) -> None:
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                       check=True, capture_output=True)


def _pid_alive_with(pid: int, needle: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return needle in cmdline


def free_port(address: str = "127.0.1.1") -> int:
    """A TCP port free on ``address`` right now (small race: good enough for tests)."""
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


@dataclass
class LoopFleet:
    """A loopback fleet rooted at ``dir`` (created); see the module docstring."""

    dir: Path
    n: int
    port: int = 2222
    first: str = "127.0.1.1"
    user: str = ""
    max_startups: int = 2000
    hide: tuple[str, ...] = ()
    engine: bool = False
    addrs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dir = Path(self.dir).resolve()
        self.addrs = addresses(self.n, self.first)
        if not self.user:
            self.user = ENGINE_USER if self.engine else DEFAULT_USER

    # paths -------------------------------------------------------------------------
    @property
    def client_key(self) -> Path:
        return self.dir / "client_key"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.dir / "ssh_config"

    def _tag(self) -> str:
        return f"{self.first}-{self.port}".replace(".", "_")

    def _auth_keys(self) -> Path:
        return Path(pwd.getpwnam(self.user).pw_dir) / ".ssh" / "keys" / f"{self._tag()}.pub"

    def _groups(self) -> list[list[str]]:
        return [self.addrs[i:i + PER_PROCESS] for i in range(0, len(self.addrs), PER_PROCESS)]

    def _cfg(self, k: int) -> Path:
        return self.dir / f"sshd-{k:03d}.conf"

    def _pidfile(self, k: int) -> Path:
        return self.dir / f"sshd-{k:03d}.pid"

    # set-up ------------------------------------------------------------------------
    def prepare(self) -> None:
        """Write keys, sshd configurations, known_hosts, ssh_config and the full inventories."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.user == ENGINE_USER:
            pw = ensure_user(self.user, DEFAULT_HOME.with_name(ENGINE_USER), (ENGINE_GROUP,))
        else:
            pw = ensure_user(self.user)
        _keygen(self.client_key, "fleet-bench-client")
        ak = self._auth_keys()
        ak.write_text(self.client_key.with_suffix(".pub").read_text())
        os.chown(ak, pw.pw_uid, pw.pw_gid)
        ak.chmod(0o600)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        kh_lines = []
        setenv = ""
        if self.hide:
            # A device PATH without some commands (e.g. no docker CLI): a farm of links to
            # everything else in /usr/local/bin, /usr/bin and /bin; sshd's SetEnv overrides PATH.
            farm = self.dir / "device-path"
            shutil.rmtree(farm, ignore_errors=True)
            farm.mkdir()
            for d in ("/usr/local/bin", "/usr/bin", "/bin"):
                for e in sorted(Path(d).iterdir()):
                    if e.name not in self.hide and not (farm / e.name).exists():
                        (farm / e.name).symlink_to(e)
            setenv = f"SetEnv PATH={farm}\n"
        for k, group in enumerate(self._groups()):
            hk = self.dir / f"host_key_{k:03d}"
            _keygen(hk, f"fleet-bench-host-{k}")
            pub = " ".join(hk.with_suffix(".pub").read_text().split()[:2])
            kh_lines += [f"[{a}]:{self.port} {pub}" for a in group]
            listen = "\n".join(f"ListenAddress {a}:{self.port}" for a in group)
            # F parallel handshakes must not hit sshd's default 10:30:100 random early drop
            # (max_startups=0 keeps that default, to show what it does)
            startups = f"MaxStartups {self.max_startups}\n" if self.max_startups else ""
            self._cfg(k).write_text(f"""# generated by bench/loopfleet.py: benchmark fleet, process {k}
{listen}
HostKey {hk}
PidFile {self._pidfile(k)}
AuthorizedKeysFile {ak}
AllowUsers {self.user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
StrictModes no
{startups}{setenv}MaxSessions 64
LoginGraceTime 120
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
{"AllowTcpForwarding local" if self.engine else "AllowTcpForwarding no"}
# Ansible copies modules with sftp
Subsystem sftp internal-sftp
LogLevel ERROR
""")
        self.known_hosts.write_text("\n".join(kh_lines) + "\n")
        self.ssh_config.write_text(f"""# OpenSSH client settings for the benchmark fleet (ssh -F {self.ssh_config})
Host *
  User {self.user}
  Port {self.port}
  IdentityFile {self.client_key}
  IdentitiesOnly yes
  UserKnownHostsFile {self.known_hosts}
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ControlMaster no
  ConnectTimeout 30
""")
        self.write_inventories(self.n)

    def write_inventories(self, n: int) -> dict[str, Path]:
        """Inventories for the first ``n`` devices: {"yaml", "pyinfra", "hosts"} -> path."""
        if n > self.n:
            raise ValueError(f"fleet has {self.n} devices, asked for {n}")
        addrs = self.addrs[:n]
        ssh_args = f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes"
        lines = [
            f"# generated by bench/loopfleet.py: {n} loopback devices (fleet and Ansible)",
            "all:",
            "  vars:",
            f"    ansible_user: {self.user}",
            f"    ansible_port: {self.port}",
            f"    ansible_ssh_private_key_file: {self.client_key}",
            f"    ansible_ssh_common_args: '{ssh_args}'",
            "    ansible_python_interpreter: /usr/bin/python3",
            "  children:",
            "    loopback:",
            "      hosts:",
        ]
        lines += [f"        dev{i + 1:04d}: {{ansible_host: {a}}}" for i, a in enumerate(addrs)]
        yml = self.dir / f"inventory-{n}.yml"
        yml.write_text("\n".join(lines) + "\n")
        data = {
            "ssh_user": self.user, "ssh_port": self.port, "ssh_key": str(self.client_key),
            "ssh_known_hosts_file": str(self.known_hosts), "ssh_strict_host_key_checking": "yes",
        }
        py = self.dir / f"pyinfra-{n}.py"
        py.write_text(
            f"# generated by bench/loopfleet.py: {n} loopback devices (pyinfra inventory)\n"
            f"_DATA = {data!r}\n"
            f"_ADDRS = {addrs!r}\n"
            "loopback = [(f'dev{i + 1:04d}', dict(_DATA, ssh_hostname=a)) for i, a in enumerate(_ADDRS)]\n"
        )
        hosts = self.dir / f"hosts-{n}.txt"
        hosts.write_text("\n".join(addrs) + "\n")
        return {"yaml": yml, "pyinfra": py, "hosts": hosts}

    # processes ---------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        """Start one sshd per 16 addresses and wait until every address accepts TCP.

        Raises RuntimeError naming the sshd log if a process fails to start.
        """
        self.prepare()
        for k, _ in enumerate(self._groups()):
            self._pidfile(k).unlink(missing_ok=True)
            log = self.dir / f"sshd-{k:03d}.log"
            r = subprocess.run([SSHD, "-f", str(self._cfg(k)), "-E", str(log)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                self.stop()
                raise RuntimeError(f"sshd {self._cfg(k)} failed ({r.returncode}): {r.stderr.strip()} {log}")
        (self.dir / "fleet.json").write_text(json.dumps({**asdict(self), "dir": str(self.dir)}, indent=1))
        deadline = time.monotonic() + timeout
        pending = list(self.addrs)
        while pending:
            a = pending[-1]
            try:
                with socket.create_connection((a, self.port), timeout=2):
                    pending.pop()
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{a}:{self.port} not listening after {timeout}s; see {self.dir}/sshd-*.log")
                time.sleep(0.05)
        # sshd listens before it daemonizes and writes its pid file: a connect can succeed
        # while the pid file is still missing, and stop() finds listeners by pid file.
        groups = len(list(self._groups()))
        while len(self.pids()) < groups:
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sshd pid files missing after {timeout}s; see {self.dir}/sshd-*.log")
            time.sleep(0.02)

    def pids(self) -> list[int]:
        """Pids of this fleet's running sshd listeners (pid file + cmdline check)."""
        out = []
        for k, _ in enumerate(self._groups()):
            try:
                pid = int(self._pidfile(k).read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if _pid_alive_with(pid, str(self._cfg(k))):
                out.append(pid)
        return out

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the listeners this fleet started (only those) and remove its login key."""
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for pid in pids:
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        for k, _ in enumerate(self._groups()):
            self._pidfile(k).unlink(missing_ok=True)
        try:
            self._auth_keys().unlink(missing_ok=True)
        except KeyError:
            pass

    def __enter__(self) -> "LoopFleet":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _load(dir: Path) -> LoopFleet:
    d = json.loads((Path(dir) / "fleet.json").read_text())
    return LoopFleet(Path(d["dir"]), d["n"], d["port"], d["first"], d["user"], d["max_startups"], tuple(d["hide"]),
                     d.get("engine", False))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Start/stop the loopback benchmark fleet.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("--n", type=int, default=50)
    up.add_argument("--dir", type=Path, default=Path(__file__).parent / "results" / "loopfleet")
    up.add_argument("--port", type=int, default=2222)
    up.add_argument("--first", default="127.0.1.1")
    down = sub.add_parser("down")
    down.add_argument("--dir", type=Path, default=Path(__file__).parent / "results" / "loopfleet")
    a = ap.parse_args(argv)
    if a.cmd == "up":
        f = LoopFleet(a.dir, a.n, a.port, a.first)
        f.start()
        print(f"{a.n} devices on {f.addrs[0]}..{f.addrs[-1]} port {f.port}, "
              f"{len(f.pids())} sshd processes; inventories in {f.dir}")
    else:
        _load(a.dir).stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
