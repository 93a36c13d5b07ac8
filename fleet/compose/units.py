"""Compose's value syntaxes, parsed as docker compose parses them (pure functions).

Each raises ValueError with a message that names the value; the caller adds the file,
line and key (and the device).

* sizes (``mem_limit: 512m``): go-units ``RAMInBytes`` (binary multiples,
  https://github.com/docker/go-units/blob/master/size.go);
* durations (``interval: 1m30s``): Go ``time.ParseDuration``
  (https://pkg.go.dev/time#ParseDuration);
* ports (short and long syntax), volumes (short syntax), devices and extra hosts: the
  Compose Specification's service keys
  (https://github.com/compose-spec/compose-spec/blob/main/05-services.md).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Mapping

__all__ = ["parse_size", "parse_duration", "port_from_long", "check_port", "check_expose",
           "parse_volume_short", "device_from_long", "check_device", "extra_host", "VOLUME_MODES",
           "PROPAGATION", "RESTART_RE"]

_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_SIZE_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(value: Any) -> int:
    """Bytes of ``512m``, ``1.5g``, ``64k``, ``1024`` (a number is bytes). Multiples are
    binary (``1k`` = 1024), as ``docker run --memory`` and docker compose read them."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{value!r} is not a size (negative)")
        return int(value)
    m = _SIZE_RE.match(str(value).strip())
    if not m:
        raise ValueError(f"{value!r} is not a size such as 512m, 1g or 65536")
    number = float(m.group(1)) if m.group(1).count(".") <= 1 else None
    if number is None:
        raise ValueError(f"{value!r} is not a size such as 512m, 1g or 65536")
    return int(number * _SIZE_UNITS.get((m.group(2) or "").lower(), 1))


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d*\.?\d*)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(value: Any) -> float:
    """Seconds of a Go duration: ``10s``, ``1m30s``, ``1.5h``, ``500ms``, ``0``."""
    text = str(value).strip()
    if text in ("0", "+0", "-0"):
        return 0.0
    body = text.lstrip("+")
    if body.startswith("-"):
        raise ValueError(f"{value!r} is not a duration (negative)")
    pos, total = 0, 0.0
    while pos < len(body):
        m = _DURATION_PART.match(body, pos)
        if not m or m.group(1) in ("", "."):
            raise ValueError(f"{value!r} is not a duration such as 10s, 1m30s or 500ms")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not body:
        raise ValueError(f"{value!r} is not a duration such as 10s, 1m30s or 500ms")
    return total


_PORT_NUMS = re.compile(r"^[0-9]{1,5}(?:-[0-9]{1,5})?$")


def _ports_ok(text: str) -> bool:
    if not _PORT_NUMS.match(text):
        return False
    lo, _, hi = text.partition("-")
    return 0 < int(lo) <= 65535 and 0 < int(hi or lo) <= 65535 and int(lo) <= int(hi or lo)


def check_port(spec: str) -> str:
    """A short-syntax port ``[IP:][HOST:]CONTAINER[/PROTO]`` (ranges, ``[IPv6]``),
    checked as docker's ``nat.ParsePortSpec`` and returned unchanged."""
    from fleet.engine.wire import port_bindings

    try:
        port_bindings([spec])
    except ValueError as e:
        raise ValueError(str(e)) from None
    rest = spec.partition("/")[0]
    numbers = rest.rsplit("]", 1)[-1].split(":")
    for part in numbers[-2:]:
        if part and not _ports_ok(part):
            raise ValueError(f"port {spec!r}: ports are 1-65535 (a range low-high, low <= high)")
    return spec


def check_expose(spec: str) -> str:
    """``PORT[/PROTO]`` or ``LOW-HIGH[/PROTO]`` (``expose``)."""
    port, _, proto = spec.partition("/")
    if not _ports_ok(port) or proto not in ("", "tcp", "udp", "sctp"):
        raise ValueError(f"{spec!r} is not PORT[-PORT][/tcp|udp|sctp]")
    return spec


