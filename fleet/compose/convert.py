"""One Compose service (interpolated for a device, schema-checked) -> :class:`ServiceSpec`.

Each service key has one converter (:data:`CONVERTERS`); every error names the file,
line and key, and the device when there is one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from fleet.compose import units
from fleet.compose.context import (FLEET_LABEL_PREFIX, Context, Converter, NeedsDevice, _argv, _bool, _int, _pairs,
                                   _parsed, _strings, _text)
from fleet.compose.convert_host import (_devices, _env_file, _environment, _expose, _extra_hosts, _ports, _tmpfs,
                                        _volumes)
from fleet.compose.model import (DEFAULT_LOGGING, BuildSpec, Dependency, Healthcheck, Logging, NetworkAttachment,
                                 ServiceSpec, Ulimit)
from fleet.yamlfile import KeyPath

__all__ = ["Context", "NeedsDevice", "convert_service", "CONVERTERS", "FLEET_LABEL_PREFIX"]


# ------------------------------------------------------------------------- converters


def _image(ctx, kp, value, svc):
    from fleet.registry import Reference

    text = _text(ctx, kp, value)
    try:
        Reference.parse(text)
    except Exception as e:  # ReferenceError: a UsageError subclass with the reason
        raise ctx.fail(kp, str(e)) from None
    return {"image": text}


def _build(ctx, kp, value, svc):
    if isinstance(value, str):
        value = {"context": value}
    context = Path(_text(ctx, kp + ("context",), value.get("context", ".")))
    if not context.is_absolute():
        context = ctx.base / context
    if "://" in str(value.get("context", "")) or not context.is_dir():
        raise ctx.fail(kp + ("context",), f"{context} is not a folder (fleet builds from a local folder)")
    dockerfile = _text(ctx, kp + ("dockerfile",), value.get("dockerfile", "Dockerfile"))
    if not (context / dockerfile).is_file():
        raise ctx.fail(kp + ("dockerfile",), f"{context / dockerfile} does not exist")
    args = {}
    for k, v, where in _pairs(ctx, kp + ("args",), value.get("args")):
        if v is None:  # `args: [NAME]`: from the controller's environment, as docker compose
            v = ctx.lookup(k)
            if v is None:
                continue
        args[k] = v
    target = _text(ctx, kp + ("target",), value["target"]) if "target" in value else None
    return {"build": BuildSpec(context.resolve(), dockerfile, args, target)}


def _command(key: str) -> Converter:
    def conv(ctx, kp, value, svc):
        return {key: _argv(ctx, kp, value)}
    return conv


def _list(key: str) -> Converter:
    def conv(ctx, kp, value, svc):
        return {key: tuple(_strings(ctx, kp, value))}
    return conv


def _caps(key: str) -> Converter:
    """Capabilities as the docker CLI sends them (``NormalizeCapabilities``): upper case,
    ``CAP_`` prefixed, ``ALL`` as it is."""
    def conv(ctx, kp, value, svc):
        out = []
        for cap in _strings(ctx, kp, value):
            cap = cap.strip().upper()
            out.append(cap if cap == "ALL" or cap.startswith("CAP_") else "CAP_" + cap)
        return {key: tuple(dict.fromkeys(out))}
    return conv


def _flag(key: str) -> Converter:
    def conv(ctx, kp, value, svc):
        return {key: _bool(ctx, kp, value)}
    return conv


def _string(key: str) -> Converter:
    def conv(ctx, kp, value, svc):
        return {key: _text(ctx, kp, value)}
    return conv


def _size(key: str, allow_unlimited: bool = False) -> Converter:
    def conv(ctx, kp, value, svc):
        if allow_unlimited and str(value).strip() == "-1":
            return {key: -1}
        return {key: _parsed(ctx, kp, units.parse_size, value)}
    return conv


def _cpus(ctx, kp, value, svc):
    try:
        cpus = float(value)
    except (TypeError, ValueError):
        raise ctx.fail(kp, f"{value!r} is not a number of CPUs") from None
    if not 0 <= cpus <= 4096:
        raise ctx.fail(kp, f"{value!r} is not a number of CPUs")
    return {"cpus": cpus}


def _pids(ctx, kp, value, svc):
    return {"pids_limit": _int(ctx, kp, value, -1)}


def _logging(ctx, kp, value, svc):
    driver = _text(ctx, kp + ("driver",), value["driver"]) if value.get("driver") is not None else None
    options = {str(k): _text(ctx, kp + ("options", k), v, empty_ok=True)
               for k, v in (value.get("options") or {}).items() if v is not None}
    return {"logging": Logging(driver, options)}


def _restart(ctx, kp, value, svc):
    text = "no" if value is False else _text(ctx, kp, value)
    if not units.RESTART_RE.match(text):
        raise ctx.fail(kp, f"{text!r} is not no, always, unless-stopped or on-failure[:N]")
    return {"restart": text}


def _healthcheck(ctx, kp, value, svc):
    if value.get("disable") is not None and _bool(ctx, kp + ("disable",), value["disable"]):
        return {"healthcheck": Healthcheck(test=("NONE",))}
    test = value.get("test")
    if isinstance(test, str):
        test = ("CMD-SHELL", test)
    elif isinstance(test, list):
        test = tuple(str(t) for t in test)
        if not test or test[0] not in ("CMD", "CMD-SHELL", "NONE"):
            raise ctx.fail(kp + ("test",), "a list starts with CMD, CMD-SHELL or NONE")
        if test[0] == "CMD-SHELL" and len(test) != 2:
            test = ("CMD-SHELL", " ".join(test[1:]))
        if test[0] != "NONE" and len(test) < 2:
            raise ctx.fail(kp + ("test",), f"{test[0]} needs a command")

    def dur(key):
        return _parsed(ctx, kp + (key,), units.parse_duration, value[key]) if key in value else None

    retries = _int(ctx, kp + ("retries",), value["retries"], 0) if "retries" in value else None
    return {"healthcheck": Healthcheck(test, dur("interval"), dur("timeout"), dur("start_period"),
                                       dur("start_interval"), retries)}


def _network_mode(ctx, kp, value, svc):
    text = _text(ctx, kp, value)
    if text.startswith("service:"):
        raise ctx.fail(kp, "network_mode service:NAME is not implemented by fleet (container:NAME is)")
    if "networks" in svc:
        raise ctx.fail(kp, "network_mode and networks cannot be used together")
    if text not in ("host", "bridge", "none", "default") and not text.startswith("container:"):
        raise ctx.fail(kp, f"{text!r} is not host, bridge, none or container:NAME (join stack networks with networks:)")
    return {"network_mode": text}


def _networks(ctx, kp, value, svc):
    attachments = []
    items = value.items() if isinstance(value, dict) else ((n, None) for n in value)
    for name, conf in items:
        where = kp + (name,) if isinstance(value, dict) else kp
        if name not in ctx.networks:
            raise ctx.fail(where, f"network {name!r} is not defined under the top-level networks: key")
        aliases = tuple(_strings(ctx, where + ("aliases",), (conf or {}).get("aliases")))
        attachments.append(NetworkAttachment(ctx.networks[name].name, tuple(dict.fromkeys((kp[1],) + aliases))))
    return {"networks": tuple(attachments)}


def _depends_on(ctx, kp, value, svc):
    deps = []
    items = value.items() if isinstance(value, dict) else ((n, None) for n in value)
    for name, conf in items:
        where = kp + (name,) if isinstance(value, dict) else kp
        conf = conf or {}
        if name == kp[1]:
            raise ctx.fail(where, f"service {name} depends on itself")
        if name not in ctx.services:
            raise ctx.fail(where, f"service {name!r} is not a service of this Compose file")
        condition = conf.get("condition", "service_started")
        if condition == "service_completed_successfully":
            raise ctx.fail(where + ("condition",), "service_completed_successfully is not implemented by fleet "
                                                   "(service_started, service_healthy)")
        deps.append(Dependency(name, condition,
                               _bool(ctx, where + ("required",), conf.get("required", True)),
                               _bool(ctx, where + ("restart",), conf.get("restart", False))))
    return {"depends_on": tuple(deps)}


def _labels(ctx, kp, value, svc):
    out = {}
    for k, v, where in _pairs(ctx, kp, value):
        if k.startswith(FLEET_LABEL_PREFIX):
            raise ctx.fail(where, f"labels {FLEET_LABEL_PREFIX}* are reserved: fleet records each device's "
                                  "deployment in them")
        out[k] = v or ""
    return {"labels": out}


def _sysctls(ctx, kp, value, svc):
    out = {}
    for k, v, where in _pairs(ctx, kp, value):
        if v is None:
            raise ctx.fail(where, f"sysctl {k} needs a value")
        out[k] = v
    return {"sysctls": out}


def _init(ctx, kp, value, svc):
    return {"init": _bool(ctx, kp, value)}


def _stop_grace(ctx, kp, value, svc):
    return {"stop_grace_period": _parsed(ctx, kp, units.parse_duration, value)}


def _ulimits(ctx, kp, value, svc):
    out = []
    for name, v in (value or {}).items():
        where = kp + (name,)
        if isinstance(v, dict):
            soft, hard = _int(ctx, where + ("soft",), v["soft"]), _int(ctx, where + ("hard",), v["hard"])
        else:
            soft = hard = _int(ctx, where, v)
        if soft > hard and hard != -1:
            raise ctx.fail(where, f"soft limit {soft} is above the hard limit {hard}")
        out.append(Ulimit(str(name), soft, hard))
    return {"ulimits": tuple(out)}


def _group_add(ctx, kp, value, svc):
    return {"group_add": tuple(_text(ctx, kp + (i,), g) for i, g in enumerate(value or []))}


CONVERTERS: dict[str, Converter] = {
    "image": _image,
    "build": _build,
    "command": _command("command"),
    "entrypoint": _command("entrypoint"),
    "environment": _environment,
    "env_file": _env_file,
    "ports": _ports,
    "expose": _expose,
    "volumes": _volumes,
    "tmpfs": _tmpfs,
    "devices": _devices,
    "cap_add": _caps("cap_add"),
    "cap_drop": _caps("cap_drop"),
    "group_add": _group_add,
    "privileged": _flag("privileged"),
    "user": _string("user"),
    "working_dir": _string("working_dir"),
    "read_only": _flag("read_only"),
    "mem_limit": _size("mem_limit"),
    "mem_reservation": _size("mem_reservation"),
    "memswap_limit": _size("memswap_limit", allow_unlimited=True),
    "cpus": _cpus,
    "shm_size": _size("shm_size"),
    "pids_limit": _pids,
    "logging": _logging,
    "restart": _restart,
    "healthcheck": _healthcheck,
    "network_mode": _network_mode,
    "networks": _networks,
    "depends_on": _depends_on,
    "labels": _labels,
    "sysctls": _sysctls,
    "extra_hosts": _extra_hosts,
    "hostname": _string("hostname"),
    "init": _init,
    "stop_grace_period": _stop_grace,
    "stop_signal": _string("stop_signal"),
    "ulimits": _ulimits,
    "security_opt": _list("security_opt"),
    "dns": _list("dns"),
}


def convert_service(ctx: Context, name: str, svc: Mapping[str, Any], fixed: Mapping[str, Any] | None = None,
                    skip: Callable[[str], bool] = lambda key: False) -> ServiceSpec:
    """The :class:`ServiceSpec` of service ``name`` (its mapping ``svc``). ``fixed``:
    fields already converted (``image``, ``build``: the same for every device);
    ``skip(key)`` leaves a key out, as does a converter whose lookup raises
    :class:`NeedsDevice` (both: the value is known per device only). Raises
    InputFileError."""
    kp: KeyPath = ("services", name)
    fields: dict[str, Any] = {"name": name, **(fixed or {})}
    for key, value in svc.items():
        if str(key).startswith("x-") or skip(key) or key in (fixed or {}):
            continue
        try:
            fields.update(CONVERTERS[key](ctx, kp + (key,), value, svc))
        except NeedsDevice:
            continue
    extra_tmpfs = fields.pop("volume_tmpfs", None)
    if extra_tmpfs:
        fields["tmpfs"] = {**fields.get("tmpfs", {}), **extra_tmpfs}
    if "logging" not in svc:
        fields["logging"] = DEFAULT_LOGGING
    if "network_mode" not in svc and "networks" not in svc and ctx.default_network and not skip("networks"):
        fields["networks"] = (NetworkAttachment(ctx.default_network, (name,)),)
    return ServiceSpec(**fields)
