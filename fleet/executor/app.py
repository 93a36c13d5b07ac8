"""The Celery application shared by the controller and the site workers.

Broker: any URL kombu takes (``redis://``, ``rediss://``, ``amqp://``/``pyamqp://`` for
RabbitMQ, ``amqps://``); results come back through a Redis result backend (the broker's
own URL when the broker is Redis, else ``--result-backend redis://...``): the controller
reads every outstanding result of a run with one ``MGET`` per round.

Delivery: ``task_acks_late`` + ``task_reject_on_worker_lost`` (a job is acknowledged only
once it finished, so a worker killed mid-job leaves it to be delivered again), prefetch 1
(a worker holds no more jobs than it runs), ``task_track_started`` (the controller can tell
"no worker took it" from "a worker took it and went silent"). With Redis, an unacknowledged
job comes back after the transport's visibility timeout (kombu ``redis`` transport
options), which is global to the Redis database: a worker with a short one re-queues the
running jobs of every worker (celery/celery#5935). fleet sizes it from the longest
deadline a worker accepts (:func:`visibility_timeout`); every worker of a broker should use
the same ``--max-deadline``. With RabbitMQ the broker re-queues the jobs of a worker whose
connection dropped at once.

Signing (:mod:`fleet.executor.signing`): ``task_serializer = result_serializer = "auth"``
and ``accept_content = ["auth"]``, so an unsigned message, or one signed by a key whose
certificate is not in the receiver's store, is refused. Jobs are signed by the controller
(workers' stores hold the controller's certificate), results by the workers (the
controller's store holds the sites' certificates). The serializer is registered
process-wide by kombu: one signing identity per process.
"""

from __future__ import annotations

from typing import Any

from fleet.errors import UsageError
from fleet.executor.errors import BrokerUnavailable
from fleet.executor.signing import ENV_CERT, ENV_CERT_STORE, ENV_KEY, ENV_KEY_PASSWORD, Signing, register_signing

__all__ = [
    "TASK_NAME",
    "Signing",
    "register_signing",
    "make_app",
    "check_broker",
    "result_backend_for",
    "safe_url",
    "visibility_timeout",
    "ENV_KEY",
    "ENV_CERT",
    "ENV_CERT_STORE",
    "ENV_KEY_PASSWORD",
    "ENV_BROKER",
    "ENV_RESULT_BACKEND",
]

#: The one Celery task fleet sends and workers run.
TASK_NAME = "fleet.device_work"

ENV_BROKER = "FLEET_BROKER_URL"
ENV_RESULT_BACKEND = "FLEET_RESULT_BACKEND"

_BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp")
_RESULT_SCHEMES = ("redis", "rediss")
#: Seconds to wait for the broker or result backend to answer a connection.
CONNECT_TIMEOUT = 5.0


def safe_url(url: str) -> str:
    """``url`` with any password masked (for messages and logs)."""
    from kombu.utils.url import maybe_sanitize_url

    return maybe_sanitize_url(url)


def visibility_timeout(max_deadline: float) -> float:
    """Seconds a Redis-delivered job may stay unacknowledged before it is delivered again:
    the longest deadline a worker lets a job run, plus 10 % (at least 5 s) for the result
    to be stored and acknowledged and for clock differences between workers."""
    return float(max_deadline) + max(5.0, 0.1 * float(max_deadline))


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def check_broker_url(url: str | None, what: str = "--broker") -> str:
    """``url`` if it is a broker URL fleet supports; UsageError otherwise."""
    if not url:
        raise UsageError(f"{what}: no broker URL (give {what} URL or set {ENV_BROKER})")
    if _scheme(url) not in _BROKER_SCHEMES:
        raise UsageError(f"{what} {safe_url(url)}: not a broker URL fleet supports "
                         f"({', '.join(s + '://' for s in _BROKER_SCHEMES)})")
    return url


