"""A site worker: a Celery worker that runs the jobs of one site's devices.

``fleet worker --broker URL --site NAME`` runs :func:`run_worker`: one process, a thread
pool of ``--concurrency`` jobs (device work is SSH round trips), consuming the queue
``fleet.site.NAME`` only. Each job is one work item (:mod:`fleet.executor.jobs`): its
signature checked by Celery (``auth`` serializer) before anything else, its body checked
(:func:`fleet.executor.jobs.open_envelope`), then its handler runs with a
:class:`WorkerContext` that reaches the device from HERE: the device's connection
variables from the job, this worker's own known_hosts, ssh config and keys, this worker's
own registry credentials environment.

A message that is not signed, is signed by a certificate not in the store, or whose
signature does not match is never run: the worker logs ``refused job ID: why`` and drops
it (:class:`SiteConsumer`). A signed job that must not run (expired, for another site...)
is answered with its refusal, so the controller learns why at once.

Logs go to stderr: Celery's own lines and ``fleet.worker`` lines (job done/failed/refused).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

from celery import signals
from celery.worker.consumer import Consumer

from fleet.executor.app import TASK_NAME, Signing, check_broker, make_app, safe_url, visibility_timeout
from fleet.executor.errors import JobRefused, error_to_dict
from fleet.executor.handlers import WorkerContext, call_handler, kinds, one_host_connections
from fleet.executor.jobs import make_result, open_envelope
from fleet.executor.work import DeviceWork, check_site_name, queue_for
from fleet.output import visible

__all__ = ["WorkerSettings", "run_worker", "SiteConsumer", "LOGGER_NAME"]

LOGGER_NAME = "fleet.worker"
log = logging.getLogger(LOGGER_NAME)


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs beyond the broker: ``site`` it serves, ``node`` its Celery node
    name, ``ssh`` its own :class:`fleet.ssh.SSHSettings`, ``max_deadline`` the longest job
    deadline it accepts (seconds), ``skew`` the clock difference it tolerates (seconds)."""

    site: str
    node: str
    ssh: Any
    max_deadline: float = 3600.0
    skew: float = 10.0


_SETTINGS: WorkerSettings | None = None


def _short(text: Any, limit: int = 120) -> str:
    return visible(" ".join(str(text).split()))[:limit]


def _why_refused(message: Any, exc: BaseException) -> str:
    """Why a message was refused, in words (from kombu's/Celery's error)."""
    text = " ".join(str(exc).split())
    ctype = _short(getattr(message, "content_type", "") or "none", 60)
    if "Unknown certificate" in text:
        return f"signed by a certificate that is not in this worker's cert store ({_short(text, 200)})"
    if "Bad signature" in text:
        return "bad signature: the body does not match the signature of the certificate it names"
    if "Expired certificate" in text:
        return f"signed with an expired certificate ({_short(text, 200)})"
    if "Refusing to deserialize" in text or ctype != "application/data":
        return f"unsigned (content type {ctype}; only messages signed with the auth serializer are accepted)"
    return f"cannot be verified ({_short(text, 200)})"


def _log_refusal(message: Any, exc: BaseException, why: str | None = None) -> None:
    headers = getattr(message, "headers", None) or {}
    job = headers.get("id") if isinstance(headers, dict) else None
    task = headers.get("task") if isinstance(headers, dict) else None
    delivery = getattr(message, "delivery_info", None) or {}
    where = delivery.get("exchange") or delivery.get("routing_key") or "?"
    if task is None:  # not a job: a remote-control broadcast (shutdown, add_consumer...) or garbage
        log.error("refused message (not a job, from %s): %s", _short(where, 80), why or _why_refused(message, exc))
        return
    log.error("refused job %s (task %s, queue %s): %s", _short(job or "without an id", 80),
              _short(task, 80), _short(delivery.get("routing_key") or "?", 80), why or _why_refused(message, exc))


class SiteConsumer(Consumer):
    """Celery's consumer with fleet's refusal messages: one ``refused job ID: why`` line
    for every message that cannot be verified or is not fleet's job, then dropped
    (acknowledged) without running anything and without storing a result."""

    def on_decode_error(self, message, exc):
        _log_refusal(message, exc)
        message.ack()

    def on_invalid_task(self, body, message, exc):
        _log_refusal(message, exc)
        message.reject_log_error(logging.getLogger("celery.worker.consumer"), self.connection_errors)
        signals.task_rejected.send(sender=self, message=message, exc=exc)

    def on_unknown_task(self, body, message, exc):
        name = (getattr(message, "headers", None) or {}).get("task")
        _log_refusal(message, exc, f"task {_short(name, 80)!r} is not fleet's job task ({TASK_NAME})")
        message.reject_log_error(logging.getLogger("celery.worker.consumer"), self.connection_errors)

    def on_unknown_message(self, body, message):
        _log_refusal(message, ValueError("not a task message"), "not a task message")
        message.reject_log_error(logging.getLogger("celery.worker.consumer"), self.connection_errors)


