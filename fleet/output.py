"""Terminal output conventions shared by every command.

stdout carries the result: a rich table for people, or with ``--json`` exactly one JSON
document and nothing else. stderr carries progress, warnings and errors.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

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


def emit_json(document: Any) -> None:
    """Write ``document`` as the single JSON document on stdout."""
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=False, default=str))
    sys.stdout.write("\n")
    sys.stdout.flush()


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """Build a rich Table with ``columns`` and ``rows`` (cells rendered with ``str``; None as "-")."""
    t = Table(title=title, show_lines=False, header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*["-" if v is None or v == "" else str(v) for v in r])
    return t


def error(message: str) -> None:
    """Print an error line on stderr (``fleet: error: ...``)."""
    err.print(Text.assemble(("fleet: error: ", "bold red"), str(message)), highlight=False)


def warn(message: str) -> None:
    """Print a warning line on stderr."""
    err.print(Text.assemble(("warning: ", "yellow"), str(message)), highlight=False)
