"""The ``fleet`` command line (typer).

Conventions (DEVELOPERS.md): a human table on stdout and progress on stderr; with
``--json`` stdout holds exactly one JSON document. Exit status 0 all good, 1 a device or
check failed, 2 bad input or usage (a message naming the file/line, device or reference;
never a traceback).
"""

from __future__ import annotations

import sys

import typer

from fleet import __version__
from fleet.errors import FleetError
from fleet.output import error

app = typer.Typer(
    name="fleet",
    help="Deploy containerized apps to mixed-architecture IoT fleets, each device on its own platform's image.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fleet {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """fleet: probe, publish, deploy and verify multi-arch images on device fleets."""


def main() -> None:
    """Console-script entry point: runs the app and maps FleetError to its exit status."""
    try:
        app(standalone_mode=True)
    except FleetError as exc:  # raised outside a command body (e.g. in a callback)
        error(str(exc))
        sys.exit(exc.exit_code)
