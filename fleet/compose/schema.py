"""Check a Compose file against the Compose Specification's JSON schema, and against the
keys fleet implements.

The schema is the specification's published ``schema/compose-spec.json`` (vendored in
``fleet/compose/data/``, see its README for the commit), read with ``jsonschema``'s
draft-07 validator. Every error names the file, the line and the dotted key
(:meth:`fleet.yamlfile.LocatedDocument.error`): jsonschema's error path is a key path
of the located document.

docker compose (compose-go ``loader.go``) interpolates first and validates after; fleet
checks a file once when it is read, before any device's values are known, and again for
each device after interpolation. In the first check a string that refers to a variable
stands for any value (:class:`Deferred`): an error about such a string alone waits for
the device's check.

``x-*`` keys (the specification's extensions, usually YAML anchors) are allowed anywhere
the schema allows them and have no effect. Any other key that the schema allows but fleet
does not implement is an error naming it (:data:`SUPPORTED`); never ignored.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any, Iterator

from fleet.errors import InputFileError
from fleet.yamlfile import KeyPath, LocatedDocument

__all__ = ["Deferred", "compose_schema", "schema_errors", "check_schema", "check_supported", "SUPPORTED",
           "REFUSED_REASONS"]


class Deferred(str):
    """A string value that refers to a variable: its final value is known per device."""

    __slots__ = ()


@functools.lru_cache(maxsize=1)
def compose_schema() -> dict:
    """The vendored Compose Specification schema (a JSON object)."""
    return json.loads(resources.files("fleet.compose").joinpath("data/compose-spec.json").read_text("utf-8"))


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema

    return jsonschema.Draft7Validator(compose_schema())


def _waits(err) -> bool:
    """True when ``err`` is only about Deferred strings (some branch of a oneOf/anyOf fails
    for no other reason)."""
    if isinstance(err.instance, Deferred):
        return True
    if err.validator in ("oneOf", "anyOf") and err.context:
        branches: dict[Any, list] = {}
        for sub in err.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        return any(all(_waits(s) for s in subs) for subs in branches.values())
    return False


def _specific(err):
    """The most telling error below a oneOf/anyOf failure: a branch that fails only on
    its type is no help ("not an array" for a mapping); of the others, the deepest."""
    while err.validator in ("oneOf", "anyOf") and err.context:
        here = list(err.absolute_path)
        candidates = [e for e in err.context
                      if not (e.validator == "type" and list(e.absolute_path) == here) and not _waits(e)]
        if not candidates:
            break
        err = max(candidates, key=lambda e: len(e.absolute_path))
    return err


def _unexpected(err) -> list[str]:
    props = err.schema.get("properties", {})
    patterns = err.schema.get("patternProperties", {})
    return [k for k in err.instance if k not in props and not any(re.search(p, str(k)) for p in patterns)]


def schema_errors(data: Any) -> Iterator[tuple[KeyPath, str]]:
    """``(key path, message)`` of each schema violation in ``data`` (an interpolated or
    raw Compose document), errors about :class:`Deferred` values left out."""
    for err in sorted(_validator().iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]):
        if _waits(err):
            continue
        err = _specific(err)
        path = tuple(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            for key in _unexpected(err):
                yield path + (key,), "unknown key: not a key of the Compose Specification here"
            continue
        if err.validator == "oneOf" and not err.context:
            yield path, "matches more than one of the forms the Compose Specification allows here"
            continue
        if err.validator == "oneOf":
            yield path, f"{_show(err.instance)} is none of the forms the Compose Specification allows here"
            continue
        yield path, _message(err)


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _message(err) -> str:
    v, inst = err.validator, err.instance
    if v == "type":
        want = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        return f"{_show(inst)} is not {' or '.join('an ' + w if w[0] in 'aeiou' else 'a ' + w for w in want)}"
    if v == "enum":
        return f"{_show(inst)} is not one of {', '.join(map(str, err.validator_value))}"
    if v == "required":
        return err.message.replace("is a required property", "is required here")
    if v == "uniqueItems":
        return "has an item twice (the Compose Specification requires unique items)"
    return err.message


def check_schema(doc: LocatedDocument, data: Any, device: str | None = None) -> None:
    """Raise the first schema error of ``data`` (``doc``'s document, raw with
    :class:`Deferred` strings, or interpolated for ``device``) as an
    :class:`InputFileError` naming ``doc``'s file, line and key (and the device)."""
    for path, message in schema_errors(data):
        if device is not None:
            message = f"device {device}: {message}"
        raise doc.error(path, message)


