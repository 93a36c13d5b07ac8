"""An in-memory Docker engine for the PURE rollout tests (decisions and the swap/restore
sequences of fleet.deploy.txn): containers by name with running state and labels, the
engine's own refusals (a rename onto a taken name, starting a missing container), and a
way to make the Nth call of a verb fail, as a dropped link or a full disk would.

Only for decision tests: everything that talks to a device is tested against real engines
(tests/integration, tests/lab).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

from fleet.engine import ContainerState, EngineError, EngineInfo, ImageState


def container(name: str, *, running: bool = True, deployment: str = "", image: str = "sha256:" + "0" * 64,
              labels: Mapping[str, str] | None = None) -> ContainerState:
    lab = dict(labels or {})
    if deployment:
        lab.setdefault("io.fleet.deployment", deployment)
    return ContainerState(id=f"id-{name}", name=name, image_id=image, image_ref=image, labels=lab,
                          status="running" if running else "exited", running=running, restarting=False,
                          exit_code=0, oom_killed=False, error="", started_at="2026-12-01T00:00:00Z",
                          finished_at="", restart_count=0)


@dataclass
class MemoryEngine:
    """``containers``: name -> ContainerState; ``fail``: verb -> the call number (1-based)
    that raises EngineError; ``calls``: every mutating call made, in order."""

    containers: dict[str, ContainerState] = field(default_factory=dict)
    images: dict[str, ImageState] = field(default_factory=dict)
    fail: dict[str, int] = field(default_factory=dict)
    calls: list[tuple[str, ...]] = field(default_factory=list)
    device: str = "double"

    def _call(self, verb: str, *args: str) -> None:
        self.calls.append((verb, *args))
        n = sum(1 for c in self.calls if c[0] == verb)
        if self.fail.get(verb) == n:
            raise EngineError(self.device, f"docker {verb} {' '.join(args)}", 1, "injected failure")

    def add(self, c: ContainerState) -> None:
        self.containers[c.name] = c

    def running(self) -> dict[str, bool]:
        return {n: c.running for n, c in self.containers.items()}

    # -- the Engine interface used by fleet.deploy.txn --------------------------------------

    def info(self) -> EngineInfo:
        return EngineInfo("20.10.24", "x86_64", "linux", "/var/lib/docker", "overlay2", False)

    def container(self, name: str) -> ContainerState | None:
        return self.containers.get(name)

    def image(self, ref: str, platform=None) -> ImageState | None:
        return self.images.get(ref)

    def names(self, prefix: str) -> list[str]:
        return [n for n in self.containers if n.startswith(prefix)]

    def rename(self, old: str, new: str) -> None:
        self._call("rename", old, new)
        if old not in self.containers:
            raise EngineError(self.device, f"docker rename {old} {new}", 1, f"No such container: {old}")
        if new in self.containers:
            raise EngineError(self.device, f"docker rename {old} {new}", 1,
                              f'Conflict. The container name "/{new}" is already in use')
        self.containers[new] = replace(self.containers.pop(old), name=new)

    def stop(self, name: str, timeout_s: int = 10) -> None:
        self._call("stop", name)
        c = self.containers[name]
        self.containers[name] = replace(c, running=False, status="exited")

    def start(self, name: str) -> None:
        self._call("start", name)
        if name not in self.containers:
            raise EngineError(self.device, f"docker start {name}", 1, f"No such container: {name}")
        self.containers[name] = replace(self.containers[name], running=True, status="running")

    def remove(self, name: str, force: bool = True) -> None:
        self._call("remove", name)
        self.containers.pop(name, None)
