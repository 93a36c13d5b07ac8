"""Reading a run's results from the Redis result backend, many at a time.

Celery's Redis backend subscribes to one pub/sub channel per task sent (``on_task_call``)
so that ``AsyncResult.get()`` wakes up at once. A run of thousands of devices never calls
``get()``: :class:`PollingRedisBackend` skips the subscriptions (whose unread messages
would pile up in the controller's pub/sub connection until Redis drops it at its
``client-output-buffer-limit pubsub``) and :func:`poll` reads every outstanding job's
state with one ``MGET`` per chunk of keys. Every state read is verified: results are
signed by the workers (``auth`` serializer), one that fails verification is reported as
such, never used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from celery.backends.redis import RedisBackend

__all__ = ["PollingRedisBackend", "State", "poll", "forget"]

_CHUNK = 1000


class PollingRedisBackend(RedisBackend):
    """Celery's Redis result backend without per-task pub/sub subscriptions (the
    controller polls, :func:`poll`)."""

    def on_task_call(self, producer, task_id):  # noqa: D401 - Celery's hook
        return None


@dataclass
class State:
    """One job's state as the backend holds it: ``status`` (``STARTED``, ``SUCCESS``,
    ``FAILURE``, ``REVOKED``... or ``UNVERIFIED`` when the stored state failed signature
    verification), ``result`` (the worker's result document, the STARTED state's
    ``{"hostname", "pid"}``, or for UNVERIFIED the reason)."""

    status: str
    result: Any


def poll(backend: Any, job_ids: Iterable[str]) -> dict[str, State]:
    """The stored state of each of ``job_ids`` that has one (jobs no worker has taken yet
    have none). One ``MGET`` per 1000 ids."""
    ids = list(job_ids)
    found: dict[str, State] = {}
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i:i + _CHUNK]
        raw = backend.mget([backend.get_key_for_task(j) for j in chunk])
        for job, value in zip(chunk, raw):
            if value is None:
                continue
            try:
                meta = backend.decode_result(value)
            except Exception as e:  # SecurityError/DecodeError: forged, or signed by an unknown worker
                found[job] = State("UNVERIFIED", " ".join(str(e).split())[:300] or type(e).__name__)
                continue
            found[job] = State(str(meta.get("status")), meta.get("result"))
    return found


def forget(backend: Any, job_ids: Iterable[str]) -> None:
    """Delete the stored states of ``job_ids`` (the run has read them)."""
    keys = [backend.get_key_for_task(j) for j in job_ids]
    for i in range(0, len(keys), _CHUNK):
        if keys[i:i + _CHUNK]:
            backend.client.delete(*keys[i:i + _CHUNK])
