"""The typed model of one Compose service, as a device's engine runs it.

:class:`ServiceSpec` is what every way of creating a container maps from: the Docker
CLI's ``create`` arguments (:func:`fleet.engine.cli.create_args`) and the Engine API's
create body (:func:`fleet.engine.wire.create_body`). A playbook's one-container
``container:`` (:class:`fleet.playbook.ContainerSpec`) converts to one
(:func:`fleet.compose.bridge.service_from_container`), so there is one mapping.

Units: sizes in bytes, durations in seconds (float), CPUs as a float count. Values are
already interpolated for one device; names of networks and volumes are the engine's
names (``PROJECT_KEY`` as docker compose names them, or the ``name:`` given).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from fleet.plain import from_plain, to_plain

__all__ = ["Mount", "Healthcheck", "Logging", "Dependency", "NetworkAttachment", "Ulimit", "BuildSpec",
           "ServiceSpec", "NetworkSpec", "VolumeSpec", "DEFAULT_LOGGING", "SECRET_SUFFIXES", "is_secret_name"]


@dataclass(frozen=True)
class Mount:
    """A bind mount (``type="bind"``, ``source`` an absolute path on the device) or a named
    volume (``type="volume"``, ``source`` the engine's volume name) at ``target``.
    ``options``: further ``-v`` options (``z``/``Z``, a propagation mode, ``nocopy``,
    ``consistent``/``cached``/``delegated``), ``ro``/``rw`` not among them."""

    type: str
    source: str
    target: str
    read_only: bool = False
    options: tuple[str, ...] = ()

    def bind_string(self) -> str:
        """The ``-v``/``HostConfig.Binds`` form ``SOURCE:TARGET[:OPTIONS]``."""
        opts = (("ro",) if self.read_only else ()) + self.options
        return f"{self.source}:{self.target}" + (":" + ",".join(opts) if opts else "")


@dataclass(frozen=True)
class Healthcheck:
    """``test``: ``("CMD", argv...)``, ``("CMD-SHELL", command)`` or ``("NONE",)`` (the
    image's check disabled); ``None`` fields keep the image's (or engine's) default."""

    test: tuple[str, ...] | None = None
    interval: float | None = None
    timeout: float | None = None
    start_period: float | None = None
    start_interval: float | None = None
    retries: int | None = None


@dataclass(frozen=True)
class Logging:
    """A log driver and its options (``--log-driver``/``--log-opt``, ``HostConfig.LogConfig``)."""

    driver: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)


#: What a service that sets no ``logging`` gets: the engine's ``local`` driver (compact
#: files, rotated and compressed) kept to 3 files of 10 MB, at most 30 MB per container,
#: so an app that logs a lot cannot fill a device's SD card. The engine's own default,
#: ``json-file``, never rotates unless the daemon is configured to.
#: https://docs.docker.com/engine/logging/drivers/local/
DEFAULT_LOGGING = Logging("local", {"max-size": "10m", "max-file": "3"})


@dataclass(frozen=True)
class Dependency:
    """``depends_on`` entry: start ``service`` first; ``condition`` is
    ``service_started`` or ``service_healthy`` (the dependency's health check passed);
    ``required``: False when a dependency that is missing or fails may be skipped
    (a warning, as docker compose); ``restart``: restart this service when that one is
    restarted or updated."""

    service: str
    condition: str = "service_started"
    required: bool = True
    restart: bool = False


@dataclass(frozen=True)
class NetworkAttachment:
    """The service on network ``network`` (engine name) reachable as ``aliases`` (the
    service's name first, as docker compose does)."""

    network: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ulimit:
    name: str
    soft: int
    hard: int


@dataclass(frozen=True)
class BuildSpec:
    """``build:``: the image is built from ``context`` (a folder on the controller) for each
    platform and published under the service's ``image:`` tag."""

    context: Path
    dockerfile: str = "Dockerfile"
    args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None


@dataclass(frozen=True)
class ServiceSpec:
    """One service of a stack, for one device. ``None``/empty means the image's or the
    engine's default. See docs/compose.md for each field's Compose key, CLI flag and API
    field.

    ``command``/``entrypoint``: argv lists (a Compose string is split as a shell would);
    ``env``/``labels``/``sysctls``: str -> str; ``ports``: ``-p`` forms
    (``[IP:][HOST:]CONTAINER[/PROTO]``); ``expose``: ``PORT[/PROTO]``; ``mounts``: bind
    mounts and named volumes; ``tmpfs``: container path -> mount options (may be "");
    ``devices``: ``--device`` forms (``HOST[:CONTAINER[:PERMISSIONS]]``); ``extra_hosts``:
    ``HOST:IP``; ``mem_limit``/``mem_reservation``/``memswap_limit``/``shm_size``: bytes
    (``memswap_limit`` -1 = unlimited); ``cpus``: CPUs; ``stop_grace_period``: seconds;
    ``network_mode``: ``host``/``bridge``/``none``/``container:NAME`` (exclusive with
    ``networks``); ``networks``: the stack networks joined, the first at create time.
    ``image``: the reference to run (for a built service, the tag fleet publishes);
    ``build``: set for a service fleet builds, None for one whose image is picked.
    """

    name: str
    image: str | None = None
    build: BuildSpec | None = None
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[str, ...] = ()
    expose: tuple[str, ...] = ()
    mounts: tuple[Mount, ...] = ()
    tmpfs: Mapping[str, str] = field(default_factory=dict)
    devices: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    group_add: tuple[str, ...] = ()
    privileged: bool = False
    user: str | None = None
    working_dir: str | None = None
    read_only: bool = False
    mem_limit: int | None = None
    mem_reservation: int | None = None
    memswap_limit: int | None = None
    cpus: float | None = None
    shm_size: int | None = None
    pids_limit: int | None = None
    logging: Logging | None = None
    restart: str | None = None
    healthcheck: Healthcheck | None = None
    network_mode: str | None = None
    networks: tuple[NetworkAttachment, ...] = ()
    depends_on: tuple[Dependency, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    sysctls: Mapping[str, str] = field(default_factory=dict)
    extra_hosts: tuple[str, ...] = ()
    hostname: str | None = None
    init: bool | None = None
    stop_grace_period: float | None = None
    stop_signal: str | None = None
    ulimits: tuple[Ulimit, ...] = ()
    security_opt: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()

    @property
    def volumes(self) -> tuple[str, ...]:
        """``mounts`` in their ``-v`` / ``HostConfig.Binds`` form."""
        return tuple(m.bind_string() for m in self.mounts)

    def digest(self) -> str:
        """Short sha256 (16 hex digits) of every setting: a changed setting (for this
        device) changes it, so a deploy can tell "recreate" from "unchanged"."""
        return hashlib.sha256(json.dumps(_plain(asdict(self)), sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """Every setting as JSON data (:func:`fleet.plain.to_plain`: mappings as ``[key,
        value]`` pairs), what a device's job carries; :meth:`from_dict` reads it back equal."""
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: Any) -> "ServiceSpec":
        """The spec in :meth:`to_dict`'s output. Raises :class:`fleet.plain.PlainFormatError`
        naming an unknown, missing or mistyped field."""
        return from_plain(cls, data, "spec")


@dataclass(frozen=True)
class NetworkSpec:
    """A top-level network: ``key`` in the Compose file, ``name`` on the engine.
    ``external``: must exist already (never created)."""

    key: str
    name: str
    driver: str | None = None
    driver_opts: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    external: bool = False
    internal: bool = False

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: Any) -> "NetworkSpec":
        return from_plain(cls, data, "network")


@dataclass(frozen=True)
class VolumeSpec:
    """A top-level named volume: ``key`` in the Compose file, ``name`` on the engine.
    ``external``: must exist already. fleet never removes a volume."""

    key: str
    name: str
    driver: str | None = None
    driver_opts: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    external: bool = False

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: Any) -> "VolumeSpec":
        return from_plain(cls, data, "volume")


#: Variable names that hold secrets (case-insensitive suffixes, and the bare words):
#: their values are masked wherever fleet shows them.
SECRET_SUFFIXES = ("_PASSWORD", "_TOKEN", "_SECRET", "_KEY")


def is_secret_name(name: str) -> bool:
    """True for ``DB_PASSWORD``, ``api_token``, ``SECRET``... (see :data:`SECRET_SUFFIXES`)."""
    up = name.upper()
    return up.endswith(SECRET_SUFFIXES) or up in {s[1:] for s in SECRET_SUFFIXES}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
