"""Check fleet's JSON output and saved reports against the schemas the package ships
(fleet/schemas, docs/reports.md), where the tests read them: ``loads(text, NAME)`` is
``json.loads`` that also validates, ``load_saved(path)`` reads a saved report and validates
it by its file name (``deploy-``, ``rollback-``, ``check-``: deploy-report; ``verify-``:
verify-report). A command that failed as a whole prints the error document instead
(``{"error", "kind", "exit_status"}``), which is validated as ``error-json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fleet.schemas import validate

__all__ = ["loads", "load_saved", "check"]

_SAVED = {"deploy": "deploy-report", "rollback": "deploy-report", "check": "deploy-report",
          "verify": "verify-report"}


def check(document: Any, name: str) -> Any:
    """Validate ``document`` as schema ``name`` (or as ``error-json`` when it is the error
    document of a failed command); return it. Raises jsonschema.ValidationError."""
    is_error = isinstance(document, dict) and set(document) == {"error", "kind", "exit_status"}
    validate(document, "error-json" if is_error and name != "error-json" else name)
    return document


def loads(text: str, name: str) -> Any:
    """``json.loads(text)``, checked against schema ``name``."""
    return check(json.loads(text), name)


def load_saved(path: str | Path) -> dict:
    """A saved report, checked against the schema its file name says."""
    path = Path(path)
    return check(json.loads(path.read_text()), _SAVED[path.name.split("-", 1)[0]])
