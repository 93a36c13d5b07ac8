"""Host addresses and host ranges, as Ansible parses them.

* :func:`parse_address` - ``lib/ansible/parsing/utils/addresses.py``: a host name, IPv4
  or IPv6 address with an optional port (``web:2222``, ``[::1]:22``).
* :func:`expand_hostname_range` - ``expand_hostname_range`` in
  ``lib/ansible/plugins/inventory/__init__.py``: ``pi[01:50]``, ``node-[a:f]``,
  ``h[1:10:2]``.

One host pattern expands to at most :data:`MAX_HOSTS_PER_PATTERN` (100,000) hosts
(issue 9 item 8): ``host[0:99999999]`` is refused before a single name is made, where
Ansible would spend minutes and gigabytes building the list. A fleet of IoT devices
larger than that is split over several patterns or files.
"""

from __future__ import annotations

import ipaddress
import math
import re
import string
from typing import Sequence

__all__ = ["MAX_HOSTS_PER_PATTERN", "parse_address", "expand_hostname_range", "expand_hostpattern"]

#: Most host names that one inventory host pattern (``pi[0001:2000]``) may expand to.
MAX_HOSTS_PER_PATTERN = 100_000

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


def _parse_range(pattern: str, nrange: str) -> Sequence[str]:
    """The values of one ``begin:end(:step)`` range, as a lazy sequence."""
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
        return string.ascii_letters[i_beg : i_end + 1 : step]
    try:
        i_beg, i_end = int(beg), int(end)
    except ValueError:
        raise _RangeError(f"host range [{nrange}] must be numbers or single letters") from None
    if i_beg > i_end:
        raise _RangeError(f"host range [{nrange}] must have begin <= end")
    return _Padded(range(i_beg, i_end + 1, step), width)


class _Padded(Sequence[str]):
    """``range`` values as zero-padded text, without building the list."""

    def __init__(self, numbers: range, width: int):
        self.numbers, self.width = numbers, width

    def __len__(self) -> int:
        return len(self.numbers)

    def __getitem__(self, i):  # type: ignore[override]
        return str(self.numbers[i]).zfill(self.width)


def expand_hostname_range(pattern: str) -> list[str]:
    """Expand every ``[begin:end(:step)]`` in ``pattern`` into host names.

    Numbers keep the zero padding of ``begin`` (``pi[01:03]`` -> pi01 pi02 pi03, which
    then needs ``begin`` and ``end`` of equal length), letters run through
    ``string.ascii_letters`` (``[a:c]``), ``step`` strides (``[1:9:4]`` -> 1 5 9); an
    empty ``begin`` means 0. Follows ``expand_hostname_range`` in ansible-core
    ``plugins/inventory/__init__.py``, except that a range that yields no host
    (``pi[05:01]``, Ansible silently yields nothing) is an error here, and so is a
    pattern that would yield more than :data:`MAX_HOSTS_PER_PATTERN` names.

    Raises ValueError with a message for a malformed or oversized range.
    """
    if "[" not in pattern:
        return [pattern]
    # Split into literal text and ranges: "r[1:2]c[a:b]" -> "r", [1:2], "c", [a:b], "".
    literals: list[str] = []
    ranges: list[Sequence[str]] = []
    rest = pattern
    while "[" in rest:
        head, after = rest.split("[", 1)
        if "]" not in after:
            raise _RangeError(f"unclosed host range in {pattern!r}")
        nrange, rest = after.split("]", 1)
        literals.append(head)
        ranges.append(_parse_range(pattern, nrange))
    literals.append(rest)
    count = math.prod(len(r) for r in ranges)
    if count > MAX_HOSTS_PER_PATTERN:
        raise _RangeError(
            f"host range {pattern!r} expands to {count} hosts, more than the {MAX_HOSTS_PER_PATTERN} "
            "one pattern may have (split it)"
        )
    names = [""]
    for literal, values in zip(literals, ranges):
        names = [f"{name}{literal}{value}" for name in names for value in values]
    return [f"{name}{literals[-1]}" for name in names]


def expand_hostpattern(pattern: str) -> tuple[list[str], int | None]:
    """Names and port for an inventory host key (``BaseInventoryPlugin._expand_hostpattern``).

    Raises ValueError for a malformed or oversized range.
    """
    try:
        name, port = parse_address(pattern, allow_ranges=True)
    except ValueError:
        # Not a recognisable address: Ansible keeps the text whole, without a port.
        name, port = pattern, None
    return expand_hostname_range(name), port
