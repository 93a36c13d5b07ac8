"""The handler registry and the context a handler reaches its device through.

A handler does one kind of per-device work (``probe``, ``deploy``, ``verify``...)::

    from fleet.executor import register

    @register("probe")
    def probe(work: DeviceWork, ctx: WorkerContext) -> dict:
        found = gather_with_api(ctx.session(), ctx.target().become, device=work.host)
        return {"facts": found.facts, ...}          # JSON data only

It runs wherever the executor puts it: on a thread of the controller
(:class:`fleet.executor.LocalExecutor`) or in a Celery worker at the device's site
(:class:`fleet.executor.CeleryExecutor`). It must return JSON data (the result crosses the
broker) and raise for a failed device (the error is carried back and classified as a local
one would be, :mod:`fleet.executor.errors`). It must not keep state between calls.

:class:`WorkerContext` is how a handler reaches ``work.host``: ``session()``, ``target()``,
``engine()`` go through a :class:`fleet.connections.Connections` (the run's own on the
controller; one built from ``work.connection`` and the WORKER's SSH settings at a site:
its known_hosts, ssh config and key files), ``remaining()`` the seconds left before the
deadline, ``registry_credentials()`` the credentials found in the worker's own environment
or Docker config (the job names where they are, never what they are).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from fleet.errors import UsageError
from fleet.executor.errors import DeadlineReached
from fleet.executor.work import DeviceWork

if TYPE_CHECKING:
    from fleet.connections import Connections
    from fleet.engine import Engine
    from fleet.registry import Credentials
    from fleet.ssh import Session, SSHSettings, Target

__all__ = ["Handler", "register", "handler_for", "kinds", "WorkerContext", "call_handler", "one_host_connections",
           "CredentialsCache"]

Handler = Callable[[DeviceWork, "WorkerContext"], dict]

_HANDLERS: dict[str, Handler] = {}
_LOCK = threading.Lock()
# Modules that register fleet's own handlers, imported on first lookup (kept out of the
# import of fleet.executor itself: the probe imports paramiko and the engine client).
_BUILTIN_MODULES = ("fleet.executor.probe", "fleet.executor.noop", "fleet.executor.handlers_deploy",
                    "fleet.executor.handlers_inspect")
_builtins_loaded = False


def register(kind: str) -> Callable[[Handler], Handler]:
    """Decorator: make ``fn(work, ctx) -> dict`` the handler of ``kind``. Raises ValueError
    when ``kind`` already has another handler (one handler per kind, everywhere)."""
    DeviceWork(kind=kind, host="check")  # the kind must be a valid kind name

    def deco(fn: Handler) -> Handler:
        with _LOCK:
            known = _HANDLERS.get(kind)
            if known is not None and known is not fn and \
                    (known.__module__, known.__qualname__) != (fn.__module__, fn.__qualname__):
                raise ValueError(f"work kind {kind!r} already has a handler: {known.__module__}.{known.__qualname__}")
            _HANDLERS[kind] = fn
        return fn

    return deco


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        import importlib

        for name in _BUILTIN_MODULES:
            importlib.import_module(name)
        _builtins_loaded = True


def handler_for(kind: str) -> Handler:
    """The handler registered for ``kind``. Raises UsageError naming the kind and the known
    ones when there is none."""
    _load_builtins()
    with _LOCK:
        fn = _HANDLERS.get(kind)
        known = sorted(_HANDLERS)
    if fn is None:
        raise UsageError(f"no handler for work kind {kind!r} (known: {', '.join(known) or 'none'})")
    return fn


def kinds() -> list[str]:
    """The registered work kinds, sorted."""
    _load_builtins()
    with _LOCK:
        return sorted(_HANDLERS)


def one_host_connections(work: DeviceWork, settings: "SSHSettings", source: str = "") -> "Connections":
    """A :class:`fleet.connections.Connections` for ``work.host`` alone, its target
    resolved from ``work.connection`` with ``settings`` (a worker's own SSH settings)."""
    from fleet.connections import Connections
    from fleet.inventory import Host, Inventory
    from fleet.selection import DeviceSelection

    host = Host(name=work.host, vars=dict(work.connection), groups=("all",), source=source or "work item")
    inventory = Inventory({work.host: host}, {}, [])
    selection = DeviceSelection(inventory=(), limit=None, forks=1, settings=settings,
                                _cache={"inventory": inventory, "hosts": [host]})
    return Connections(selection)


class WorkerContext:
    """How a handler reaches ``work.host`` and what it may know about where it runs.

    ``work``: the item; ``worker``: who runs it (``local`` on the controller, the Celery
    node name at a site); ``site``: the worker's site (None locally); ``connections``: the
    :class:`Connections` sessions come from; ``deadline_at``: ``time.monotonic()``
    value after which the work is abandoned (its sessions are closed).
    """

    def __init__(self, work: DeviceWork, connections: "Connections", *, worker: str = "local",
                 site: str | None = None, deadline_at: float | None = None,
                 credentials_cache: "CredentialsCache | None" = None):
        self.work = work
        self.worker = worker
        self.site = site
        self.connections = connections
        self.started = time.monotonic()
        self.deadline_at = self.started + work.deadline if deadline_at is None else deadline_at
        self.expired = False
        self.credentials_cache = credentials_cache

    @property
    def host(self) -> str:
        return self.work.host

    @property
    def settings(self) -> "SSHSettings":
        """The SSH settings sessions are opened with."""
        return self.connections.selection.settings

    def remaining(self) -> float:
        """Seconds left before the deadline (0 when past it)."""
        return max(0.0, self.deadline_at - time.monotonic())

    def timeout(self, wanted: float | None) -> float:
        """``wanted`` seconds (None: all that is left) capped at what is left before the
        deadline; raises :class:`DeadlineReached` when nothing is left."""
        left = self.remaining()
        if left <= 0:
            raise DeadlineReached(self.work.host, self.work.deadline)
        return left if wanted is None else min(float(wanted), left)

    def target(self) -> "Target":
        """The device's SSH target (:func:`fleet.ssh.target_for` on its connection variables)."""
        return self.connections.target(self.work.host)

    def session(self) -> "Session":
        """The device's SSH session (opened on first use, then reused)."""
        return self.connections.session(self.work.host)

    def engine(self) -> "Engine":
        """The device's Docker engine through its API over the session."""
        return self.connections.engine(self.work.host)

    def adopt_engine(self, engine: "Engine") -> None:
        """Keep ``engine`` (opened on the current session) for later work on the device."""
        self.connections.adopt_engine(self.work.host, engine)

    def registry_credentials(self, registry: str, settings: Mapping[str, Any] | None = None) -> "Credentials | None":
        """Credentials for ``registry`` as THIS machine has them: ``settings`` names where
        (``username_env``/``password_env``: variables of this process's environment;
        ``docker_config``: a path on the worker), as a playbook's ``registry:`` section
        does (:func:`fleet.registry.resolve_credentials`). None: anonymous."""
        from types import SimpleNamespace

        from fleet.registry import resolve_credentials

        s = dict(settings or {})
        key = (registry, s.get("username_env"), s.get("password_env"), s.get("docker_config"))

        def resolve() -> "Credentials | None":
            return resolve_credentials(SimpleNamespace(username_env=key[1], password_env=key[2],
                                                       docker_config=key[3]), registry)

        if self.credentials_cache is None:
            return resolve()
        return self.credentials_cache.get(key, resolve)

    def abort(self) -> None:
        """Close the device's session now: work blocked on it returns with an error."""
        self.expired = True
        self.connections.close(self.work.host)


class CredentialsCache:
    """Credentials resolved once per run and reused by every device's work (thread-safe):
    a Docker credential helper is a process per lookup. The local executor keeps one per
    run; a site worker resolves them per job (its environment may change between runs)."""

    def __init__(self) -> None:
        self._known: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple, resolve: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._known:
                return self._known[key]
        value = resolve()  # outside the lock: a helper may take a while; a race resolves twice
        with self._lock:
            return self._known.setdefault(key, value)


class _Watchdog:
    """One thread that closes the sessions of work still running at its deadline
    (:meth:`WorkerContext.abort`), for every work item of the process: a timer thread per
    item would cost a thread start per device. Entries of finished work are dropped when
    they reach the top of the heap, or all at once when they outnumber the live ones."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, WorkerContext]] = []
        self._done: set[int] = set()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, when: float, ctx: WorkerContext) -> int:
        """Abort ``ctx`` at ``when`` (``time.monotonic()``) unless disarmed first."""
        with self._cond:
            token = next(self._seq)
            heapq.heappush(self._heap, (when, token, ctx))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="fleet-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][1] == token:
                self._cond.notify()
            return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._done.add(token)
            if len(self._done) > 256 and 2 * len(self._done) > len(self._heap):
                self._heap = [e for e in self._heap if e[1] not in self._done]
                heapq.heapify(self._heap)
                self._done.clear()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][1] in self._done:
                        self._done.discard(heapq.heappop(self._heap)[1])
                    if not self._heap:
                        self._cond.wait()
                        continue
                    left = self._heap[0][0] - time.monotonic()
                    if left <= 0:
                        _, _, ctx = heapq.heappop(self._heap)
                        break
                    self._cond.wait(left)
            try:
                ctx.abort()  # outside the lock: closing a session may take a moment
            except Exception:  # never let one abort stop the others
                pass


_WATCHDOG = _Watchdog()


def call_handler(work: DeviceWork, ctx: WorkerContext, fn: Handler | None = None) -> dict:
    """Run ``work``'s handler with ``ctx`` under its deadline: when the deadline passes the
    device's session is closed (so blocked SSH work returns) and the error raised is
    :class:`DeadlineReached`. Returns the handler's result, checked to be a JSON object.
    Raises the handler's own error otherwise."""
    import json

    fn = fn or handler_for(work.kind)
    left = ctx.remaining()
    if left <= 0:
        raise DeadlineReached(work.host, work.deadline, "before the work started")
    token = _WATCHDOG.arm(time.monotonic() + left, ctx)
    try:
        result = fn(work, ctx)
    except Exception as exc:
        if ctx.expired:
            from fleet.results import classify

            raise DeadlineReached(work.host, work.deadline, classify(exc)[1]) from None
        raise
    finally:
        _WATCHDOG.disarm(token)
    if ctx.expired:
        raise DeadlineReached(work.host, work.deadline)
    if not isinstance(result, dict):
        raise TypeError(f"handler of {work.kind!r} returned {type(result).__name__}, not a dict")
    try:
        return json.loads(json.dumps(result, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise TypeError(f"handler of {work.kind!r} returned a result that is not JSON data: {e}") from None
