"""Where run reports are saved, and how: never through a symlink, never readable by others.

Directory: ``--report-dir``, else ``$FLEET_REPORT_DIR``, else
``$XDG_STATE_HOME/fleet/reports`` (``~/.local/state/fleet/reports``), created 0700. A
directory that another user owns, or that is group- or world-writable without the sticky
bit, is refused before any device is touched (exit 2): anyone who can write there could
plant a symlink or swap the file. Files are created with ``mkstemp`` (``O_CREAT|O_EXCL``,
mode 0600, a random name) in that directory and renamed over the final name, which
replaces a planted symlink instead of following it.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from fleet.errors import UsageError
from fleet.output import warn

__all__ = ["ENV_REPORT_DIR", "report_dir", "usable_report_dir", "save_report", "save_text", "state_dir",
           "check_private_dir"]

ENV_REPORT_DIR = "FLEET_REPORT_DIR"


def state_dir() -> Path:
    """``$XDG_STATE_HOME/fleet`` (default ``~/.local/state/fleet``)."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "fleet"


def report_dir(option: str | os.PathLike | None = None) -> Path:
    """The report directory: ``option``, else ``$FLEET_REPORT_DIR``, else
    ``state_dir()/reports``."""
    if option:
        return Path(option)
    if os.environ.get(ENV_REPORT_DIR):
        return Path(os.environ[ENV_REPORT_DIR])
    return state_dir() / "reports"


def check_private_dir(directory: Path, what: str) -> None:
    """Refuse (UsageError, exit 2) a ``directory`` owned by another user, or group- or
    world-writable without the sticky bit; ``what`` names it in the message."""
    st = os.stat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{directory}: the {what} is not a directory")
    if st.st_uid != os.geteuid():
        raise UsageError(f"{directory}: the {what} is owned by uid {st.st_uid}, not by you (uid {os.geteuid()}); "
                         f"another user could replace the files fleet writes there")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        raise UsageError(f"{directory}: the {what} is writable by other users (mode {stat.S_IMODE(st.st_mode):04o}) "
                         f"and has no sticky bit; use a private directory (chmod 700)")


def usable_report_dir(directory: Path) -> Path:
    """Create ``directory`` (0700, parents too) and check it is private and writable BEFORE
    any device is touched, so a bad ``--report-dir`` is a usage error (exit 2), not a lost
    report after a rollout. Raises UsageError naming the directory."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise UsageError(f"{directory}: cannot create the report directory: {exc.strerror or exc}") from None
    check_private_dir(directory, "report directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"{directory}: the report directory is not writable")
    return directory


def save_report(doc: dict[str, Any], directory: Path, name: str) -> Path | None:
    """Write ``doc`` as JSON to ``directory/name`` (0600, atomically, never through a
    symlink). A failure here (disk full...) is a warning: the results were already printed
    and the devices already changed. Returns the path, or None when it could not be saved."""
    return save_text(json.dumps(doc, indent=2, default=str) + "\n", directory, name, "report")


def save_text(text: str, directory: Path, name: str, what: str = "file") -> Path | None:
    """Write ``text`` to ``directory/name`` as :func:`save_report` does (0600, mkstemp and
    an atomic rename, never through a symlink); a failure is a warning naming ``what``."""
    path = directory / name
    fd, tmp = -1, ""
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            fd = -1
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = ""
    except OSError as exc:
        warn(f"{path}: cannot save the {what}: {exc.strerror or exc}")
        return None
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path
