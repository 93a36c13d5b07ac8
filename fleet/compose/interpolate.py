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
# escaped|named|braced|invalid pattern (Go's (?i:...) is Python's too). The operator of a
# braced expression is the one right after its name: compose-go's
# getSubstitutionFunctionForTemplate picks the operator that occurs first in the match,
# and nothing before the name's end can be one.
_NAMED = r"[_a-z][_a-z0-9]*"

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


#: Deepest nesting of defaults (``${A:-${B:-...}}``) interpolated.
MAX_NESTING = 50


def _apply(op: str, substitution: str, lookup: Lookup, on_unset, depth: int) -> tuple[str, bool]:
    if op not in substitution:
        return "", False
    name, _, rest = substitution.partition(op)
    value = lookup(name)
    if op in (":?", "?"):
        if value is None or (op == ":?" and value == ""):
            raise MissingRequired(name, _substitute(rest, lookup, on_unset, depth + 1))
        return value, True
    if op in (":-", "-"):
        if value is None or (op == ":-" and value == ""):
            return _substitute(rest, lookup, on_unset, depth + 1), True
        return value, True
    # ":+", "+"
    if value is not None and (op == "+" or value != ""):
        return _substitute(rest, lookup, on_unset, depth + 1), True
    return value or "", True


def substitute(template: str, lookup: Lookup, on_unset: Callable[[str], None] | None = None) -> str:
    """``template`` with every variable replaced by its value from ``lookup``.

    ``on_unset(name)`` is called for a variable that is unset and has no default (it
    becomes ""). Raises :class:`MissingRequired` (``:?``/``?`` without a value) or
    :class:`InvalidTemplate` (``${`` not followed by a valid expression, or defaults
    nested more than :data:`MAX_NESTING` deep): the first error of the string, as
    compose-go.
    """
    try:
        return _substitute(template, lookup, on_unset, 0)
    except InvalidTemplate as e:
        if not e.template:
            raise InvalidTemplate(template) from None
        raise


# The start of each match of compose-go's pattern, without its greedy tail: there, a braced
# expression with an operator extends to the last "}" of its line (".*" stops at a line
# break); that end is found once per line below, keeping the scan linear in the length.
_HEAD = re.compile(
    r"\$(?i:(?P<escaped>\$)|(?P<named>" + _NAMED + r")|{(?:(?P<braced>[_a-z][_a-z0-9]*)(?P<op>:?[-+?])?)?)")


def _substitute(template: str, lookup: Lookup, on_unset, depth: int) -> str:
    # compose-go's ReplaceAllStringFunc, whose replacement interpolates the text after a
    # braced expression's closing brace recursively: here a loop that continues there
    # (the same result, without a recursion as deep as the string is long)
    if "$" not in template:
        return template
    if depth > MAX_NESTING:
        raise InvalidTemplate(template[:80] + f"... (defaults nested more than {MAX_NESTING} deep)")
    out: list[str] = []
    pos = 0
    last_brace: dict[int, int] = {}  # line end -> index of the line's last "}"
    while True:
        m = _HEAD.search(template, pos)
        if m is None:
            out.append(template[pos:])
            return "".join(out)
        out.append(template[pos:m.start()])
        pos = m.end()
        if m.group("escaped"):
            out.append("$")
            continue
        if m.group("named"):
            out.append(_value(m.group("named"), lookup, on_unset))
            continue
        name, op = m.group("braced"), m.group("op")
        if not name:
            raise InvalidTemplate("")
        if not op:
            if template.startswith("}", pos):  # ${NAME}
                out.append(_value(name, lookup, on_unset))
                pos += 1
                continue
            raise InvalidTemplate("")
        line_end = template.find("\n", pos)
        line_end = len(template) if line_end < 0 else line_end
        if line_end not in last_brace:
            last_brace[line_end] = template.rfind("}", 0, line_end)
        end = last_brace[line_end]
        if end < pos:  # no "}" after the operator on this line: not a braced expression
            raise InvalidTemplate("")
        full = template[m.start():end + 1]
        closing = _first_closing_brace(full)
        cut = full if closing < 0 else full[:closing + 1]
        value, _ = _apply(op, cut[2:-1], lookup, on_unset, depth)
        out.append(value)
        pos = m.start() + len(cut)


def _value(name: str, lookup: Lookup, on_unset) -> str:
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
