"""A device's Docker engine: typed state parsed from the engine's JSON
(:mod:`fleet.engine.state`) and the ways to drive it over the device's SSH connection
(:mod:`fleet.engine.cli`: the ``docker`` CLI, one SSH exec per step).

:class:`Engine` is the interface the deploy, verify and rollback stages use; they never
know which way reaches the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Protocol, Sequence

from fleet.engine.state import *  # noqa: F401,F403
from fleet.engine.state import (
    ContainerState,
    DiskSpace,
    EngineInfo,
    EngineVersion,
    ImageState,
    ImageSummary,
)
from fleet.engine.state import __all__ as _state_all
from fleet.engine.objects import NetworkState, VolumeState
from fleet.platform import Platform

if TYPE_CHECKING:
    from fleet.registry import Credentials

__all__ = [*_state_all, "Engine", "PullAuth", "NetworkState", "VolumeState"]


@dataclass(frozen=True)
class PullAuth:
    """Registry credentials for one pull: ``registry`` host and its
    :class:`fleet.registry.Credentials` (whose repr never shows a secret). Each way of
    reaching an engine encodes them as it needs: a Docker ``config.json`` on the CLI's
    stdin, an ``X-Registry-Auth`` header on the Engine API."""

    registry: str
    credentials: "Credentials"

    def docker_config_json(self) -> bytes:
        """The Docker CLI ``config.json`` holding these credentials."""
        from fleet.registry import docker_config_json

        return docker_config_json(self.credentials, self.registry)


class Engine(Protocol):
    """One device's engine, as the stages use it. ``create_container`` takes a
    :class:`fleet.compose.ServiceSpec` or a playbook's ContainerSpec. Lookups return None
    for "no such image/container/network/volume"; everything else raises :class:`fleet.engine.state.EngineError` with
    the engine's own message, or :class:`fleet.ssh.SSHError` when the connection fails."""

    device: str

    def version(self) -> EngineVersion: ...
    def info(self) -> EngineInfo: ...
    def free_space(self, path: str) -> DiskSpace: ...
    def http_check(self, url: str, timeout: float = 30.0) -> tuple[bool, str]: ...
    def image(self, ref: str, platform: Platform | None = None) -> ImageState | None: ...
    def pull(self, ref: str, *, platform: Platform | None = None, auth: PullAuth | None = None,
             timeout: float = 1800.0) -> None: ...
    def images(self) -> list[ImageSummary]: ...
    def remove_image(self, ref: str) -> bool: ...
    def container(self, name: str) -> ContainerState | None: ...
    def create_container(self, name: str, image: str, spec, labels: Mapping[str, str], *,
                         platform: Platform | None = None) -> str: ...
    # a Compose stack's networks and named volumes (fleet never removes a volume)
    def network(self, name: str) -> NetworkState | None: ...
    def create_network(self, name: str, *, driver: str | None = None, options: Mapping[str, str] | None = None,
                       labels: Mapping[str, str] | None = None, internal: bool = False) -> str: ...
    def connect_network(self, network: str, container: str, aliases: Sequence[str] = ()) -> None: ...
    def volume(self, name: str) -> VolumeState | None: ...
    def create_volume(self, name: str, *, driver: str | None = None, options: Mapping[str, str] | None = None,
                      labels: Mapping[str, str] | None = None) -> str: ...
    def start(self, name: str) -> None: ...
    def stop(self, name: str, timeout_s: int = 10) -> None: ...
    def rename(self, old: str, new: str) -> None: ...
    def remove(self, name: str, force: bool = True) -> None: ...
    def logs(self, name: str, tail: int = 20) -> str: ...
    def exec(self, name: str, argv: Sequence[str], timeout: float = 30.0) -> tuple[int, str]: ...
    def names(self, prefix: str) -> list[str]: ...
