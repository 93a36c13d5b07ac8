"""A playbook's one-container ``container:`` as a one-service stack's :class:`ServiceSpec`.

:class:`fleet.playbook.ContainerSpec` keeps its own (Docker CLI) forms; this is the one
conversion, so that the engines have one mapping (:func:`fleet.engine.cli.create_args`,
:func:`fleet.engine.wire.create_body`). The result creates the same container as before
Compose support: no log driver is set (the engine's default; the Compose default
:data:`fleet.compose.model.DEFAULT_LOGGING` applies to Compose services only, since
``container:`` has no key to choose another).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleet.compose.model import Mount, ServiceSpec

if TYPE_CHECKING:
    from fleet.playbook import ContainerSpec

__all__ = ["service_from_container", "as_service"]


def _mount(volume: str) -> Mount:
    # ContainerSpec.volumes are checked SOURCE:/TARGET[:OPTIONS] strings
    source, target, *rest = volume.split(":")
    options = [o for o in (rest[0].split(",") if rest else []) if o]
    kind = "bind" if source.startswith("/") else "volume"
    return Mount(kind, source, target, "ro" in options, tuple(o for o in options if o not in ("ro", "rw")))


def service_from_container(spec: "ContainerSpec") -> ServiceSpec:
    """The :class:`ServiceSpec` that creates the same container as ``spec``."""
    return ServiceSpec(
        name=spec.name,
        command=spec.command,
        entrypoint=spec.entrypoint,
        env=dict(spec.env),
        ports=tuple(spec.ports),
        mounts=tuple(_mount(v) for v in spec.volumes),
        devices=tuple(spec.devices),
        restart=spec.restart,
        privileged=spec.privileged,
        network_mode=spec.network_mode,
        labels=dict(spec.labels),
    )


def as_service(spec: "ContainerSpec | ServiceSpec") -> ServiceSpec:
    """``spec`` as a ServiceSpec (a ContainerSpec converted, a ServiceSpec as it is)."""
    return spec if isinstance(spec, ServiceSpec) else service_from_container(spec)
