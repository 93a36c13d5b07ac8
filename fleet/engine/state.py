"""A device engine's state as typed values, parsed from the engine's own JSON. Pure.

The same JSON comes from ``docker ... inspect`` (CLI) and from the Engine API
(``GET /version``, ``/info``, ``/images/{name}/json``, ``/containers/{name}/json``), so one
set of parsers serves both ways of reaching a device's engine. Tested on JSON captured from
real engines (``tests/data/engine/``), for both image stores:

* the classic ("graphdriver") store, default up to Docker 28: ``image inspect`` ``Id`` is
  the image's CONFIG digest;
* the containerd image store (experimental in 24.0, default on fresh 29.0 installs):
  ``Id`` is the digest of the image's target, i.e. the INDEX digest after a pull of a
  multi-arch reference, and the child is only identified by its layers (``RootFS.Layers``)
  or, from API 1.48, by ``Descriptor``/``Manifests`` and the container's
  ``ImageManifestDescriptor`` (moby ``daemon/containerd/image_inspect.go``, moby#48855).
  Its ``docker info`` carries ``["driver-type", "io.containerd.snapshotter.v1"]`` in
  ``DriverStatus`` (moby ``daemon/containerd/service.go``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from fleet.errors import FleetError
from fleet.platform import Platform, PlatformError, normalize

__all__ = [
    "EngineError",
    "EngineVersion",
    "EngineInfo",
    "ImageState",
    "ContainerState",
    "DiskSpace",
    "parse_version",
    "parse_info",
    "parse_image",
    "parse_container",
    "parse_df",
    "ImageSummary",
    "parse_image_list",
    "CONTAINERD_SNAPSHOTTER",
]

#: ``DriverStatus`` entry of an engine on the containerd image store.
CONTAINERD_SNAPSHOTTER = "io.containerd.snapshotter.v1"


# What engines print when the failure is the network's or the registry's passing state,
# not the request's: worth another try (moby distribution errors, Go net/http messages).
_TRANSIENT = re.compile(
    r"TLS handshake timeout|connection reset by peer|i/o timeout|unexpected EOF|connection refused"
    r"|Client\.Timeout exceeded|request canceled|no route to host|network is unreachable"
    r"|50[0234] (?:Internal Server Error|Bad Gateway|Service Unavailable|Gateway Time-?out)"
    r"|429 Too Many Requests|toomanyrequests|received unexpected HTTP status: 5\d\d", re.IGNORECASE)
# ... and what no retry fixes (checked first: "unauthorized ... connection reset" is still
# an authentication problem).
_PERMANENT = re.compile(
    r"unauthorized|authentication required|denied|manifest unknown|not found|no matching manifest"
    r"|exec format error|no space left on device|invalid reference format", re.IGNORECASE)


class EngineError(FleetError):
    """A docker command on a device failed; ``str()`` names the device, the command and the
    engine's own message. ``command`` (without secrets), ``exit_status``, ``output``;
    ``transient``: the message is one a retry can fix (a TLS handshake timeout, a reset
    connection, a registry answering 5xx or 429), not a permanent refusal
    (authentication, no such manifest, no matching platform, disk full)."""

    def __init__(self, device: str, command: str, exit_status: int, output: str):
        self.device = device
        self.command = command
        self.exit_status = exit_status
        self.output = output.strip()
        detail = _last_lines(self.output, 3) or f"exit status {exit_status}"
        super().__init__(f"{device}: `{command}` failed: {detail}")

    @property
    def transient(self) -> bool:
        return not _PERMANENT.search(self.output) and bool(_TRANSIENT.search(self.output))


def _last_lines(text: str, n: int) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def _load(raw: bytes | str | Mapping[str, Any] | Sequence[Any]) -> Any:
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str):
        raw = json.loads(raw)
    return raw


def _single(raw: Any, what: str) -> Mapping[str, Any]:
    """``docker X inspect`` prints a list; ``--format '{{json .}}'`` one object."""
    doc = _load(raw)
    if isinstance(doc, list):
        if len(doc) != 1:
            raise ValueError(f"{what}: expected one object, got a list of {len(doc)}")
        doc = doc[0]
    if not isinstance(doc, Mapping):
        raise ValueError(f"{what}: expected a JSON object")
    return doc


def _platform(os_: str | None, arch: str | None, variant: str | None) -> Platform | None:
    if not os_ or not arch:
        return None
    try:
        return normalize(os_, arch, variant or "")
    except PlatformError:
        return None


# --------------------------------------------------------------------------- version


@dataclass(frozen=True)
class EngineVersion:
    """``docker version``: ``server_version`` (``"20.10.24+dfsg1"``), ``api_version``
    (``"1.41"``), ``min_api_version``, ``os``/``arch`` (dockerd's GOOS/GOARCH: what its pulls
    select by, moby ``daemon/info.go``), ``client_version``, ``client_api_version``."""

    server_version: str
    api_version: str
    os: str
    arch: str
    min_api_version: str = ""
    client_version: str = ""
    client_api_version: str = ""

    @property
    def major(self) -> int | None:
        m = re.match(r"^\s*v?(\d+)", self.server_version)
        return int(m.group(1)) if m else None

    def api_at_least(self, version: str) -> bool:
        """True when the server's API version is >= ``version`` (``"1.48"``)."""
        def t(v: str) -> tuple[int, ...]:
            return tuple(int(x) for x in re.findall(r"\d+", v)[:2]) or (0,)
        return t(self.api_version) >= t(version)


