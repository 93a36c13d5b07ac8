"""The mutable inventory graph the format parsers fill (Ansible's ``InventoryData``).

Every parser (YAML, INI, TOML, inventory scripts) adds groups, hosts, children and
variables here, remembering which file set each variable; :mod:`fleet.inventory.load`
then reconciles the graph and freezes it into the model.
"""

from __future__ import annotations

from typing import Any, Mapping

DEFAULT_GROUP_PRIORITY = 1


class GroupData:
    """A group while the inventory is being read."""

    def __init__(self, name: str):
        self.name = name
        self.vars: dict[str, Any] = {}
        self.var_sources: dict[str, str] = {}
        self.hosts: list[str] = []
        self.children: list[str] = []
        self.parents: list[str] = []
        self.priority = DEFAULT_GROUP_PRIORITY


class HostData:
    """A host while the inventory is being read; ``source`` is the file that first named it."""

    def __init__(self, name: str, source: str):
        self.name = name
        self.source = source
        self.vars: dict[str, Any] = {}
        self.var_sources: dict[str, str] = {}
        self.groups: list[str] = []


class Builder:
    """Mutable inventory graph filled by the parsers (Ansible's ``InventoryData``).

    ``groups`` and ``hosts`` keep the order in which they were first named, as
    ``InventoryData.groups``/``hosts`` do; pattern matching walks groups in that order.
    """

    def __init__(self) -> None:
        self.groups: dict[str, GroupData] = {}
        self.hosts: dict[str, HostData] = {}
        self.warnings: list[str] = []
        self.add_group("all")
        self.add_group("ungrouped")
        # InventoryData.__init__: 'ungrouped' is the first child of 'all'.
        self.add_child("all", "ungrouped")

    def add_group(self, name: str) -> GroupData:
        if name not in self.groups:
            self.groups[name] = GroupData(name)
        return self.groups[name]

    def add_host(self, name: str, group: str | None, source: str) -> HostData:
        host = self.hosts.get(name)
        if host is None:
            host = self.hosts[name] = HostData(name, source)
        if group is not None:
            grp = self.add_group(group)
            if name not in grp.hosts:
                grp.hosts.append(name)
            if group not in host.groups:
                host.groups.append(group)
        return host

    def set_host_var(self, name: str, key: str, value: Any, source: str) -> None:
        host = self.hosts[name]
        host.vars[key] = value
        host.var_sources[key] = source

    def add_child(self, parent: str, child: str) -> str | None:
        """Link ``child`` under ``parent``; returns an error message for a loop."""
        if parent == child or parent in self._descendants(child):
            return f"adding group {child!r} as a child of {parent!r} creates a loop"
        p, c = self.add_group(parent), self.add_group(child)
        if child not in p.children:
            p.children.append(child)
        if parent not in c.parents:
            c.parents.append(parent)
        return None

    def set_group_var(self, group: str, key: str, value: Any, source: str = "") -> str | None:
        """Set an inline group variable; returns an error message for a bad priority.

        ``ansible_group_priority`` only orders groups of the same depth for variable
        precedence: as in ansible-core ``Group.set_variable`` it sets the priority and
        is not kept as a variable.
        """
        grp = self.add_group(group)
        if key == "ansible_group_priority":
            problem = f"ansible_group_priority of group {group!r} must be an integer, got {value!r}"
            try:  # int() as Ansible: '10' and 10.0 are fine; nan and inf raise
                grp.priority = int(value)
            except (TypeError, ValueError, OverflowError):
                return problem
            return None
        grp.vars[key] = value
        grp.var_sources[key] = source
        return None

    def _descendants(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.groups[name].children) if name in self.groups else []
        while stack:
            g = stack.pop()
            if g not in seen:
                seen.add(g)
                stack.extend(self.groups[g].children)
        return seen


def populate_hosts(
    b: Builder, names: list[str], port: int | None, variables: Mapping[str, Any], group: str | None, source: str
) -> None:
    """Add ``names`` to ``group`` with ``variables`` (``BaseInventoryPlugin._populate_host_vars``)."""
    for name in names:
        b.add_host(name, group, source)
        if port is not None:
            b.set_host_var(name, "ansible_port", port, source)
        for key, value in variables.items():
            b.set_host_var(name, key, value, source)
