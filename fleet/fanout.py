"""Fan-out: run one function per device on a bounded thread pool (Ansible's ``forks``).

Device work is I/O-bound (SSH round trips), so threads suffice; ``forks`` bounds how many
devices are worked on at once, as Ansible's ``-f/--forks`` does. Each device's result or
error is kept in an :class:`Outcome`, in input order, so one failing device never stops
the others and the caller prints one row per device (Ansible's PLAY RECAP).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fleet import output

__all__ = ["DEFAULT_FORKS", "Outcome", "run_each"]

#: Default number of devices worked on at once (``--forks``).
DEFAULT_FORKS = 50

T = TypeVar("T")
R = TypeVar("R")


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
) -> list[Outcome[T, R]]:
    """Call ``fn(item)`` for every item, at most ``forks`` at a time; one Outcome per item,
    in input order.

    Exceptions raised by ``fn`` are caught into ``Outcome.error`` (KeyboardInterrupt and
    other BaseExceptions propagate: pending items are cancelled). A progress bar labelled
    ``label`` goes to stderr while items run and is removed afterwards; it is not drawn
    when stderr is not a terminal, so piped and captured output stay clean.
    Raises ValueError when ``forks`` < 1.
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
    with progress, ThreadPoolExecutor(
        max_workers=min(forks, len(items)), thread_name_prefix="fleet-fanout"
    ) as pool:
        task = progress.add_task(label or "devices", total=len(items))
        index: dict[Future[Outcome[T, R]], int] = {
            pool.submit(_timed, fn, item): i for i, item in enumerate(items)
        }
        try:
            # as_completed registers one waiter for all futures: O(N) for the whole run,
            # where a wait(FIRST_COMPLETED) loop re-registers on every pending future
            for fut in as_completed(index):
                results[index[fut]] = fut.result()
                progress.advance(task)
        except BaseException:
            for fut in index:
                fut.cancel()
            raise
    return [r for r in results if r is not None]
