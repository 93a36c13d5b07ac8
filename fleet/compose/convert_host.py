"""Converters of the keys that tie a service to its device: environment and env files,
ports, mounts (bind, named volume, tmpfs), devices and extra hosts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleet.compose import units
from fleet.compose.context import Context, _bool, _pairs, _parsed, _strings, _text, _no_newline
from fleet.compose.model import Mount
from fleet.yamlfile import KeyPath


def _environment(ctx, kp, value, svc):
    env: dict[str, str] = {}
    for path_kp, path, required in _env_file_entries(ctx, kp[:-1] + ("env_file",), svc.get("env_file")):
        ef = ctx.env_files.get(path)
        if ef is None:
            if required:
                raise ctx.fail(path_kp, f"{path} does not exist")
            continue
        try:
            values = ef.resolve(ctx.lookup)
        except ValueError as e:
            raise ctx.fail(path_kp, f"{e}") from None
        for k, v in values.items():
            env[k] = _no_newline(ctx, path_kp, k, v)
    for k, v, where in _pairs(ctx, kp, value):
        if v is None:  # `NAME` alone: the device's value of NAME, unset when it has none
            v = ctx.lookup(k)
            if v is None:
                env.pop(k, None)
                continue
        if "=" in k or any(c.isspace() for c in k):
            raise ctx.fail(where, f"{k!r} is not an environment variable name (no '=' or spaces)")
        env[k] = _no_newline(ctx, where, k, v)
    return {"env": env}


def _env_file_entries(ctx: Context, kp: KeyPath, value: Any) -> list[tuple[KeyPath, Path, bool]]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    out = []
    for i, item in enumerate(items):
        where = kp if isinstance(value, str) else kp + (i,)
        required = True
        if isinstance(item, dict):
            required = _bool(ctx, where + ("required",), item.get("required", True))
            item = item["path"]
        p = Path(str(item))
        out.append((where, p if p.is_absolute() else ctx.base / p, required))
    return out


def _env_file(ctx, kp, value, svc):
    if "environment" not in svc:  # else read by _environment, which gives it precedence
        return _environment(ctx, kp[:-1] + ("environment",), None, svc)
    return {}


def _ports(ctx, kp, value, svc):
    out = []
    for i, p in enumerate(value or []):
        where = kp + (i,)
        if isinstance(p, dict):
            mode = p.get("mode")
            if mode not in (None, "host", "ingress"):
                raise ctx.fail(where + ("mode",), f"{mode!r} is not host or ingress")
            out.append(_parsed(ctx, where, units.port_from_long, p))
        else:
            out.append(_parsed(ctx, where, units.check_port, _text(ctx, where, p)))
    return {"ports": tuple(out)}


def _expose(ctx, kp, value, svc):
    return {"expose": tuple(_parsed(ctx, kp + (i,), units.check_expose, _text(ctx, kp + (i,), p))
                            for i, p in enumerate(value or []))}


def _volume_source(ctx: Context, kp: KeyPath, source: str, kind: str | None) -> tuple[str, str]:
    """(mount type, engine source) of a volume entry's source."""
    if not source:
        raise ctx.fail(kp, "an anonymous volume is not implemented by fleet: a new one would be left behind at "
                           "every release (volumes are never removed); name it under the top-level volumes:")
    looks_path = source.startswith(("/", ".", "~"))
    if kind == "bind" or (kind is None and looks_path):
        if not source.startswith("/"):
            raise ctx.fail(kp, f"bind source {source!r} must be an absolute path on the device (a relative path "
                               "names a folder on the controller)")
        return "bind", source
    if kind == "volume" and looks_path:
        raise ctx.fail(kp, f"{source!r} is a path, not a volume name")
    if source not in ctx.volumes:
        raise ctx.fail(kp, f"volume {source!r} is not defined under the top-level volumes: key")
    return "volume", ctx.volumes[source].name