def port_from_long(entry: Mapping[str, Any]) -> str:
    """The long syntax (``target``, ``published``, ``host_ip``, ``protocol``) in the
    short form, e.g. ``{target: 80, published: 8080, host_ip: ::1}`` -> ``[::1]:8080:80``."""
    target = str(entry["target"])
    published = entry.get("published")
    published = "" if published is None else str(published)
    host_ip = str(entry.get("host_ip") or "")
    proto = str(entry.get("protocol") or "tcp")
    if host_ip:
        try:
            ip = ipaddress.ip_address(host_ip)
        except ValueError:
            raise ValueError(f"host_ip {host_ip!r} is not an IP address") from None
        ip_text = f"[{host_ip}]" if ip.version == 6 else host_ip
        spec = f"{ip_text}:{published}:{target}"
    elif published:
        spec = f"{published}:{target}"
    else:
        spec = target
    return check_port(f"{spec}/{proto}")


#: ``-v`` options of the short syntax (docker's volume spec and docker compose).
PROPAGATION = ("shared", "rshared", "slave", "rslave", "private", "rprivate")
VOLUME_MODES = ("ro", "rw", "z", "Z", "nocopy", "consistent", "cached", "delegated") + PROPAGATION


def parse_volume_short(spec: str) -> tuple[str, str, list[str]]:
    """``SOURCE:TARGET[:MODE]`` -> (source, target, mode options). A lone ``TARGET`` (an
    anonymous volume) gives source ""."""
    parts = spec.split(":")
    if len(parts) == 1:
        source, target, mode = "", parts[0], ""
    elif len(parts) == 2:
        source, target, mode = parts[0], parts[1], ""
    elif len(parts) == 3:
        source, target, mode = parts
    else:
        raise ValueError(f"{spec!r} is not SOURCE:TARGET[:MODE]")
    if not target.startswith("/"):
        raise ValueError(f"{spec!r}: the path in the container must be absolute")
    options = [o for o in mode.split(",") if o] if mode else []
    bad = [o for o in options if o not in VOLUME_MODES]
    if bad or (mode and not options):
        raise ValueError(f"{spec!r}: unknown volume option(s) {', '.join(bad) or repr(mode)} "
                         f"(known: {', '.join(VOLUME_MODES)})")
    return source, target, options


_DEVICE_PERMS = re.compile(r"^[rwm]{1,3}$")


def check_device(spec: str) -> str:
    """``/dev/HOST[:/dev/CONTAINER[:rwm]]`` (``--device``), returned unchanged."""
    parts = spec.split(":")
    if not (1 <= len(parts) <= 3) or not parts[0].startswith("/") or \
            (len(parts) >= 2 and not (parts[1].startswith("/") or (len(parts) == 2 and _DEVICE_PERMS.match(parts[1])))) \
            or (len(parts) == 3 and not _DEVICE_PERMS.match(parts[2])):
        raise ValueError(f"{spec!r} is not /dev/HOST[:/dev/CONTAINER[:rwm]]")
    return spec


def device_from_long(entry: Mapping[str, Any]) -> str:
    """``{source, target, permissions}`` as the ``--device`` form."""
    source = str(entry["source"])
    target = str(entry.get("target") or source)
    perms = str(entry.get("permissions") or "")
    return check_device(f"{source}:{target}" + (f":{perms}" if perms else ""))


_HOSTNAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def extra_host(host: str, ip: str) -> str:
    """``HOST:IP`` for ``--add-host`` / ``HostConfig.ExtraHosts`` (the engine splits at the
    first ``:``, so an IPv6 address needs no brackets); ``host-gateway`` is the engine's
    own word for its gateway address."""
    ip = ip.strip()
    if ip.startswith("[") and ip.endswith("]"):
        ip = ip[1:-1]
    if not _HOSTNAME.match(host):
        raise ValueError(f"{host!r} is not a host name")
    if ip != "host-gateway":
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise ValueError(f"{ip!r} (for {host}) is not an IP address or host-gateway") from None
    return f"{host}:{ip}"


#: Restart policies (``restart``): the Docker CLI's ``--restart`` values.
RESTART_RE = re.compile(r"^(no|always|unless-stopped|on-failure(:[0-9]+)?)$")
