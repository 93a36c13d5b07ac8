""":class:`CeleryExecutor`: each device's work runs at its site, on a Celery worker there.

The controller keeps every decision (which devices, which batch, what counts as failed);
the sites do the SSH work. For each work item the controller sends one signed job to the
queue of the device's site (``fleet.site.<fleet_site>``) and waits for its signed result,
at most the item's deadline (counted from sending). Per site at most ``forks`` jobs are
outstanding at once, so a site's queue stays short (deadlines measure work, not a queue
built up by this run) and a site without a live worker holds up only its own devices.

Outcomes are the same as :class:`fleet.executor.LocalExecutor` gives (same order, values
and error families) plus where each ran (:class:`fleet.executor.WorkOutcome`). A device
whose site has no live worker gets :class:`NoWorkerAnswered` ("no worker of site X
answered within N s") after its deadline; one whose worker went silent after taking the
job :class:`JobLost`; both count as unreachable. Before anything is sent: a device without
``fleet_site`` is a UsageError naming it (unless ``local_fallback``: then it runs through a
LocalExecutor on this machine), and a broker or result backend that does not answer is
:class:`BrokerUnavailable`.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fleet import output
from fleet.errors import FleetError, UsageError
from fleet.executor.app import TASK_NAME, Signing, check_broker, check_broker_url, make_app, result_backend_for
from fleet.executor.errors import BrokerUnavailable, JobLost, NoWorkerAnswered, RemoteError
from fleet.executor.handlers import handler_for
from fleet.executor.jobs import make_envelope, read_result
from fleet.executor.local import LocalExecutor, WorkOutcome
from fleet.executor.work import DEFAULT_MAX_DEADLINE, DeviceWork, queue_for
from fleet.fanout import DEFAULT_FORKS, Interrupted, Outcome
from fleet.log import logger

if TYPE_CHECKING:
    from fleet.connections import Connections

__all__ = ["CeleryExecutor"]

log = logger("executor")

_READY = {"SUCCESS", "FAILURE", "REVOKED", "REJECTED", "IGNORED", "UNVERIFIED"}


@dataclass
class _Flight:
    index: int
    work: DeviceWork
    sent: float          # time.monotonic() when sent
    wait_until: float    # give up after this (monotonic)
    started_by: str | None = None


class CeleryExecutor:
    """Runs work items on the Celery workers of their sites (module docstring).

    ``broker``: broker URL (``redis://``, ``rediss://``, ``amqp://``...); ``result_backend``:
    Redis URL results come back through (default: the broker's, when it is Redis);
    ``signing``: the controller's identity (default :meth:`Signing.from_options` with
    ``key``/``cert``/``cert_store`` or ``FLEET_CELERY_*``); ``local_fallback``: devices
    without ``fleet_site`` run here through ``connections`` instead of being refused;
    ``poll_interval``: seconds between result polls; ``grace``: seconds waited past a
    deadline for a result already on its way; ``abort_wait``: seconds waited after Ctrl-C;
    ``max_deadline``: the longest job deadline the site workers accept (their
    ``--max-deadline``): a longer one is a usage error here rather than a refusal at the
    site. Raises UsageError/SigningError (exit 2) for a bad URL or identity.
    """

    name = "celery"

    def __init__(self, broker: str, *, result_backend: str | None = None, signing: Signing | None = None,
                 key: str | None = None, cert: str | None = None, cert_store: str | None = None,
                 local_fallback: bool = False, connections: "Connections | None" = None,
                 poll_interval: float = 0.1, grace: float = 2.0, abort_wait: float = 5.0,
                 max_deadline: float = DEFAULT_MAX_DEADLINE):
        self.broker = check_broker_url(broker)
        self.result_backend = result_backend_for(self.broker, result_backend)
        self.signing = signing or Signing.from_options(key, cert, cert_store)
        self.local_fallback = local_fallback
        self.connections = connections
        if local_fallback and connections is None:
            raise UsageError("local fallback needs the run's connections")
        self.poll_interval = poll_interval
        self.grace = grace
        self.abort_wait = abort_wait
        self.max_deadline = float(max_deadline)
        self._app: Any = None
        self._lock = threading.Lock()

    @property
    def app(self) -> Any:
        """The controller's Celery app (built on first use)."""
        with self._lock:
            if self._app is None:
                self._app = make_app(self.broker, self.result_backend, self.signing, role="controller")
            return self._app

    def check(self) -> None:
        """Connect to the broker and result backend now; raises :class:`BrokerUnavailable`."""
        check_broker(self.app)

    # ------------------------------------------------------------------------ map
    def map(self, works: Sequence[DeviceWork], *, forks: int = DEFAULT_FORKS, label: str = "",
            on_interrupt: Callable[[], None] | None = None, graceful: bool = False,
            on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
        """Run ``works`` at their sites, ``forks`` outstanding per site; one
        :class:`WorkOutcome` per item in input order (see :class:`fleet.executor.Executor`).
        Raises UsageError (a device without a site, an unknown kind) or
        :class:`BrokerUnavailable` before anything is sent."""
        if forks < 1:
            raise ValueError(f"forks must be at least 1, got {forks}")
        works = list(works)
        if not works:
            return []
        self._refuse(works)
        if any(w.site is not None for w in works):
            self.check()
        return _Run(self, works, forks, label, on_interrupt, graceful, on_done).run()

    def preflight(self, works: Sequence[DeviceWork]) -> None:
        """What :meth:`map` checks before sending anything, for a command to run first:
        every device has a site (or ``local_fallback``), and the broker and result backend
        answer. Raises UsageError or :class:`BrokerUnavailable`."""
        works = list(works)
        self._refuse(works)
        if any(w.site is not None for w in works):
            self.check()

    def _refuse(self, works: list[DeviceWork]) -> None:
        """UsageError for work that must not be sent: an unknown kind, a device without a
        site (unless ``local_fallback``), secret values in a job, a deadline the site
        workers would refuse."""
        for kind in {w.kind for w in works}:
            handler_for(kind)  # the same fleet runs at the sites: an unknown kind is a mistake here
        siteless = [w.host for w in works if w.site is None]
        if siteless and not self.local_fallback:
            more = f" and {len(siteless) - 5} more" if len(siteless) > 5 else ""
            them = "it" if len(siteless) == 1 else "them"
            raise UsageError(f"{', '.join(siteless[:5])}{more}: no fleet_site in the inventory, so no site worker "
                             f"can reach {them}; set fleet_site, or run with --local-fallback (or --executor local) "
                             f"to work on {them} from this machine")
        for w in works:
            if w.secrets and w.site is not None:
                raise UsageError(
                    f"{w.host}: its {w.kind} job would carry secret values ({', '.join(w.secrets[:8])}) through the "
                    f"broker, where jobs are signed but not encrypted; site workers get references, never secret "
                    f"material: provide them on the device (a file mounted into the container, e.g. under "
                    f"/run/secrets) or run with --executor local (docs/sites.md, 'Secrets of the app')")
            if w.site is not None and w.deadline > self.max_deadline:
                raise UsageError(
                    f"{w.host}: its {w.kind} job may take up to {w.deadline:g} s, more than the site workers "
                    f"accept (--max-deadline {self.max_deadline:g} s): give the workers and this command a larger "
                    f"--max-deadline (the same on every worker of the broker)")


class _Run:
    """One ``map`` call: sending, polling, deadlines, Ctrl-C (single-threaded loop)."""

    def __init__(self, ex: CeleryExecutor, works: list[DeviceWork], forks: int, label: str,
                 on_interrupt: Callable[[], None] | None, graceful: bool, on_done: Callable[[Outcome], None] | None):
        self.ex = ex
        self.works = works
        self.forks = forks
        self.label = label
        self.on_interrupt = on_interrupt
        self.graceful = graceful
        self.on_done = on_done
        self.results: list[WorkOutcome | None] = [None] * len(works)
        self.left = len(works)
        self.queues: dict[str, deque[int]] = {}
        self.local: deque[int] = deque()
        for i, w in enumerate(works):
            if w.site is None:
                self.local.append(i)
            else:
                self.queues.setdefault(w.site, deque()).append(i)
        self.flights: dict[str, _Flight] = {}
        self.per_site: dict[str, int] = {s: 0 for s in self.queues}
        self.local_futs: dict[Future, int] = {}
        self.sending = True
        self.stop_at: float | None = None
        self.send_error: FleetError | None = None
        self.poll_error: str | None = None
        self.read: list[str] = []
        self.progress: Progress | None = None
        self.task = None

    # ---------------------------------------------------------------- bookkeeping
    def finish(self, i: int, value: Any, error: Exception | None, seconds: float, *, worker: str = "local",
               site: str | None = None, redelivered: bool = False) -> None:
        if self.results[i] is not None:
            return
        o = WorkOutcome(self.works[i], value, error, seconds, worker=worker, site=site, redelivered=bool(redelivered))
        self.results[i] = o
        self.left -= 1
        if self.progress is not None:
            self.progress.advance(self.task)
        if self.on_done is not None:
            self.on_done(o)

    def pending(self) -> bool:
        return self.left > 0

    # ---------------------------------------------------------------- sending
    def send_some(self, producer: Any) -> None:
        app = self.ex.app
        for site, q in self.queues.items():
            while q and self.sending and self.per_site[site] < self.forks:
                i = q.popleft()
                work = self.works[i]
                if self.send_error is not None:
                    self.finish(i, None, self.send_error, 0.0, site=site)
                    continue
                job = str(uuid.uuid4())
                try:
                    app.send_task(TASK_NAME, args=[make_envelope(job, work)], task_id=job, queue=queue_for(site),
                                  producer=producer, argsrepr=f"({work.kind} {work.host})", kwargsrepr="{}")
                except Exception as e:  # the broker went away mid-run: this and every unsent device fail
                    self.send_error = BrokerUnavailable(f"could not send the job to site {site}: "
                                                        f"{' '.join(str(e).split())[:200]}")
                    self.finish(i, None, self.send_error, 0.0, site=site)
                    continue
                now = time.monotonic()
                self.flights[job] = _Flight(i, work, now, now + work.deadline + self.ex.grace)
                self.per_site[site] += 1
                log.debug("%s: job %s (%s) sent to %s", work.host, job, work.kind, queue_for(site))

    def start_local(self, pool: ThreadPoolExecutor, local: LocalExecutor) -> None:
        while self.local and self.sending:
            i = self.local.popleft()
            self.local_futs[pool.submit(_timed, local, self.works[i])] = i

    # ---------------------------------------------------------------- collecting
    def collect(self) -> None:
        from fleet.executor.results import poll

        if self.flights:
            try:
                states = poll(self.ex.app.backend, list(self.flights))
                self.poll_error = None
            except Exception as e:  # the result backend is unreachable for now: try again next round
                self.poll_error = " ".join(str(e).split())[:200] or type(e).__name__
                states = {}
            for job, st in states.items():
                f = self.flights[job]
                if st.status == "STARTED":
                    r = st.result if isinstance(st.result, dict) else {}
                    f.started_by = str(r.get("hostname") or "?")
                    continue
                if st.status not in _READY:
                    continue
                self.land(job, f, st)
        for fut in [f for f in self.local_futs if f.done()]:
            i = self.local_futs.pop(fut)
            value, error, seconds = fut.result()
            self.finish(i, value, error, seconds)

    def land(self, job: str, f: _Flight, st: Any) -> None:
        del self.flights[job]
        self.per_site[f.work.site] -= 1
        self.read.append(job)
        site = f.work.site
        if st.status == "SUCCESS":
            value, error, seconds, about = read_result(st.result, job, f.work)
            self.finish(f.index, value, error, seconds, worker=str(about.get("worker") or "?"), site=site,
                        redelivered=bool(about.get("redelivered")))
            return
        if st.status == "REVOKED" and self.stop_at is not None:
            self.finish(f.index, None, Interrupted(reason=f"interrupted (Ctrl-C): job revoked at site {site}"),
                        time.monotonic() - f.sent, worker=f.started_by or "-", site=site)
            return
        if st.status == "UNVERIFIED":
            error = RemoteError(f"the result of job {job} from site {site} failed signature verification "
                                f"({st.result}): not used")
        else:
            detail = st.result.get("exc_message") if isinstance(st.result, dict) else st.result
            error = RemoteError(f"the job {st.status.lower()} at site {site}: {' '.join(str(detail).split())[:300]}")
        self.finish(f.index, None, error, time.monotonic() - f.sent, worker=f.started_by or "?", site=site)

    def expire(self) -> None:
        now = time.monotonic()
        for job, f in list(self.flights.items()):
            if now < f.wait_until:
                continue
            del self.flights[job]
            site = f.work.site
            self.per_site[site] -= 1
            self.read.append(job)
            if self.poll_error is not None:
                error: Exception = BrokerUnavailable(f"no result within {f.work.deadline:g} s: the result backend "
                                                     f"was unreachable ({self.poll_error})")
            elif f.started_by:
                error = JobLost(f.work.host, site, f.work.deadline, f.started_by)
            else:
                error = NoWorkerAnswered(f.work.host, site, f.work.deadline)
            self.finish(f.index, None, error, now - f.sent, worker=f.started_by or "-", site=site)

    # ---------------------------------------------------------------- Ctrl-C
    def interrupted(self) -> None:
        """First Ctrl-C: send nothing more; graceful runs wait for the jobs out, others
        revoke them and stop waiting after ``abort_wait``. Second Ctrl-C: stop waiting."""
        self.sending = False
        for q in self.queues.values():
            while q:
                self.finish(q.popleft(), None, Interrupted(), 0.0)
        while self.local:
            self.finish(self.local.popleft(), None, Interrupted(), 0.0)
        if self.graceful:
            self.graceful = False
            output.warn("interrupted: no new device is started; waiting for the jobs already sent to finish "
                        "(Ctrl-C again to stop waiting)")
            return
        if self.on_interrupt is not None:
            threading.Thread(target=self.on_interrupt, daemon=True).start()
        if self.flights:
            jobs = list(self.flights)
            threading.Thread(target=self._revoke, args=(jobs,), daemon=True).start()
        self.stop_at = time.monotonic() + self.ex.abort_wait

    def _revoke(self, jobs: list[str]) -> None:
        try:
            self.ex.app.control.revoke(jobs)
        except Exception as e:  # best effort: an expired job is refused at the site anyway
            log.info("revoking %d jobs failed: %s", len(jobs), e)

    def give_up(self) -> None:
        for job, f in list(self.flights.items()):
            del self.flights[job]
            self.read.append(job)
            self.finish(f.index, None, Interrupted(reason=f"interrupted (Ctrl-C): job revoked; site {f.work.site} "
                                                          f"may still finish it"), time.monotonic() - f.sent,
                        site=f.work.site)
        for fut, i in list(self.local_futs.items()):
            self.finish(i, None, Interrupted(), 0.0)
        self.local_futs.clear()

    # ---------------------------------------------------------------- loop
    def run(self) -> list[Outcome]:
        from fleet.executor.results import forget

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=output.err, transient=True,
                                 disable=not output.err.is_terminal)
        pool = ThreadPoolExecutor(max_workers=max(1, min(self.forks, len(self.local))),
                                  thread_name_prefix="fleet-local") if self.local else None
        local = LocalExecutor(self.ex.connections) if self.local else None
        producer_cm = self.ex.app.producer_or_acquire() if self.queues else _null()
        try:
            with self.progress, producer_cm as producer:
                self.task = self.progress.add_task(self.label or "devices", total=len(self.works))
                while self.pending():
                    try:
                        if self.queues:
                            self.send_some(producer)
                        if pool is not None:
                            self.start_local(pool, local)
                        self.collect()
                        self.expire()
                        if not self.pending():
                            break
                        if self.stop_at is not None and time.monotonic() >= self.stop_at:
                            self.give_up()
                            break
                        time.sleep(self.ex.poll_interval)
                    except KeyboardInterrupt:
                        if self.stop_at is not None or (not self.sending and not self.graceful):
                            self.give_up()  # second Ctrl-C: stop waiting
                            break
                        self.interrupted()
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            if self.read or self.flights:
                try:
                    forget(self.ex.app.backend, self.read + list(self.flights))
                except Exception as e:  # results expire on their own (result_expires)
                    log.info("could not delete %d results: %s", len(self.read), e)
        return [r if r is not None else WorkOutcome(self.works[i], None, Interrupted(), 0.0)
                for i, r in enumerate(self.results)]


def _timed(local: LocalExecutor, work: DeviceWork) -> tuple[Any, Exception | None, float]:
    start = time.perf_counter()
    try:
        return local.call(work), None, time.perf_counter() - start
    except Exception as e:  # one device's failure is its outcome
        return None, e, time.perf_counter() - start


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
