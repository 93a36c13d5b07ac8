"""Facts files: recorded probe output (``fleet facts --json``) read back for ``fleet detect
FILE`` and ``fleet plan --facts FILE``.

A file holds one facts object (``{"uname_m": "armv6l", ...}``), an object with a ``facts``
key (``{"host": NAME, "facts": {...}}``, the shape ``fleet facts --json`` prints per
device) or a list of either, as JSON or YAML.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.errors import InputFileError
from fleet.facts import FACT_KEYS
from fleet.output import warn
from fleet.yamlfile import LocatedDocument, load_located

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
    """Parse ``path`` as JSON (``.json`` or text starting with ``{``/``[``) else YAML."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputFileError(path, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputFileError(path, f"not UTF-8 text: {exc.reason}") from None
    if p.suffix.lower() == ".json" or text.lstrip()[:1] in ("{", "["):
        try:
            return LocatedDocument(path, json.loads(text), {})
        except json.JSONDecodeError as exc:
            raise InputFileError(path, f"JSON error: {exc.msg}", exc.lineno) from None
        except RecursionError:
            raise InputFileError(path, "JSON nested too deeply") from None
    return load_located(path)


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
            raise doc.error(kp, f"entry {i}: expected a facts object or {{host, facts}}, got {type(item).__name__}")
        if "facts" in item:
            host = item.get("host", item.get("id", str(i)))  # "id": the real-device case files
            if not isinstance(host, (str, int)):
                raise doc.error(kp + ("host",), "host must be a string")
            facts = item["facts"]
            fkp = kp + ("facts",)
            note = item.get("error") if isinstance(item.get("error"), str) else None
            if facts is None:
                entries.append(FactsEntry(str(host), None, note))
                continue
        elif "host" in item:
            raise doc.error(kp, f"entry {i} has a 'host' but no 'facts'")
        else:
            host, facts, fkp, note = str(i), item, kp, None
        if not isinstance(facts, dict):
            raise doc.error(fkp, f"facts must be a mapping of fact key -> text, got {type(facts).__name__}")
        clean: dict[str, str] = {}
        for key, value in facts.items():
            if isinstance(value, (dict, list)):
                raise doc.error(fkp + (key,), f"fact '{key}' must be text, got {type(value).__name__}")
            if key not in FACT_KEYS:
                line = doc.line(fkp + (key,))
                warn(f"{path}{':' + str(line) if line else ''}: unknown fact key '{key}' ignored")
                continue
            if value is not None:
                clean[str(key)] = str(value)
        entries.append(FactsEntry(str(host), clean, note))
    return entries
