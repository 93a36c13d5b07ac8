"""fleet.fanout.run_each: bounded real thread pool, input order, per-item errors, progress."""

from __future__ import annotations

import io
import threading
import time

import pytest
from rich.console import Console

from fleet import output
from fleet.fanout import DEFAULT_FORKS, Outcome, run_each


def test_results_in_input_order_with_errors_and_timing():
    def fn(i: int) -> int:
        time.sleep(0.02 * (5 - i))  # later items finish first
        if i == 2:
            raise OSError(f"device {i} unreachable")
        return i * 10

    res = run_each(list(range(5)), fn, forks=5, label="t")
    assert [o.item for o in res] == [0, 1, 2, 3, 4]
    assert [o.value for o in res] == [0, 10, None, 30, 40]
    assert [o.ok for o in res] == [True, True, False, True, True]
    assert isinstance(res[2].error, OSError) and "device 2" in str(res[2].error)
    assert all(isinstance(o, Outcome) for o in res)
    assert res[0].seconds >= 0.09 and res[4].seconds < res[0].seconds


def test_forks_bounds_concurrency():
    lock = threading.Lock()
    running = peak = 0

    def fn(_):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    run_each(range(12), fn, forks=3)
    assert peak == 3
    run_each(range(4), fn, forks=DEFAULT_FORKS)  # never more threads than items
    assert DEFAULT_FORKS == 50


def test_edge_cases():
    assert run_each([], lambda x: x) == []
    with pytest.raises(ValueError):
        run_each([1], lambda x: x, forks=0)


def test_interrupt_propagates():
    def fn(i):
        if i == 0:
            raise KeyboardInterrupt
        return i

    with pytest.raises(KeyboardInterrupt):
        run_each([0, 1, 2], fn, forks=1)


def test_progress_only_on_a_terminal(capsys, monkeypatch):
    run_each([1, 2], lambda x: x, label="probing")
    assert capsys.readouterr().err == ""  # stderr is not a TTY under pytest: nothing drawn

    buf = io.StringIO()
    monkeypatch.setattr(output, "err", Console(file=buf, force_terminal=True, width=80))
    run_each([1, 2], lambda x: x, label="probing")
    drawn = buf.getvalue()
    assert "probing" in drawn  # drawn while running, then erased (transient)
