"""The loaded inventory: hosts, groups, and the host order Ansible uses.

Host order follows ansible-core ``Group._get_hosts`` (``lib/ansible/inventory/group.py``):
a group's hosts are its own hosts, then those of its children, then of their children,
level by level (breadth first, each group's children in the order they were added). For
``all`` that means hosts placed directly in ``all`` first, then ``ungrouped``, then the
top-level groups... With ``[kitchen] pi-k1``, ``[garage] pi-g1`` and
``[sensors:children] kitchen``, ``all[0]`` is ``pi-g1``, as in Ansible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from fleet.errors import UsageError
from fleet.inventory.builder import DEFAULT_GROUP_PRIORITY

__all__ = ["UnsafeText", "is_template", "Host", "Group", "Inventory"]

# Jinja2's default block, variable and comment start strings: Ansible templates any
# string containing one of them (``is_possibly_template`` in ansible.template).
_TEMPLATE_MARKERS = ("{{", "{%", "{#")


class UnsafeText(str):
    """A string marked ``!unsafe`` in YAML: Ansible never templates it, nor does fleet."""

    __slots__ = ()


def is_template(value: Any) -> bool:
    """True when ``value`` (or any string inside a list/mapping) is a Jinja template.

    A string is a template when it contains ``{{``, ``{%`` or ``{#`` and is not
    :class:`UnsafeText`; fleet cannot evaluate templates.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not isinstance(item, UnsafeText) and any(m in item for m in _TEMPLATE_MARKERS):
                return True
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


@dataclass(frozen=True)
class Host:
    """One inventory host with its fully merged variables.

    ``vars`` holds every inventory variable in Ansible's precedence (all, groups by depth
    then ``ansible_group_priority`` then name, group_vars files, host, host_vars files),
    as written: how connection variables (and their old spellings such as
    ``ansible_ssh_host``) become an SSH target is :func:`fleet.ssh.target_for`'s business.
    ``groups`` lists every group the host belongs to, ancestors included, in that
    precedence order, starting with ``"all"``. ``source`` is the inventory file that
    first defined the host. ``var_sources`` maps a variable to the file that set the
    value in ``vars`` (an inventory, group_vars or host_vars file, or an inventory
    script), where known.

    Values are kept as read: a Jinja template (``"{{ x }}"``) is not evaluated, and
    loading never fails on one (unused templated values are fine, as in Ansible); read
    variables that fleet acts on with :meth:`var`, which refuses templates.
    """

    name: str
    vars: Mapping[str, Any] = field(compare=False, hash=False)
    groups: tuple[str, ...] = ()
    source: str = ""
    var_sources: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def var(self, name: str, default: Any = None) -> Any:
        """The value of variable ``name``, or ``default`` when the host has none.

        Raises :class:`UsageError` (exit 2) naming the host, the variable and the file
        that set it when the value is a Jinja template (a string containing ``{{``,
        ``{%`` or ``{#``, or a list/mapping holding one): fleet does not evaluate
        templates, and using the text literally would connect to or deploy the wrong
        thing (issue 12). ``!unsafe`` strings are literal, as in Ansible.
        """
        if name not in self.vars:
            return default
        value = self.vars[name]
        if is_template(value):
            source = self.var_sources.get(name)
            where = f" (set in {source})" if source else ""
            raise UsageError(
                f"host {self.name!r}: variable {name} is a Jinja template{where}, which fleet does not "
                f"evaluate: {value!r}; give the value itself"
            )
        return value


@dataclass(frozen=True)
class Group:
    """One inventory group.

    ``vars`` are the group's own variables (inline inventory vars, then its group_vars
    files); ``hosts`` the hosts placed directly in it; ``children``/``parents`` group
    names in the order they were linked; ``depth`` its longest distance from ``all``
    (Ansible's ``Group.depth``); ``priority`` its ``ansible_group_priority`` (default
    1), which only orders groups of the same depth for variable precedence and is not a
    variable.
    """

    name: str
    vars: Mapping[str, Any] = field(compare=False, hash=False)
    hosts: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    parents: tuple[str, ...] = ()
    depth: int = 0
    priority: int = DEFAULT_GROUP_PRIORITY


class Inventory:
    """A loaded inventory: ``hosts`` (definition order) and ``groups`` by name.

    ``warnings`` collects what Ansible would only warn about (unexpected keys in a YAML
    group, a ``group_vars`` path that is not a directory...); callers may print them.
    """

    def __init__(self, hosts: dict[str, Host], groups: dict[str, Group], warnings_: list[str]):
        self.hosts = hosts
        self.groups = groups
        self.warnings = warnings_
        self._group_hosts: dict[str, list[str]] = {}

    def group_hosts(self, name: str) -> list[str]:
        """Names of the hosts in group ``name`` or any group below it, in Ansible's order.

        The group's own hosts, then its children's, then their children's, level by level
        (ansible-core ``Group._get_hosts`` and ``_walk_relationship``; Ansible visits
        the groups of one level in set order from the second level down, fleet in the
        order they were linked). ``all`` lists every host.

        Raises KeyError for an unknown group.
        """
        cached = self._group_hosts.get(name)
        if cached is None:
            order = [self.groups[name]]
            seen = {name}
            level = [name]
            while level:
                nxt = []
                for g in level:
                    for child in self.groups[g].children:
                        if child not in seen:
                            seen.add(child)
                            nxt.append(child)
                            order.append(self.groups[child])
                level = nxt
            hosts: dict[str, None] = {}
            for group in order:
                for h in group.hosts:
                    hosts.setdefault(h, None)
            cached = self._group_hosts[name] = list(hosts)
        return list(cached)

    def ordered_hosts(self) -> list[Host]:
        """Every host in the order ``ansible all --list-hosts`` prints them."""
        return [self.hosts[n] for n in self.group_hosts("all")]

    def select(self, limit: str | None) -> list[Host]:
        """The hosts an Ansible host pattern (``--limit``) selects, in Ansible's host order.

        See :func:`fleet.inventory.patterns.select` for the pattern syntax (including
        ``@FILE``) and the errors raised.
        """
        from fleet.inventory.patterns import select

        return select(self, limit)
