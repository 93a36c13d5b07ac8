"""Command-line options shared by every command that works on devices of an inventory.

Every fan-out command takes the same selection and SSH options, spelled as in Ansible
where Ansible has them::

    -i/--inventory PATH (repeatable)   --limit/-l PATTERN   --forks/-f N
    --known-hosts PATH (repeatable)    --accept-new         --timeout S

A command declares them with the ``Annotated`` aliases below and turns the values into a
:class:`fleet.selection.DeviceSelection` with :func:`selection`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fleet.fanout import DEFAULT_FORKS
from fleet.selection import DeviceSelection

__all__ = [
    "InventoryOpt",
    "LimitOpt",
    "ForksOpt",
    "KnownHostsOpt",
    "AcceptNewOpt",
    "TimeoutOpt",
    "JsonOpt",
    "VerboseOpt",
    "PlatformOpt",
    "ReportDirOpt",
    "selection",
]

InventoryOpt = Annotated[
    list[str],
    typer.Option(
        "--inventory",
        "-i",
        metavar="INVENTORY",
        help="Ansible inventory: INI, YAML, TOML file, inventory script or directory; repeat to merge several.",
    ),
]
LimitOpt = Annotated[
    Optional[str],
    typer.Option("--limit", "-l", metavar="PATTERN", help="Ansible host pattern: only these hosts/groups (@FILE: the names in FILE, one per line)."),
]
ForksOpt = Annotated[
    int,
    typer.Option("--forks", "-f", min=1, metavar="N", help="Devices worked on at once."),
]
KnownHostsOpt = Annotated[
    Optional[list[Path]],
    typer.Option(
        "--known-hosts",
        metavar="PATH",
        help="known_hosts file(s) to verify host keys against, instead of ~/.ssh/known_hosts.",
    ),
]
AcceptNewOpt = Annotated[
    bool,
    typer.Option("--accept-new", help="Record host keys of devices not yet known (never changed keys)."),
]
TimeoutOpt = Annotated[
    float,
    typer.Option("--timeout", min=0.1, metavar="S", help="SSH connection timeout in seconds (TCP, key exchange, each auth step)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document (a list of per-device objects), also when the command fails.")]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True,
                                         help="Diagnostics on stderr: -v connections and decisions, -vv remote commands "
                                              "and registry requests, -vvv the wire (secrets always masked).")]
PlatformOpt = Annotated[Optional[list[str]], typer.Option(
    "--platform", metavar="PLATFORM",
    help="Publish exactly these platforms (repeatable or a comma list, e.g. linux/arm/v6,linux/arm64), "
         "instead of the playbook's list or 'auto'.")]
ReportDirOpt = Annotated[Optional[str], typer.Option(
    "--report-dir", metavar="DIR",
    help="Save the JSON report here (default $FLEET_REPORT_DIR, else $XDG_STATE_HOME/fleet/reports, "
         "i.e. ~/.local/state/fleet/reports).")]

DEFAULT_TIMEOUT = 10.0


def selection(
    inventory: list[str],
    limit: str | None,
    forks: int = DEFAULT_FORKS,
    known_hosts: list[Path] | None = None,
    accept_new: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> DeviceSelection:
    """Build a :class:`DeviceSelection` from the shared options' values.

    Raises :class:`fleet.errors.UsageError` when no ``-i/--inventory`` is given.
    """
    from fleet.errors import UsageError
    from fleet.ssh import SSHSettings

    if not inventory:
        raise UsageError("no inventory: give at least one -i/--inventory PATH")
    for p in known_hosts or ():
        if Path(p).is_dir():
            raise UsageError(f"--known-hosts {p}: is a directory (give a known_hosts file)")
    settings = SSHSettings(
        known_hosts=tuple(Path(p) for p in known_hosts or ()),
        accept_new=accept_new,
        connect_timeout=timeout,
    )
    return DeviceSelection(tuple(inventory), limit or None, forks, settings)
