"""The pure half of the Engine API path (no I/O): what :class:`fleet.engine.api.ApiEngine`
puts in requests and reads from responses, unit-tested without an engine.

* :func:`negotiate_api_version` - which API version to speak;
* :func:`registry_auth` - the ``X-Registry-Auth`` object of a pull's credentials;
* :func:`port_bindings`, :func:`create_body` - a service's settings
  (:class:`fleet.compose.ServiceSpec`, or a playbook's ``container:``) as the create body
  (``Config`` fields, ``HostConfig``, ``NetworkingConfig``);
* :func:`parse_pull_progress` - the pull's JSON progress stream, its error object;
* :func:`demux` - the 8-byte-framed stdout/stderr stream of logs and exec.
"""

from __future__ import annotations

import collections
import json
import re
import struct
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from fleet.engine.state import EngineVersion, parse_version

if TYPE_CHECKING:
    from fleet.engine import PullAuth
    from fleet.compose import ServiceSpec
    from fleet.playbook import ContainerSpec

__all__ = [
    "MIN_API_VERSION",
    "parse_api_version",
    "negotiate_api_version",
    "registry_auth",
    "scrub",
    "port_bindings",
    "parse_device",
    "nanoseconds",
    "go_duration",
    "exposed_ports",
    "create_body",
    "parse_pull_progress",
    "split_lines",
    "demux",
    "demux_tail",
    "PULL_LINES_KEPT",
    "PULL_LINE_MAX",
]

#: Oldest Engine API spoken: Docker 20.10 (the lab's and Debian 12's ``docker.io``).
MIN_API_VERSION = "1.41"
#: Pull progress lines kept for the result and the error message (the rest is dropped).
PULL_LINES_KEPT = 20
#: Longest single progress line read (an engine sends a few hundred bytes; more is junk).
PULL_LINE_MAX = 64 * 1024


def _api_tuple(v: str) -> tuple[int, int]:
    m = re.match(r"^\s*(\d+)\.(\d+)", v or "")
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def negotiate_api_version(server_api: str, server_min: str = "") -> str:
    """The API version to speak with an engine whose ``/version`` says ``ApiVersion``
    ``server_api`` (its newest) and ``MinAPIVersion`` ``server_min``: the engine's own
    newest (what ``docker`` CLI negotiation picks, docker/cli ``client.NegotiateAPIVersion``;
    it carries the newest inspect fields, e.g. ``Descriptor`` from 1.48). 20.10 speaks
    1.41; 29.0 speaks 1.52 and refuses below 1.44 - pinning one old version would fail
    there. Raises ValueError for an engine older than :data:`MIN_API_VERSION`."""
    if _api_tuple(server_api) < _api_tuple(MIN_API_VERSION):
        raise ValueError(f"Engine API {server_api or '?'} is older than {MIN_API_VERSION} (Docker 20.10)")
    return "%d.%d" % _api_tuple(server_api)


def parse_api_version(raw: bytes | str | Mapping[str, Any]) -> EngineVersion:
    """``GET /version``'s JSON (the ``Server`` half of ``docker version --format '{{json
    .}}'``: the CLI prints what this endpoint returns) as :class:`EngineVersion`; the
    ``client_*`` fields stay empty. Raises ValueError when it is not a JSON object."""
    doc = json.loads(raw) if isinstance(raw, (bytes, bytearray, str)) else raw
    if not isinstance(doc, Mapping):
        raise ValueError("GET /version: expected a JSON object")
    return parse_version({"Server": doc})


# --------------------------------------------------------------------------- credentials


def registry_auth(auth: "PullAuth") -> dict[str, str]:
    """The ``X-Registry-Auth`` object for :class:`fleet.engine.PullAuth` credentials
    (:func:`fleet.registry.engine_auth_config`: ``{"username", "password",
    "serveraddress"}`` or an identity token; docker-py ``auth.encode_header`` makes the
    header of it: base64url of its JSON)."""
    from fleet.registry import engine_auth_config

    return engine_auth_config(auth.credentials, auth.registry) or {}


def scrub(text: str, auth: Mapping[str, str] | None) -> str:
    """``text`` with any secret of ``auth`` replaced (engines do not echo them; belt and
    braces for an error message that is shown and logged)."""
    for k in ("password", "identitytoken"):
        v = (auth or {}).get(k)
        if v and len(v) >= 3:
            text = text.replace(v, "<redacted>")
    return text


