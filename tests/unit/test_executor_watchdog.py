"""The one deadline thread of a process: work past its deadline is aborted in deadline
order (also one armed after a later one), finished work never is, and entries of finished
work do not pile up."""

from __future__ import annotations

import threading
import time

from fleet.executor.handlers import _Watchdog


class Ctx:
    def __init__(self, name: str, log: list, event: threading.Event | None = None):
        self.name, self.log, self.event = name, log, event

    def abort(self) -> None:
        self.log.append((self.name, time.monotonic()))
        if self.event is not None:
            self.event.set()


def test_aborts_in_deadline_order_and_never_finished_work():
    dog = _Watchdog()
    log: list = []
    last = threading.Event()
    t0 = time.monotonic()
    dog.arm(t0 + 0.6, Ctx("late", log, last))
    dog.arm(t0 + 0.2, Ctx("early", log))          # armed after a later one: fires first
    done = dog.arm(t0 + 0.1, Ctx("finished", log))
    dog.disarm(done)                               # finished in time: never aborted
    assert last.wait(5)
    assert [n for n, _ in log] == ["early", "late"]
    early, late = (t - t0 for _, t in log)
    assert 0.15 < early < 0.5 and 0.55 < late < 2


def test_finished_entries_do_not_pile_up():
    dog = _Watchdog()
    far = time.monotonic() + 3600
    for _ in range(2000):
        dog.disarm(dog.arm(far, Ctx("x", [])))
    assert len(dog._heap) <= 600 and len(dog._done) <= 600
