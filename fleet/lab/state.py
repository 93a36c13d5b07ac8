"""Lab directory layout, recorded state and the processes the lab started.

Everything the lab owns lives under one lab directory (default ``/var/lib/fleet-lab``,
overridable with ``--lab-dir`` or ``FLEET_LAB_DIR``). Process records carry the pid, the
kernel's start time of that pid (``/proc/PID/stat`` field 22, clock ticks since boot),
the boot id and a marker string that must appear in its command line, so a pid left in
a state file by a crash or a reboot is never signalled once the kernel has given it to
another process.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from fleet.errors import UsageError

DEFAULT_LAB_DIR = Path("/var/lib/fleet-lab")
ENV_LAB_DIR = "FLEET_LAB_DIR"


def resolve_lab_dir(option: str | Path | None) -> Path:
    """``--lab-dir`` if given, else ``$FLEET_LAB_DIR``, else /var/lib/fleet-lab (absolute)."""
    raw = option or os.environ.get(ENV_LAB_DIR) or DEFAULT_LAB_DIR
    return Path(os.path.abspath(os.fspath(raw)))


@dataclass(frozen=True)
class LabPaths:
    """Files and folders of one lab directory (see the module docstring)."""

    root: Path

    @property
    def state(self) -> Path: return self.root / "state.json"
    @property
    def cache(self) -> Path: return self.root / "cache"
    def debs(self, arch: str) -> Path: return self.cache / "debs" / arch
    def arch_root(self, arch: str) -> Path: return self.cache / "root" / arch
    @property
    def ssh_dir(self) -> Path: return self.root / "ssh"
    @property
    def key(self) -> Path: return self.ssh_dir / "id_ed25519"
    @property
    def known_hosts(self) -> Path: return self.root / "known_hosts"
    @property
    def inventory(self) -> Path: return self.root / "inventory.yaml"
    @property
    def ns_dir(self) -> Path: return self.root / "ns"
    @property
    def registry_dir(self) -> Path: return self.root / "registry"
    @property
    def host_engine_log(self) -> Path: return self.root / "host-dockerd.log"
    def device_dir(self, name: str) -> Path: return self.root / "devices" / name
    def mntns(self, name: str) -> Path: return self.ns_dir / f"{name}.mnt"


def ensure_chroot_safe_dir(path: Path) -> None:
    """Create ``path`` (0755, root) and check every component is root-owned and not
    group/world-writable, which sshd demands of a ChrootDirectory (sshd_config(5)).

    Raises UsageError naming the offending component (e.g. anything under /tmp).
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o755)
    cur = Path("/")
    for part in path.parts[1:]:
        cur = cur / part
        st = os.stat(cur)
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UsageError(
                f"lab directory {path}: component {cur} is not root-owned or is group/world-writable "
                "(sshd's ChrootDirectory refuses that); pick e.g. /var/lib/fleet-lab"
            )


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may hold spaces and parentheses: fields resume after the last ')'.
    return raw[raw.rindex(")") + 2:].split()


def start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (proc(5) stat field 22), or None."""
    f = _stat_fields(pid)
    return int(f[19]) if f else None


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def is_running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    f = _stat_fields(pid)
    return bool(f) and f[0] not in ("Z", "X")


@dataclass
class ProcRecord:
    """A process the lab started: pid + start time + boot id + a command-line marker."""

    pid: int
    start: int
    boot: str
    marker: str

    def alive(self) -> bool:
        """True only if this very process still runs (not a recycled pid)."""
        if self.boot != boot_id() or not is_running(self.pid):
            return False
        if start_time(self.pid) != self.start:
            return False
        return any(self.marker in a for a in cmdline(self.pid))

    @classmethod
    def of(cls, pid: int, marker: str) -> "ProcRecord":
        return cls(pid=pid, start=start_time(pid) or 0, boot=boot_id(), marker=marker)

    @classmethod
    def load(cls, d: dict | None) -> "ProcRecord | None":
        return cls(**d) if d else None


def load_state(paths: LabPaths) -> dict:
    try:
        return json.loads(paths.state.read_text())
    except (OSError, ValueError):
        return {"devices": {}}


def save_state(paths: LabPaths, state: dict) -> None:
    tmp = paths.state.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=lambda o: asdict(o)))
    os.replace(tmp, paths.state)


# -- finding and stopping processes ------------------------------------------------------

def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _ns_ino(pid: int, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def _ppid(pid: int) -> int | None:
    f = _stat_fields(pid)
    return int(f[1]) if f else None


def _protected() -> set[int]:
    """Our own pid and its ancestors (a `down` must never signal its caller)."""
    out = {0, 1}
    pid: int | None = os.getpid()
    while pid and pid not in out:
        out.add(pid)
        pid = _ppid(pid)
    return out


def find_processes(*, markers: Iterable[str] = (), ns_files: Iterable[Path] = ()) -> list[int]:
    """Pids whose command line contains one of ``markers`` or that live in one of the
    namespaces bound at ``ns_files`` (mount or network namespace files), plus all their
    descendants; never this process or its ancestors.
    """
    markers = [m for m in markers if m]
    inos: set[int] = set()
    for f in ns_files:
        try:
            st = os.stat(f)
        except OSError:
            continue
        # A plain file (namespace not bound any more, e.g. after a reboot) is not nsfs.
        if st.st_size == 0 and stat.S_ISREG(st.st_mode) and _is_nsfs(f):
            inos.add(st.st_ino)
    protected = _protected()
    pids = all_pids()
    hits: set[int] = set()
    children: dict[int, list[int]] = {}
    for pid in pids:
        pp = _ppid(pid)
        if pp is not None:
            children.setdefault(pp, []).append(pid)
        if pid in protected:
            continue
        if inos and (_ns_ino(pid, "mnt") in inos or _ns_ino(pid, "net") in inos):
            hits.add(pid)
            continue
        if markers:
            cl = cmdline(pid)
            if any(m in a for a in cl for m in markers):
                hits.add(pid)
    todo = list(hits)
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in hits and c not in protected:
                hits.add(c)
                todo.append(c)
    return sorted(hits)


def _is_nsfs(path: Path) -> bool:
    from fleet.lab.mounts import mounts
    return any(m.point == str(path) and m.fstype == "nsfs" for m in mounts())


def terminate(pids: Iterable[int], timeout: float = 15.0) -> None:
    """SIGTERM ``pids`` (with their start times recorded first), wait up to ``timeout``
    seconds, then SIGKILL the ones still there. A pid whose start time changed in
    between (recycled) is left alone."""
    recs = {p: start_time(p) for p in pids}
    recs = {p: s for p, s in recs.items() if s is not None}
    for p in recs:
        _signal(p, recs[p], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(is_running(p) and start_time(p) == s for p, s in recs.items()):
            return
        time.sleep(0.1)
    for p, s in recs.items():
        if is_running(p) and start_time(p) == s:
            _signal(p, s, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(is_running(p) and start_time(p) == s for p, s in recs.items()):
        time.sleep(0.05)


def _signal(pid: int, start: int, sig: int) -> None:
    if start_time(pid) != start:
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def rss_kib(pids: Iterable[int]) -> int:
    """Sum of VmRSS (KiB) of ``pids``."""
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total