def parse_version(raw: bytes | str | Mapping[str, Any]) -> EngineVersion:
    """Parse ``docker version --format '{{json .}}'`` (``{"Client": {...}, "Server": {...}}``).

    Works for engines 20.10 through 29 (``Server.Version``/``ApiVersion``/``Os``/``Arch``
    have been there since API 1.24). Raises ValueError when the document has no Server part
    (the CLI could not reach the engine).
    """
    doc = _load(raw)
    server = doc.get("Server") if isinstance(doc, Mapping) else None
    if not isinstance(server, Mapping):
        raise ValueError("docker version: no Server section (the engine did not answer)")
    client = doc.get("Client") or {}
    return EngineVersion(
        server_version=str(server.get("Version") or ""),
        api_version=str(server.get("ApiVersion") or ""),
        os=str(server.get("Os") or ""),
        arch=str(server.get("Arch") or ""),
        min_api_version=str(server.get("MinAPIVersion") or ""),
        client_version=str(client.get("Version") or ""),
        client_api_version=str(client.get("ApiVersion") or ""),
    )


# --------------------------------------------------------------------------- info


@dataclass(frozen=True)
class EngineInfo:
    """``docker info``: ``server_version``; ``architecture`` (the KERNEL's ``uname -m``,
    not an OCI name: ``aarch64`` under a 32-bit engine on a Pi 4); ``os_type``;
    ``docker_root_dir`` (its data root, where pulled layers go); ``driver`` (storage
    driver); ``containerd_store`` (True on the containerd image store); ``images`` and
    ``containers`` counts."""

    server_version: str
    architecture: str
    os_type: str
    docker_root_dir: str
    driver: str
    containerd_store: bool
    images: int = 0
    containers: int = 0

    @property
    def store(self) -> str:
        """``"containerd"`` or ``"classic"``."""
        return "containerd" if self.containerd_store else "classic"


def parse_info(raw: bytes | str | Mapping[str, Any]) -> EngineInfo:
    """Parse ``docker info --format '{{json .}}'``. The containerd image store is recognised
    by ``["driver-type", "io.containerd.snapshotter.v1"]`` in ``DriverStatus`` (moby
    ``daemon/containerd/service.go``). Raises ValueError on a non-object."""
    doc = _load(raw)
    if not isinstance(doc, Mapping):
        raise ValueError("docker info: expected a JSON object")
    status = doc.get("DriverStatus") or []
    c8d = any(isinstance(p, (list, tuple)) and len(p) == 2 and p[0] == "driver-type"
              and p[1] == CONTAINERD_SNAPSHOTTER for p in status)
    return EngineInfo(
        server_version=str(doc.get("ServerVersion") or ""),
        architecture=str(doc.get("Architecture") or ""),
        os_type=str(doc.get("OSType") or ""),
        docker_root_dir=str(doc.get("DockerRootDir") or ""),
        driver=str(doc.get("Driver") or ""),
        containerd_store=c8d,
        images=int(doc.get("Images") or 0),
        containers=int(doc.get("Containers") or 0),
    )


