"""Ansible host patterns (``--limit``), as ansible-core's ``InventoryManager`` reads them.

References: ``split_host_pattern``, ``order_patterns``, ``InventoryManager.subset``,
``_evaluate_patterns``, ``_match_one_pattern``, ``_enumerate_matches`` and
``_apply_subscript`` in ``lib/ansible/inventory/manager.py``; the user guide's
"Patterns: targeting hosts and groups".
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import TYPE_CHECKING

from fleet.errors import InputFileError, UsageError
from fleet.inventory.ranges import parse_address
from fleet.yamlfile import read_input

if TYPE_CHECKING:
    from fleet.inventory.model import Host, Inventory

__all__ = ["split_host_pattern", "select", "read_limit_file"]

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
_COLON_PARTS = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")


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
            parts = _COLON_PARTS.findall(pattern)
    return [p.strip() for p in parts if p.strip()]


def _order_patterns(patterns: list[str]) -> list[str]:
    regular = [p for p in patterns if p[0] not in "!&"]
    intersect = [p for p in patterns if p[0] == "&"]
    exclude = [p for p in patterns if p[0] == "!"]
    # Only '&'/'!' given: Ansible applies them to 'all'.
    return (regular or ["all"]) + intersect + exclude


def read_limit_file(path: str) -> list[str]:
    """The patterns of a ``--limit @FILE`` file: one per line (Ansible's retry files).

    ``path`` is relative to the current directory, as in ``InventoryManager.subset``;
    lines are stripped and blank lines skipped. Raises :class:`InputFileError` naming
    the file when it is missing, not a regular file, or names no host (Ansible would
    then select every host: a retry file emptied by mistake must not deploy everywhere).
    """
    if not path:
        raise UsageError("malformed host pattern '@': give a file name after '@'")
    if not Path(path).exists() and not Path(path).is_symlink():
        raise InputFileError(path, "limit file not found (a --limit pattern starting with '@' names a file of host names)")
    text = read_input(path)
    patterns = [line.strip() for line in text.split("\n") if line.strip()]
    if not patterns:
        raise InputFileError(path, "limit file names no hosts")
    return patterns


def _expand_limit(limit: str) -> list[str]:
    patterns: list[str] = []
    for part in split_host_pattern(limit):
        if part[0] == "@":
            patterns.extend(read_limit_file(part[1:]))
        else:
            patterns.append(part)
    return patterns


def select(inv: "Inventory", limit: str | None) -> list["Host"]:
    """The hosts an Ansible host pattern (``--limit``) selects, in Ansible's host order.

    ``limit`` is None/"" (every host) or patterns separated by ``,`` (or, when there
    is no comma and the whole text is not a host address such as ``fe80::1`` or
    ``web:2222``, by ``:``). Each pattern is a host or group name, an fnmatch glob,
    ``~regex`` (``re.match``), optionally with a ``[i]``/``[i:j]`` subscript, and
    prefixed ``&`` (intersection) or ``!`` (exclusion); ``@FILE`` stands for the
    patterns in FILE, one per line (a retry file). As in ansible-core's
    ``InventoryManager._evaluate_patterns``, unions apply first, then intersections,
    then exclusions; a group name selects its hosts and those of every group below it.

    The result is in the order of ``all`` (:meth:`Inventory.group_hosts`), as
    ``ansible-playbook --limit`` runs hosts; a subscript indexes the matched group's
    own order (``group[0]`` is its first host in Ansible's order).

    Raises UsageError for a malformed pattern (empty, bad regex, subscript out of
    range), for a pattern matching no host or group (Ansible only warns: here an
    empty or mistyped target set must never deploy to the wrong devices), and when
    the whole selection is empty; InputFileError for a missing or empty ``@FILE``.
    """
    if limit is None or not limit.strip():
        if not inv.hosts:
            raise UsageError("the inventory defines no hosts")
        return inv.ordered_hosts()
    patterns = split_host_pattern(limit)
    if not patterns:
        raise UsageError(f"malformed host pattern {limit!r}: no pattern in it")
    if "," not in limit:
        # The ':' split drops what it cannot read (an unclosed '[' in '~[', 'a:[x');
        # Ansible then silently uses the rest, which would widen the selection.
        leftover = _COLON_PARTS.sub("", limit)
        if len(patterns) > 1 and leftover.strip(": \t") or (len(patterns) == 1 and patterns[0] != limit.strip()):
            raise UsageError(f"malformed host pattern {limit!r}: unbalanced '[' or ']'")
    selected: list[str] = []
    for pattern in _order_patterns(_expand_limit(limit)):
        if pattern in ("!", "&"):
            raise UsageError(f"malformed host pattern {pattern!r} in {limit!r}")
        # _evaluate_patterns: a plain pattern naming a host is that host alone, even
        # when a group has the same name ('!x' and '&x' still look at groups first).
        matched = [pattern] if pattern in inv.hosts else _match_one_pattern(inv, pattern)
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
    result = [host for host in inv.ordered_hosts() if host.name in chosen]
    if not result:
        raise UsageError(f"host pattern {limit!r} selects no hosts")
    return result


def _match_one_pattern(inv: "Inventory", pattern: str) -> list[str]:
    if pattern[0] in "&!":
        pattern = pattern[1:]
    expr, subscript = _split_subscript(pattern)
    if not expr or expr == "~":
        raise UsageError(f"malformed host pattern {pattern!r}")
    try:
        regex = re.compile(expr[1:]) if expr[0] == "~" else re.compile(fnmatch.translate(expr))
    except re.error as exc:
        raise UsageError(f"malformed host pattern {pattern!r}: {exc}") from None
    # _enumerate_matches: every matching group's hosts, in group-definition order,
    # duplicates kept (a subscript counts them, as in Ansible).
    hosts: list[str] = []
    groups = [g for g in inv.groups if regex.match(g)]
    for group in groups:
        hosts.extend(inv.group_hosts(group))
    # Like Ansible: host names are tried when no group matched, or always for a
    # regex/glob, so 'pi*' picks groups and hosts alike.
    if not groups or expr[0] == "~" or any(c in expr for c in ".?*["):
        hosts.extend(h for h in inv.hosts if regex.match(h))
    if not hosts and not groups:
        raise UsageError(f"host pattern {pattern!r} matches no host or group in the inventory")
    if subscript is not None and hosts:
        start, end = subscript
        try:
            if not end:  # [i], and [i:0] as Ansible's 'if end:' reads it
                hosts = [hosts[start]]
            else:
                end = len(hosts) - 1 if end == -1 else end
                if start >= len(hosts):
                    raise IndexError(start)
                hosts = hosts[start : end + 1]
        except IndexError:
            raise UsageError(f"no hosts matched the subscripted pattern {pattern!r}") from None
    return hosts
