"""Read a Compose file: YAML 1.2, the specification's schema, the keys fleet implements,
every value that is the same for all devices checked once.

:func:`load_compose` returns a :class:`ComposeFile`; :func:`fleet.compose.stack.resolve`
makes a device's :class:`~fleet.compose.stack.ResolvedStack` of it.

YAML 1.2: docker compose reads Compose files with go-yaml v3, a YAML 1.2 parser, where
``no``, ``on``, ``yes`` are strings and ``22:22`` is not a base-60 number (PyYAML's
YAML 1.1 default would make ``restart: no`` false and ``ports: [22:22]`` the number 1342).
:class:`ComposeLoader` resolves plain scalars by the YAML 1.2 core schema, and leaves
dates as strings as go-yaml does.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from fleet.compose import interpolate as interp
from fleet.compose.convert import Context, NeedsDevice, convert_service
from fleet.compose.dotenv import EnvFile, load_env_file
from fleet.compose.model import BuildSpec
from fleet.compose.schema import Deferred, check_schema, check_supported
from fleet.errors import InputFileError
from fleet.yamlfile import BoundedLoader, KeyPath, LocatedDocument, load_located

__all__ = ["ComposeLoader", "ComposeFile", "load_compose", "compose_of_playbook", "mark_deferred", "project_name"]


class ComposeLoader(BoundedLoader):
    """:class:`fleet.yamlfile.BoundedLoader` with the YAML 1.2 core schema's resolvers."""

    yaml_implicit_resolvers: dict = {}


for _tag, _regexp, _first in (
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+|0b[01]+)$", list("-+0123456789")),
    ("tag:yaml.org,2002:float",
     r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
     list("-+.0123456789")),
    ("tag:yaml.org,2002:merge", r"^(?:<<)$", ["<"]),
):
    ComposeLoader.add_implicit_resolver(_tag, re.compile(_regexp), _first)