# --------------------------------------------------------------------------- image


@dataclass(frozen=True)
class ImageState:
    """``docker image inspect``.

    ``id``: classic store - the config digest; containerd store - the target's digest (the
    index digest after a pull by index). ``os``/``architecture``/``variant`` from the image
    config (containerd store: of the host-preferred child, possibly empty when that child
    was never pulled). ``diff_ids``: ``RootFS.Layers`` (uncompressed layer digests, the same
    on every store). ``descriptor``: ``Descriptor`` (API >= 1.48, containerd store) or
    None. ``manifests``: ``Manifests`` (``?manifests=1``) as given, else empty.
    """

    id: str
    repo_digests: tuple[str, ...]
    repo_tags: tuple[str, ...]
    os: str
    architecture: str
    variant: str
    diff_ids: tuple[str, ...]
    size: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    descriptor: Mapping[str, Any] | None = None
    manifests: tuple[Mapping[str, Any], ...] = ()

    @property
    def platform(self) -> Platform | None:
        return _platform(self.os, self.architecture, self.variant)

    @property
    def platform_text(self) -> str:
        parts = [self.os or "?", self.architecture or "?"] + ([self.variant] if self.variant else [])
        return "/".join(parts)


def parse_image(raw: bytes | str | Mapping[str, Any] | Sequence[Any]) -> ImageState:
    """Parse ``docker image inspect REF`` (a one-element list) or its ``{{json .}}`` form.
    Raises ValueError when it is not one image object."""
    doc = _single(raw, "docker image inspect")
    rootfs = doc.get("RootFS") or {}
    config = doc.get("Config") or {}
    return ImageState(
        id=str(doc.get("Id") or ""),
        repo_digests=tuple(doc.get("RepoDigests") or ()),
        repo_tags=tuple(doc.get("RepoTags") or ()),
        os=str(doc.get("Os") or ""),
        architecture=str(doc.get("Architecture") or ""),
        variant=str(doc.get("Variant") or ""),
        diff_ids=tuple(rootfs.get("Layers") or ()),
        size=int(doc.get("Size") or 0),
        labels=dict(config.get("Labels") or {}),
        descriptor=doc.get("Descriptor"),
        manifests=tuple(doc.get("Manifests") or ()),
    )


# --------------------------------------------------------------------------- container


@dataclass(frozen=True)
class ContainerState:
    """``docker container inspect``.

    ``name`` without the leading ``/``; ``image_id``: ``.Image`` (the image's ID: config
    digest on the classic store, target digest on the containerd store); ``image_ref``:
    ``.Config.Image`` as created; ``labels``; ``status`` (created, running, restarting,
    exited, ...), ``running``, ``restarting``, ``exit_code``, ``oom_killed``, ``error``
    (``State.Error``: why it could not start), ``started_at``/``finished_at`` (RFC 3339),
    ``restart_count``, ``health`` (``State.Health.Status`` or None), ``manifest_digest``
    (``ImageManifestDescriptor.digest``, API >= 1.48 on the containerd store, else None),
    ``network_mode``.
    """

    id: str
    name: str
    image_id: str
    image_ref: str
    labels: Mapping[str, str]
    status: str
    running: bool
    restarting: bool
    exit_code: int
    oom_killed: bool
    error: str
    started_at: str
    finished_at: str
    restart_count: int
    health: str | None = None
    manifest_digest: str | None = None
    network_mode: str = ""


