"""A Compose file for one device: its values, its services, the order they start in.

* :func:`device_lookup` - a device's variables: its inventory variables (host vars over
  group vars, as Ansible merges them; read through :meth:`fleet.inventory.Host.var`, so a
  Jinja template is an error naming the host, the variable and its file), then the
  controller's environment;
* :func:`resolve` - the :class:`ResolvedStack` of one device: every value interpolated,
  checked against the schema again, converted to :class:`ServiceSpec`;
* :func:`resolve_fleet` - every device's, before any device is touched: one error naming
  each device that cannot have the stack (a required variable missing...);
* :func:`start_order` / :func:`healthy_before` - ``depends_on`` as a start order and the
  dependencies that must be healthy first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from fleet.compose import interpolate as interp
from fleet.compose.convert import Context, FLEET_LABEL_PREFIX, _bool, _pairs, _text, convert_service
from fleet.compose.model import NetworkSpec, ServiceSpec, VolumeSpec, is_secret_name
from fleet.compose.schema import Deferred, check_schema
from fleet.errors import UsageError

if TYPE_CHECKING:
    from fleet.compose.load import ComposeFile
    from fleet.inventory import Host

__all__ = ["MASK", "VariableValue", "DeviceValues", "ResolvedStack", "device_lookup", "resolve", "resolve_fleet",
           "start_order", "healthy_before", "top_level"]

#: What a secret value is shown as.
MASK = "<redacted>"


@dataclass(frozen=True)
class VariableValue:
    """A variable the stack refers to, for one device: ``value`` None when unset;
    ``source``: ``inventory FILE``, ``inventory``, ``environment`` or ``unset``;
    ``secret``: shown masked (:func:`fleet.compose.model.is_secret_name`, or it is
    interpolated into an environment variable whose name is a secret's)."""

    name: str
    value: str | None
    source: str
    secret: bool

    @property
    def shown(self) -> str | None:
        return MASK if self.secret and self.value else self.value


@dataclass(frozen=True)
class DeviceValues:
    """The values one device gets (what ``fleet plan`` shows), and the warnings of its
    interpolation (a variable unset without a default becomes "", as docker compose)."""

    device: str
    values: tuple[VariableValue, ...] = ()
    warnings: tuple[str, ...] = ()

    def shown(self) -> dict[str, str | None]:
        """``{name: value}`` with secrets masked (None: unset)."""
        return {v.name: v.shown for v in self.values}

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.device,
                "values": [{"name": v.name, "value": v.shown, "source": v.source, "secret": v.secret}
                           for v in self.values],
                "warnings": list(self.warnings)}


@dataclass(frozen=True)
class ResolvedStack:
    """The stack for one device. ``services`` in start order; ``networks``/``volumes``: the
    ones its services use, by Compose key (engine names inside); ``healthy_before``:
    per service, the dependencies that must be healthy before it starts."""

    device: str
    project: str
    services: Mapping[str, ServiceSpec]
    networks: Mapping[str, NetworkSpec]
    volumes: Mapping[str, VolumeSpec]
    values: DeviceValues
    order: tuple[str, ...] = ()
    healthy_before: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


# --------------------------------------------------------------------------- values


