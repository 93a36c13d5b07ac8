"""The :class:`Executor` protocol and :class:`LocalExecutor` (the controller's own thread pool).

Everything above the seam asks an executor to ``map`` work items and gets one
:class:`fleet.fanout.Outcome` per item, in input order (``Outcome.item`` is the
:class:`DeviceWork`, ``value`` the handler's JSON result, ``error`` the exception), the
same whichever executor ran them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

from fleet.executor.handlers import CredentialsCache, WorkerContext, call_handler, handler_for
from fleet.executor.work import DeviceWork
from fleet.fanout import DEFAULT_FORKS, Outcome, run_each

if TYPE_CHECKING:
    from fleet.connections import Connections

__all__ = ["Executor", "LocalExecutor", "WorkOutcome"]


@dataclass
class WorkOutcome(Outcome):
    """An :class:`fleet.fanout.Outcome` that also says where the work ran: ``worker``
    (``local``, or the Celery node name of a site worker), ``site`` (None locally),
    ``redelivered`` (the broker delivered the job again, e.g. after a worker died)."""

    worker: str = "local"
    site: str | None = None
    redelivered: bool = False


class Executor(Protocol):
    """Runs work items and returns their outcomes.

    ``map(works, *, forks, label, on_interrupt, graceful, on_done) -> list[Outcome]``: one
    Outcome per item, in input order, as :func:`fleet.fanout.run_each` gives them (a
    failed device is its Outcome's ``error``, never an exception out of ``map``; Ctrl-C
    leaves :class:`fleet.fanout.Interrupted` on the items that did not finish). Raises
    :class:`fleet.errors.UsageError` before running anything for a work item it cannot
    run (unknown kind, no site where one is needed) and
    :class:`fleet.executor.errors.BrokerUnavailable` when its broker is down.

    ``preflight(works)``: the same checks, run before anything else of a command (before
    its history row or report exists): UsageError or BrokerUnavailable, nothing sent.
    """

    def preflight(self, works: Sequence[DeviceWork]) -> None:
        ...

    def map(self, works: Sequence[DeviceWork], *, forks: int = DEFAULT_FORKS, label: str = "",
            on_interrupt: Callable[[], None] | None = None, graceful: bool = False,
            on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
        ...


class LocalExecutor:
    """Runs each item's handler on a thread of this process (:func:`fleet.fanout.run_each`),
    reaching devices through ``connections`` (the run's own: one SSH session per device per
    run, targets from the inventory). ``forks`` devices at once. Each item's deadline is
    enforced: past it, the device's session is closed and its Outcome has
    :class:`fleet.executor.errors.DeadlineReached`."""

    name = "local"

    def __init__(self, connections: "Connections"):
        self.connections = connections
        self.credentials = CredentialsCache()

    def preflight(self, works: Sequence[DeviceWork]) -> None:
        """Nothing to check before a run on this machine (see :meth:`CeleryExecutor.preflight`)."""
        for kind in {w.kind for w in works}:
            handler_for(kind)

    def map(self, works: Sequence[DeviceWork], *, forks: int = DEFAULT_FORKS, label: str = "",
            on_interrupt: Callable[[], None] | None = None, graceful: bool = False,
            on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
        works = list(works)
        handlers = {w.kind: handler_for(w.kind) for w in works}  # UsageError before anything runs

        def one(work: DeviceWork) -> dict:
            return self.call(work, handlers[work.kind])

        def interrupt() -> None:
            if on_interrupt is not None:
                on_interrupt()
            else:
                self.connections.abort()

        seen: dict[int, WorkOutcome] = {}

        def convert(o: Outcome) -> WorkOutcome:
            w = seen.get(id(o))
            if w is None:
                w = seen[id(o)] = WorkOutcome(o.item, o.value, o.error, o.seconds)
            return w

        def done(o: Outcome) -> None:
            if on_done is not None:
                on_done(convert(o))

        outcomes = run_each(works, one, forks, label, on_interrupt=interrupt, graceful=graceful, on_done=done)
        return [convert(o) for o in outcomes]

    def call(self, work: DeviceWork, fn=None) -> dict:
        """Run one item's handler here, now (under its deadline); its result or error."""
        ctx = WorkerContext(work, self.connections, worker="local", site=None, credentials_cache=self.credentials)
        return call_handler(work, ctx, fn)
