"""One SSH session per device per command run.

Every stage of a run (probe, native builds, deploy, verify) asks :class:`Connections` for
a device's session: the first ask connects (targets resolved once from the inventory),
later asks reuse it, and a session the device or the network closed meanwhile is opened
again once. :meth:`Connections.close_all` ends them all; :meth:`Connections.abort` closes
them from another thread so that work blocked on a device returns at once (Ctrl-C).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable

from fleet.errors import UsageError

if TYPE_CHECKING:
    from fleet.engine import Engine
    from fleet.inventory import Host
    from fleet.selection import DeviceSelection
    from fleet.ssh import Session, Target

__all__ = ["Connections"]


class Connections:
    """The sessions of one command run, keyed by inventory host name (thread-safe).

    ``selection``: where hosts, targets and SSH settings come from. ``connect``: opens a
    session for a target (default :func:`fleet.ssh.connect`). ``opened``: how many sessions
    were opened per host (the counts reports and benchmarks show).
    """

    def __init__(self, selection: "DeviceSelection", connect: Callable[..., "Session"] | None = None):
        self.selection = selection
        self._connect = connect
        self._targets: dict[str, "Target"] = {}
        self._sessions: dict[str, "Session"] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._aborted = False
        self._engines: dict[str, tuple[object, "Engine"]] = {}
        self.opened: dict[str, int] = {}

    def __enter__(self) -> "Connections":
        return self

    def __exit__(self, *exc) -> None:
        self.close_all()

    def host(self, name: str) -> "Host":
        """The inventory host ``name`` (selected or not: a native builder may be outside
        ``--limit``). Raises UsageError when the inventory has no such host."""
        host = self.selection.load().hosts.get(name)
        if host is None:
            raise UsageError(f"{name!r} is not in the inventory")
        return host

    def target(self, name: str) -> "Target":
        """The SSH target of host ``name``, resolved once per run from its connection
        variables (:func:`fleet.ssh.target_for`)."""
        with self._lock:
            t = self._targets.get(name)
        if t is None:
            from fleet.ssh import target_for

            t = target_for(self.host(name), self.selection.settings)
            with self._lock:
                self._targets.setdefault(name, t)
        return t

    def session(self, name: str) -> "Session":
        """The open session to ``name``, connecting on first use (or again when the last one
        was closed by the device or the network). Raises the SSH layer's errors."""
        with self._lock:
            if self._aborted:
                from fleet.fanout import Interrupted

                raise Interrupted(name)
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            s = self._sessions.get(name)
            if s is not None and s.transport.is_active():
                return s
            connect = self._connect
            if connect is None:
                from fleet.ssh import connect
            s = connect(self.target(name), self.selection.settings)
            with self._lock:
                self._sessions[name] = s
                self.opened[name] = self.opened.get(name, 0) + 1
                if self._aborted:
                    s.close()
            return s

    def engine(self, name: str) -> "Engine":
        """The Docker engine of ``name`` through its Engine API over the run's session
        (:class:`fleet.engine.api.ApiEngine`: a streamlocal channel to the engine's socket,
        else one ``docker system dial-stdio``), one per device and session."""
        from fleet.engine.api import ApiEngine

        session = self.session(name)
        with self._lock:
            known = self._engines.get(name)
        if known is not None and known[0] is session:
            return known[1]
        engine = ApiEngine(session, name, become=self.target(name).become)
        with self._lock:
            self._engines[name] = (session, engine)
        return engine

    def adopt_engine(self, name: str, engine: "Engine") -> None:
        """Use ``engine`` (opened by the probe on the current session) for ``name``."""
        with self._lock:
            s = self._sessions.get(name)
            if s is not None:
                self._engines[name] = (s, engine)

    def close(self, name: str) -> None:
        """Close ``name``'s session (the next ask opens a new one)."""
        with self._lock:
            s = self._sessions.pop(name, None)
        if s is not None:
            s.close()

    def close_all(self) -> None:
        """Close every session of the run."""
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for s in sessions:
            s.close()

    @property
    def aborted(self) -> bool:
        """True once :meth:`abort` ran (a second Ctrl-C)."""
        return self._aborted

    def abort(self) -> None:
        """Close every session now and refuse new ones (Ctrl-C): commands blocked on a
        device return with an error at once."""
        with self._lock:
            self._aborted = True
        self.close_all()
