"""Compose interpolation: ``${VAR}``, ``$VAR``, defaults, required values and ``$$``.

The rules are the Compose Specification's "Interpolation" section
(https://github.com/compose-spec/compose-spec/blob/main/12-interpolation.md) as docker
compose implements them: this module is a line-by-line port of compose-go's
``template/template.go`` (https://github.com/compose-spec/compose-go, commit e70e961c),
so its edge cases are docker compose's (tests/unit/test_compose_interpolate.py holds the
specification's examples and compose-go's own test cases):

* ``$NAME`` and ``${NAME}``: NAME is ``[_a-zA-Z][_a-zA-Z0-9]*``;
* ``${NAME:-default}`` when NAME is unset or empty, ``${NAME-default}`` only when unset;
* ``${NAME:?message}`` is an error when NAME is unset or empty, ``${NAME?message}`` only
  when unset;
* ``${NAME:+alt}`` gives ``alt`` when NAME is set and not empty, ``${NAME+alt}`` when set;
* defaults, messages and alternatives are themselves interpolated (``${A:-${B:-x}}``);
* ``$$`` is a literal ``$``; a ``$`` not followed by a name, ``{`` or ``$`` is kept as it
  is (``$1``, ``$ ``); ``${`` not followed by a valid braced expression is an error
  (``Invalid template``);
* an unset NAME without a default becomes the empty string (docker compose warns; the
  caller is told through ``on_unset``).

Only values are interpolated, never mapping keys (the specification says so).
"""

from __future__ import annotations

import re
from typing import Callable

__all__ = ["Lookup", "InterpolationError", "MissingRequired", "InvalidTemplate", "substitute",
           "variables_in", "has_variables", "unescape"]

#: ``name -> value``, or None when the variable is unset (an empty string is "set, empty").
Lookup = Callable[[str], "str | None"]

# compose-go template.go: delimiter, substitutionNamed, substitutionBraced and the
# escaped|named|braced|invalid pattern, verbatim (Go's (?i:...) is Python's too).
_NAMED = r"[_a-z][_a-z0-9]*"
_BRACED = r"[_a-z][_a-z0-9]*(?::?[-+?](.*))?"
_PATTERN = re.compile(
    r"\$(?i:(?P<escaped>\$)|(?P<named>" + _NAMED + r")|{(?:(?P<braced>" + _BRACED + r")}|(?P<invalid>)))")

# Every name a string refers to, nested defaults included (a scan, not an evaluation:
# `${A:+${B}}` names B even when A is unset).
_REFERENCE = re.compile(r"\$(?:\$|\{?([_a-zA-Z][_a-zA-Z0-9]*))")


class InterpolationError(ValueError):
    """A template that cannot be interpolated; ``str()`` is docker compose's wording."""


class InvalidTemplate(InterpolationError):
    def __init__(self, template: str):
        self.template = template
        super().__init__(f"invalid interpolation format {template!r}: you may need to escape any $ with another $")


class MissingRequired(InterpolationError):
    """``${NAME:?message}`` / ``${NAME?message}`` without a value for NAME."""

    def __init__(self, variable: str, reason: str):
        self.variable = variable
        self.reason = reason
        text = f"required variable {variable} is missing a value"
        super().__init__(text + (f": {reason}" if reason else ""))


def _first_closing_brace(s: str) -> int:
    # getFirstBraceClosingIndex: the character after each '{' is skipped
    depth = 0
    i = 0
    while i < len(s):
        if s[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        if s[i] == "{":
            depth += 1
            i += 1
        i += 1
    return -1


def _operator(template: str) -> str:
    # getSubstitutionFunctionForTemplate: the operator that appears first in the match
    # (Go's sort.Slice over this table; ties cannot occur for distinct positions)
    found = [(template.find(op), n, op) for n, op in enumerate((":?", "?", ":-", "-", ":+", "+"))]
    present = sorted((i, n, op) for i, n, op in found if i >= 0)
    return present[0][2] if present else ":?"


def _apply(op: str, substitution: str, lookup: Lookup, on_unset) -> tuple[str, bool]:
    if op not in substitution:
        return "", False
    name, _, rest = substitution.partition(op)
    value = lookup(name)
    if op in (":?", "?"):
        if value is None or (op == ":?" and value == ""):
            raise MissingRequired(name, substitute(rest, lookup, on_unset))
        return value, True
    if op in (":-", "-"):
        if value is None or (op == ":-" and value == ""):
            return substitute(rest, lookup, on_unset), True
        return value, True
    # ":+", "+"
    if value is not None and (op == "+" or value != ""):
        return substitute(rest, lookup, on_unset), True
    return value or "", True


def substitute(template: str, lookup: Lookup, on_unset: Callable[[str], None] | None = None) -> str:
    """``template`` with every variable replaced by its value from ``lookup``.

    ``on_unset(name)`` is called for a variable that is unset and has no default (it
    becomes ""). Raises :class:`MissingRequired` (``:?``/``?`` without a value) or
    :class:`InvalidTemplate` (``${`` not followed by a valid expression): the first
    error of the string, as compose-go.
    """
    if "$" not in template:
        return template
    errors: list[InterpolationError] = []

    def replace(m: re.Match) -> str:
        try:
            return _replacement(m.group(0), lookup, on_unset)
        except InterpolationError as e:
            if isinstance(e, InvalidTemplate) and not e.template:
                e = InvalidTemplate(template)
            errors.append(e)
            return ""

    out = _PATTERN.sub(replace, template)
    if errors:
        raise errors[0]
    return out


def _replacement(substring: str, lookup: Lookup, on_unset) -> str:
    op = _operator(substring)
    closing = _first_closing_brace(substring)
    rest = ""
    if closing > -1:
        rest = substring[closing + 1:]
        substring = substring[:closing + 1]
    m = _PATTERN.fullmatch(substring) or _PATTERN.match(substring)
    if m is None:  # compose-go's FindStringSubmatch finds nothing: every group empty
        raise InvalidTemplate("")
    if m.group("escaped"):
        return m.group("escaped")
    name = m.group("named")
    if not name:
        name = m.group("braced") or ""
        if not name:
            raise InvalidTemplate("")
        value, applied = _apply(op, name, lookup, on_unset)
        if applied:
            return value + substitute(rest, lookup, on_unset)
    value = lookup(name)
    if value is None:
        if on_unset is not None:
            on_unset(name)
        return ""
    return value


def variables_in(text: str) -> list[str]:
    """The names ``text`` refers to, in order, each once (``$$`` escapes skipped)."""
    names: list[str] = []
    for m in _REFERENCE.finditer(text):
        if m.group(1) and m.group(1) not in names:
            names.append(m.group(1))
    return names


def has_variables(text: str) -> bool:
    """True when ``text`` would be changed by interpolation other than ``$$`` -> ``$``
    (a name, or a ``${`` that is an error)."""
    return bool(variables_in(text)) or "${" in text.replace("$$", "")


def unescape(text: str) -> str:
    """``text`` interpolated where it has no variables: ``$$`` becomes ``$``."""
    return substitute(text, lambda name: None)