def result_backend_for(broker: str, result_backend: str | None = None) -> str:
    """The result backend URL: ``result_backend`` when given, else the broker's URL when
    the broker is Redis. Raises UsageError when it is not a Redis URL (the controller reads
    results from Redis) or cannot be derived (a RabbitMQ broker needs one)."""
    url = result_backend or (broker if _scheme(broker) in _RESULT_SCHEMES else None)
    if not url:
        raise UsageError(f"--result-backend: a {_scheme(broker)}:// broker needs a Redis result backend "
                         f"(--result-backend redis://HOST:6379/1 or {ENV_RESULT_BACKEND})")
    if _scheme(url) not in _RESULT_SCHEMES:
        raise UsageError(f"--result-backend {safe_url(url)}: results come back through Redis "
                         f"(redis:// or rediss://)")
    return url


def make_app(broker: str, result_backend: str, signing: Signing, *, role: str, max_deadline: float = 3600.0,
             concurrency: int = 1) -> Any:
    """A configured, secured Celery app (module docstring). ``role``: ``controller`` (reads
    results by polling, never subscribes to them one by one) or ``worker``;
    ``max_deadline``: longest deadline a job may have here (sizes the visibility timeout).
    Raises :class:`SigningError` when Celery refuses the identity."""
    from celery import Celery

    vt = visibility_timeout(max_deadline)
    transport = {
        "visibility_timeout": vt,
        # restore abandoned jobs promptly once the visibility timeout passed (kombu's default
        # sweeps every 10 s but scans only every 10th sweep)
        "unacked_restore_interval": max(1.0, min(10.0, vt / 4)),
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        # a site behind NAT can lose its broker connection without a FIN: without a socket
        # timeout a publish or read on the dead connection waits forever (kombu's redis
        # transport options); keepalive and health checks find it sooner
        "socket_timeout": 30.0,
        "socket_keepalive": True,
        "health_check_interval": 25,
    }
    backend = result_backend
    if role == "controller":
        backend = f"fleet.executor.results:PollingRedisBackend+{result_backend}"
    app = Celery("fleet", set_as_current=False, broker=broker, backend=backend)
    app.conf.update(
        task_serializer="auth",
        result_serializer="auth",
        accept_content=["auth"],
        result_accept_content=["auth"],
        event_serializer="json",
        **signing.conf(),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_track_started=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=concurrency,
        worker_send_task_events=False,
        task_send_sent_event=False,
        task_create_missing_queues=True,
        task_default_queue="fleet.unrouted",
        broker_transport_options=transport,
        result_backend_transport_options={"socket_connect_timeout": CONNECT_TIMEOUT, "socket_keepalive": True},
        redis_socket_connect_timeout=CONNECT_TIMEOUT,
        redis_socket_keepalive=True,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=CONNECT_TIMEOUT,
        result_expires=max(3600, int(2 * vt)),
        result_extended=False,
        enable_utc=True,
        timezone="UTC",
        worker_hijack_root_logger=True,
        worker_redirect_stdouts=False,
    )
    register_signing(signing)
    return app


def check_broker(app: Any, timeout: float = CONNECT_TIMEOUT) -> None:
    """Connect to the app's broker and its result backend once, now. Raises
    :class:`BrokerUnavailable` naming the (password-masked) URL and the reason."""
    url = app.conf.broker_url
    conn = app.connection_for_write()
    try:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
        conn.default_channel  # Redis: the channel's PING; AMQP: the channel open
    except Exception as e:  # kombu raises the transport's own errors (OperationalError, OSError...)
        raise BrokerUnavailable(f"broker {safe_url(url)} is not reachable: {_why(e)}; nothing was sent") from None
    finally:
        conn.release()
    try:
        app.backend.client.ping()
    except Exception as e:
        raise BrokerUnavailable(f"result backend {safe_url(app.conf.result_backend.split('+', 1)[-1])} is not "
                                f"reachable: {_why(e)}; nothing was sent") from None


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
