"""INI inventories - ansible-core ``plugins/inventory/ini.py``.

``[group]`` host lines (``host key=value``, shell-quoted), ``[group:children]``,
``[group:vars]`` (``key=value``), forward references resolved at the end of the file,
values read as Python literals (``_parse_value``). Every error names ``FILE:LINE``.
"""

from __future__ import annotations

import ast
import re
import shlex
import warnings
from pathlib import Path
from typing import Any

from fleet.errors import InputFileError
from fleet.inventory.builder import Builder, populate_hosts
from fleet.inventory.ranges import expand_hostpattern

__all__ = ["parse_ini_inventory", "parse_ini_value"]

# ansible-core plugins/inventory/ini.py _compile_patterns.
_INI_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:\#.*)?$")
_INI_GROUPNAME = re.compile(r"^([^:\]\s]+)\s*(?:\#.*)?$")


def parse_ini_value(text: str) -> Any:
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


def parse_ini_inventory(path: Path, text: str, b: Builder) -> None:
    """Add the INI inventory ``text`` read from ``path`` to ``b``.

    Raises InputFileError naming ``path`` and the line at fault.
    """
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
                names, port = expand_hostpattern(pattern)
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
                variables[key] = parse_ini_value(value)
            populate_hosts(b, names, port, variables, group, source)
        elif state == "vars":
            if "=" not in line:
                raise fail(lineno, f"expected key=value in [{group}:vars], got {line!r}")
            key, value = (part.strip() for part in line.split("=", 1))
            problem = b.set_group_var(group, key, parse_ini_value(value), source)
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


def _resolve_pending(b: Builder, group: str, pending: dict[str, dict[str, Any]], source: str) -> None:
    decl = pending.pop(group)
    for parent, lineno in decl["parents"]:
        problem = b.add_child(parent, group)
        if problem:
            raise InputFileError(source, problem, lineno)
        if parent in pending and pending[parent]["state"] == "children":
            _resolve_pending(b, parent, pending, source)
