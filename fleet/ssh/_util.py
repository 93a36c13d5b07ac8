"""Small helpers shared by the fleet.ssh modules (no SSH logic here)."""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Any

from fleet.errors import UsageError
from fleet.log import logger
from fleet.output import warn

#: The one logger of the SSH layer (``-v`` connections and decisions, ``-vv`` commands).
log = logger("ssh")

DEFAULT_SSH_PORT = 22

#: Guards the per-process parse caches (ssh config, known_hosts, private keys).
cache_lock = threading.Lock()

_warned: set[str] = set()
_warn_lock = threading.Lock()


def warn_once(message: str, key: str | None = None) -> None:
    """Warn once per ``key`` (default: the message) per process.

    A group variable shared by 1000 devices must not print 1000 warnings: callers pass a
    key without the device name, and the message names the first device affected."""
    key = message if key is None else key
    with _warn_lock:
        if key in _warned:
            return
        _warned.add(key)
    warn(message)


def printable(text: str, limit: int | None = None) -> str:
    """``text`` on one line with control characters escaped (``\\n``, ``\\x1b``...), cut to
    ``limit`` characters: text from a device, an inventory or a proxy is shown, never
    interpreted by the terminal."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if limit is not None and len(out) > limit:
        out = f"{out[:limit]}... ({len(out) - limit} more characters)"
    return out


def file_signature(path: Path) -> tuple | None:
    """(mtime_ns, size, inode) of ``path``, or None when it does not exist."""
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def expand_path(path: str) -> Path:
    """``~`` and environment variables expanded (as the previous fleet.ssh did)."""
    return Path(os.path.expandvars(os.path.expanduser(path)))


def ansible_bool(value: Any) -> bool:
    """Ansible's non-strict ``boolean()`` (ansible.module_utils.parsing.convert_bool)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value == 1
    if isinstance(value, str):
        return value.strip().lower() in ("y", "yes", "on", "1", "true", "t")
    return False


def default_user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # no passwd entry, no LOGNAME: ssh(1) would fail too
        return "root"


def known_hosts_name(hostname: str, port: int) -> str:
    """The name a key is filed under: OpenSSH writes ``[host]:port`` off port 22
    (sshconnect.c put_host_port())."""
    return hostname if port == DEFAULT_SSH_PORT else f"[{hostname}]:{port}"


def parse_port(value: Any, device: str, what: str) -> int:
    """A TCP port 1-65535 from an int or a decimal string; UsageError naming ``device``
    and ``what`` otherwise (booleans, floats, ``nan``/``inf`` included)."""
    if isinstance(value, bool) or isinstance(value, float):
        raise UsageError(f"{device}: {what}: port {value!r} is not a whole number")
    text = str(value).strip()
    if not text.isdigit() or not text.isascii():
        raise UsageError(f"{device}: {what}: port {value!r} is not a number")
    port = int(text)
    if not 0 < port < 65536:
        raise UsageError(f"{device}: {what}: port {port} is out of range")
    return port


def parse_seconds(value: Any, device: str, what: str) -> float:
    """A finite positive number of seconds from an int, float or decimal string.

    UsageError naming ``device`` and ``what`` for anything else: booleans (YAML ``yes``),
    zero or negative values, ``nan``, ``inf`` and text such as ``30s``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UsageError(f"{device}: {what} must be a number of seconds, got {value!r}")
    try:
        seconds = float(value.strip()) if isinstance(value, str) else float(value)
    except (ValueError, OverflowError):
        raise UsageError(f"{device}: {what} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(f"{device}: {what} must be a finite number of seconds above 0, got {value!r}")
    return seconds
