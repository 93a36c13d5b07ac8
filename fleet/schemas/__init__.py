"""JSON Schemas (Draft 2020-12) of fleet's JSON output and saved reports, shipped in the
package (docs/reports.md describes them).

Each document has its own schema file here, ``$id`` ``urn:fleet:schema:NAME``; shared
definitions (digest, platform, the device row, ...) are in ``common.json``::

    deploy-report   saved report of deploy, rollback, deploy --check
    deploy-json     stdout of deploy/rollback --json
    verify-report   saved report of verify
    verify-json     stdout of verify --json
    probe-json      stdout of probe --json
    facts-json      stdout of facts --json
    detect-json     stdout of detect --json
    history-json    stdout of history --json
    error-json      stdout of any command with --json that fails as a whole

``validate(document, "deploy-report")`` raises :class:`jsonschema.ValidationError` for a
document that does not conform (JSON Schema 2020-12, https://json-schema.org/draft/2020-12).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = ["NAMES", "BASE", "load", "validator", "validate"]

BASE = "urn:fleet:schema:"
#: The documents with a schema (file ``NAME.json``).
NAMES = ("deploy-report", "deploy-json", "verify-report", "verify-json", "probe-json", "facts-json",
         "detect-json", "history-json", "error-json")


def load(name: str) -> dict[str, Any]:
    """The schema ``name`` (one of :data:`NAMES`, or ``common``) as a dict. Raises
    ValueError for another name."""
    if name not in NAMES and name != "common":
        raise ValueError(f"no schema named {name!r} (known: {', '.join(NAMES)})")
    return json.loads(resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def validator(name: str):
    """A :class:`jsonschema.Draft202012Validator` for ``name``, its ``urn:fleet:schema:``
    references resolved within the package (no network)."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    registry = Registry().with_resources(
        (BASE + n, Resource.from_contents(load(n))) for n in (*NAMES, "common"))
    schema = load(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=registry)


def validate(document: Any, name: str) -> None:
    """Raise :class:`jsonschema.ValidationError` (its ``path`` names the failing place)
    unless ``document`` conforms to schema ``name``."""
    from jsonschema.exceptions import best_match

    error = best_match(validator(name).iter_errors(document))  # the deepest, most relevant
    if error is not None:
        raise error
