"""The swap of one app's container as data: prepare, swap, commit and rollback are lists of
:class:`Op`, built by pure functions and executed by one small runner (:func:`apply`).

Every op is guarded by a condition on the device's containers at the moment it runs
(exists, running, created by this deployment), so each list is idempotent and can be run
again from any point an interrupted run reached: a rollback after a crash between "park
the old one" and "promote the new one" restores the old container, and a rollback before
anything moved touches nothing (the running container belongs to another deployment).

The names: the app runs as ``NAME``; a swap parks the running one as ``NAME.previous``
(stopped, kept until commit), promotes ``NAME.new`` (created from the pulled image) to
``NAME`` and starts it; a rollback keeps the unhealthy one as ``NAME.failed`` (for its
logs) and brings ``NAME.previous`` back. This follows balena's default
``download-then-kill`` strategy: the image is downloaded and checked before anything stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from fleet.deploy.container import LABEL, parked_names
from fleet.engine import Engine

__all__ = ["Op", "Member", "members", "prepare_ops", "swap_ops", "commit_ops", "rollback_ops", "apply", "describe"]


@dataclass(frozen=True)
class Op:
    """One engine action on container ``target``: ``verb`` is ``rename`` (to ``to``),
    ``stop`` (waiting ``timeout`` s), ``start``, ``remove`` or ``await-healthy`` (wait
    until its healthcheck reports healthy; the device-side transaction bounds the wait by
    the health timeout). It runs only when ``target``
    exists and every given guard holds: ``if_exists`` (that other container exists),
    ``if_missing`` (it does not), ``if_running`` / ``if_stopped`` (``target`` is / is not
    running), ``if_deployment`` / ``unless_deployment`` (``target``'s
    ``io.fleet.deployment`` label is / is not that id)."""

    verb: str
    target: str
    to: str | None = None
    timeout: int = 10
    if_exists: str | None = None
    if_missing: str | None = None
    if_running: bool = False
    if_stopped: bool = False
    if_deployment: str | None = None
    unless_deployment: str | None = None


@dataclass(frozen=True)
class Member:
    """One container of a stack's transaction: ``name`` (the app's container on the
    device), ``stop_timeout`` (s it is given to stop), ``await_healthy`` (after starting
    it, wait until its healthcheck says healthy before the next member starts: a
    dependant's ``depends_on: condition: service_healthy``)."""

    name: str
    stop_timeout: int = 10
    await_healthy: bool = False


Members = str | Member | Sequence[str | Member]


def members(stack: Members, stop_timeout: int = 10) -> list[Member]:
    """A stack as a list of :class:`Member` in start order (a bare name is a stack of one)."""
    items = [stack] if isinstance(stack, (str, Member)) else list(stack)
    return [m if isinstance(m, Member) else Member(m, stop_timeout) for m in items]


def prepare_ops(stack: Members) -> list[Op]:
    """Before the ``NAME.new`` containers are created: remove leftovers of an earlier run
    (``NAME.new``, ``NAME.failed``; ``NAME.previous`` when ``NAME`` exists), and when an
    interrupted run left only ``NAME.previous``, give it its name back (the swap then parks
    it again, or a rollback starts it)."""
    ops: list[Op] = []
    for m in members(stack):
        new, prev, failed = parked_names(m.name)
        ops += [
            Op("remove", new),
            Op("remove", failed),
            Op("remove", prev, if_exists=m.name),
            Op("rename", prev, to=m.name, if_missing=m.name),
        ]
    return ops


def swap_ops(stack: Members, stop_timeout: int = 10) -> list[Op]:
    """Park every running member as ``NAME.previous`` (stopped; dependants first, in
    reverse start order), then promote each ``NAME.new`` and start it, in start order,
    waiting for a member to be healthy where a later one needs it."""
    ms = members(stack, stop_timeout)
    ops: list[Op] = []
    for m in reversed(ms):
        prev = parked_names(m.name)[1]
        ops += [Op("rename", m.name, to=prev), Op("stop", prev, timeout=m.stop_timeout, if_running=True)]
    for m in ms:
        new = parked_names(m.name)[0]
        ops += [Op("rename", new, to=m.name, if_missing=m.name), Op("start", m.name, if_stopped=True)]
        if m.await_healthy:
            ops.append(Op("await-healthy", m.name))
    return ops


def commit_ops(stack: Members) -> list[Op]:
    """Every new member is healthy: remove the ``NAME.previous`` containers (their images
    stay on the device, so a rollback needs no download)."""
    return [Op("remove", parked_names(m.name)[1]) for m in members(stack)]


def rollback_ops(stack: Members, deployment: str, stop_timeout: int = 10) -> list[Op]:
    """Undo a swap by ``deployment`` from wherever it stopped: the containers it created
    are stopped and kept as ``NAME.failed`` (dependants first); every ``NAME.previous`` gets
    its name back and runs again, in start order. Touches nothing of a ``NAME`` that is not
    this deployment's (its swap never began), but starts it if it is stopped."""
    ms = members(stack, stop_timeout)
    ops: list[Op] = []
    for m in reversed(ms):
        _, prev, failed = parked_names(m.name)
        ops += [
            Op("stop", m.name, timeout=m.stop_timeout, if_running=True, if_deployment=deployment),
            Op("remove", failed, if_exists=m.name),
            Op("rename", m.name, to=failed, if_deployment=deployment),
        ]
    for m in ms:
        prev = parked_names(m.name)[1]
        ops += [Op("rename", prev, to=m.name, if_missing=m.name),
                Op("start", m.name, if_stopped=True, unless_deployment=deployment)]
    return ops


def describe(op: Op) -> str:
    """``"hello -> hello.previous"``, ``"stop hello.previous"``: one line of a report."""
    return f"{op.target} -> {op.to}" if op.verb == "rename" else f"{op.verb} {op.target}"


def _holds(engine: Engine, op: Op) -> bool:
    target = engine.container(op.target)
    if target is None:
        return False
    if op.if_exists is not None and engine.container(op.if_exists) is None:
        return False
    if op.if_missing is not None and engine.container(op.if_missing) is not None:
        return False
    running = target.running or target.restarting
    if (op.if_running and not running) or (op.if_stopped and running):
        return False
    label = target.labels.get(LABEL["deployment"])
    if op.if_deployment is not None and label != op.if_deployment:
        return False
    if op.unless_deployment is not None and label == op.unless_deployment:
        return False
    return True


def apply(engine: Engine, ops: Sequence[Op], record: Callable[[str], None] = lambda s: None) -> None:
    """Run ``ops`` in order on ``engine``, skipping those whose guards do not hold; each op
    run is passed to ``record`` (:func:`describe`). Raises the engine's error of the first
    op that fails (the caller decides whether to roll back)."""
    for op in ops:
        if not _holds(engine, op):
            continue
        if op.verb == "rename":
            assert op.to is not None
            engine.rename(op.target, op.to)
        elif op.verb == "stop":
            engine.stop(op.target, op.timeout)
        elif op.verb == "start":
            engine.start(op.target)
        elif op.verb == "remove":
            engine.remove(op.target)
        elif op.verb == "await-healthy":
            c = engine.container(op.target)
            if c is None or c.health not in (None, "healthy"):
                from fleet.engine import EngineError

                raise EngineError(engine.device, f"await healthy {op.target}", 1,
                                  f"{op.target} is {c.health if c else 'missing'}, not healthy")
        else:  # pragma: no cover - the builders above make only these
            raise ValueError(f"unknown op {op.verb!r}")
        record(describe(op))
