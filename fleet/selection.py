"""The devices one command run works on: inventory paths, ``--limit``, ``--forks`` and the
run-wide SSH settings, with the inventory parsed once per run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # fleet.ssh imports paramiko: keep `fleet --help` light
    from fleet.inventory import Host, Inventory
    from fleet.ssh import SSHSettings

__all__ = ["DeviceSelection"]


@dataclass(frozen=True)
class DeviceSelection:
    """``inventory`` paths (``-i``, repeatable), ``limit`` (an Ansible host pattern or
    None), ``forks`` (devices worked on at once) and the run-wide :class:`fleet.ssh.SSHSettings`."""

    inventory: tuple[str, ...]
    limit: str | None
    forks: int
    settings: "SSHSettings"
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def load(self) -> "Inventory":
        """The parsed inventory (all hosts), read once per run. Raises InputFileError
        (file:line, exit 2) for a malformed inventory."""
        if "inventory" not in self._cache:
            from fleet.inventory import load_inventory

            self._cache["inventory"] = load_inventory(list(self.inventory))
        return self._cache["inventory"]

    def hosts(self) -> list["Host"]:
        """The selected hosts (Ansible's order). Raises InputFileError (file:line) for a
        malformed inventory and UsageError for a malformed ``--limit`` pattern or one
        matching nothing: both exit status 2."""
        if "hosts" not in self._cache:
            self._cache["hosts"] = self.load().select(self.limit)
        return list(self._cache["hosts"])
