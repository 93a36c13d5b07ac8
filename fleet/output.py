"""Terminal output conventions shared by every command.

stdout carries the result: a rich table for people, or with ``--json`` exactly one JSON
document and nothing else. stderr carries progress, warnings and errors.

Text that comes from a device, a file or a registry is data: it is never parsed as rich
markup (``[/usr/sbin/nologin]`` in a login banner is text, not a closing tag) and its
control characters are shown escaped (``\\x1b[2J``), never sent to the terminal
(:func:`visible`). ``--json`` keeps the data exact.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["out", "err", "emit_json", "table", "line", "error", "warn", "visible", "progress_line"]


def _width(stream) -> int | None:
    # rich falls back to 80 columns when the stream is not a terminal, which folds every
    # digest and address in a piped or logged table; use $COLUMNS or a wide default then.
    if stream.isatty():
        return None
    try:
        return max(80, int(os.environ.get("COLUMNS", "")))
    except ValueError:
        return 240


#: Results (tables) go to stdout; never animate or colour when stdout is not a terminal.
out = Console(soft_wrap=False, width=_width(sys.stdout))
#: Progress, warnings and errors go to stderr.
err = Console(stderr=True, soft_wrap=True)

# C0 controls but tab and newline, DEL, C1 controls, and the Unicode bidirectional
# overrides/isolates that reorder what a terminal shows (CVE-2021-42574, "Trojan Source").
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def visible(text: Any) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``, ``\\u202e``):
    what a device printed is displayed, never executed by the terminal."""
    s = str(text)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                        else f"\\u{ord(m.group()):04x}", s)


def emit_json(document: Any) -> None:
    """Write ``document`` as the single JSON document on stdout (exact data: JSON escapes
    control characters itself)."""
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=False, default=str))
    sys.stdout.write("\n")
    sys.stdout.flush()


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A rich Table with ``columns`` and ``rows``; every cell is plain text (never markup,
    controls escaped: :func:`visible`), None or "" shown as "-"."""
    t = Table(title=Text(visible(title)) if title else None, show_lines=False, header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*[Text("-" if v is None or v == "" else visible(v)) for v in r])
    return t


def line(text: Any, console: Console | None = None) -> None:
    """Print one line of plain text (no markup, no highlighting, controls escaped) on
    stdout (or ``console``)."""
    (console or out).print(Text(visible(text)), highlight=False, soft_wrap=True)


def progress_line(text: Any) -> None:
    """One line of progress on stderr (plain text)."""
    line(text, err)


def error(message: str) -> None:
    """Print an error line on stderr (``fleet: error: ...``)."""
    err.print(Text.assemble(("fleet: error: ", "bold red"), visible(message)), highlight=False)


def warn(message: str) -> None:
    """Print a warning line on stderr."""
    err.print(Text.assemble(("warning: ", "yellow"), visible(message)), highlight=False)