# ------------------------------------------------------------------- container settings


_NUM_RANGE = re.compile(r"^[0-9]{1,5}(?:-[0-9]{1,5})?$")


def _range(text: str) -> tuple[int, int]:
    a, _, b = text.partition("-")
    return int(a), int(b or a)


def _split_port(spec: str) -> tuple[str, str, str, str]:
    """``[IP:][HOST:]CONTAINER[/PROTO]`` -> (ip, host, container, proto), by the number of
    ``:``-separated parts as go-connections ``nat.ParsePortSpec`` (an IPv6 address in
    brackets); ValueError when malformed."""
    rest, _, proto = spec.partition("/")
    proto = proto or "tcp"
    ip = ""
    if rest.startswith("["):
        ip, sep, rest = rest[1:].partition("]:")
        parts = rest.split(":") if sep else []
        if len(parts) != 2:
            parts = []
    else:
        parts = rest.split(":")
        if len(parts) == 3:
            ip = parts.pop(0)
    if not 1 <= len(parts) <= 2 or proto not in ("tcp", "udp", "sctp"):
        raise ValueError(f"port {spec!r} is not [IP:][HOST:]CONTAINER[/tcp|udp|sctp]")
    host, ctr = (parts[0], parts[1]) if len(parts) == 2 else ("", parts[0])
    if not _NUM_RANGE.match(ctr) or (host and not _NUM_RANGE.match(host)) or \
            (ip and not re.match(r"^[0-9a-fA-F:.]+$", ip)):
        raise ValueError(f"port {spec!r} is not [IP:][HOST:]CONTAINER[/tcp|udp|sctp]")
    return ip, host, ctr, proto


def port_bindings(ports: Sequence[str]) -> tuple[list[tuple[int, str]], dict[str, list[dict[str, str]]]]:
    """``-p`` forms (``[IP:][HOST:]CONTAINER[/PROTO]``, ranges ``8000-8001:80-81``, IPv6 in
    brackets) as the API's exposed ports ``[(80, "tcp")]`` and ``HostConfig.PortBindings``
    ``{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}``, as docker/go-connections
    ``nat.ParsePortSpec`` does: a host range against one container port is passed whole
    (the engine picks a free one), an empty host port publishes on a random port. Raises
    ValueError on a malformed entry or ranges of different lengths."""
    exposed: list[tuple[int, str]] = []
    bindings: dict[str, list[dict[str, str]]] = {}
    for spec in ports:
        ip, host, ctr, proto = _split_port(spec)
        c0, c1 = _range(ctr)
        h0, h1 = _range(host) if host else (0, 0)
        if c1 < c0 or (host and h1 < h0):
            raise ValueError(f"port {spec!r}: a range must not end before it starts")
        single = c0 == c1
        if host and not single and (h1 - h0) != (c1 - c0):
            raise ValueError(f"port {spec!r}: host and container ranges differ in length")
        for i, cport in enumerate(range(c0, c1 + 1)):
            if not host:
                hp = ""
            elif single:
                hp = host  # "8080", or a whole host range for one container port
            else:
                hp = str(h0 + i)
            key = f"{cport}/{proto}"
            if (cport, proto) not in exposed:
                exposed.append((cport, proto))
            bindings.setdefault(key, []).append({"HostIp": ip, "HostPort": hp})
    return exposed, bindings


def _restart_policy(restart: str | None) -> dict[str, Any] | None:
    if not restart:
        return None
    name, _, count = restart.partition(":")
    return {"Name": name, "MaximumRetryCount": int(count or 0)}


_DEVICE_MODE = re.compile(r"^[rwm]{1,3}$")


def parse_device(spec: str) -> dict[str, str]:
    """A ``--device`` form as ``HostConfig.Devices`` entry, as the docker CLI's
    ``parseDevice`` reads it: ``HOST``, ``HOST:CONTAINER``, ``HOST:PERMISSIONS`` (rwm),
    ``HOST:CONTAINER:PERMISSIONS``; permissions default to ``rwm``."""
    parts = spec.split(":")
    host, ctr, perms = parts[0], parts[0], "rwm"
    if len(parts) == 2:
        if _DEVICE_MODE.match(parts[1]):
            perms = parts[1]
        else:
            ctr = parts[1]
    elif len(parts) == 3:
        ctr, perms = parts[1], parts[2]
    return {"PathOnHost": host, "PathInContainer": ctr, "CgroupPermissions": perms}


