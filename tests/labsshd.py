"""A second sshd on a lab device, for lab tests and benchmarks that need a login or a view
of the device that the device's own sshd does not give, without touching that sshd (other
sessions share it).

:class:`DeviceSshd` starts ``/usr/sbin/sshd -D`` in the device's network namespace and in
a private child of the device's mount namespace (fleet/lab/devices.py: where the device's
``/proc``, cpuinfo and the engine's socket folder are mounted), chrooted into the
device's root filesystem with the device's own host key, as the device's sshd is. So a
login there is a login on that device: same userland, same engine. The differences are
what the caller asks for:

- ``port``: it listens on the device's address and this port (the device's sshd keeps 22);
- ``users`` and ``authorized_keys``: who may log in (host accounts: sshd resolves the
  user before it enters the chroot) with which public keys (lines; default the device's
  own authorized_keys file; sshd reads the file as the user, so it is written in this
  server's world-readable folder);
- ``binds``: ``{host path: path inside the device's root filesystem}`` bind-mounted in
  the private mount namespace only, e.g. a counting proxy socket over the engine's
  socket, seen by this sshd's logins and nobody else;
- ``extra``: sshd_config lines appended (``AllowStreamLocalForwarding no``...).

``stop()`` kills the sshd it started (its pid checked against its own configuration
path) and its sessions; the private mount namespace ends with its last process.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from fleet.lab import net
from fleet.lab.profiles import PROFILES
from fleet.lab.state import LabPaths

SSHD = "/usr/sbin/sshd"


class DeviceSshd:
    """An extra sshd on lab device ``device`` of the lab in ``lab_dir`` (module docstring)."""

    def __init__(self, lab_dir: Path, device: str, port: int, users: list[str], *,
                 authorized_keys: str | None = None, binds: dict[str, str] | None = None, extra: str = ""):
        self.paths = LabPaths(Path(lab_dir))
        self.device = device
        self.dir = self.paths.device_dir(device)
        self.rootfs = self.dir / "rootfs"
        self.address = net.device_address(PROFILES[device].octet)
        self.port = port
        self.users = users
        self.binds = dict(binds or {})
        self.extra = extra
        # sshd reads its files as root; the chroot rule applies to the root filesystem only
        self.work = Path(tempfile.mkdtemp(prefix=f"fleet-devsshd-{device}-", dir="/tmp"))
        self.work.chmod(0o755)
        self.authorized_keys = self.dir / "authorized_keys"
        if authorized_keys is not None:
            self.authorized_keys = self.work / "authorized_keys"
            self.authorized_keys.write_text(authorized_keys)
            self.authorized_keys.chmod(0o644)
        self.config = self.work / "sshd_config"
        self.pidfile = self.work / "sshd.pid"
        self.log = self.work / "sshd.log"
        self.proc: subprocess.Popen | None = None

    @property
    def host_key_line(self) -> str:
        """known_hosts line for ``[address]:port`` with the device's host key."""
        kind, blob = (self.dir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        return f"[{self.address}]:{self.port} {kind} {blob}"

    def start(self, timeout: float = 20.0) -> "DeviceSshd":
        self.config.write_text(
            f"# extra sshd on lab device {self.device} (tests/labsshd.py)\n"
            f"ListenAddress {self.address}:{self.port}\n"
            f"HostKey {self.dir / 'ssh_host_ed25519_key'}\n"
            f"PidFile {self.pidfile}\n"
            f"AuthorizedKeysFile {self.authorized_keys}\n"
            f"AllowUsers {' '.join(self.users)}\n"
            f"ChrootDirectory {self.rootfs}\n"
            "PermitRootLogin no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nUsePAM no\nStrictModes no\nX11Forwarding no\n"
            "AllowTcpForwarding local\nPrintMotd no\nPrintLastLog no\nMaxStartups 64:30:128\n"
            "LogLevel ERROR\n" + self.extra)
        mounts = "".join(f"mount --bind {shlex.quote(src)} {shlex.quote(str(self.rootfs) + dst)} && " for src, dst in self.binds.items())
        argv = ["nsenter", f"--net={net.netns_path(self.device)}", f"--mount={self.paths.mntns(self.device)}", "--",
                "unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", f"{mounts}exec {SSHD} -D -f {shlex.quote(str(self.config))} -E {shlex.quote(str(self.log))}"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.work / "start.err", "wb"), start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"extra sshd on {self.device} exited {self.proc.returncode}: "
                                   f"{(self.work / 'start.err').read_text()} {self.log.read_text() if self.log.exists() else ''}")
            if self.pidfile.exists() and self._answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"extra sshd on {self.device} did not answer on {self.address}:{self.port} in {timeout:g} s")

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.address, self.port), timeout=1) as s:
                s.settimeout(2)
                return s.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill this sshd and every process its sessions started, then remove its files."""
        if self.proc is not None:
            # the listener's sessions call setsid(): found by parent pid, not process group
            pids = [self.proc.pid, *_descendants(self.proc.pid)] if self.proc.poll() is None else []
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(10)
        shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> "DeviceSshd":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc/*/stat parent pids)."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            parent[int(d)] = int(stat[stat.rindex(")") + 2:].split()[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out