def _int_12(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = loader.construct_scalar(node)
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    if body.startswith("0o"):
        return sign * int(body[2:], 8)
    if body.startswith(("0x", "0b")):
        return sign * int(body, 0)
    if len(body) > 1 and body.startswith("0"):  # go-yaml v3 reads 0755 as octal too
        return sign * int(body, 8) if re.fullmatch(r"[0-7]+", body) else sign * int(body, 10)
    return sign * int(body, 10)


ComposeLoader.add_constructor("tag:yaml.org,2002:int", _int_12)


#: Keys of a service that are the same on every device: resolved from the controller's
#: environment when the file is read (the images fleet builds and publishes once).
FLEET_WIDE = ("image", "build")


@dataclass(frozen=True)
class ComposeFile:
    """A checked Compose file. ``data``: the document as read (before interpolation);
    ``project``: the name networks and volumes are prefixed with (``name:`` or the
    playbook's name); ``images``/``builds``: per service, its image reference and build
    (None for a service whose image is picked), resolved from the controller's
    environment; ``env_files``: the env files read, by path; ``variables``: every
    variable name the file refers to (the values a device needs)."""

    path: Path
    document: LocatedDocument = field(repr=False, compare=False)
    project: str
    services: tuple[str, ...]
    images: Mapping[str, str]
    builds: Mapping[str, BuildSpec | None]
    env_files: Mapping[Path, EnvFile] = field(repr=False)
    variables: tuple[str, ...]
    has_variables: bool

    @property
    def data(self) -> Any:
        return self.document.data

    @property
    def built_services(self) -> tuple[str, ...]:
        """Services fleet builds (``build:``) and publishes under their ``image:`` tag."""
        return tuple(s for s in self.services if self.builds[s] is not None)

    @property
    def picked_services(self) -> tuple[str, ...]:
        """Services whose ``image:`` is an existing image (each device's platform picked
        from its index)."""
        return tuple(s for s in self.services if self.builds[s] is None)


def mark_deferred(value: Any) -> Any:
    """``value`` with each string that refers to a variable made :class:`Deferred` and
    every other string unescaped (``$$`` -> ``$``), as a first check sees it."""
    if isinstance(value, dict):
        return {k: mark_deferred(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mark_deferred(v) for v in value]
    if isinstance(value, str):
        return Deferred(value) if interp.has_variables(value) else interp.unescape(value)
    return value


def _contains_deferred(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Deferred):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _strings(value: Any, path: KeyPath = ()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, path + (i,))
    elif isinstance(value, str):
        yield path, value


def project_name(text: str) -> str:
    """A Compose project name as docker compose normalises it (compose-go
    ``NormalizeProjectName``): lower case, only ``a-z0-9_-``."""
    return re.sub(r"[^a-z0-9_-]", "", text.lower())


def _interpolated(doc: LocatedDocument, path: KeyPath, value: Any, lookup: interp.Lookup, device: str | None,
                  on_unset=None) -> Any:
    """``value`` (at ``path``) with every string interpolated; errors name file, line, key."""
    if isinstance(value, dict):
        return {k: _interpolated(doc, path + (k,), v, lookup, device, on_unset) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolated(doc, path + (i,), v, lookup, device, on_unset) for i, v in enumerate(value)]
    if isinstance(value, str):
        try:
            return interp.substitute(value, lookup, (lambda n: on_unset(n, path)) if on_unset else None)
        except interp.InterpolationError as e:
            raise doc.error(path, f"device {device}: {e}" if device else str(e)) from None
    return value


def load_compose(path: str | Path, project: str, environ: Mapping[str, str] | None = None) -> ComposeFile:
    """Read and check the Compose file ``path``.

    ``project``: the default project name (the playbook's name; a top-level ``name:``
    wins); ``environ`` (default ``os.environ``): the controller's environment, from which
    each service's ``image`` and ``build`` are resolved (they are the same for every
    device: an unset variable there without a default is an error).

    Raises :class:`fleet.errors.InputFileError` (exit 2) naming the file, line and key:
    YAML errors, schema violations (the Compose Specification's JSON schema), keys fleet
    does not implement, malformed values that need no device's variables, a service
    without ``image:``, undefined networks and volumes, a ``depends_on`` cycle.
    """
    environ = os.environ if environ is None else environ
    doc = load_located(path, loader_class=ComposeLoader)
    if not isinstance(doc.data, dict):
        raise doc.error((), "a Compose file is a mapping with a services: key")
    for kp, text in _strings(doc.data):  # template syntax: an error now, not per device
        try:
            interp.substitute(text, lambda n: "x")
        except interp.InterpolationError as e:
            raise doc.error(kp, str(e)) from None
    marked = mark_deferred(doc.data)
    check_schema(doc, marked)
    check_supported(doc, doc.data)
    services = marked.get("services") or {}
    if not services:
        raise doc.error(("services",) if "services" in marked else (), "needs at least one service")
    name = marked.get("name")
    if isinstance(name, Deferred):
        name = _interpolated(doc, ("name",), str(doc.data["name"]), environ.get, None, _strict(doc, environ))
    proj = project_name(str(name) if name else project)
    if not proj:
        raise doc.error(("name",), f"{name or project!r} leaves no project name (a-z, 0-9, _ and - are kept)")
    base = Path(doc.path).resolve().parent

    env_files: dict[Path, EnvFile] = {}
    for sname, svc in services.items():
        ef = svc.get("env_file")
        for i, item in enumerate([ef] if isinstance(ef, str) else (ef or [])):
            kp = ("services", sname, "env_file") + (() if isinstance(ef, str) else (i,))
            entry = item if isinstance(item, (str, dict)) else str(item)
            raw = entry["path"] if isinstance(entry, dict) else entry
            required = entry.get("required", True) if isinstance(entry, dict) else True
            if isinstance(raw, Deferred):
                raise doc.error(kp, "an env_file path is the same for every device: it cannot use variables")
            p = Path(raw) if Path(raw).is_absolute() else base / raw
            if p.exists() or required is True or str(required).lower() == "true":
                try:
                    env_files[p] = load_env_file(p)
                except InputFileError as e:
                    if p.exists():
                        raise
                    raise doc.error(kp, f"{p}: {e.reason}") from None

    images: dict[str, str] = {}
    builds: dict[str, BuildSpec | None] = {}
    static = Context(doc, None, {}, {}, env_files, _needs_device, base, tuple(services))
    from fleet.compose.stack import top_level  # networks and volumes, shared with resolve

    static.networks, static.volumes, static.default_network = top_level(static, marked, proj)
    for sname, svc in services.items():
        kp = ("services", sname)
        if "image" not in svc:
            raise doc.error(kp, "needs image: (with build:, the tag fleet publishes the built image under)"
                            if "build" in svc else "needs image: (or build: and image:)")
        fixed: dict[str, Any] = {}
        for key in FLEET_WIDE:
            if key in svc:
                raw = doc.data["services"][sname][key]
                value = _interpolated(doc, kp + (key,), raw, environ.get, None, _strict(doc, environ))
                wide = Context(doc, None, {}, {}, {}, _env_lookup(environ), base, tuple(services))
                from fleet.compose.convert import CONVERTERS

                fixed.update(CONVERTERS[key](wide, kp + (key,), value, svc))
        images[sname] = fixed["image"]
        builds[sname] = fixed.get("build")
        convert_service(static, sname, svc, fixed, skip=lambda k, svc=svc: _contains_deferred(svc.get(k)))

    variables: list[str] = []
    from fleet.compose.stack import _without_fleet_wide

    for _, text in _strings(_without_fleet_wide(doc.data)):
        for n in interp.variables_in(text):
            if n not in variables:
                variables.append(n)
    for sname, svc in services.items():
        env = svc.get("environment")
        names = [k for k, v in env.items() if v is None] if isinstance(env, dict) else \
            [str(i) for i in (env or []) if "=" not in str(i)]
        for n in names:
            if n not in variables:
                variables.append(n)
    for ef in env_files.values():
        for n in ef.variables():
            if n not in variables:
                variables.append(n)
    compose = ComposeFile(Path(doc.path), doc, proj, tuple(services), images, builds, env_files, tuple(variables),
                          _contains_deferred(marked))
    from fleet.compose.stack import start_order

    start_order(compose)  # a cycle is an error now, not at the first device
    return compose


def _needs_device(name: str) -> str | None:
    raise NeedsDevice(name)


def _env_lookup(environ: Mapping[str, str]) -> interp.Lookup:
    return lambda name: environ.get(name)


def _strict(doc: LocatedDocument, environ: Mapping[str, str]):
    """``on_unset`` of the values that are the same for every device: an error."""
    def unset(name: str, kp: KeyPath) -> None:
        raise doc.error(kp, f"variable {name} is not set in the controller's environment (this value is the "
                            "same for every device, so it is not read from the inventory)")
    return unset


def compose_of_playbook(doc: LocatedDocument, top: Mapping[str, Any], name: str,
                        environ: Mapping[str, str]) -> ComposeFile:
    """A playbook's ``compose: FILE`` (``top``: the playbook's mapping, ``doc`` its located
    document): the stack replaces ``image``, ``source`` and ``container`` (an error to
    give them too), a service's health check is its ``healthcheck:`` (``health.command``
    and ``health.http`` refused). FILE is relative to the playbook's folder."""
    for key in ("image", "source", "container"):
        if key in top:
            raise doc.error((key,), "cannot be used with compose: (the Compose file's services name their images, "
                                    "build: there replaces source:, and each service says how it runs)")
    health = top.get("health")
    for key in ("command", "http"):
        if isinstance(health, dict) and key in health:
            raise doc.error(("health", key), "with compose:, each service's health check is its healthcheck: in "
                                             "the Compose file")
    raw = top["compose"]
    if not isinstance(raw, str) or not raw.strip():
        raise doc.error(("compose",), "must be the path of a Compose file")
    text = interp.substitute(raw, lambda n: environ.get(n))
    path = Path(os.path.expanduser(text))
    if not path.is_absolute():
        path = Path(os.path.normpath(Path(doc.path).resolve().parent / path))
    if not path.is_file():
        raise doc.error(("compose",), f"{path} is not a file")
    return load_compose(path, name, environ)
