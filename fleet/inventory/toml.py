"""TOML inventories - ansible-core ``plugins/inventory/toml.py``, read with ``tomllib``.

A file named ``*.toml`` holds groups as tables, each with ``hosts`` (a table of host
patterns, ranges allowed, each a table of variables), ``vars`` (a table) and
``children`` (an array of group names)::

    [all.vars]
    has_java = false

    [web]
    children = ["apache", "nginx"]
    vars = { http_port = 8080 }

    [web.hosts]
    host1 = {}
    host2 = { ansible_port = 222 }

``tomllib`` reports no line for a structure error, so those name the file and the
group at fault; syntax errors carry tomllib's line.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from fleet.errors import InputFileError
from fleet.inventory.builder import Builder, populate_hosts
from fleet.inventory.ranges import expand_hostpattern

__all__ = ["parse_toml_inventory"]

_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)")


def _line_of(text: str, group: str, key: str | None = None) -> int | None:
    """Best guess at the line defining ``group`` (and its ``key``): a table header
    ``[group]``/``[group.key]``, or a ``key = ...`` line inside the group's table."""
    name = rf"[\"']?{re.escape(group)}[\"']?"
    group_header = re.compile(rf"^\s*\[\s*{name}\s*[\].]")
    key_header = re.compile(rf"^\s*\[\s*{name}\s*\.\s*{re.escape(key)}\b") if key else None
    key_line = re.compile(rf"^\s*{re.escape(key)}\s*=") if key else None
    lines = text.splitlines()
    group_line = None
    for i, line in enumerate(lines, start=1):
        if key_header is not None and key_header.match(line):
            return i
        if group_line is None and group_header.match(line):
            group_line = i
        elif group_line is not None and key_line is not None and key_line.match(line):
            return i
    return group_line


def parse_toml_inventory(path: Path, text: str, b: Builder) -> None:
    """Add the TOML inventory ``text`` read from ``path`` to ``b``.

    Raises InputFileError naming ``path`` (and the line where known) for invalid TOML,
    an empty file, a plugin configuration file, or a group, ``hosts``, ``vars`` or
    ``children`` of the wrong type.
    """
    source = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = _TOML_LINE.search(str(exc))
        message = _TOML_LINE.sub("", str(exc)).strip()
        raise InputFileError(source, f"invalid TOML: {message}", int(m.group(1)) if m else None) from None
    except RecursionError:
        raise InputFileError(source, "invalid TOML: nested too deeply") from None
    if not data:
        raise InputFileError(source, "empty TOML inventory")
    if data.get("plugin"):
        raise InputFileError(source, "inventory plugin configuration files are not supported; use a static inventory")

    def fail(group: str, message: str, key: str | None = None) -> InputFileError:
        return InputFileError(source, message, _line_of(text, group, key))

    def parse_group(group: str, gdata: Any) -> None:
        if gdata is not None and not isinstance(gdata, dict):
            # Ansible skips it with a warning; a vanished group would drop devices.
            raise fail(group, f"group {group!r} must be a table with hosts/children/vars, found {gdata!r:.60}")
        b.add_group(group)
        for key, value in (gdata or {}).items():
            if key == "vars":
                if not isinstance(value, dict):
                    raise fail(group, f"'vars' of group {group!r} must be a table", key)
                for var, val in value.items():
                    problem = b.set_group_var(group, var, val, source)
                    if problem:
                        raise fail(group, problem, key)
            elif key == "children":
                if not isinstance(value, list) or not all(isinstance(c, str) and c for c in value):
                    raise fail(group, f"'children' of group {group!r} must be an array of group names", key)
                for child in value:
                    parse_group(child, {})
                    problem = b.add_child(group, child)
                    if problem:
                        raise fail(group, problem, key)
            elif key == "hosts":
                if not isinstance(value, dict):
                    raise fail(group, f"'hosts' of group {group!r} must be a table of host names", key)
                for pattern, variables in value.items():
                    if not isinstance(variables, dict):
                        raise fail(group, f"variables of host {pattern!r} must be a table, found {variables!r:.60}", key)
                    try:
                        names, port = expand_hostpattern(pattern)
                    except ValueError as exc:
                        raise fail(group, str(exc), key) from None
                    populate_hosts(b, names, port, variables, group, source)
            else:
                b.warnings.append(
                    f"{source}: skipping unexpected key {key!r} in group {group!r}; only 'vars', 'children' and 'hosts' are valid"
                )

    for group, gdata in data.items():
        parse_group(group, gdata)
