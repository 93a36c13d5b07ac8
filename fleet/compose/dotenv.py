"""``env_file:`` files, read as docker compose reads them (compose-go ``dotenv/parser.go``).

Each line is ``NAME=value`` (or ``NAME: value``), optionally preceded by ``export``;
``#`` starts a comment line, and `` #`` a comment after an unquoted value. Values:

* unquoted: up to the end of the line (a `` #comment`` and trailing blanks cut),
  interpolated;
* ``'single quoted'``: literal;
* ``"double quoted"``: ``\\n``, ``\\t``, ``\\"``, ``\\\\``, ``\\$`` escapes, then interpolated;
* ``NAME`` alone: the value of NAME from the device's variables (left out when unset).

Interpolation uses the names defined earlier in the same file first, then the device's
variables (:mod:`fleet.compose.interpolate`). A value over several lines is refused: the
Docker ``--env-file`` format that carries a container's environment cannot hold one.
The file is read when the Compose file is loaded (bounded like every input file);
values are resolved per device.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fleet.compose.interpolate import InterpolationError, Lookup, substitute, variables_in
from fleet.errors import InputFileError
from fleet.yamlfile import read_input

__all__ = ["EnvEntry", "EnvFile", "parse_env_file", "load_env_file"]

_KEY = re.compile(r"^[\w.\-\[\]]+$")
_ESCAPES = re.compile(r"\\([abfnrtv$\"\\])")
_ESCAPED = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", '"': '"', "\\": "\\",
            "$": "$$"}


@dataclass(frozen=True)
class EnvEntry:
    """One line: ``kind`` is ``"expand"`` (interpolated), ``"literal"`` or ``"inherit"``."""

    name: str
    kind: str
    text: str
    line: int


@dataclass(frozen=True)
class EnvFile:
    path: Path
    entries: tuple[EnvEntry, ...]

    def variables(self) -> list[str]:
        """Names the file takes from the device's variables (inherited or interpolated)."""
        names: list[str] = []
        defined: set[str] = set()
        for e in self.entries:
            for n in ([e.name] if e.kind == "inherit" else variables_in(e.text) if e.kind == "expand" else []):
                if n not in names and n not in defined:
                    names.append(n)
            defined.add(e.name)
        return names

    def resolve(self, lookup: Lookup) -> dict[str, str]:
        """``{NAME: value}`` for one device. Raises ValueError naming this file and line
        for a required variable without a value or a malformed template."""
        out: dict[str, str] = {}

        def local(name: str) -> str | None:
            return out[name] if name in out else lookup(name)

        for e in self.entries:
            if e.kind == "inherit":
                value = lookup(e.name)
                if value is not None:
                    out[e.name] = value
            elif e.kind == "literal":
                out[e.name] = e.text
            else:
                try:
                    out[e.name] = substitute(e.text, local)
                except InterpolationError as err:
                    raise ValueError(f"{self.path}:{e.line}: {err}") from None
        return out


def parse_env_file(path: Path, text: str) -> EnvFile:
    """Parse ``text`` (the content of ``path``). Raises InputFileError naming the line."""
    entries: list[EnvEntry] = []
    if text.startswith("\ufeff"):
        text = text[1:]
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if re.match(r"^export\s+", line):
            line = line[6:].lstrip()
        m = re.match(r"^([^=:\s]*)\s*([=:])?\s*", line)
        name, sep = m.group(1), m.group(2)
        rest = line[m.end():]
        if not name or not _KEY.match(name):
            bad = next((c for c in line if not (c.isalnum() or c in "_.-[]")), line[:1])
            raise InputFileError(str(path), f"unexpected character {bad!r} in variable name {line.split()[0]!r}",
                                 number)
        if not sep:
            if rest:
                raise InputFileError(str(path), f"key cannot contain a space: {line!r}", number)
            entries.append(EnvEntry(name, "inherit", "", number))
            continue
        if rest[:1] in ("'", '"'):
            quote = rest[0]
            value, end = _quoted(rest, quote)
            if end < 0:
                raise InputFileError(str(path), f"unterminated quoted value {rest!r} (a value over several lines "
                                                "cannot be passed to a container's environment)", number)
            after = rest[end + 1:].strip()
            if after and not after.startswith("#"):
                raise InputFileError(str(path), f"unexpected text after the quoted value: {after!r}", number)
            if quote == "'":
                entries.append(EnvEntry(name, "literal", value, number))
            else:
                entries.append(EnvEntry(name, "expand", _ESCAPES.sub(lambda m: _ESCAPED[m.group(1)], value), number))
            continue
        value = rest.split(" #", 1)[0].rstrip()
        entries.append(EnvEntry(name, "expand", value, number))
    return EnvFile(path, tuple(entries))


def _quoted(rest: str, quote: str) -> tuple[str, int]:
    """The text between ``rest[0]`` and its closing quote (a backslash escapes it, and
    stays), and the closing quote's index (-1 when missing)."""
    chars: list[str] = []
    escaped = False
    for i in range(1, len(rest)):
        c = rest[i]
        if c != quote:
            if not escaped and c == "\\":
                escaped = True
                continue
            if escaped:
                escaped = False
                chars.append("\\")
            chars.append(c)
            continue
        if escaped:
            escaped = False
            if quote == '"':
                chars.append("\\")
            chars.append(c)
            continue
        return "".join(chars), i
    return "", -1


def load_env_file(path: Path) -> EnvFile:
    """Read and parse ``path`` (a regular file, at most 16 MiB, UTF-8)."""
    return parse_env_file(path, read_input(path))
