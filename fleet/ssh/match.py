"""OpenSSH's pattern matching (match.c), for known_hosts, ssh_config and algorithm lists.

Shapes: ``match_pattern(s, pattern) -> bool``; ``match_pattern_list(s, patterns, dolower)
-> 1 | 0 | -1``; ``match_hostname(host, patterns) -> 1 | 0 | -1``;
``filter_allowlist(names, patterns)``/``filter_denylist(names, patterns) -> list[str]``.

Only ``*`` (any run of bytes, also none) and ``?`` (exactly one byte) are special; every
other byte, ``[`` and ``]`` included, stands for itself. ``fnmatch`` is not usable here: it
reads ``[...]`` as a character class, so the known_hosts pattern ``[10.0.0.*]:2222`` would
never match ``[10.0.0.5]:2222`` the way ssh(1) does. A pattern list is comma-separated; a
``!`` prefix negates one pattern, and a matching negated pattern makes the whole list
answer -1 (no match, whatever else matched).

Matching works on UTF-8 bytes and lower-cases ASCII only, as the C code does. The
algorithm is the iterative wildcard match (linear backtracking on the last ``*``), which
accepts exactly the strings OpenSSH's recursive ``match_pattern`` accepts without its
exponential worst case on patterns such as ``*a*a*a*a*b``.

Source: https://github.com/openssh/openssh-portable/blob/V_9_2_P1/match.c
"""

from __future__ import annotations

from typing import Iterable

__all__ = ["match_pattern", "match_pattern_list", "match_hostname", "filter_allowlist", "filter_denylist",
           "has_wildcard"]

_STAR = ord("*")
_QMARK = ord("?")
# match_pattern_list() copies each sub-pattern into a 1024-byte buffer and answers "no
# match" for the whole list when one does not fit.
_MAX_SUBPATTERN = 1023


def _b(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")


def _glob(s: bytes, p: bytes) -> bool:
    si = pi = 0
    star = -1
    mark = 0
    ls, lp = len(s), len(p)
    while si < ls:
        if pi < lp and p[pi] == _STAR:
            star, mark = pi, si
            pi += 1
        elif pi < lp and (p[pi] == _QMARK or p[pi] == s[si]):
            si += 1
            pi += 1
        elif star >= 0:
            # let the last '*' swallow one more byte and retry from there
            mark += 1
            si, pi = mark, star + 1
        else:
            return False
    while pi < lp and p[pi] == _STAR:
        pi += 1
    return pi == lp


def match_pattern(s: str | bytes, pattern: str | bytes) -> bool:
    """True if ``s`` matches the single wildcard ``pattern`` (case-sensitive, no lists)."""
    return _glob(_b(s), _b(pattern))


def has_wildcard(pattern: str) -> bool:
    """True if ``pattern`` contains ``*`` or ``?`` (i.e. is not a literal name)."""
    return "*" in pattern or "?" in pattern


def match_pattern_list(s: str | bytes, patterns: str | bytes, dolower: bool) -> int:
    """1 if ``s`` matches a positive pattern of the comma list and no negated one, -1 if a
    negated pattern matches, 0 otherwise. ``dolower`` lower-cases (ASCII) the patterns."""
    sb = _b(s)
    got_positive = 0
    for sub in _b(patterns).split(b","):
        negated = sub.startswith(b"!")
        if negated:
            sub = sub[1:]
        if len(sub) >= _MAX_SUBPATTERN:
            return 0
        if dolower:
            sub = sub.lower()  # bytes.lower() folds ASCII only, like tolower() in the C locale
        if _glob(sb, sub):
            if negated:
                return -1
            got_positive = 1
    return got_positive


def match_hostname(host: str | bytes, patterns: str | bytes) -> int:
    """:func:`match_pattern_list` with ``host`` and the patterns lower-cased (ASCII)."""
    return match_pattern_list(_b(host).lower(), patterns, True)


def filter_allowlist(names: Iterable[str], patterns: str) -> list[str]:
    """The ``names`` (in their order) matching the pattern list (match.c match_filter_allowlist)."""
    return [n for n in names if match_pattern_list(n, patterns, False) == 1]


def filter_denylist(names: Iterable[str], patterns: str) -> list[str]:
    """The ``names`` (in their order) matching no pattern of the list (match_filter_denylist)."""
    return [n for n in names if match_pattern_list(n, patterns, False) != 1]
