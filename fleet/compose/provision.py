"""Make a device's engine ready for a stack: its networks and named volumes.

:func:`ensure_stack_objects` looks each network and volume of a
:class:`~fleet.compose.stack.ResolvedStack` up on the device's engine and creates the
missing ones, labelled as fleet's (:data:`APP_LABEL` and :data:`NETWORK_LABEL` /
:data:`VOLUME_LABEL`); an ``external`` one must exist already. An existing network or
volume of the right name is used as it is (a stack that ran under docker compose with the
same project name keeps its data). Nothing is ever removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fleet.engine.state import EngineError

if TYPE_CHECKING:
    from fleet.compose.stack import ResolvedStack
    from fleet.engine import Engine

__all__ = ["APP_LABEL", "NETWORK_LABEL", "VOLUME_LABEL", "StackObject", "ensure_stack_objects"]

#: Labels on the networks and volumes fleet creates: the project, and the Compose key.
APP_LABEL = "io.fleet.app"
NETWORK_LABEL = "io.fleet.network"
VOLUME_LABEL = "io.fleet.volume"


@dataclass(frozen=True)
class StackObject:
    """What was done for one network or volume: ``action`` is ``created`` or ``exists``."""

    kind: str
    key: str
    name: str
    action: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "key": self.key, "name": self.name, "action": self.action}


def ensure_stack_objects(engine: "Engine", stack: "ResolvedStack") -> list[StackObject]:
    """Create the stack's missing networks and volumes on ``engine`` (in the Compose
    file's order: networks, then volumes). Raises :class:`EngineError` (a failed device,
    exit 1) for an external network or volume that does not exist on the device, and
    whatever the engine raises; externals are checked before anything is created."""
    nets = {key: engine.network(net.name) is not None for key, net in stack.networks.items()}
    vols = {key: engine.volume(vol.name) is not None for key, vol in stack.volumes.items()}
    # every external one is checked before anything is created: a device missing one is
    # left as it was
    for section, specs, present in (("network", stack.networks, nets), ("volume", stack.volumes, vols)):
        for key, spec in specs.items():
            if spec.external and not present[key]:
                raise EngineError(engine.device, f"{section} {spec.name}", 1,
                                  f"external {section} {spec.name!r} ({section}s.{key}) does not exist on the device")
    done: list[StackObject] = []
    for key, net in stack.networks.items():
        if not nets[key]:
            engine.create_network(net.name, driver=net.driver, options=net.driver_opts, internal=net.internal,
                                  labels={**net.labels, APP_LABEL: stack.project, NETWORK_LABEL: key})
        done.append(StackObject("network", key, net.name, "exists" if nets[key] else "created"))
    for key, vol in stack.volumes.items():
        if not vols[key]:
            engine.create_volume(vol.name, driver=vol.driver, options=vol.driver_opts,
                                 labels={**vol.labels, APP_LABEL: stack.project, VOLUME_LABEL: key})
        done.append(StackObject("volume", key, vol.name, "exists" if vols[key] else "created"))
    return done
