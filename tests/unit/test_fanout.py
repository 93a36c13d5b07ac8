"""fleet.fanout.run_each: bounded real thread pool, input order, per-item errors, progress."""

from __future__ import annotations

import io
import os
import signal
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


def _sigint_after(seconds: float) -> None:
    # a real SIGINT (as Ctrl-C sends), so a main thread blocked in a wait wakes up
    threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT)).start()


def test_first_interrupt_aborts_work_in_flight_and_reports_the_rest_interrupted():
    release = threading.Event()
    started = []

    def fn(i):
        started.append(i)
        if i == 0:
            _sigint_after(0.2)
            if not release.wait(10):
                raise AssertionError("on_interrupt was not called")
            raise ConnectionError("session closed")  # what an aborted SSH session gives
        return i

    t0 = time.monotonic()
    outs = run_each([0, 1, 2], fn, forks=1, on_interrupt=release.set)
    assert time.monotonic() - t0 < 5
    # the device at work failed because the interrupt closed its session: interrupted too
    assert "session closed" in str(outs[0].error)
    assert [o.interrupted for o in outs] == [True, True, True]
    assert started == [0]  # nothing new started after the interrupt
    assert outs[1].error.exit_code == 130


def test_graceful_interrupt_lets_running_work_finish_and_a_second_one_stops_waiting():
    aborted = threading.Event()

    def fn(i):
        if i == 0:
            _sigint_after(0.2)
            time.sleep(0.8)  # still at work when the first interrupt comes
            return "finished"
        return i

    outs = run_each([0, 1, 2], fn, forks=1, graceful=True, on_interrupt=aborted.set)
    assert outs[0].value == "finished" and not aborted.is_set()
    assert outs[1].interrupted and outs[2].interrupted

    release = threading.Event()

    def slow(i):
        _sigint_after(0.2)
        _sigint_after(0.5)
        release.wait(10)
        raise ConnectionError("session closed")

    t0 = time.monotonic()
    outs = run_each([0], slow, forks=1, graceful=True, on_interrupt=release.set)
    assert time.monotonic() - t0 < 5 and release.is_set()
    assert outs[0].interrupted and "session closed" in str(outs[0].error)


def test_progress_only_on_a_terminal(capsys, monkeypatch):
    run_each([1, 2], lambda x: x, label="probing")
    assert capsys.readouterr().err == ""  # stderr is not a TTY under pytest: nothing drawn

    buf = io.StringIO()
    monkeypatch.setattr(output, "err", Console(file=buf, force_terminal=True, width=80))
    run_each([1, 2], lambda x: x, label="probing")
    drawn = buf.getvalue()
    assert "probing" in drawn  # drawn while running, then erased (transient)