def _as_text(host: str, name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    kind = "a list" if isinstance(value, (list, tuple)) else "a mapping" if isinstance(value, Mapping) else \
        type(value).__name__
    raise UsageError(f"host {host!r}: variable {name} is {kind}; a Compose value needs a string or number")


def device_lookup(host: "Host", environ: Mapping[str, str] | None = None) -> interp.Lookup:
    """The variables of ``host`` for interpolation: an inventory variable (``Host.var``:
    host vars over group vars; a Jinja template raises UsageError naming the host, the
    variable and its file; a list or mapping raises UsageError), else the controller's
    environment (``environ``, default ``os.environ``), else unset (None). Names are
    case-sensitive, as in Ansible and the shell."""
    env = os.environ if environ is None else environ

    def lookup(name: str) -> str | None:
        if name in host.vars:
            return _as_text(host.name, name, host.var(name))
        return env.get(name)
    return lookup


def _sources(host: "Host | None", names: Iterable[str], values: Mapping[str, str | None]) -> dict[str, str]:
    out = {}
    for n in names:
        if values.get(n) is None:
            out[n] = "unset"
        elif host is not None and n in host.vars:
            src = host.var_sources.get(n)
            out[n] = f"inventory {src}" if src else "inventory"
        else:
            out[n] = "environment" if host is not None else "lookup"
    return out


def _secret_vars(compose: "ComposeFile") -> set[str]:
    """Variables interpolated into an environment variable whose name is a secret's."""
    out: set[str] = set()
    for svc in (compose.data.get("services") or {}).values():
        env = svc.get("environment") if isinstance(svc, dict) else None
        pairs = env.items() if isinstance(env, dict) else \
            (str(i).partition("=")[::2] for i in (env or []))
        for k, v in pairs:
            if is_secret_name(str(k)):
                out.add(str(k))
                out.update(interp.variables_in(str(v)) if isinstance(v, str) else ())
    for ef in compose.env_files.values():
        for e in ef.entries:
            if is_secret_name(e.name):
                out.add(e.name)
                out.update(interp.variables_in(e.text) if e.kind == "expand" else ())
    return out


# --------------------------------------------------------------------------- top level


def top_level(ctx: Context, data: Mapping[str, Any], project: str
              ) -> tuple[dict[str, NetworkSpec], dict[str, VolumeSpec], str]:
    """The stack's networks and volumes by Compose key (the implicit ``default`` network
    ``PROJECT_default`` added), and the default network's engine name. Values that are
    :class:`Deferred` (a first check) are left unchecked."""
    nets: dict[str, NetworkSpec] = {}
    vols: dict[str, VolumeSpec] = {}
    for section, out in (("networks", nets), ("volumes", vols)):
        for key, conf in (data.get(section) or {}).items():
            kp = (section, key)
            conf = conf or {}
            ext = conf.get("external", False)
            ext_name = None
            if isinstance(ext, dict):
                ext_name, ext = ext.get("name"), True
            external = False if isinstance(ext, Deferred) else _bool(ctx, kp + ("external",), ext)
            name = conf.get("name") or ext_name or (key if external else f"{project}_{key}")
            name = _text(ctx, kp + ("name",), name)
            if external and set(conf) & {"driver", "driver_opts", "labels", "internal"}:
                raise ctx.fail(kp + ("external",), f"an external {section[:-1]} exists already: it takes no "
                                                   "driver, driver_opts, labels or internal")
            labels = {}
            for k, v, where in _pairs(ctx, kp + ("labels",), conf.get("labels")):
                if k.startswith(FLEET_LABEL_PREFIX):
                    raise ctx.fail(where, f"labels {FLEET_LABEL_PREFIX}* are reserved for fleet's own records")
                labels[k] = v or ""
            opts = {str(k): _text(ctx, kp + ("driver_opts", k), v, empty_ok=True)
                    for k, v in (conf.get("driver_opts") or {}).items()}
            driver = _text(ctx, kp + ("driver",), conf["driver"]) if conf.get("driver") else None
            if section == "networks":
                internal = conf.get("internal", False)
                internal = False if isinstance(internal, Deferred) else _bool(ctx, kp + ("internal",), internal)
                out[key] = NetworkSpec(key, name, driver, opts, labels, external, internal)
            else:
                out[key] = VolumeSpec(key, name, driver, opts, labels, external)
    nets.setdefault("default", NetworkSpec("default", f"{project}_default"))
    return nets, vols, nets["default"].name


# --------------------------------------------------------------------------- resolve


def _without_fleet_wide(data: Mapping[str, Any]) -> dict[str, Any]:
    from fleet.compose.load import FLEET_WIDE

    out = dict(data)
    out["services"] = {n: {k: v for k, v in s.items() if k not in FLEET_WIDE}
                       for n, s in (data.get("services") or {}).items()}
    return out


def _resolve(compose: "ComposeFile", device: str, values: Mapping[str, str | None], sources: Mapping[str, str]
             ) -> ResolvedStack:
    from fleet.compose.load import _interpolated

    doc = compose.document
    warnings: list[str] = []

    def lookup(name: str) -> str | None:
        return values.get(name)

    def unset(name: str, kp) -> None:
        where = ".".join(str(k) for k in kp)
        line = doc.line(kp)
        warnings.append(f"{doc.path}:{line}: key '{where}': variable {name} is not set for device {device}; "
                        "it is replaced by an empty string")

    data = _interpolated(doc, (), _without_fleet_wide(doc.data), lookup, device, unset)
    if compose.has_variables:
        check_schema(doc, data, device)
    ctx = Context(doc, device, {}, {}, compose.env_files, lookup, compose.path.resolve().parent, compose.services)
    ctx.networks, ctx.volumes, ctx.default_network = top_level(ctx, data, compose.project)
    services = {}
    for name in compose.services:
        fixed = {"image": compose.images[name]}
        if compose.builds[name] is not None:
            fixed["build"] = compose.builds[name]
        services[name] = convert_service(ctx, name, data["services"][name], fixed)
    order = _order({n: [d.service for d in s.depends_on] for n, s in services.items()}, doc)
    used_nets = {a.network for s in services.values() for a in s.networks}
    used_vols = {m.source for s in services.values() for m in s.mounts if m.type == "volume"}
    secret = {n for n in compose.variables if is_secret_name(n)} | _secret_vars(compose)
    dv = DeviceValues(device, tuple(VariableValue(n, values.get(n), sources.get(n, "unset"), n in secret)
                                    for n in compose.variables), tuple(warnings))
    return ResolvedStack(
        device, compose.project, {n: services[n] for n in order},
        {k: n for k, n in ctx.networks.items() if n.name in used_nets},
        {k: v for k, v in ctx.volumes.items() if v.name in used_vols},
        dv, tuple(order),
        {n: tuple(d.service for d in s.depends_on if d.condition == "service_healthy") for n, s in services.items()})


def resolve(compose: "ComposeFile", host: "Host | None" = None, environ: Mapping[str, str] | None = None, *,
            device: str | None = None, lookup: interp.Lookup | None = None) -> ResolvedStack:
    """The stack for one device: ``host`` (its inventory variables, then ``environ``), or
    a ``device`` name and a ``lookup`` of its own.

    Raises :class:`fleet.errors.UsageError` (exit 2): an InputFileError naming the
    Compose file, line, key and device (``${VAR:?message}`` without a value, a value
    that is malformed once interpolated, a schema violation), or naming the host and
    variable (a Jinja template, a list where a string is needed).
    """
    if host is not None:
        device, lookup = host.name, device_lookup(host, environ)
    if device is None or lookup is None:
        raise TypeError("resolve() needs a host, or a device and a lookup")
    values = {n: lookup(n) for n in compose.variables}
    return _resolve(compose, device, values, _sources(host, compose.variables, values))


def resolve_fleet(compose: "ComposeFile", hosts: Sequence["Host"], environ: Mapping[str, str] | None = None,
                  max_errors: int = 20) -> dict[str, ResolvedStack]:
    """:func:`resolve` for every host (by host name), before any device is touched.
    Devices with the same values share one resolution. Raises one UsageError listing
    every device that fails (at most ``max_errors`` lines, then a count)."""
    out: dict[str, ResolvedStack] = {}
    cache: dict[tuple, ResolvedStack] = {}
    errors: list[str] = []
    for host in hosts:
        try:
            lookup = device_lookup(host, environ)
            values = {n: lookup(n) for n in compose.variables}
            key = tuple(values[n] for n in compose.variables)
            sources = _sources(host, compose.variables, values)
            if key in cache:
                base = cache[key]
                vals = tuple(replace(v, source=sources[v.name]) for v in base.values.values)
                warnings = tuple(w.replace(f"for device {base.device};", f"for device {host.name};")
                                 for w in base.values.warnings)
                out[host.name] = replace(base, device=host.name,
                                         values=DeviceValues(host.name, vals, warnings))
                continue
            out[host.name] = cache[key] = _resolve(compose, host.name, values, sources)
        except UsageError as e:
            errors.append(str(e))
    if errors:
        shown = errors[:max_errors] + ([f"... and {len(errors) - max_errors} more"] if len(errors) > max_errors else [])
        raise UsageError("\n".join(shown))
    return out


# --------------------------------------------------------------------------- order


def _order(deps: Mapping[str, Sequence[str]], doc) -> list[str]:
    """Kahn's algorithm, ties in declaration order; a cycle raises naming its services."""
    names = list(deps)
    pending = {n: [d for d in deps[n] if d in deps] for n in names}
    done: list[str] = []
    while len(done) < len(names):
        ready = [n for n in names if n not in done and all(d in done for d in pending[n])]
        if not ready:
            cycle = _cycle({n: pending[n] for n in names if n not in done})
            raise doc.error(("services", cycle[0], "depends_on"),
                            f"depends_on makes a cycle: {' -> '.join(cycle + [cycle[0]])}")
        done.append(ready[0])
    return done


def _cycle(graph: Mapping[str, Sequence[str]]) -> list[str]:
    for start in graph:
        path, seen = [start], {start}
        node = start
        while True:
            nxt = next((d for d in graph[node] if d in graph), None)
            if nxt is None:
                break
            if nxt in seen:
                return path[path.index(nxt):]
            path.append(nxt)
            seen.add(nxt)
            node = nxt
    return list(graph)[:1]


def start_order(stack: "ComposeFile | ResolvedStack") -> list[str]:
    """Service names so that each starts after everything it ``depends_on`` (ties keep
    the file's order). Raises InputFileError naming the services of a cycle."""
    if isinstance(stack, ResolvedStack):
        return list(stack.order)
    deps: dict[str, list[str]] = {}
    for name, svc in (stack.data.get("services") or {}).items():
        d = svc.get("depends_on") or []
        deps[name] = [str(x) for x in (d.keys() if isinstance(d, dict) else d) if not interp.has_variables(str(x))]
    return _order(deps, stack.document)


def healthy_before(stack: ResolvedStack) -> dict[str, tuple[str, ...]]:
    """Per service, the dependencies (``condition: service_healthy``) whose health check
    must pass before it starts."""
    return dict(stack.healthy_before)
