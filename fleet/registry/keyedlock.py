"""One lock per key, created on demand and dropped when nobody holds or waits for it."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Hashable, Iterator

__all__ = ["KeyedLock"]


class KeyedLock:
    """``with locks.hold(key):`` runs one thread at a time per ``key``; different keys do
    not wait for each other. Not re-entrant: a thread holding ``key`` must not ask again.
    Memory stays bounded by the keys in use (entries are removed when released)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Hashable, list] = {}  # key -> [lock, holders + waiters]

    @contextmanager
    def hold(self, key: Hashable) -> Iterator[bool]:
        """Hold ``key``'s lock; yields True when another thread held it first (the caller
        may want to re-check what that thread did)."""
        with self._guard:
            entry = self._locks.get(key)
            if entry is None:
                entry = self._locks[key] = [threading.Lock(), 0]
            entry[1] += 1
        lock: threading.Lock = entry[0]
        waited = not lock.acquire(blocking=False)
        if waited:
            lock.acquire()
        try:
            yield waited
        finally:
            lock.release()
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[key]

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)
