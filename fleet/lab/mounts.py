"""Reading /proc/self/mountinfo and undoing the lab's mounts (proc(5), mountinfo)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Mount:
    point: str
    fstype: str
    source: str


def _unescape(s: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \\ooo (octal).
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and s[i + 1:i + 4].isdigit() and len(s[i + 1:i + 4]) == 3:
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def mounts(pid: str = "self") -> list[Mount]:
    """Mounts of the mount namespace of ``pid`` in mountinfo order."""
    res = []
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        f, r = left.split(), right.split()
        res.append(Mount(_unescape(f[4]), r[0] if r else "", r[1] if len(r) > 1 else ""))
    return res


def mount_points(pid: str = "self") -> set[str]:
    return {m.point for m in mounts(pid)}


def is_mount_point(path: Path) -> bool:
    return str(path) in mount_points()


def umount_under(root: Path) -> list[str]:
    """Lazily unmount every mount at or below ``root`` in this namespace, deepest first.

    Returns the mount points undone."""
    prefix = str(root).rstrip("/") + "/"
    pts = [m.point for m in mounts() if m.point == str(root) or m.point.startswith(prefix)]
    done = []
    for p in sorted(set(pts), key=lambda s: s.count("/"), reverse=True):
        subprocess.run(["umount", "-l", p], check=False, capture_output=True)
        done.append(p)
    return done
