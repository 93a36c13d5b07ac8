"""What a device's engine holds for one app, gathered in one pass (deploy, verify and
rollback all start from it). The only I/O of the deploy stage besides the actions
themselves; the decisions taken on it are pure (:mod:`fleet.deploy.decide`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet.deploy.container import FAILED, NEW, PREVIOUS
from fleet.engine import ContainerState, Engine, EngineError, EngineInfo, ImageState
from fleet.verify import Expected

__all__ = ["DeviceView", "observe"]


@dataclass
class DeviceView:
    """One app on one device: the engine's ``info``; ``current`` (container NAME, None when
    absent) and ``current_image`` (the image it was created from); ``planned_image`` (what
    the engine holds under the planned ``REPO@<index digest>``, None when not pulled yet);
    ``leftovers``: parked containers of an earlier swap (NAME.new/.previous/.failed) by
    name; ``logs``: the current container's last log lines (when asked for); ``notes``."""

    name: str
    info: EngineInfo
    current: ContainerState | None
    current_image: ImageState | None
    planned_image: ImageState | None = None
    leftovers: dict[str, ContainerState] = field(default_factory=dict)
    logs: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def store(self) -> str:
        """``"classic"`` or ``"containerd"`` (:attr:`fleet.engine.EngineInfo.store`)."""
        return self.info.store


def observe(engine: Engine, name: str, expected: Expected | None, *, planned: bool = True,
            logs: int = 0, leftovers: bool = True) -> DeviceView:
    """Gather :class:`DeviceView` for container ``name``.

    ``expected``: the planned entry; with ``planned`` its image is looked up too (deploy
    needs it to skip a pull; verify does not). On the containerd image store the current
    image is inspected with the planned entry's platform, so its fields describe that child
    (API >= 1.49, docker/cli#5934), falling back to a plain inspect. ``logs``: lines of the
    current container's log to keep (0: none).
    """
    info = engine.info()
    current = engine.container(name)
    view = DeviceView(name, info, current, None)
    if current is not None:
        ref = current.image_id or current.image_ref
        image = None
        if info.containerd_store and expected is not None:
            try:
                image = engine.image(ref, platform=expected.platform)
            except EngineError as exc:  # an engine or CLI older than API 1.49
                view.notes.append(f"image inspect --platform failed: {str(exc)[:120]}")
        view.current_image = image or engine.image(ref)
        if logs:
            view.logs = engine.logs(name, logs)
    if planned and expected is not None and expected.published:  # nothing to look up before a publish
        view.planned_image = engine.image(expected.pull_reference)
    if leftovers:
        for other in engine.names(name + "."):
            if other in (name + NEW, name + PREVIOUS, name + FAILED):
                c = engine.container(other)
                if c is not None:
                    view.leftovers[other] = c
    return view
