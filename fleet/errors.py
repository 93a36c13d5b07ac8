"""Error types shared by every stage.

Every error a user can act on derives from :class:`FleetError`; the CLI turns it into a
one-line message on stderr and an exit status (2 for bad input or usage, 1 for a failed
device or check) and never shows a traceback for it.
"""

from __future__ import annotations


class FleetError(Exception):
    """Base of every error fleet reports to the user.

    ``exit_code`` is the CLI exit status: 2 for bad input or usage, 1 for a device or
    check that failed.
    """

    exit_code = 1


class UsageError(FleetError):
    """Bad input or usage: a malformed file, an unknown option value, a bad reference.

    The message names the file and line, the device or the reference at fault.
    """

    exit_code = 2


class InputFileError(UsageError):
    """A malformed input file; ``str()`` reads ``FILE:LINE: message`` (line when known)."""

    def __init__(self, path: str, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.reason = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")
