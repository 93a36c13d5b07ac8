"""KeyedLock: one thread at a time per key, different keys in parallel, nothing left behind."""

from __future__ import annotations

import threading
import time

from fleet.registry.keyedlock import KeyedLock


def test_same_key_serialises_other_keys_do_not_wait():
    locks = KeyedLock()
    inside: dict[str, int] = {"a": 0, "b": 0}
    peak: dict[str, int] = {"a": 0, "b": 0}
    waited: list[bool] = []
    guard = threading.Lock()
    start = threading.Barrier(8)

    def work(key: str) -> None:
        start.wait()
        with locks.hold(key) as w:
            with guard:
                waited.append(w)
                inside[key] += 1
                peak[key] = max(peak[key], inside[key])
            time.sleep(0.02)
            with guard:
                inside[key] -= 1

    threads = [threading.Thread(target=work, args=("a" if i % 2 else "b",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == {"a": 1, "b": 1}
    assert waited.count(True) >= 6  # per key, all but the first found it held
    assert len(locks) == 0


def test_a_held_key_does_not_block_another():
    locks = KeyedLock()
    b_entered = threading.Event()

    def other() -> None:
        with locks.hold("b"):
            b_entered.set()

    with locks.hold("a"):
        t = threading.Thread(target=other)
        t.start()
        assert b_entered.wait(5)  # would time out if "a" blocked "b"
        t.join()


def test_released_on_error():
    locks = KeyedLock()
    try:
        with locks.hold(("repo", "sha256:x")):
            raise ValueError("boom")
    except ValueError:
        pass
    assert len(locks) == 0
    with locks.hold(("repo", "sha256:x")) as waited:
        assert waited is False