def parse_container(raw: bytes | str | Mapping[str, Any] | Sequence[Any]) -> ContainerState:
    """Parse ``docker container inspect NAME`` (list or single object). Raises ValueError."""
    doc = _single(raw, "docker container inspect")
    state = doc.get("State") or {}
    config = doc.get("Config") or {}
    host = doc.get("HostConfig") or {}
    health = state.get("Health") or None
    mdesc = doc.get("ImageManifestDescriptor") or None
    return ContainerState(
        id=str(doc.get("Id") or ""),
        name=str(doc.get("Name") or "").lstrip("/"),
        image_id=str(doc.get("Image") or ""),
        image_ref=str(config.get("Image") or ""),
        labels=dict(config.get("Labels") or {}),
        status=str(state.get("Status") or ""),
        running=bool(state.get("Running")),
        restarting=bool(state.get("Restarting")),
        exit_code=int(state.get("ExitCode") or 0),
        oom_killed=bool(state.get("OOMKilled")),
        error=str(state.get("Error") or ""),
        started_at=str(state.get("StartedAt") or ""),
        finished_at=str(state.get("FinishedAt") or ""),
        restart_count=int(doc.get("RestartCount") or 0),
        health=str(health.get("Status")) if isinstance(health, Mapping) and health.get("Status") else None,
        manifest_digest=str(mdesc.get("digest")) if isinstance(mdesc, Mapping) and mdesc.get("digest") else None,
        network_mode=str(host.get("NetworkMode") or ""),
    )


# --------------------------------------------------------------------------- df


@dataclass(frozen=True)
class DiskSpace:
    """One ``df -Pk PATH`` row: ``filesystem``, ``total_kib``, ``used_kib``,
    ``available_kib`` (what an unprivileged writer may still use), ``mount``, and ``path``
    (what was measured)."""

    filesystem: str
    total_kib: int
    used_kib: int
    available_kib: int
    mount: str
    path: str = ""

    @property
    def available_bytes(self) -> int:
        return self.available_kib * 1024


# Filesystem, 1024-blocks, Used, Available, Capacity ("24%" or "-"), Mounted on; names and
# mount points may contain spaces, so the numbers are anchored on the capacity column.
_DF_ROW = re.compile(r"^(.*?)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+%|-)\s+(.+)$")


def parse_df(text: str, path: str = "") -> DiskSpace:
    """Parse POSIX ``df -Pk`` output (GNU coreutils and busybox print the same columns:
    Filesystem, 1024-blocks, Used, Available, Capacity, Mounted on). A long filesystem name
    never wraps with ``-P`` (POSIX.1 df "-P"). Raises ValueError when no data row parses."""
    for ln in text.splitlines():
        m = _DF_ROW.match(ln.strip())
        if m:
            fs, total, used, avail, _, mount = m.groups()
            return DiskSpace(fs, int(total), int(used), int(avail), mount, path)
    raise ValueError(f"df -Pk: no data row in {text.strip()[:200]!r}")


# --------------------------------------------------------------------------- image list


@dataclass(frozen=True)
class ImageSummary:
    """One image of ``docker image ls``: ``id`` (full, ``sha256:...``), ``created``
    (``CreatedAt`` text, sortable as the engine prints it: ``2026-12-02 18:31:06 +0000
    UTC``), ``references`` (``repo:tag`` and ``repo@digest`` names it has)."""

    id: str
    created: str
    references: tuple[str, ...]

    def of(self, repository: str) -> bool:
        """Whether one of its names is in ``repository`` (``registry/path``)."""
        return any(r.startswith(repository + ":") or r.startswith(repository + "@") for r in self.references)


def parse_image_list(text: str) -> list[ImageSummary]:
    """``docker image ls --no-trunc --digests --format '{{json .}}'`` (one JSON object per
    line; a row per name) as one :class:`ImageSummary` per image ID, in the engine's order
    (newest first). Lines that are not JSON objects are skipped."""
    by_id: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, Mapping) or not row.get("ID"):
            continue
        image_id = str(row["ID"])
        if not image_id.startswith("sha256:") and len(image_id) == 64:
            image_id = "sha256:" + image_id
        created, refs = by_id.setdefault(image_id, (str(row.get("CreatedAt") or ""), []))
        repo = str(row.get("Repository") or "")
        if repo and repo != "<none>":
            if row.get("Tag") and row["Tag"] != "<none>":
                refs.append(f"{repo}:{row['Tag']}")
            if row.get("Digest") and row["Digest"] != "<none>":
                refs.append(f"{repo}@{row['Digest']}")
    return [ImageSummary(i, c, tuple(dict.fromkeys(r))) for i, (c, r) in by_id.items()]
