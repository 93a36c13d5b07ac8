"""Fan-out: run one function per device on a bounded thread pool (Ansible's ``forks``).

Device work is I/O-bound (SSH round trips), so threads suffice; ``forks`` bounds how many
devices are worked on at once, as Ansible's ``-f/--forks`` does. Each device's result or
error is kept in an :class:`Outcome`, in input order, so one failing device never stops
the others and the caller prints one row per device (Ansible's PLAY RECAP).

Ctrl-C: the first interrupt stops starting new items. With ``graceful`` the items already
running are left to finish (a device in the middle of its swap finishes it anyway) and a
second interrupt stops waiting; otherwise ``on_interrupt`` is called at once (it closes
the run's SSH sessions, so work blocked on a device returns) and the run ends within
``abort_wait`` seconds. Items that did not finish get an :class:`Interrupted` error, and
the caller prints and saves what it has.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait, FIRST_COMPLETED
from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fleet import output
from fleet.errors import FleetError

__all__ = ["DEFAULT_FORKS", "Outcome", "Interrupted", "run_each", "INTERRUPTED_EXIT"]

#: Default number of devices worked on at once (``--forks``).
DEFAULT_FORKS = 50
#: Exit status of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
INTERRUPTED_EXIT = 130

T = TypeVar("T")
R = TypeVar("R")


class Interrupted(FleetError):
    """The run was interrupted (Ctrl-C) before this device's work finished."""

    exit_code = INTERRUPTED_EXIT

    def __init__(self, device: str = "", reason: str = "interrupted (Ctrl-C) before this device finished"):
        self.device = device
        self.reason = reason
        super().__init__(f"{device}: {reason}" if device else reason)


@dataclass
class Outcome(Generic[T, R]):
    """What ``fn(item)`` gave for one item: ``value`` (None on error) or ``error`` (the
    exception it raised, None on success), and how long it took in ``seconds``."""

    item: T
    value: R | None
    error: Exception | None
    seconds: float

    @property
    def ok(self) -> bool:
        """True when ``fn`` returned (``error`` is None)."""
        return self.error is None

    @property
    def interrupted(self) -> bool:
        return isinstance(self.error, Interrupted)


def _timed(fn: Callable[[T], R], item: T) -> Outcome[T, R]:
    start = time.perf_counter()
    try:
        value = fn(item)
    except Exception as exc:  # one device's failure is its row, never the whole run's
        return Outcome(item, None, exc, time.perf_counter() - start)
    return Outcome(item, value, None, time.perf_counter() - start)


def run_each(
    items: Sequence[T],
    fn: Callable[[T], R],
    forks: int = DEFAULT_FORKS,
    label: str = "",
    *,
    on_interrupt: Callable[[], None] | None = None,
    graceful: bool = False,
    abort_wait: float = 5.0,
    on_done: Callable[[Outcome[T, R]], None] | None = None,
) -> list[Outcome[T, R]]:
    """Call ``fn(item)`` for every item, at most ``forks`` at a time; one Outcome per item,
    in input order.

    Exceptions raised by ``fn`` are caught into ``Outcome.error``. Ctrl-C is handled as the
    module docstring says: unfinished items get :class:`Interrupted`. ``on_done(outcome)``
    is called (in the calling thread) as each item finishes, for progress lines. A progress
    bar labelled ``label`` goes to stderr while items run; it is not drawn when stderr is
    not a terminal. Raises ValueError when ``forks`` < 1.
    """
    if forks < 1:
        raise ValueError(f"forks must be at least 1, got {forks}")
    items = list(items)
    if not items:
        return []
    results: list[Outcome[T, R] | None] = [None] * len(items)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=output.err,
        transient=True,
        disable=not output.err.is_terminal,
    )
    pool = ThreadPoolExecutor(max_workers=min(forks, len(items)), thread_name_prefix="fleet-fanout")
    index: dict[Future[Outcome[T, R]], int] = {}
    stop_at: float | None = None
    try:
        with progress:
            task = progress.add_task(label or "devices", total=len(items))
            index = {pool.submit(_timed, fn, item): i for i, item in enumerate(items)}
            pending = set(index)
            while pending:
                try:
                    timeout = None if stop_at is None else max(0.0, stop_at - time.monotonic())
                    done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
                    for fut in done:
                        if fut.cancelled():
                            continue
                        o = fut.result()
                        if stop_at is not None and o.error is not None and not o.interrupted:
                            # failed because the interrupt closed its connection
                            o.error = Interrupted(reason=f"interrupted (Ctrl-C): {o.error}")
                        results[index[fut]] = o
                        progress.advance(task)
                        if on_done is not None:
                            on_done(o)
                except KeyboardInterrupt:
                    for fut in pending:
                        fut.cancel()
                    pending = {f for f in pending if not f.cancelled()}
                    if graceful:
                        graceful = False  # the next Ctrl-C stops waiting
                        output.warn("interrupted: no new device is started; waiting for the devices "
                                    "already at work to finish (Ctrl-C again to stop waiting)")
                        continue
                    if on_interrupt is not None:
                        threading.Thread(target=on_interrupt, daemon=True).start()
                    stop_at = time.monotonic() + abort_wait
                if stop_at is not None and time.monotonic() >= stop_at:
                    break
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return [r if r is not None else Outcome(items[i], None, Interrupted(), 0.0) for i, r in enumerate(results)]
