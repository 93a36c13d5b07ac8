"""The executor seam: where per-device work runs, without the stages above knowing.

Shapes::

    DeviceWork(kind, host, site, connection, payload, deadline)     one device's work, JSON
    register(kind)(fn)      fn(work: DeviceWork, ctx: WorkerContext) -> dict (JSON)
    Executor.map(works, *, forks, label, on_interrupt, graceful, on_done) -> list[Outcome]
    LocalExecutor(connections)                   the controller's thread pool (today's fan-out)
    CeleryExecutor(broker, ...)                  Celery workers at the devices' sites
    executor_from_options(executor, broker, local_fallback, ...) -> Executor

Modules, one concern each:

* :mod:`fleet.executor.work`      :class:`DeviceWork`, made from an inventory host
  (``fleet_site``, connection variables: references, never secrets);
* :mod:`fleet.executor.handlers`  the handler registry and :class:`WorkerContext`;
* :mod:`fleet.executor.probe`     the ``probe`` handler; :mod:`fleet.executor.noop` ``noop``;
* :mod:`fleet.executor.local`     the :class:`Executor` protocol, :class:`LocalExecutor`;
* :mod:`fleet.executor.errors`    the seam's errors, a device's error as data;
* :mod:`fleet.executor.jobs`      the signed job and result documents, checked;
* :mod:`fleet.executor.signing`   the signing identity, Celery's ``auth`` serializer;
* :mod:`fleet.executor.app`       the Celery app: broker, result backend, delivery, signing;
* :mod:`fleet.executor.results`   reading a run's results from Redis;
* :mod:`fleet.executor.celery_executor`  :class:`CeleryExecutor`;
* :mod:`fleet.executor.worker`    the site worker (``fleet worker``).

The Celery modules are imported on first use (``from fleet.executor import
CeleryExecutor`` works; importing this package does not load Celery).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fleet.executor.errors import (
    BrokerUnavailable,
    DeadlineReached,
    JobLost,
    JobRefused,
    NoWorkerAnswered,
    RemoteError,
    RemoteSSHError,
    SigningError,
)
from fleet.executor.handlers import WorkerContext, call_handler, handler_for, kinds, register
from fleet.executor.local import Executor, LocalExecutor, WorkOutcome
from fleet.executor.signing import Signing
from fleet.executor.work import (DEFAULT_MAX_DEADLINE, SITE_VAR, DeviceWork, WorkFormatError, connection_vars,
                                 queue_for, site_of, work_for)

if TYPE_CHECKING:
    from fleet.connections import Connections
    from fleet.executor.celery_executor import CeleryExecutor

__all__ = [
    "DeviceWork", "WorkFormatError", "SITE_VAR", "connection_vars", "site_of", "work_for", "queue_for",
    "register", "handler_for", "kinds", "WorkerContext", "call_handler",
    "Executor", "LocalExecutor", "WorkOutcome", "CeleryExecutor", "Signing", "executor_from_options",
    "ExecutorOptions", "DEFAULT_MAX_DEADLINE",
    "BrokerUnavailable", "SigningError", "NoWorkerAnswered", "JobLost", "JobRefused", "DeadlineReached",
    "RemoteError", "RemoteSSHError", "EXECUTORS",
]

#: Values of ``--executor``.
EXECUTORS = ("local", "celery")


def __getattr__(name: str) -> Any:
    if name == "CeleryExecutor":
        from fleet.executor.celery_executor import CeleryExecutor

        return CeleryExecutor
    raise AttributeError(f"module 'fleet.executor' has no attribute {name!r}")


@dataclass(frozen=True)
class ExecutorOptions:
    """A fan-out command's executor options, as given (``--executor``, ``--broker``,
    ``--result-backend``, ``--local-fallback``, ``--key``/``--cert``/``--cert-store``,
    ``--max-deadline``); :meth:`make` builds the executor for a run's connections."""

    executor: str = "local"
    broker: str | None = None
    result_backend: str | None = None
    local_fallback: bool = False
    key: str | None = None
    cert: str | None = None
    cert_store: str | None = None
    max_deadline: float = DEFAULT_MAX_DEADLINE

    def make(self, connections: "Connections") -> Executor:
        """The executor (:func:`executor_from_options`). Raises UsageError/SigningError."""
        extra = {"max_deadline": self.max_deadline} if self.executor == "celery" else {}
        return executor_from_options(self.executor, self.broker, self.local_fallback, connections=connections,
                                     result_backend=self.result_backend, key=self.key, cert=self.cert,
                                     cert_store=self.cert_store, **extra)


def executor_from_options(executor: str, broker: str | None, local_fallback: bool, *,
                          connections: "Connections | None" = None, result_backend: str | None = None,
                          key: str | None = None, cert: str | None = None, cert_store: str | None = None,
                          **celery_options: Any) -> Executor:
    """The executor a fan-out command's options ask for.

    ``executor``: ``local`` (the run's own thread pool through ``connections``) or
    ``celery`` (site workers); ``broker``: ``--broker`` URL (None: ``$FLEET_BROKER_URL``);
    ``local_fallback``: with ``celery``, devices without ``fleet_site`` run locally through
    ``connections``; ``result_backend``, ``key``, ``cert``, ``cert_store``: as the flags of
    the same names (None: ``$FLEET_RESULT_BACKEND``, ``$FLEET_CELERY_KEY``...);
    ``celery_options``: more :class:`CeleryExecutor` keywords (``poll_interval``...).
    Raises UsageError (exit 2) for an unknown executor, ``--broker``/``--local-fallback``
    without ``celery``, a missing broker URL, or a bad signing identity.
    """
    from fleet.errors import UsageError

    if executor not in EXECUTORS:
        raise UsageError(f"--executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    if executor == "local":
        if broker:
            raise UsageError("--broker is for --executor celery (work runs on this machine with --executor local)")
        if local_fallback:
            raise UsageError("--local-fallback is for --executor celery")
        if connections is None:
            raise UsageError("the local executor needs the run's connections")
        return LocalExecutor(connections)
    from fleet.executor.app import ENV_BROKER, ENV_RESULT_BACKEND
    from fleet.executor.celery_executor import CeleryExecutor

    url = broker or os.environ.get(ENV_BROKER)
    if not url:
        raise UsageError(f"--executor celery needs --broker URL (or {ENV_BROKER})")
    return CeleryExecutor(url, result_backend=result_backend or os.environ.get(ENV_RESULT_BACKEND),
                          key=key, cert=cert, cert_store=cert_store, local_fallback=local_fallback,
                          connections=connections, **celery_options)