def _volumes(ctx, kp, value, svc):
    mounts: list[Mount] = []
    tmpfs: dict[str, str] = {}
    for i, v in enumerate(value or []):
        where = kp + (i,)
        if isinstance(v, str):
            source, target, options = _parsed(ctx, where, units.parse_volume_short, v)
            kind, source = _volume_source(ctx, where, source, None)
            ro = "ro" in options
            rest = tuple(o for o in options if o not in ("ro", "rw"))
            if kind == "bind" and "nocopy" in rest:
                raise ctx.fail(where, "nocopy applies to named volumes only")
            mounts.append(Mount(kind, source, target, ro, rest))
            continue
        kind = v["type"]
        target = _text(ctx, where + ("target",), v.get("target"))
        if not target.startswith("/"):
            raise ctx.fail(where + ("target",), "the path in the container must be absolute")
        if kind == "tmpfs":
            opts = v.get("tmpfs") or {}
            parts = []
            if "size" in opts:
                parts.append(f"size={_parsed(ctx, where + ('tmpfs', 'size'), units.parse_size, opts['size'])}")
            if "mode" in opts:
                mode = opts["mode"]
                parts.append(f"mode={mode:o}" if isinstance(mode, int) else f"mode={_text(ctx, where, mode)}")
            if v.get("source"):
                raise ctx.fail(where + ("source",), "a tmpfs mount has no source")
            tmpfs[target] = ",".join(parts)
            continue
        if kind not in ("bind", "volume"):
            raise ctx.fail(where + ("type",), f"mount type {kind!r} is not implemented by fleet (bind, volume, tmpfs)")
        mkind, source = _volume_source(ctx, where + ("source",), _text(ctx, where, v.get("source"), empty_ok=True),
                                       kind)
        options: list[str] = []
        bind = v.get("bind") or {}
        if bind and kind != "bind":
            raise ctx.fail(where + ("bind",), "bind options need type: bind")
        if "propagation" in bind:
            prop = str(bind["propagation"])
            if prop not in units.PROPAGATION:
                raise ctx.fail(where + ("bind", "propagation"), f"{prop!r} is not one of {', '.join(units.PROPAGATION)}")
            options.append(prop)
        if "selinux" in bind:
            options.append(str(bind["selinux"]))
        if "create_host_path" in bind and not _bool(ctx, where + ("bind", "create_host_path"),
                                                    bind["create_host_path"]):
            raise ctx.fail(where + ("bind", "create_host_path"),
                           "false is not implemented by fleet: the engine creates a missing bind source folder")
        vol = v.get("volume") or {}
        if vol and kind != "volume":
            raise ctx.fail(where + ("volume",), "volume options need type: volume")
        if "nocopy" in vol and _bool(ctx, where + ("volume", "nocopy"), vol["nocopy"]):
            options.append("nocopy")
        if "consistency" in v:
            c = str(v["consistency"])
            if c not in ("consistent", "cached", "delegated"):
                raise ctx.fail(where + ("consistency",), f"{c!r} is not consistent, cached or delegated")
            options.append(c)
        ro = _bool(ctx, where + ("read_only",), v.get("read_only", False))
        mounts.append(Mount(mkind, source, target, ro, tuple(options)))
    targets = [m.target for m in mounts] + list(tmpfs)
    dup = sorted({t for t in targets if targets.count(t) > 1})
    if dup:
        raise ctx.fail(kp, f"{dup[0]} is mounted twice")
    out: dict[str, Any] = {"mounts": tuple(mounts)}
    if tmpfs:
        out["volume_tmpfs"] = tmpfs
    return out


def _tmpfs(ctx, kp, value, svc):
    out = {}
    for i, item in enumerate(_strings(ctx, kp, value)):
        path, _, opts = item.partition(":")
        if not path.startswith("/"):
            raise ctx.fail(kp + (i,) if isinstance(value, list) else kp, f"{item!r}: the path must be absolute")
        out[path] = opts
    return {"tmpfs": out}


def _devices(ctx, kp, value, svc):
    out = []
    for i, d in enumerate(value or []):
        where = kp + (i,)
        if isinstance(d, dict):
            out.append(_parsed(ctx, where, units.device_from_long, d))
        else:
            out.append(_parsed(ctx, where, units.check_device, _text(ctx, where, d)))
    return {"devices": tuple(out)}


def _extra_hosts(ctx, kp, value, svc):
    out = []
    if isinstance(value, dict):
        for host, ips in value.items():
            for ip in ips if isinstance(ips, list) else [ips]:
                out.append(_parsed(ctx, kp + (host,), lambda _: units.extra_host(str(host), str(ip)), None))
    else:
        for i, item in enumerate(value or []):
            text = str(item)
            # "host=ip" (Compose), or "host:ip" (docker run; an IPv6 address has more colons)
            host, sep, ip = text.partition("=")
            if not sep:
                host, _, ip = text.partition(":")
            out.append(_parsed(ctx, kp + (i,), lambda _: units.extra_host(host, ip), None))
    return {"extra_hosts": tuple(out)}