# Keys fleet implements, by where they appear ("*" stands for any name). A key the schema
# allows that is not here is refused by check_supported.
SUPPORTED: dict[tuple[str, ...], frozenset[str]] = {
    (): frozenset({"version", "name", "services", "networks", "volumes"}),
    ("services", "*"): frozenset({
        "image", "build", "command", "entrypoint", "environment", "env_file", "ports", "expose", "volumes",
        "devices", "cap_add", "cap_drop", "group_add", "privileged", "user", "working_dir", "read_only",
        "tmpfs", "mem_limit", "mem_reservation", "memswap_limit", "cpus", "shm_size", "pids_limit", "logging",
        "restart", "healthcheck", "network_mode", "networks", "depends_on", "labels", "sysctls", "extra_hosts",
        "hostname", "init", "stop_grace_period", "stop_signal", "ulimits", "security_opt", "dns"}),
    ("services", "*", "build"): frozenset({"context", "dockerfile", "args", "target"}),
    ("services", "*", "healthcheck"): frozenset({"test", "interval", "timeout", "start_period", "start_interval",
                                                  "retries", "disable"}),
    ("services", "*", "logging"): frozenset({"driver", "options"}),
    ("services", "*", "depends_on", "*"): frozenset({"condition", "required", "restart"}),
    ("services", "*", "networks", "*"): frozenset({"aliases"}),
    ("services", "*", "ports", "*"): frozenset({"target", "published", "host_ip", "protocol", "mode", "name",
                                                 "app_protocol"}),
    ("services", "*", "volumes", "*"): frozenset({"type", "source", "target", "read_only", "bind", "volume",
                                                   "tmpfs", "consistency"}),
    ("services", "*", "volumes", "*", "bind"): frozenset({"propagation", "create_host_path", "selinux"}),
    ("services", "*", "volumes", "*", "volume"): frozenset({"nocopy"}),
    ("services", "*", "volumes", "*", "tmpfs"): frozenset({"size", "mode"}),
    ("services", "*", "devices", "*"): frozenset({"source", "target", "permissions"}),
    ("services", "*", "env_file", "*"): frozenset({"path", "required"}),
    ("services", "*", "ulimits", "*"): frozenset({"soft", "hard"}),
    ("networks", "*"): frozenset({"name", "driver", "driver_opts", "labels", "external", "internal"}),
    ("volumes", "*"): frozenset({"name", "driver", "driver_opts", "labels", "external"}),
    ("volumes", "*", "external"): frozenset({"name"}),
    ("networks", "*", "external"): frozenset({"name"}),
}

# Mappings whose keys are names, not settings: walked with "*" (the rest is data).
_NAMED_CHILDREN = {("services",), ("networks",), ("volumes",), ("services", "*", "depends_on"),
                   ("services", "*", "networks"), ("services", "*", "ulimits")}
_LISTS = {("services", "*", "ports"), ("services", "*", "volumes"), ("services", "*", "devices"),
          ("services", "*", "env_file")}

#: Why fleet refuses a key that users may expect (shown in the error).
REFUSED_REASONS = {
    "container_name": "fleet names each service's container itself (it renames them during a rollout)",
    "platform": "fleet picks each device's platform from its probed facts",
    "deploy": "Swarm deployment settings; use mem_limit, cpus, restart and the playbook's rollout:",
    "secrets": "give secrets as variables (masked in fleet plan) or a file mounted from the device",
    "configs": "mount a file from the device instead",
    "include": "keep the stack in one Compose file",
    "extends": "keep each service whole in the Compose file (YAML anchors and x- keys work)",
    "profiles": "every service of the Compose file is deployed",
    "scale": "one container per service and device",
    "volumes_from": "mount the same named volume in both services",
    "links": "services on a stack network reach each other by service name",
    "pull_policy": "fleet pulls each device's image by digest",
    "models": "not implemented by fleet",
}


def check_supported(doc: LocatedDocument, data: Any) -> None:
    """Raise an :class:`InputFileError` (file, line, key) for the first key of ``data``
    that fleet does not implement (``x-*`` keys excepted)."""
    _walk(doc, data, (), ())


def _walk(doc: LocatedDocument, node: Any, path: KeyPath, pattern: tuple[str, ...]) -> None:
    if isinstance(node, dict):
        if pattern in _NAMED_CHILDREN:
            for name, child in node.items():
                _walk(doc, child, path + (name,), pattern + ("*",))
            return
        allowed = SUPPORTED.get(pattern)
        if allowed is None:
            return  # data: environment, labels, options...
        for key, child in node.items():
            if str(key).startswith("x-"):
                continue
            if key not in allowed:
                reason = REFUSED_REASONS.get(str(key), "")
                raise doc.error(path + (key,), "fleet does not implement this Compose key"
                                + (f": {reason}" if reason else "")
                                + f" (implemented here: {', '.join(sorted(allowed))}; see docs/compose.md)")
            _walk(doc, child, path + (key,), pattern + (str(key),))
    elif isinstance(node, list) and pattern in _LISTS:
        for i, item in enumerate(node):
            _walk(doc, item, path + (i,), pattern + ("*",))


def error_at(doc: LocatedDocument, path: KeyPath, message: str, device: str | None = None) -> InputFileError:
    """``doc.error`` with the device named first when there is one."""
    return doc.error(path, f"device {device}: {message}" if device else message)
