"""Loading inventory sources and merging variables - ansible-core ``InventoryManager``.

See :func:`load_inventory`. References: ``lib/ansible/inventory/manager.py``
(sources, directories), ``lib/ansible/inventory/data.py`` (``reconcile_inventory``),
``lib/ansible/vars/manager.py`` (``VARIABLE_PRECEDENCE``),
``lib/ansible/inventory/helpers.py`` (``sort_groups``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

from fleet.errors import InputFileError, UsageError
from fleet.inventory.builder import Builder
from fleet.inventory.ini import parse_ini_inventory
from fleet.inventory.model import Group, Host, Inventory
from fleet.inventory.script import is_inventory_script, parse_inventory_script
from fleet.inventory.toml import parse_toml_inventory
from fleet.inventory.vars import YAML_EXTENSIONS, VarsFileCache, read_inventory_text
from fleet.inventory.yaml import looks_like_yaml_inventory, parse_yaml_inventory

__all__ = ["VARIABLE_ALIASES", "load_inventory"]

#: Old connection-variable spellings Ansible's ssh connection plugin still reads. The
#: plugin lists them after the new names, so when both are set the old spelling wins
#: (ansible-core lib/ansible/plugins/connection/ssh.py, option ``vars:`` order).
VARIABLE_ALIASES: Mapping[str, str] = {
    "ansible_ssh_host": "ansible_host",
    "ansible_ssh_port": "ansible_port",
    "ansible_ssh_user": "ansible_user",
}

# Inventory-directory entries Ansible never loads: hidden files, the vars folders, and
# INVENTORY_IGNORE_EXTS (REJECT_EXTS + .orig, .cfg, .retry) - inventory/manager.py.
_IGNORED_ENTRY = re.compile(
    r"^\.|^host_vars$|^group_vars$|^vars_plugins$|"
    r"(\.pyc|\.pyo|\.swp|\.bak|~|\.rpm|\.md|\.txt|\.rst|\.orig|\.cfg|\.retry)$"
)


def _parse_inventory_file(path: Path, b: Builder) -> None:
    if is_inventory_script(path):
        parse_inventory_script(path, b)
        return
    text = read_inventory_text(path)
    suffix = path.suffix.lower()
    if suffix == ".toml":
        parse_toml_inventory(path, text, b)
    elif suffix in YAML_EXTENSIONS:
        parse_yaml_inventory(path, text, b)
    elif suffix in (".ini", ".hosts") or not looks_like_yaml_inventory(text):
        parse_ini_inventory(path, text, b)
    else:
        # No telling extension: Ansible tries the yaml plugin before the ini one.
        parse_yaml_inventory(path, text, b)


def _parse_source(path: Path, b: Builder) -> None:
    if path.is_dir():
        for entry in sorted(os.listdir(path)):
            if _IGNORED_ENTRY.search(entry):
                continue
            _parse_source(path / entry, b)
    else:
        # A FIFO, socket or device (or a dangling link) is reported by read_input:
        # skipping it silently could leave devices out of a deploy.
        _parse_inventory_file(path, b)


def load_inventory(paths: Sequence[str | Path]) -> Inventory:
    """Load and merge the inventory sources ``paths`` (each ``-i``), as Ansible does.

    Each path is an inventory file or a directory whose entries are all loaded in sorted
    order (hidden files, ``group_vars``, ``host_vars``, and backup/``.md``/``.txt``/
    ``.cfg``... files skipped). A file is, as Ansible's plugins decide: an executable
    inventory script when it is executable and starts with ``#!`` (run with ``--list``,
    see :mod:`fleet.inventory.script`); TOML when named ``.toml``; YAML/JSON when named
    ``.yml``/``.yaml``/``.json``; else YAML when it parses as a YAML mapping, INI
    otherwise. Then ``group_vars/`` and ``host_vars/`` beside each source (the directory
    itself for a directory source) are applied. Every file is read with
    :func:`fleet.yamlfile.read_input` (regular files only, 16 MiB at most).

    A host's variables merge, later winning (ansible-core ``VariableManager.get_vars``
    with the default ``VARIABLE_PRECEDENCE``): inline vars of ``all``; inline vars of
    its other groups sorted by (depth, ``ansible_group_priority``, name), so a child
    group overrides its parent; ``group_vars/all`` files; ``group_vars/GROUP`` files in
    the same group order (every source's files are applied in ``-i`` order); the
    host's inline vars; its ``host_vars`` files. Note that any group_vars file beats
    any inline group var, as in Ansible.

    Returns an :class:`Inventory`. Raises :class:`InputFileError` (``FILE:LINE:
    message``) for a missing, unreadable, oversized or malformed file (YAML/TOML/JSON
    syntax or structure, INI line, bad or oversized host range, unknown ``[g:kind]``
    section, undefined ``:children`` group, group loop, non-integer ``ansible_port``,
    a failing inventory script) and :class:`UsageError` when no path is given.
    """
    if not paths:
        raise UsageError("no inventory given (use -i PATH)")
    b = Builder()
    basedirs: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists() and not path.is_symlink():
            raise InputFileError(str(path), "inventory not found")
        _parse_source(path, b)
        basedirs.append(path if path.is_dir() else path.parent)
    return _assemble(b, basedirs)


def _assemble(b: Builder, basedirs: Sequence[Path]) -> Inventory:
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

    for name in b.groups:  # iteratively, so long parent chains cannot exhaust the stack
        for g in _top_down(b, name):
            depth_of(g)

    files = VarsFileCache()
    groups: dict[str, Group] = {}
    for name, grp in b.groups.items():
        own = dict(grp.vars)
        own.update(files.merged(basedirs, "group_vars", [name])[0])
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
    all_group = b.groups["all"]
    all_files = files.merged(basedirs, "group_vars", ["all"])
    for name, hd in b.hosts.items():
        member_of = precedence(ancestors(hd.groups) - {"all"})
        merged: dict[str, Any] = dict(all_group.vars)
        sources: dict[str, str] = dict(all_group.var_sources)
        for g in member_of:
            merged.update(b.groups[g].vars)
            sources.update(b.groups[g].var_sources)
        for data, where in (
            all_files,
            files.merged(basedirs, "group_vars", member_of),
            (hd.vars, hd.var_sources),
            files.merged(basedirs, "host_vars", [name]),
        ):
            merged.update(data)
            sources.update(where)
        _check_port(name, merged, sources.get("ansible_port") or hd.source)
        hosts[name] = Host(
            name=name,
            vars=MappingProxyType(merged),
            groups=("all", *member_of),
            source=hd.source,
            var_sources=MappingProxyType(sources),
        )
    return Inventory(hosts, groups, b.warnings)


def _top_down(b: Builder, name: str) -> list[str]:
    """``name`` and its ancestors, ancestors first, so depth_of never recurses deeply."""
    order: list[str] = []
    seen: set[str] = set()
    stack = [(name, False)]
    while stack:
        g, expanded = stack.pop()
        if expanded:
            order.append(g)
            continue
        if g in seen:
            continue
        seen.add(g)
        stack.append((g, True))
        stack.extend((p, False) for p in b.groups[g].parents)
    return order


def _check_port(name: str, merged: dict[str, Any], source: str) -> None:
    port = merged.get("ansible_port")
    if port is None:
        return
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InputFileError(source, f"host {name!r}: ansible_port {merged['ansible_port']!r} is not a port number (1-65535)")
    merged["ansible_port"] = port