def _device_work(task: Any, body: Any) -> dict:
    """The Celery task: one job (module docstring). Never raises: a device's failure or a
    refusal is the result."""
    s = _SETTINGS
    assert s is not None, "run_worker sets the worker's settings"
    req = task.request
    start = time.monotonic()
    redelivered = bool((req.delivery_info or {}).get("redelivered"))
    hint = body.get("work") if isinstance(body, dict) and isinstance(body.get("work"), dict) else {}
    try:
        job = open_envelope(body, req.id, s.site, skew=s.skew, max_deadline=s.max_deadline)
    except JobRefused as e:
        log.error("refused job %s: %s", _short(req.id, 80), e.reason)
        host, kind = str(hint.get("host") or "?")[:255], str(hint.get("kind") or "?")[:63]
        return {"v": 1, "job": req.id, "host": host, "kind": kind, "site": s.site, "worker": s.node,
                "pid": os.getpid(), "ok": False, "value": None, "error": error_to_dict(e),
                "seconds": 0.0, "redelivered": redelivered}
    work: DeviceWork = job.work
    left = min(work.deadline, job.expires_at + s.skew - time.time())
    conns = one_host_connections(work, s.ssh, source=f"job {job.job} from the controller")
    ctx = WorkerContext(work, conns, worker=s.node, site=s.site, deadline_at=start + max(0.0, left))
    value = error = None
    try:
        value = call_handler(work, ctx)
    except Exception as exc:  # the device's failure is its result
        error = error_to_dict(exc)
    finally:
        conns.close_all()
    seconds = time.monotonic() - start
    if error is None:
        log.info("job %s %s %s: ok in %.2f s%s", job.job, work.kind, _short(work.host), seconds,
                 " (redelivered)" if redelivered else "")
    else:
        log.warning("job %s %s %s: failed in %.2f s: %s", job.job, work.kind, _short(work.host), seconds,
                    _short(error["reason"], 300))
    return make_result(job.job, work, site=s.site, worker=s.node, pid=os.getpid(), value=value, error=error,
                       seconds=seconds, redelivered=redelivered)


def _log_handler(stream: Any) -> logging.Handler:
    h = logging.StreamHandler(stream)
    h.setFormatter(logging.Formatter("[%(asctime)s: %(levelname)s/fleet.worker] %(message)s"))
    return h


def run_worker(broker: str, result_backend: str, signing: Signing, settings: WorkerSettings, *,
               concurrency: int = 50, loglevel: str = "INFO", stream: Any = None, verbose: int = 0) -> int:
    """Run a site worker in the foreground until SIGINT/SIGTERM (Celery's warm shutdown:
    jobs already running finish, jobs not started go back to the queue; a second Ctrl-C
    stops at once). Returns the exit status (0 after a clean stop). Raises
    :class:`fleet.executor.errors.BrokerUnavailable` (exit 1) when the broker or result
    backend does not answer at start, :class:`fleet.executor.errors.SigningError` or
    UsageError (exit 2) for a bad identity or site name."""
    global _SETTINGS
    check_site_name(settings.site, "--site")
    stream = stream or sys.stderr
    handler = _log_handler(stream)
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    # Celery's own per-task lines carry the return value (a device's facts): ours say less
    logging.getLogger("celery.app.trace").setLevel(logging.WARNING)
    if verbose < 3:  # paramiko's INFO lines would reach Celery's root handler; -vvv shows them
        logging.getLogger("paramiko").setLevel(logging.WARNING)

    app = make_app(broker, result_backend, signing, role="worker", max_deadline=settings.max_deadline,
                   concurrency=concurrency)
    app.conf.worker_consumer = f"{__name__}:SiteConsumer"
    app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True,
             ignore_result=False)(_device_work)
    app.finalize(auto=True)
    for name in list(app.tasks):  # Celery's built-in canvas tasks are not jobs a site runs
        if name != TASK_NAME:
            app.tasks.pop(name, None)
    check_broker(app)
    _SETTINGS = settings
    queue = queue_for(settings.site)
    log.info("site %s: worker %s consuming %s on %s (results to %s), %d at once, jobs up to %g s "
             "(visibility timeout %g s), handlers: %s", settings.site, settings.node, queue, safe_url(broker),
             safe_url(result_backend), concurrency, settings.max_deadline, visibility_timeout(settings.max_deadline),
             ", ".join(kinds()))
    stopping: dict[str, str] = {}

    def ready(sender=None, **_kw) -> None:
        log.info("site %s: worker %s ready", settings.site, settings.node)

    def shutting_down(sig=None, how=None, exitcode=None, **_kw) -> None:
        stopping.update(sig=str(sig), how=str(how))

    signals.worker_ready.connect(ready, weak=False)
    signals.worker_shutting_down.connect(shutting_down, weak=False)
    worker = app.Worker(hostname=settings.node, queues=[queue], pool_cls="threads", concurrency=concurrency,
                        loglevel=loglevel, quiet=True, without_gossip=True, without_mingle=True,
                        without_heartbeat=True, optimization="fair")
    worker.start()
    code = worker.exitcode or 0
    if stopping.get("sig") in ("SIGINT", "SIGTERM", "SIGQUIT"):
        # asked to stop: a clean stop is 0 (Celery says 1 for SIGINT); a second Ctrl-C
        # (cold shutdown: running jobs abandoned, to be delivered again) is 130
        code = 0 if stopping.get("how") == "Warm" else 130
    log.info("site %s: worker %s stopped (exit status %d)", settings.site, settings.node, code)
    return code


def default_node_name(site: str) -> str:
    """``fleet-SITE@HOSTNAME``: the Celery node name of a site's worker."""
    return f"fleet-{site}@{socket.gethostname()}"
