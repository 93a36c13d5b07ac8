"""Command-line options shared by every command that works on devices of an inventory.

``probe``, ``facts`` (and later ``plan``/``publish``/``deploy``/``verify``) take the same
selection and SSH options, spelled as in Ansible where Ansible has them::

    -i/--inventory PATH (repeatable)   --limit/-l PATTERN   --forks/-f N
    --known-hosts PATH (repeatable)    --accept-new         --timeout S

A command declares them with the ``Annotated`` aliases below and turns the values into a
:class:`DeviceSelection` with :func:`selection`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from fleet.fanout import DEFAULT_FORKS

if TYPE_CHECKING:  # fleet.ssh imports paramiko: keep `fleet --help` light
    from fleet.inventory import Host
    from fleet.ssh import SSHSettings

__all__ = [
    "InventoryOpt",
    "LimitOpt",
    "ForksOpt",
    "KnownHostsOpt",
    "AcceptNewOpt",
    "TimeoutOpt",
    "JsonOpt",
    "DeviceSelection",
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
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document (a list of per-device objects).")]

DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class DeviceSelection:
    """The parsed shared options: inventory paths, ``--limit`` pattern, forks, and the
    run-wide :class:`fleet.ssh.SSHSettings`."""

    inventory: tuple[str, ...]
    limit: str | None
    forks: int
    settings: "SSHSettings"

    def hosts(self) -> list["Host"]:
        """Load the inventory and select hosts (inventory order).

        Raises InputFileError (file:line) for a malformed inventory and UsageError for a
        malformed ``--limit`` pattern or one matching nothing: both exit status 2.
        """
        # Several stages of one command (usage checks, probe, rollout) ask for the hosts:
        # read and parse the inventory files once per run.
        cached = self.__dict__.get("_hosts")
        if cached is None:
            from fleet.inventory import load_inventory

            cached = load_inventory(list(self.inventory)).select(self.limit)
            object.__setattr__(self, "_hosts", cached)
        return list(cached)


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
