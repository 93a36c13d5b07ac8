"""Ansible inventories, read as Ansible reads them.

Users already describe their devices in Ansible inventories, so fleet reads the same
files rather than inventing a format:

* YAML inventories (``all``/``children``/``hosts``/``vars``, nested groups, any top-level
  group) - ansible-core ``lib/ansible/plugins/inventory/yaml.py``;
* INI inventories (``[group]``, ``[group:children]``, ``[group:vars]``,
  ``host key=value``) - ``lib/ansible/plugins/inventory/ini.py``;
* host ranges ``pi[01:50]``, ``node-[a:f]``, ``h[1:10:2]`` in both formats -
  ``expand_hostname_range`` in ``lib/ansible/plugins/inventory/__init__.py``;
* ``group_vars/`` and ``host_vars/`` beside each inventory source - the
  ``host_group_vars`` vars plugin;
* an inventory directory (every file in it, hidden/backup files skipped) and several
  ``-i`` sources merged - ``lib/ansible/inventory/manager.py``;
* variable precedence of ``lib/ansible/vars/manager.py`` (``VARIABLE_PRECEDENCE``) and
  ``lib/ansible/inventory/helpers.py`` (``sort_groups``);
* host patterns for ``--limit`` - ``InventoryManager.get_hosts`` and friends.

Dynamic inventories (scripts, plugin configuration files) are not run: fleet only reads
static files. Everything is pure parsing; errors are :class:`InputFileError` naming
``FILE:LINE`` or :class:`UsageError`, never a traceback.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import ipaddress
import os
import re
import shlex
import string
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

import yaml

from fleet.errors import InputFileError, UsageError

__all__ = [
    "Group",
    "Host",
    "Inventory",
    "expand_hostname_range",
    "load_inventory",
    "parse_address",
]

#: Old connection-variable spellings Ansible's ssh connection plugin still reads. The
#: plugin lists them after the new names, so when both are set the old spelling wins
#: (ansible-core lib/ansible/plugins/connection/ssh.py, option ``vars:`` order).
VARIABLE_ALIASES: Mapping[str, str] = {
    "ansible_ssh_host": "ansible_host",
    "ansible_ssh_port": "ansible_port",
    "ansible_ssh_user": "ansible_user",
}

# Extensions the yaml inventory plugin and the host_group_vars plugin accept
# (C.YAML_FILENAME_EXTENSIONS).
_YAML_EXTENSIONS = (".yml", ".yaml", ".json")

# Inventory-directory entries Ansible never loads: hidden files, the vars folders, and
# INVENTORY_IGNORE_EXTS (REJECT_EXTS + .orig, .cfg, .retry) - inventory/manager.py.
_IGNORED_ENTRY = re.compile(
    r"^\.|^host_vars$|^group_vars$|^vars_plugins$|"
    r"(\.pyc|\.pyo|\.swp|\.bak|~|\.rpm|\.md|\.txt|\.rst|\.orig|\.cfg|\.retry)$"
)

_DEFAULT_GROUP_PRIORITY = 1


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Host:
    """One inventory host with its fully merged variables.

    ``vars`` holds every inventory variable in Ansible's precedence (all, groups by depth
    then ``ansible_group_priority`` then name, group_vars files, host, host_vars files);
    old spellings (``ansible_ssh_host``...) are also copied to the new names.
    ``groups`` lists every group the host belongs to, ancestors included, in that
    precedence order, starting with ``"all"``. ``source`` is the inventory file that
    first defined the host.
    """

    name: str
    vars: Mapping[str, Any] = field(compare=False, hash=False)
    groups: tuple[str, ...] = ()
    source: str = ""

    @property
    def address(self) -> str:
        """The address to connect to: ``ansible_host`` or else the inventory name."""
        return str(self.vars.get("ansible_host", self.name))

    @property
    def port(self) -> int | None:
        """``ansible_port`` as an int (validated at load time), or None when unset."""
        value = self.vars.get("ansible_port")
        return None if value is None else int(value)

    @property
    def user(self) -> str | None:
        """``ansible_user``, or None when unset (the SSH layer then uses ~/.ssh/config)."""
        value = self.vars.get("ansible_user")
        return None if value is None else str(value)


@dataclass(frozen=True)
class Group:
    """One inventory group.

    ``vars`` are the group's own variables (inline inventory vars, then its group_vars
    files); ``hosts`` the hosts placed directly in it; ``children``/``parents`` group
    names; ``depth`` its distance from ``all`` (Ansible's ``Group.depth``); ``priority``
    its ``ansible_group_priority`` (default 1).
    """

    name: str
    vars: Mapping[str, Any] = field(compare=False, hash=False)
    hosts: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    parents: tuple[str, ...] = ()
    depth: int = 0
    priority: int = _DEFAULT_GROUP_PRIORITY


class Inventory:
    """A loaded inventory: ``hosts`` (definition order) and ``groups`` by name.

    ``warnings`` collects what Ansible would only warn about (unexpected keys in a YAML
    group, a ``group_vars`` path that is not a directory...); callers may print them.
    """

    def __init__(self, hosts: dict[str, Host], groups: dict[str, Group], warnings_: list[str]):
        self.hosts = hosts
        self.groups = groups
        self.warnings = warnings_

    def group_hosts(self, name: str) -> list[str]:
        """Names of the hosts in group ``name`` or any group below it, in inventory order.

        Raises KeyError for an unknown group.
        """
        members: set[str] = set()
        stack, seen = [name], set()
        while stack:
            group = self.groups[stack.pop()]
            if group.name in seen:
                continue
            seen.add(group.name)
            members.update(group.hosts)
            stack.extend(group.children)
        if name == "all":
            return list(self.hosts)
        return [h for h in self.hosts if h in members]

    def select(self, limit: str | None) -> list[Host]:
        """The hosts an Ansible host pattern (``--limit``) selects, in inventory order.

        ``limit`` is None/"" (every host) or patterns separated by ``,`` (or, when there
        is no comma and the whole text is not a host address such as ``fe80::1`` or
        ``web:2222``, by ``:``). Each pattern is a host or group name, an fnmatch glob,
        ``~regex`` (``re.match``), optionally with a ``[i]``/``[i:j]`` subscript, and
        prefixed ``&`` (intersection) or ``!`` (exclusion). As in ansible-core's
        ``InventoryManager._evaluate_patterns``, unions apply first, then
        intersections, then exclusions; a group name selects its hosts and those of
        every group below it.

        Raises UsageError for a malformed pattern (empty, bad regex, subscript out of
        range), for a pattern matching no host or group (Ansible only warns: here an
        empty or mistyped target set must never deploy to the wrong devices), and when
        the whole selection is empty.
        """
        if limit is None or not limit.strip():
            if not self.hosts:
                raise UsageError("the inventory defines no hosts")
            return list(self.hosts.values())
        patterns = split_host_pattern(limit)
        if not patterns:
            raise UsageError(f"malformed host pattern {limit!r}: no pattern in it")
        if "," not in limit:
            # The ':' split drops what it cannot read (an unclosed '[' in '~[', 'a:[x');
            # Ansible then silently uses the rest, which would widen the selection.
            leftover = re.sub(r"(?:[^\s:\[\]]|\[[^\]]*\])+", "", limit)
            if len(patterns) > 1 and leftover.strip(": \t") or (len(patterns) == 1 and patterns[0] != limit.strip()):
                raise UsageError(f"malformed host pattern {limit!r}: unbalanced '[' or ']'")
        selected: list[str] = []
        for pattern in _order_patterns(patterns):
            if pattern in ("!", "&"):
                raise UsageError(f"malformed host pattern {pattern!r} in {limit!r}")
            matched = self._match_one_pattern(pattern)
            if pattern[0] == "!":
                drop = set(matched)
                selected = [h for h in selected if h not in drop]
            elif pattern[0] == "&":
                keep = set(matched)
                selected = [h for h in selected if h in keep]
            else:
                have = set(selected)
                selected.extend(h for h in matched if h not in have)
        chosen = set(selected)
        result = [host for name, host in self.hosts.items() if name in chosen]
        if not result:
            raise UsageError(f"host pattern {limit!r} selects no hosts")
        return result

    def _match_one_pattern(self, pattern: str) -> list[str]:
        if pattern[0] in "&!":
            pattern = pattern[1:]
        expr, subscript = _split_subscript(pattern)
        if not expr or expr == "~":
            raise UsageError(f"malformed host pattern {pattern!r}")
        try:
            regex = re.compile(expr[1:]) if expr[0] == "~" else re.compile(fnmatch.translate(expr))
        except re.error as exc:
            raise UsageError(f"malformed host pattern {pattern!r}: {exc}") from None
        hosts: list[str] = []
        groups = [g for g in self.groups if regex.match(g)]
        for group in groups:
            hosts.extend(h for h in self.group_hosts(group) if h not in hosts)
        # Like Ansible: host names are tried when no group matched, or always for a
        # regex/glob, so 'pi*' picks groups and hosts alike.
        if not groups or expr[0] == "~" or any(c in expr for c in ".?*["):
            hosts.extend(h for h in self.hosts if regex.match(h) and h not in hosts)
        if not hosts and not groups:
            raise UsageError(f"host pattern {pattern!r} matches no host or group in the inventory")
        if subscript is not None:
            start, end = subscript
            try:
                if end is None:
                    hosts = [hosts[start]]
                else:
                    end = len(hosts) - 1 if end == -1 else end
                    if start >= len(hosts):
                        raise IndexError(start)
                    hosts = hosts[start : end + 1]
            except IndexError:
                raise UsageError(f"no hosts matched the subscripted pattern {pattern!r}") from None
        return hosts


# ------------------------------------------------------------------- host patterns

# ansible-core lib/ansible/inventory/manager.py PATTERN_WITH_SUBSCRIPT.
_PATTERN_WITH_SUBSCRIPT = re.compile(
    r"""^
        (.+)                    # a pattern expression ending with...
        \[(?:                   # a [subscript] comprising:
            (-?[0-9]+)|         # a single positive or negative number
            ([0-9]+)([:-])      # or an x:y or x: range
            ([0-9]*)
        )\]
        $
    """,
    re.X,
)


def _split_subscript(pattern: str) -> tuple[str, tuple[int, int | None] | None]:
    if pattern.startswith("~"):
        return pattern, None
    m = _PATTERN_WITH_SUBSCRIPT.match(pattern)
    if not m:
        return pattern, None
    expr, idx, start, _sep, end = m.groups()
    if idx:
        return expr, (int(idx), None)
    return expr, (int(start), int(end) if end else -1)


def split_host_pattern(pattern: str) -> list[str]:
    """Split a host pattern into single patterns, as ansible-core ``split_host_pattern``.

    Commas always separate. Without a comma, text that parses as one host address
    (``fe80::1``, ``[::1]:22``, ``web:2222``, ``pi[01:09]``) is a single pattern;
    otherwise ``:`` separates (the old syntax), keeping ``[...]`` expressions whole.
    """
    if "," in pattern:
        parts = pattern.split(",")
    else:
        try:
            parse_address(pattern, allow_ranges=True)
            parts = [pattern]
        except ValueError:
            parts = re.findall(r"(?:[^\s:\[\]]|\[[^\]]*\])+", pattern)
    return [p.strip() for p in parts if p.strip()]


def _order_patterns(patterns: list[str]) -> list[str]:
    regular = [p for p in patterns if p[0] not in "!&"]
    intersect = [p for p in patterns if p[0] == "&"]
    exclude = [p for p in patterns if p[0] == "!"]
    # Only '&'/'!' given: Ansible applies them to 'all'.
    return (regular or ["all"]) + intersect + exclude


# -------------------------------------------------------- addresses and host ranges

# ansible-core lib/ansible/parsing/utils/addresses.py, IPv6 left to the ipaddress module.
_NUMERIC_RANGE = r"\[(?:[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_HEX_RANGE = r"\[(?:[0-9a-f]+:[0-9a-f]+)(?::[0-9]+)?\]"
_ALNUM_RANGE = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_IPV4_COMPONENT = rf"(?:[01]?[0-9]{{1,2}}|2[0-4][0-9]|25[0-5]|{_NUMERIC_RANGE})"
_LABEL = rf"(?:[\w]|{_ALNUM_RANGE})(?:[\w_-]|{_ALNUM_RANGE})*(?<![_-])"
_ADDRESS_PATTERNS = {
    "bracketed_hostport": re.compile(r"^\[(.+)\]:([0-9]+)$"),
    "hostport": re.compile(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$"),
    "ipv4": re.compile(rf"^(?:{_IPV4_COMPONENT}\.){{3}}{_IPV4_COMPONENT}$", re.I),
    "hostname": re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$", re.I | re.UNICODE),
}


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(re.sub(_HEX_RANGE, "0", text, flags=re.I))
    except ValueError:
        return False
    return True


def parse_address(address: str, allow_ranges: bool = False) -> tuple[str, int | None]:
    """Split ``address`` into ``(host, port)`` as Ansible's ``parse_address`` does.

    Accepts a host name, IPv4 or IPv6 address (ranges like ``pi[01:09]`` when
    ``allow_ranges``), with an optional ``:PORT`` (IPv6 needs ``[addr]:PORT``).
    Raises ValueError when it is none of those.
    """
    port = None
    for kind in ("bracketed_hostport", "hostport"):
        m = _ADDRESS_PATTERNS[kind].match(address)
        if m:
            address, port_text = m.groups()
            port = int(port_text)
    valid = (
        _ADDRESS_PATTERNS["ipv4"].match(address)
        or _is_ipv6(address)
        or _ADDRESS_PATTERNS["hostname"].match(address)
    )
    if not valid:
        raise ValueError(f"not a valid network host name: {address}")
    if not allow_ranges and "[" in address:
        raise ValueError(f"host range in {address!r} where none is allowed")
    return address, port


class _RangeError(ValueError):
    pass


def expand_hostname_range(pattern: str) -> list[str]:
    """Expand every ``[begin:end(:step)]`` in ``pattern`` into host names.

    Numbers keep the zero padding of ``begin`` (``pi[01:03]`` -> pi01 pi02 pi03, which
    then needs ``begin`` and ``end`` of equal length), letters run through
    ``string.ascii_letters`` (``[a:c]``), ``step`` strides (``[1:9:4]`` -> 1 5 9); an
    empty ``begin`` means 0. Follows ``expand_hostname_range`` in ansible-core
    ``plugins/inventory/__init__.py``, except that a range that yields no host
    (``pi[05:01]``, Ansible silently yields nothing) is an error here.

    Raises ValueError with a message for a malformed range.
    """
    if "[" not in pattern:
        return [pattern]
    if "]" not in pattern.split("[", 1)[1]:
        raise _RangeError(f"unclosed host range in {pattern!r}")
    head, rest = pattern.split("[", 1)
    nrange, tail = rest.split("]", 1)
    bounds = nrange.split(":")
    if len(bounds) not in (2, 3):
        raise _RangeError(f"host range [{nrange}] must be begin:end or begin:end:step")
    beg, end = bounds[0] or "0", bounds[1]
    step_text = bounds[2] if len(bounds) == 3 else "1"
    if not end:
        raise _RangeError(f"host range [{nrange}] must specify an end value")
    try:
        step = int(step_text)
    except ValueError:
        raise _RangeError(f"host range [{nrange}] has a non-numeric step {step_text!r}") from None
    if step < 1:
        raise _RangeError(f"host range [{nrange}] needs a step of at least 1")
    width = 0
    if beg[0] == "0" and len(beg) > 1:
        if len(beg) != len(end):
            raise _RangeError(f"host range [{nrange}] must have begin and end of equal length to zero-pad")
        width = len(beg)
    if len(beg) == 1 and len(end) == 1 and beg in string.ascii_letters and end in string.ascii_letters:
        i_beg, i_end = string.ascii_letters.index(beg), string.ascii_letters.index(end)
        if i_beg > i_end:
            raise _RangeError(f"host range [{nrange}] must have begin <= end")
        seq: Iterable[str] = string.ascii_letters[i_beg : i_end + 1 : step]
    else:
        try:
            i_beg, i_end = int(beg), int(end)
        except ValueError:
            raise _RangeError(f"host range [{nrange}] must be numbers or single letters") from None
        if i_beg > i_end:
            raise _RangeError(f"host range [{nrange}] must have begin <= end")
        seq = (str(i).zfill(width) for i in range(i_beg, i_end + 1, step))
    names: list[str] = []
    for part in seq:
        names.extend(expand_hostname_range(f"{head}{part}{tail}"))
    return names


def _expand_hostpattern(pattern: str) -> tuple[list[str], int | None]:
    """Names and port for an inventory host key (``BaseInventoryPlugin._expand_hostpattern``)."""
    try:
        name, port = parse_address(pattern, allow_ranges=True)
    except ValueError:
        # Not a recognisable address: Ansible keeps the text whole, without a port.
        name, port = pattern, None
    return expand_hostname_range(name), port


# ------------------------------------------------------------------------ builder


class _GroupData:
    def __init__(self, name: str):
        self.name = name
        self.vars: dict[str, Any] = {}
        self.hosts: list[str] = []
        self.children: list[str] = []
        self.parents: list[str] = []
        self.priority = _DEFAULT_GROUP_PRIORITY


class _HostData:
    def __init__(self, name: str, source: str):
        self.name = name
        self.source = source
        self.vars: dict[str, Any] = {}
        self.groups: list[str] = []


class _Builder:
    """Mutable inventory graph filled by the parsers (Ansible's ``InventoryData``)."""

    def __init__(self) -> None:
        self.groups: dict[str, _GroupData] = {}
        self.hosts: dict[str, _HostData] = {}
        self.warnings: list[str] = []
        self.add_group("all")
        self.add_group("ungrouped")

    def add_group(self, name: str) -> _GroupData:
        if name not in self.groups:
            self.groups[name] = _GroupData(name)
        return self.groups[name]

    def add_host(self, name: str, group: str, source: str) -> _HostData:
        host = self.hosts.get(name)
        if host is None:
            host = self.hosts[name] = _HostData(name, source)
        grp = self.add_group(group)
        if name not in grp.hosts:
            grp.hosts.append(name)
        if group not in host.groups:
            host.groups.append(group)
        return host

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

    def set_group_var(self, group: str, key: str, value: Any) -> str | None:
        """Set an inline group variable; returns an error message for a bad priority."""
        grp = self.add_group(group)
        if key == "ansible_group_priority":
            try:
                grp.priority = int(value)
            except (TypeError, ValueError):
                return f"ansible_group_priority of group {group!r} must be an integer, got {value!r}"
        grp.vars[key] = value
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


# -------------------------------------------------------------------------- YAML


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus Ansible's tags (``!unsafe`` strings; ``!vault`` refused)."""


def _construct_unsafe(loader: _YamlLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)


def _construct_vault(loader: _YamlLoader, node: yaml.Node) -> Any:
    raise yaml.constructor.ConstructorError(
        None, None, "ansible-vault encrypted values (!vault) are not supported; decrypt them first", node.start_mark
    )


_YamlLoader.add_constructor("!unsafe", _construct_unsafe)
_YamlLoader.add_constructor("!vault", _construct_vault)


def _yaml_error(path: Path, exc: yaml.YAMLError) -> InputFileError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    return InputFileError(str(path), message, mark.line + 1 if mark is not None else None)


def _compose(path: Path, text: str) -> tuple[_YamlLoader, yaml.Node | None]:
    loader = _YamlLoader(text)
    try:
        return loader, loader.get_single_node()
    except yaml.YAMLError as exc:
        loader.dispose()
        if "\t" in text and text.lstrip().startswith(("{", "[")):
            # JSON indented with tabs is valid JSON but not YAML (Ansible's loader
            # tries json first). A raw tab can only be whitespace in valid JSON, so
            # spaces keep both the meaning and the line numbers.
            try:
                json.loads(text)
            except ValueError as jexc:
                line = getattr(jexc, "lineno", None)
                raise InputFileError(str(path), f"invalid JSON: {getattr(jexc, 'msg', jexc)}", line) from None
            return _compose(path, text.replace("\t", " "))
        raise _yaml_error(path, exc) from None


def _node_line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"the scalar {node.value!r}"


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


class _YamlInventory:
    """Walks a composed YAML inventory so every structure error can name its line."""

    def __init__(self, path: Path, loader: _YamlLoader, builder: _Builder):
        self.path = path
        self.source = str(path)
        self.loader = loader
        self.b = builder

    def fail(self, node: yaml.Node, message: str) -> InputFileError:
        return InputFileError(self.source, message, _node_line(node))

    def pairs(self, node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node]]:
        try:
            self.loader.flatten_mapping(node)  # resolves '<<' merge keys
        except yaml.YAMLError as exc:
            raise _yaml_error(self.path, exc) from None
        # A repeated key (explicit or via '<<') keeps its first place and last value,
        # as when PyYAML builds a dict.
        pairs: dict[Any, tuple[yaml.Node, yaml.Node]] = {}
        for knode, vnode in node.value:
            pairs[knode.value if isinstance(knode, yaml.ScalarNode) else id(knode)] = (knode, vnode)
        return list(pairs.values())

    def key(self, node: yaml.Node) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"expected a name as mapping key, found {_node_kind(node)}")
        return str(node.value)

    def value(self, node: yaml.Node) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise _yaml_error(self.path, exc) from None

    def section(self, node: yaml.Node, section: str, group: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        """Entries of a hosts/children/vars section: (name, key node, value node)."""
        if _is_null(node):
            return []
        if isinstance(node, yaml.ScalarNode):
            # yaml.py: a bare string stands for a one-entry mapping.
            return [(str(node.value), node, yaml.ScalarNode("tag:yaml.org,2002:null", "", node.start_mark, node.end_mark))]
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(
                node, f"{section!r} of group {group!r} must be a mapping of names, found {_node_kind(node)}"
            )
        return [(self.key(k), k, v) for k, v in self.pairs(node)]

    def parse(self, root: yaml.Node | None) -> None:
        if root is None:
            raise InputFileError(self.source, "empty YAML inventory", 1)
        if not isinstance(root, yaml.MappingNode):
            raise self.fail(root, f"a YAML inventory must be a mapping of group names, found {_node_kind(root)}")
        entries = self.pairs(root)
        for knode, vnode in entries:
            if self.key(knode) == "plugin":
                raise self.fail(knode, "inventory plugin configuration files are not supported; use a static inventory")
        for knode, vnode in entries:
            self.group(self.key(knode), knode, vnode)

    def group(self, name: str, knode: yaml.Node, node: yaml.Node) -> str:
        if not (_is_null(node) or isinstance(node, yaml.MappingNode)):
            # Ansible skips this with a warning; a group that silently vanishes would
            # silently drop devices from a deploy.
            raise self.fail(
                node, f"group {name!r} must be a mapping with hosts/children/vars, found {_node_kind(node)}"
            )
        self.b.add_group(name)
        if _is_null(node):
            return name
        for sknode, snode in self.pairs(node):
            section = self.key(sknode)
            if section == "vars":
                for var, vk, vv in self.section(snode, section, name):
                    problem = self.b.set_group_var(name, var, self.value(vv))
                    if problem:
                        raise self.fail(vv, problem)
            elif section == "children":
                for child, ck, cv in self.section(snode, section, name):
                    self.group(child, ck, cv)
                    problem = self.b.add_child(name, child)
                    if problem:
                        raise self.fail(ck, problem)
            elif section == "hosts":
                for pattern, hk, hv in self.section(snode, section, name):
                    self.hosts(name, pattern, hk, hv)
            else:
                self.b.warnings.append(
                    f"{self.source}:{_node_line(sknode)}: skipping unexpected key {section!r} in group {name!r}; "
                    "only 'vars', 'children' and 'hosts' are valid"
                )
        return name

    def hosts(self, group: str, pattern: str, knode: yaml.Node, vnode: yaml.Node) -> None:
        if not (_is_null(vnode) or isinstance(vnode, yaml.MappingNode)):
            raise self.fail(vnode, f"variables of host {pattern!r} must be a mapping, found {_node_kind(vnode)}")
        try:
            names, port = _expand_hostpattern(pattern)
        except ValueError as exc:
            raise self.fail(knode, str(exc)) from None
        variables = {} if _is_null(vnode) else self.value(vnode)
        _populate_hosts(self.b, names, port, variables, group, self.source)


def _populate_hosts(b: _Builder, names: list[str], port: int | None, variables: Mapping[str, Any], group: str, source: str) -> None:
    for name in names:
        host = b.add_host(name, group, source)
        if port is not None:
            host.vars["ansible_port"] = port
        host.vars.update(variables)


def _parse_yaml_inventory(path: Path, text: str, builder: _Builder) -> None:
    loader, root = _compose(path, text)
    try:
        _YamlInventory(path, loader, builder).parse(root)
    finally:
        loader.dispose()


# --------------------------------------------------------------------------- INI

# ansible-core plugins/inventory/ini.py _compile_patterns.
_INI_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:\#.*)?$")
_INI_GROUPNAME = re.compile(r"^([^:\]\s]+)\s*(?:\#.*)?$")


def _parse_ini_value(text: str) -> Any:
    """An INI value as Ansible's ``_parse_value``: a Python literal if it is one, else text.

    So ``1`` is an int, ``True`` a bool, ``'x'``/``"x"`` the string x, ``[1, 2]`` a
    list; ``yes``/``true`` stay strings (unlike YAML).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    return _coerce_ini_literal(value)


def _coerce_ini_literal(value: Any) -> Any:
    if isinstance(value, (list, tuple, set)):
        return [_coerce_ini_literal(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _coerce_ini_literal(v) for k, v in value.items()}
    if value is Ellipsis:
        return "..."
    if isinstance(value, complex):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def _parse_ini_inventory(path: Path, text: str, b: _Builder) -> None:
    source = str(path)

    def fail(lineno: int, message: str) -> InputFileError:
        return InputFileError(source, message, lineno)

    # Groups named in [x:vars] or as children before any [x]/[x:children] declares them;
    # ini.py accepts forward references and reports the unresolved ones at the end.
    pending: dict[str, dict[str, Any]] = {}
    group, state = "ungrouped", "hosts"
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        m = _INI_SECTION.match(line)
        if m:
            group, kind = m.group(1), m.group(2) or "hosts"
            if kind not in ("hosts", "children", "vars"):
                raise fail(lineno, f"section [{group}:{kind}] has unknown type {kind!r} (expected hosts, children or vars)")
            if group not in b.groups:
                if kind == "vars" and group not in pending:
                    pending[group] = {"line": lineno, "state": "vars", "parents": []}
                b.add_group(group)
            if group in pending and kind != "vars":
                _resolve_pending(b, group, pending, source)
            state = kind
            continue
        if line.startswith("[") and line.endswith("]"):
            raise fail(lineno, f"invalid section header {line!r}: no spaces or ':' allowed in a group name")
        if state == "hosts":
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError as exc:
                raise fail(lineno, f"cannot parse host definition {line!r}: {exc}") from None
            if not tokens:
                continue
            pattern = tokens[0]
            try:
                names, port = _expand_hostpattern(pattern)
            except ValueError as exc:
                raise fail(lineno, str(exc)) from None
            if pattern.endswith(":") and port is None:
                raise fail(lineno, f"invalid host {pattern!r}: a trailing ':' must be followed by a port")
            if "---" in names:
                raise fail(lineno, "invalid host '---': this looks like a YAML file; name it .yml or .yaml")
            variables: dict[str, Any] = {}
            for token in tokens[1:]:
                if "=" not in token:
                    raise fail(lineno, f"expected key=value host variable, got {token!r}")
                key, value = token.split("=", 1)
                variables[key] = _parse_ini_value(value)
            _populate_hosts(b, names, port, variables, group, source)
        elif state == "vars":
            if "=" not in line:
                raise fail(lineno, f"expected key=value in [{group}:vars], got {line!r}")
            key, value = (part.strip() for part in line.split("=", 1))
            problem = b.set_group_var(group, key, _parse_ini_value(value))
            if problem:
                raise fail(lineno, problem)
        else:  # children
            m = _INI_GROUPNAME.match(line)
            if not m:
                raise fail(lineno, f"expected a group name in [{group}:children], got {line!r}")
            child = m.group(1)
            if child in b.groups:
                problem = b.add_child(group, child)
                if problem:
                    raise fail(lineno, problem)
            elif child in pending:
                pending[child]["parents"].append((group, lineno))
            else:
                pending[child] = {"line": lineno, "state": "children", "parents": [(group, lineno)]}
    for name, decl in pending.items():
        # ansible-core fails here by default (INI_UNRESOLVED_REFERENCE=error): a typo
        # in a child group name would otherwise drop devices silently.
        if decl["state"] == "vars":
            raise fail(decl["line"], f"section [{name}:vars] is for group {name!r}, which is never defined")
        parent, line_no = decl["parents"][-1]
        raise fail(line_no, f"section [{parent}:children] includes undefined group {name!r}")


def _resolve_pending(b: _Builder, group: str, pending: dict[str, dict[str, Any]], source: str) -> None:
    decl = pending.pop(group)
    for parent, lineno in decl["parents"]:
        problem = b.add_child(parent, group)
        if problem:
            raise InputFileError(source, problem, lineno)
        if parent in pending and pending[parent]["state"] == "children":
            _resolve_pending(b, parent, pending, source)


# ------------------------------------------------------------------ file loading


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFileError(str(path), f"cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputFileError(str(path), "not UTF-8 text", line) from None
    if text.startswith("$ANSIBLE_VAULT"):
        raise InputFileError(str(path), "ansible-vault encrypted files are not supported; decrypt it first", 1)
    return text


def _looks_like_yaml_inventory(text: str) -> bool:
    try:
        data = yaml.load(text, Loader=_YamlLoader)
    except yaml.YAMLError:
        return False
    return isinstance(data, dict)


def _parse_inventory_file(path: Path, b: _Builder) -> None:
    text = _read_text(path)
    if path.suffix.lower() in _YAML_EXTENSIONS:
        _parse_yaml_inventory(path, text, b)
    elif path.suffix.lower() in (".ini", ".hosts") or not _looks_like_yaml_inventory(text):
        _parse_ini_inventory(path, text, b)
    else:
        # No telling extension: Ansible tries the yaml plugin before the ini one.
        _parse_yaml_inventory(path, text, b)


def _parse_source(path: Path, b: _Builder) -> None:
    if path.is_dir():
        for entry in sorted(os.listdir(path)):
            if _IGNORED_ENTRY.search(entry):
                continue
            _parse_source(path / entry, b)
    elif path.is_file():
        _parse_inventory_file(path, b)


def _vars_files(basedir: Path, subdir: str, name: str) -> list[Path]:
    """Files holding vars for ``name`` under ``basedir/subdir`` (host_group_vars plugin).

    ``NAME`` (a file, or a directory read recursively in sorted order, hidden and
    ``~`` backup entries skipped, only .yml/.yaml/.json or extensionless files), or
    else the first of ``NAME.yml``, ``NAME.yaml``, ``NAME.json``.
    """
    folder = basedir / subdir
    if not folder.is_dir() or name.startswith(os.sep):
        return []
    base = folder / name
    if base.is_dir():
        return _dir_vars_files(base)
    if base.is_file():
        return [base]
    for ext in _YAML_EXTENSIONS:
        candidate = folder / f"{name}{ext}"
        if candidate.is_file():
            return [candidate]
    return []


def _dir_vars_files(folder: Path) -> list[Path]:
    found: list[Path] = []
    for entry in sorted(os.listdir(folder)):
        if entry.startswith(".") or entry.endswith("~"):
            continue
        full = folder / entry
        ext = os.path.splitext(entry)[1]
        if full.is_dir() and not ext:
            found.extend(_dir_vars_files(full))
        elif full.is_file() and (not ext or ext in _YAML_EXTENSIONS):
            found.append(full)
    return found


class _VarsFileCache:
    def __init__(self) -> None:
        self._loaded: dict[Path, dict[str, Any]] = {}

    def load(self, path: Path) -> dict[str, Any]:
        if path not in self._loaded:
            text = _read_text(path)
            loader, root = _compose(path, text)
            try:
                if root is None:
                    data: dict[str, Any] = {}  # empty files are ignored, as Ansible does
                elif not isinstance(root, yaml.MappingNode):
                    raise InputFileError(
                        str(path), f"a vars file must be a mapping of variables, found {_node_kind(root)}", _node_line(root)
                    )
                else:
                    try:
                        data = loader.construct_document(root)
                    except yaml.YAMLError as exc:
                        raise _yaml_error(path, exc) from None
                    bad = [k for k in data if not isinstance(k, str)]
                    if bad:
                        raise InputFileError(str(path), f"variable names must be strings, found {bad[0]!r}", _node_line(root))
            finally:
                loader.dispose()
            self._loaded[path] = data
        return self._loaded[path]

    def merged(self, basedirs: Sequence[Path], subdir: str, names: Sequence[str]) -> dict[str, Any]:
        # get_vars_from_inventory_sources: sources outermost, then entities in order.
        data: dict[str, Any] = {}
        for basedir in basedirs:
            for name in names:
                for path in _vars_files(basedir, subdir, name):
                    data.update(self.load(path))
        return data


# ------------------------------------------------------------------------ assembly


def load_inventory(paths: Sequence[str | Path]) -> Inventory:
    """Load and merge the inventory sources ``paths`` (each ``-i``), as Ansible does.

    Each path is an INI or YAML inventory file (``.yml``/``.yaml``/``.json`` are YAML;
    other names are YAML when they parse as a YAML mapping, else INI) or a directory
    whose files are all loaded in sorted order (hidden files, ``group_vars``,
    ``host_vars``, and backup/``.md``/``.txt``/``.cfg``... files skipped). Then
    ``group_vars/`` and ``host_vars/`` beside each source (the directory itself for a
    directory source) are applied.

    A host's variables merge, later winning (ansible-core ``VariableManager.get_vars``
    with the default ``VARIABLE_PRECEDENCE``): inline vars of ``all``; inline vars of
    its other groups sorted by (depth, ``ansible_group_priority``, name), so a child
    group overrides its parent; ``group_vars/all`` files; ``group_vars/GROUP`` files in
    the same group order (every source's files are applied in ``-i`` order); the
    host's inline vars; its ``host_vars`` files. Note that any group_vars file beats
    any inline group var, as in Ansible.

    Returns an :class:`Inventory`. Raises :class:`InputFileError` (``FILE:LINE:
    message``) for a missing or malformed file (YAML syntax or structure, INI line,
    bad host range, unknown ``[g:kind]`` section, undefined ``:children`` group, group
    loop, non-integer ``ansible_port``) and :class:`UsageError` when no path is given.
    """
    if not paths:
        raise UsageError("no inventory given (use -i PATH)")
    b = _Builder()
    basedirs: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise InputFileError(str(path), "inventory not found")
        _parse_source(path, b)
        basedirs.append(path if path.is_dir() else path.parent)
    return _assemble(b, basedirs)


def _assemble(b: _Builder, basedirs: Sequence[Path]) -> Inventory:
    # InventoryData.reconcile_inventory: top-level groups hang under 'all'; hosts in no
    # group but 'all' land in 'ungrouped', and leave it once they are in another group.
    for name, grp in b.groups.items():
        if name != "all" and not grp.parents:
            b.add_child("all", name)
    ungrouped = b.groups["ungrouped"]
    for host in b.hosts.values():
        real = [g for g in host.groups if g not in ("all", "ungrouped")]
        if real and "ungrouped" in host.groups:
            host.groups.remove("ungrouped")
            ungrouped.hosts.remove(host.name)
        elif not real and "ungrouped" not in host.groups:
            host.groups.append("ungrouped")
            ungrouped.hosts.append(host.name)

    depth: dict[str, int] = {}

    def depth_of(name: str) -> int:
        if name not in depth:
            parents = b.groups[name].parents
            depth[name] = 0 if name == "all" else 1 + max((depth_of(p) for p in parents), default=0)
        return depth[name]

    def ancestors(names: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(names)
        while stack:
            g = stack.pop()
            if g not in seen:
                seen.add(g)
                stack.extend(b.groups[g].parents)
        return seen

    def precedence(names: Iterable[str]) -> list[str]:
        # inventory/helpers.py sort_groups
        return sorted(names, key=lambda g: (depth_of(g), b.groups[g].priority, g))

    files = _VarsFileCache()
    groups: dict[str, Group] = {}
    for name, grp in b.groups.items():
        own = dict(grp.vars)
        own.update(files.merged(basedirs, "group_vars", [name]))
        groups[name] = Group(
            name=name,
            vars=MappingProxyType(own),
            hosts=tuple(grp.hosts),
            children=tuple(grp.children),
            parents=tuple(grp.parents),
            depth=depth_of(name),
            priority=grp.priority,
        )

    hosts: dict[str, Host] = {}
    all_vars = b.groups["all"].vars
    all_files = files.merged(basedirs, "group_vars", ["all"])
    for name, hd in b.hosts.items():
        member_of = precedence(ancestors(hd.groups) - {"all"})
        merged: dict[str, Any] = dict(all_vars)
        for g in member_of:
            merged.update(b.groups[g].vars)
        merged.update(all_files)
        merged.update(files.merged(basedirs, "group_vars", member_of))
        merged.update(hd.vars)
        merged.update(files.merged(basedirs, "host_vars", [name]))
        for old, new in VARIABLE_ALIASES.items():
            if old in merged:
                merged[new] = merged[old]
        _check_port(name, merged, hd.source)
        hosts[name] = Host(name=name, vars=MappingProxyType(merged), groups=("all", *member_of), source=hd.source)
    return Inventory(hosts, groups, b.warnings)


def _check_port(name: str, merged: dict[str, Any], source: str) -> None:
    port = merged.get("ansible_port")
    if port is None:
        return
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InputFileError(source, f"host {name!r}: ansible_port {merged['ansible_port']!r} is not a port number (1-65535)")
    merged["ansible_port"] = port
