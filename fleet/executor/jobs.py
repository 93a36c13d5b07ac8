"""What a job message and its result hold (the signed body), checked on both sides.

A job's body (signed by the controller; Celery's headers are NOT signed, so everything a
worker acts on is in here)::

    {"v": 1, "job": TASK_ID, "issued_at": UNIX_S, "expires_at": UNIX_S, "work": DeviceWork.to_dict()}

A worker refuses a job whose ``job`` is not the message's task id (a signed body replayed
under another id), whose work is for another site, that expired (``expires_at`` plus the
allowed clock difference is past: a job that waited out its deadline in a queue, or was
redelivered too late, never reaches the device), or whose deadline is above what the
worker accepts. A result (signed by the worker)::

    {"v": 1, "job", "host", "kind", "site", "worker", "pid", "ok": bool,
     "value": {...} | None, "error": {"family", "type", "reason"} | None,
     "seconds": S, "redelivered": bool}
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from fleet.executor.errors import JobRefused, RemoteError, error_from_dict
from fleet.executor.work import DeviceWork, WorkFormatError

__all__ = ["VERSION", "make_envelope", "open_envelope", "Job", "make_result", "read_result"]

VERSION = 1


def make_envelope(job_id: str, work: DeviceWork, now: float | None = None) -> dict[str, Any]:
    """The signed body of ``work``'s job ``job_id`` issued ``now`` (default: the clock)."""
    t = time.time() if now is None else now
    return {"v": VERSION, "job": job_id, "issued_at": t, "expires_at": t + work.deadline, "work": work.to_dict()}


@dataclass(frozen=True)
class Job:
    """A job a worker accepted: ``job`` id, ``work``, ``expires_at`` (unix seconds)."""

    job: str
    work: DeviceWork
    issued_at: float
    expires_at: float


def _number(d: dict, key: str) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise JobRefused(f"malformed job: {key} is not a time")
    return float(v)


def open_envelope(body: Any, task_id: str | None, site: str, *, now: float | None = None, skew: float = 10.0,
                  max_deadline: float = 3600.0) -> Job:
    """The job in a verified message ``body`` (the task's one argument) delivered as task
    ``task_id`` to a worker of ``site``. Raises :class:`JobRefused` saying why it must not
    run (module docstring); ``skew``: the clock difference allowed between controller and
    worker (seconds)."""
    if not isinstance(body, dict) or body.get("v") != VERSION:
        raise JobRefused(f"malformed job: not a fleet job of version {VERSION}")
    if body.get("job") != task_id:
        raise JobRefused(f"the signed job id {str(body.get('job'))[:64]!r} is not the message's task id")
    try:
        work = DeviceWork.from_dict(body.get("work"))
    except WorkFormatError as e:
        raise JobRefused(f"malformed work item: {e}") from None
    issued, expires = _number(body, "issued_at"), _number(body, "expires_at")
    if work.site != site:
        raise JobRefused(f"{work.host}: job is for site {work.site}, this worker serves site {site}")
    if work.deadline > max_deadline:
        raise JobRefused(f"{work.host}: deadline {work.deadline:g} s is above this worker's --max-deadline "
                         f"{max_deadline:g} s")
    t = time.time() if now is None else now
    if t > expires + skew:
        raise JobRefused(f"{work.host}: job expired {t - expires:.0f} s ago (issued with a {work.deadline:g} s "
                         f"deadline; the controller no longer waits for it)")
    if issued > t + skew:
        raise JobRefused(f"{work.host}: job issued {issued - t:.0f} s in the future: the controller's clock and "
                         f"this worker's differ by more than {skew:g} s")
    return Job(body["job"], work, issued, expires)


def make_result(job: str, work: DeviceWork, *, site: str, worker: str, pid: int, value: dict | None,
                error: dict | None, seconds: float, redelivered: bool) -> dict[str, Any]:
    """A worker's result document (module docstring)."""
    return {"v": VERSION, "job": job, "host": work.host, "kind": work.kind, "site": site, "worker": worker,
            "pid": pid, "ok": error is None, "value": value if error is None else None, "error": error,
            "seconds": round(float(seconds), 6), "redelivered": bool(redelivered)}


def read_result(doc: Any, job: str, work: DeviceWork) -> tuple[dict | None, Exception | None, float, dict]:
    """``(value, error, seconds, about)`` from a worker's result document for ``work``'s job
    ``job``: the handler's value, or the device's error rebuilt
    (:func:`fleet.executor.errors.error_from_dict`); ``about`` holds ``site``, ``worker``,
    ``pid``, ``redelivered``. A document that is not the answer to this job is an error."""
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        return None, RemoteError(f"malformed result for job {job}"), 0.0, {}
    about = {k: doc.get(k) for k in ("site", "worker", "pid", "redelivered")}
    worker = str(doc.get("worker") or "?")
    if doc.get("job") != job or doc.get("host") != work.host or doc.get("kind") != work.kind:
        other = f"{str(doc.get('kind'))[:30]} on {str(doc.get('host'))[:80]}"
        error = RemoteError(f"worker {worker} answered job {job} with the result of another job ({other})",
                            worker=worker)
        return None, error, 0.0, about
    seconds = doc.get("seconds")
    seconds = float(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else 0.0
    if doc.get("ok") is True and isinstance(doc.get("value"), dict):
        return doc["value"], None, seconds, about
    return None, error_from_dict(doc.get("error"), work.host, worker), seconds, about