def nanoseconds(seconds: float) -> int:
    """Seconds as the API's nanosecond durations (health check intervals)."""
    return int(round(seconds * 1e9))


def go_duration(seconds: float) -> str:
    """Seconds as a Go duration the docker CLI parses (``30s``, ``1500ms``, ``1ns``...)."""
    ns = nanoseconds(seconds)
    for unit, size in (("h", 3600 * 10**9), ("m", 60 * 10**9), ("s", 10**9), ("ms", 10**6), ("us", 10**3)):
        if ns % size == 0 and ns:
            return f"{ns // size}{unit}"
    return f"{ns}ns"


def exposed_ports(spec: "ServiceSpec") -> list[tuple[int, str]]:
    """Container ports of ``ports`` and ``expose`` (a range expanded), each once."""
    exposed, _ = port_bindings(spec.ports)
    for item in spec.expose:
        port, _, proto = item.partition("/")
        low, _, high = port.partition("-")
        for p in range(int(low), int(high or low) + 1):
            if (p, proto or "tcp") not in exposed:
                exposed.append((p, proto or "tcp"))
    return exposed


def create_body(spec: "ContainerSpec | ServiceSpec", image: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """The Engine API ``POST /containers/create`` body (Engine API 1.41 "ContainerCreate":
    ``Config`` fields at the top, ``HostConfig``, ``NetworkingConfig``) for ``spec``
    (:class:`fleet.playbook.ContainerSpec` is converted, :func:`fleet.compose.as_service`)
    running ``image``, labelled ``spec.labels`` overlaid with ``labels``.

    The same settings as :func:`fleet.engine.cli.create_args` gives the docker CLI, field
    for field (docs/compose.md lists each); the first of ``spec.networks`` is joined at
    create time (``NetworkMode`` and ``EndpointsConfig``), the others are connected after
    (:meth:`fleet.engine.api.ApiEngine.create_container`). Raises ValueError for a
    malformed port.
    """
    from fleet.compose import as_service

    s = as_service(spec)
    _, bindings = port_bindings(s.ports)
    hc: dict[str, Any] = {"Privileged": bool(s.privileged)}
    if s.mounts:
        hc["Binds"] = [m.bind_string() for m in s.mounts]
    if bindings:
        hc["PortBindings"] = bindings
    if s.devices:
        hc["Devices"] = [parse_device(d) for d in s.devices]
    policy = _restart_policy(s.restart)
    if policy:
        hc["RestartPolicy"] = policy
    first = s.networks[0] if s.networks else None
    hc["NetworkMode"] = s.network_mode or (first.network if first else "default")
    for key, value in (("CapAdd", list(s.cap_add)), ("CapDrop", list(s.cap_drop)), ("GroupAdd", list(s.group_add)),
                       ("Tmpfs", dict(s.tmpfs)), ("Sysctls", dict(s.sysctls)), ("ExtraHosts", list(s.extra_hosts)),
                       ("SecurityOpt", list(s.security_opt)), ("Dns", list(s.dns)),
                       ("Ulimits", [{"Name": u.name, "Soft": u.soft, "Hard": u.hard} for u in s.ulimits])):
        if value:
            hc[key] = value
    if s.read_only:
        hc["ReadonlyRootfs"] = True
    for key, value in (("Memory", s.mem_limit), ("MemoryReservation", s.mem_reservation),
                       ("MemorySwap", s.memswap_limit), ("ShmSize", s.shm_size), ("PidsLimit", s.pids_limit)):
        if value is not None:
            hc[key] = value
    if s.cpus is not None:
        hc["NanoCpus"] = int(round(s.cpus * 1e9))
    if s.init is not None:
        hc["Init"] = s.init
    if s.logging is not None:
        hc["LogConfig"] = {"Type": s.logging.driver or "", "Config": dict(s.logging.options)}
    body: dict[str, Any] = {"Image": image, "HostConfig": hc}
    if s.command:
        body["Cmd"] = list(s.command)
    if s.entrypoint:
        body["Entrypoint"] = list(s.entrypoint)
    if s.env:
        body["Env"] = [f"{k}={v}" for k, v in s.env.items()]
    all_labels = {**s.labels, **labels}
    if all_labels:
        body["Labels"] = all_labels
    exposed = exposed_ports(s)
    if exposed:
        body["ExposedPorts"] = {f"{p}/{proto}": {} for p, proto in exposed}
    for key, value in (("Hostname", s.hostname), ("User", s.user), ("WorkingDir", s.working_dir),
                       ("StopSignal", s.stop_signal)):
        if value:
            body[key] = value
    if s.stop_grace_period is not None:
        body["StopTimeout"] = int(s.stop_grace_period)  # whole seconds, as docker compose
    if s.healthcheck is not None:
        h = s.healthcheck
        check: dict[str, Any] = {}
        if h.test:
            check["Test"] = list(h.test)
        for key, value in (("Interval", h.interval), ("Timeout", h.timeout), ("StartPeriod", h.start_period),
                           ("StartInterval", h.start_interval)):
            if value is not None:
                check[key] = nanoseconds(value)
        if h.retries is not None:
            check["Retries"] = h.retries
        body["Healthcheck"] = check
    if first is not None:
        body["NetworkingConfig"] = {"EndpointsConfig": {first.network: {"Aliases": list(first.aliases)}}}
    return body


# ------------------------------------------------------------------- streams


def parse_pull_progress(lines: Any, keep: int = PULL_LINES_KEPT) -> tuple[list[str], dict[str, Any] | None]:
    """Read ``POST /images/create`` progress (one JSON object per line): the last ``keep``
    status lines as the CLI would print them (``"ID: Status Progress"``), and the first
    error object (``{"error": ..., "errorDetail": {"message": ...}}``, stopping there) or
    None. Lines that are not JSON objects are skipped; memory stays bounded."""
    kept: collections.deque[str] = collections.deque(maxlen=keep)
    for raw in lines:
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        if obj.get("error") or obj.get("errorDetail"):
            return list(kept), obj
        status = str(obj.get("status") or "")
        if status:
            head = f"{obj['id']}: " if obj.get("id") else ""
            kept.append((head + status)[:300])
    return list(kept), None


def split_lines(chunks: Any, limit: int = PULL_LINE_MAX):
    """Split a byte stream into lines, each at most ``limit`` bytes: a longer line is
    dropped whole (what was buffered, and the rest up to its newline)."""
    buf = b""
    skipping = False
    for chunk in chunks:
        buf += chunk
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                break
            line, buf = buf[:nl], buf[nl + 1:]
            if not skipping and len(line) <= limit:
                yield line
            skipping = False
        if len(buf) > limit:
            buf, skipping = b"", True
    if buf.strip() and not skipping:
        yield buf


def demux(data: bytes) -> bytes | None:
    """The payload of a multiplexed stream (8-byte frame headers: stream 0/1/2, three
    zero bytes, big-endian length; Engine API "Attach to a container"), stdout and stderr
    interleaved as written; None when ``data`` is not such a stream (a TTY's raw output)."""
    out, pos = [], 0
    while pos < len(data):
        if len(data) - pos < 8:
            return None
        stream, length = struct.unpack_from(">BxxxL", data, pos)
        if stream > 2 or data[pos + 1:pos + 4] != b"\0\0\0" or pos + 8 + length > len(data):
            return None
        out.append(data[pos + 8:pos + 8 + length])
        pos += 8 + length
    return b"".join(out)


def demux_tail(chunks: Any, limit: int) -> bytes:
    """:func:`demux` for a stream read chunk by chunk, keeping only the last ``limit``
    bytes of payload (memory stays bounded whatever a command prints). A stream whose
    first 8 bytes are not a frame header is kept raw (its tail)."""
    tail = collections.deque()
    size = 0
    buf = b""
    raw: bool | None = None
    need = 8
    payload_left = 0
    for chunk in chunks:
        buf += chunk
        while buf:
            if raw is None:
                if len(buf) < 8:
                    break
                raw = not (buf[0] <= 2 and buf[1:4] == b"\0\0\0")
            if raw:
                piece, buf = buf, b""
            elif payload_left:
                piece, buf = buf[:payload_left], buf[payload_left:]
                payload_left -= len(piece)
            else:
                if len(buf) < need:
                    break
                payload_left = struct.unpack_from(">L", buf, 4)[0]
                buf = buf[8:]
                continue
            tail.append(piece)
            size += len(piece)
            while size - len(tail[0]) >= limit:
                size -= len(tail.popleft())
    if raw is None:  # fewer than 8 bytes in all
        tail.append(buf)
    return b"".join(tail)[-limit:] if limit else b""

