"""Facts files: recorded probe output (``fleet facts --json``) read back for ``fleet detect
FILE`` and ``fleet plan --facts FILE``.

A file holds one facts object (``{"uname_m": "armv6l", ...}``), an object with a ``facts``
key (``{"host": NAME, "facts": {...}}``, the shape ``fleet facts --json`` prints per
device) or a list of either, as JSON or YAML.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.errors import InputFileError
from fleet.facts import FACT_KEYS
from fleet.output import warn
from fleet.yamlfile import MAX_FACTS_BYTES, LocatedDocument, load_located, parse_json, read_input

__all__ = ["FactsEntry", "load_facts_file"]


@dataclass
class FactsEntry:
    """One device's facts from a file: ``host`` (name, or the 0-based entry index as a
    string), ``facts`` (key -> text, or None when the file says they were not gathered),
    ``note`` (the file's own error text for that device, if any)."""

    host: str
    facts: dict[str, str] | None
    note: str | None = None


def _load(path: str) -> LocatedDocument:
    """Parse ``path`` (a regular file of at most :data:`MAX_FACTS_BYTES`) as JSON (``.json``
    or text starting with ``{``/``[``) else YAML."""
    text = read_input(path, MAX_FACTS_BYTES)
    if Path(path).suffix.lower() == ".json" or text.lstrip()[:1] in ("{", "["):
        return LocatedDocument(path, parse_json(path, text), {})
    return load_located(path, MAX_FACTS_BYTES)


def _fail(doc: LocatedDocument, keypath: tuple[Any, ...], message: str) -> InputFileError:
    """``doc.error`` with a line also for JSON: JSON is YAML, so the YAML reader finds the
    line of ``keypath`` (read again only on this error path)."""
    if not doc.lines:
        try:
            located = load_located(doc.path, MAX_FACTS_BYTES)
            return InputFileError(doc.path, message, located.line(keypath))
        except InputFileError:
            pass
    return doc.error(keypath, message)


def load_facts_file(path: str) -> list[FactsEntry]:
    """Entries of a facts file, in file order.

    Raises :class:`InputFileError` (file:line) when the file is unreadable, not JSON/YAML,
    empty, or an entry or fact value has the wrong shape. Unknown fact keys are warned
    about on stderr (a misspelt key would otherwise be silently ignored).
    """
    doc = _load(path)
    data = doc.data
    items = data if isinstance(data, list) else [data]
    if data is None or not items:
        raise InputFileError(path, "no facts entries in the file", doc.line(()))
    entries: list[FactsEntry] = []
    for i, item in enumerate(items):
        kp: tuple[Any, ...] = (i,) if isinstance(data, list) else ()
        if not isinstance(item, dict):
            raise _fail(doc, kp, f"entry {i}: expected a facts object or {{host, facts}}, got {type(item).__name__}")
        if "facts" in item:
            host = item.get("host", item.get("id", str(i)))  # "id": the real-device case files
            if not isinstance(host, (str, int)):
                raise _fail(doc, kp + ("host",), "host must be a string")
            facts = item["facts"]
            fkp = kp + ("facts",)
            note = item.get("error") if isinstance(item.get("error"), str) else None
            if facts is None:
                entries.append(FactsEntry(str(host), None, note))
                continue
        elif "host" in item:
            raise _fail(doc, kp, f"entry {i} has a 'host' but no 'facts'")
        else:
            host, facts, fkp, note = str(i), item, kp, None
        if not isinstance(facts, dict):
            raise _fail(doc, fkp, f"facts must be a mapping of fact key -> text, got {type(facts).__name__}")
        clean: dict[str, str] = {}
        for key, value in facts.items():
            if isinstance(value, (dict, list)):
                raise _fail(doc, fkp + (key,), f"fact '{key}' must be text, got {type(value).__name__}")
            if key not in FACT_KEYS:
                line = doc.line(fkp + (key,))
                warn(f"{path}{':' + str(line) if line else ''}: unknown fact key '{key}' ignored")
                continue
            if value is not None:
                clean[str(key)] = str(value)
        entries.append(FactsEntry(str(host), clean, note))
    return entries
