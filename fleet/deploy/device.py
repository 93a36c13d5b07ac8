"""Deploy and verify on ONE device: observe, decide (pure), act.

:func:`deploy_device` runs, in this order, so that a failure at any step leaves the device
running what it ran before:

1. observe the app's container, its image, the planned image and leftovers
   (:func:`fleet.deploy.view.observe`) and decide (:func:`fleet.deploy.decide.decide`):
   unchanged devices are not touched;
2. space check, then pull ``REPO@<index digest>`` (never the tag, which may move during a
   rollout), with ``--platform`` where the engine would pick another entry;
3. verify the pulled image against the planned entry (config digest, platform, layers): a
   wrong child is never started;
4. create ``NAME.new`` labelled with the deployment (:mod:`fleet.deploy.container`);
5. take the app's lock on the device and start the device-side transaction
   (:mod:`fleet.deploy.devicetxn`: swap, health check, commit, or roll back to the previous
   container), which finishes by itself whatever happens to the controller or the link;
   follow it to its outcome ("rolled-back" when the new release was unhealthy);
6. verify what runs now.
"""

from __future__ import annotations

import contextlib
import time

import tenacity
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable

from fleet.deploy import txn
from fleet.deploy.container import LABEL, deployment_labels, parked_names, previous_of, spec_digest
from fleet.deploy.decide import DEFAULT_MIN_FREE, create_from, decide, pull_platform, space_needed, space_refusal
from fleet.deploy.devicetxn import AppRecord, Outcome, settle_seconds, transaction_script
from fleet.deploy.remote import TxnClient
from fleet.deploy.view import observe
from fleet.deploy.prune import prune_app
from fleet.engine import Engine, EngineError, PullAuth
from fleet.plan import DevicePlan
from fleet.playbook import ContainerSpec, HealthSpec
from fleet.results import DeviceReport, Result
from fleet.ssh import SSHError
from fleet.verify import Expected, check_container, check_image, crash_reason, verdict

if TYPE_CHECKING:
    from fleet.ssh import Session

__all__ = ["App", "DeviceJob", "DeviceLink", "DeployOptions", "DeployHooks", "new_deployment_id", "deploy_device",
           "verify_device", "report_for"]


def new_deployment_id(now: datetime | None = None) -> str:
    """``YYYYmmddTHHMMSSZ-xxxxxx`` (UTC time + 6 random hex digits): names one deploy run in
    labels and the report file."""
    import secrets

    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


@dataclass
class DeployHooks:
    """Callbacks for tests and integrations (never needed by users).

    ``after_publish(result)`` runs once the index is pushed, before any device pulls;
    ``before_health(host, engine)`` runs when a device's transaction reports that the new
    container started and its health check began."""

    after_publish: Callable[..., None] | None = None
    before_health: Callable[[str, Engine], None] | None = None


@dataclass
class DeployOptions:
    """``forks`` (devices at once), ``min_free`` (bytes to keep free), ``log_tail`` (log
    lines kept per device), ``pull_timeout`` (s, all attempts), ``pull_attempts`` (for
    transient errors), ``stop_timeout`` (s given to a container to stop), ``keep_images``
    (images of the app kept after a verified deploy; None: no pruning), ``deployment`` (id,
    default :func:`new_deployment_id`), ``hooks``."""

    forks: int = 50
    min_free: int = DEFAULT_MIN_FREE
    log_tail: int = 10
    pull_timeout: float = 1800.0
    pull_attempts: int = 4
    stop_timeout: int = 10
    keep_images: int | None = 2
    deployment: str = field(default_factory=new_deployment_id)
    hooks: DeployHooks = field(default_factory=DeployHooks)


@dataclass(frozen=True)
class App:
    """What every device runs: ``reference`` (the tag published), ``playbook`` (its name),
    ``spec`` (container settings), ``health``, ``auth`` (registry credentials for the pull,
    None: the device's own)."""

    reference: str
    playbook: str
    spec: ContainerSpec
    health: HealthSpec
    auth: PullAuth | None = None


@dataclass(frozen=True)
class DeviceJob:
    """One device's work: ``host``, its ``plan`` (:class:`fleet.plan.DevicePlan`), the
    ``expected`` planned entry, ``size`` (bytes the child weighs compressed) and
    ``record``: what the probe read of the app's transaction records on the device."""

    host: str
    plan: DevicePlan
    expected: Expected
    size: int = 0
    record: AppRecord | None = None


def _report_unattended(record: AppRecord | None, rep: DeviceReport) -> bool:
    """Add to ``rep`` a transaction that ended on the device while no controller followed
    it (a dropped link, a killed controller); True when there was one."""
    if record is None or not record.uncollected:
        return False
    rep.actions.append(f"found on the device: deployment {record.last} ended {record.outcome or 'without an outcome'} "
                       f"while no controller followed it")
    return True


def report_for(host: str, plan: DevicePlan | None) -> DeviceReport:
    """An empty report row for ``host`` with its planned platforms filled in."""
    def s(p) -> str | None:
        return None if p is None else str(p)

    if plan is None:
        return DeviceReport(host)
    return DeviceReport(host, s(plan.platform), s(plan.engine_platform), s(plan.entry_platform),
                        bool(plan.explicit_platform))


@dataclass(frozen=True)
class DeviceLink:
    """How the deploy reaches one device besides its engine: ``session()`` returns its open
    SSH session (a new one after a drop), ``become`` runs docker through ``sudo -n``."""

    session: Callable[[], "Session"]
    become: bool = False


def deploy_device(engine: Engine, job: DeviceJob, app: App, options: DeployOptions, link: DeviceLink, *,
                  check_only: bool = False) -> DeviceReport:
    """Steps 1-6 of the module docstring on one device; returns its report. Never raises for
    a device-side failure: the report says "failed", "refused", "rolled-back" or (with
    ``check_only``) "would-deploy"/"would-keep"; an SSH failure is "unreachable"."""
    t0 = time.monotonic()
    rep = report_for(job.host, job.plan)
    try:
        _deploy(engine, job, app, options, rep, link, check_only)
    except Exception as exc:  # classified by type: one device's failure is its row
        if rep.result is not Result.ROLLED_BACK:
            rep.fail(exc)
            rep.reason = rep.reason.removeprefix(f"{job.host}: ")
    rep.seconds = round(time.monotonic() - t0, 1)
    return rep


def _deploy(engine: Engine, job: DeviceJob, app: App, options: DeployOptions, rep: DeviceReport,
            link: DeviceLink, check_only: bool) -> None:
    e = job.expected
    name = app.spec.name
    spec_id = spec_digest(app.spec)
    view = observe(engine, name, e)
    store = view.store
    decision = decide(view, e, spec_id)
    rep.checks = [c.to_dict() for c in decision.checks]
    current = view.current
    unattended = _report_unattended(job.record, rep)
    if decision.keep:
        rep.config_digest = view.current_image.id if view.current_image else None
        rep.pulled = current.labels.get(LABEL["manifest"]) if current else None
        rep.result = Result.WOULD_KEEP if check_only else Result.UNCHANGED
        rep.reason = decision.reason
        if unattended and not check_only:
            TxnClient(link.session, name, options.deployment, link.become).mark_collected()
        return
    if decision.reason:
        rep.actions.append(decision.reason)
    if current is not None:
        rep.previous = previous_of(current)
    if decision.pull:
        space = engine.free_space(view.info.docker_root_dir)
        rep.free_bytes = space.available_bytes
        rep.needed_bytes = space_needed(job.size, options.min_free)
        refusal = space_refusal(space, view.info.docker_root_dir, job.size, options.min_free)
        if refusal:
            rep.result, rep.reason = Result.REFUSED, refusal
            return
    platform = pull_platform(e, job.plan.explicit_platform, job.plan.engine_platform)
    if check_only:
        pull = (f"pull {e.pull_reference}" + (f" --platform {platform}" if platform else "")
                if decision.pull else "image already present")
        replace = (f"replace {name} ({current.status}, deployment {current.labels.get(LABEL['deployment'], '-')})"
                   if current is not None else f"create {name}")
        rep.result, rep.reason = Result.WOULD_DEPLOY, f"{pull}; {replace}"
        return
    if decision.pull:
        rep.actions.append(f"pull {e.pull_reference}" + (f" --platform {platform}" if platform else ""))
        _pull(engine, e.pull_reference, platform, app.auth, options, rep)
    pulled = engine.image(e.pull_reference)
    checks = check_image(e, pulled, store)
    rep.config_digest = pulled.id if pulled else None
    result, why = verdict(checks)
    if result is not Result.VERIFIED or pulled is None:
        rep.checks = [c.to_dict() for c in checks]
        rep.result, rep.reason = Result.FAILED, f"pulled image is not the planned {e.platform} child: {why}; nothing replaced"
        return
    rep.pulled = e.manifest_digest
    healthy, detail = _swap(engine, job, app, options, rep, link, pulled_ref=create_from(e, pulled, store),
                            spec_id=spec_id)
    if not healthy:
        return
    # 6. verify what runs now
    final = observe(engine, name, e, planned=False, logs=options.log_tail, leftovers=False)
    checks = check_image(e, final.current_image, store) + check_container(e, final.current, final.current_image,
                                                                          store, final.logs)
    rep.checks = [c.to_dict() for c in checks]
    rep.log_tail = final.logs
    result, why = verdict(checks)
    rep.result = Result.VERIFIED if result is Result.VERIFIED else Result.FAILED
    rep.reason = detail if result is Result.VERIFIED else f"{result}: {why}"
    if rep.result is Result.VERIFIED and options.keep_images and final.current is not None:
        keep = {final.current.image_id, final.current.labels.get(LABEL["previous_config"], "")}
        removed, refused = prune_app(engine, e.repository, keep, options.keep_images)
        if removed or refused:
            rep.actions.append(f"pruned {len(removed)} older image(s) of {e.repository}"
                               + (f"; {len(refused)} still in use" if refused else ""))


def _pull(engine: Engine, ref: str, platform, auth, options: "DeployOptions", rep: DeviceReport) -> None:
    """Pull with retries for what a retry can fix (:attr:`EngineError.transient`: a TLS
    handshake timeout, a reset connection, a registry's 5xx or 429), with exponential
    backoff, within ``options.pull_timeout``; a permanent refusal fails at once."""
    deadline = time.monotonic() + options.pull_timeout
    for attempt in tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, EngineError) and e.transient),
            stop=tenacity.stop_after_attempt(options.pull_attempts) | tenacity.stop_after_delay(options.pull_timeout),
            wait=tenacity.wait_exponential(multiplier=2, min=2, max=30), reraise=True):
        with attempt:
            n = attempt.retry_state.attempt_number
            if n > 1:
                rep.actions.append(f"pull attempt {n} after: {attempt.retry_state.outcome.exception()}")
            engine.pull(ref, platform=platform, auth=auth, timeout=max(30.0, deadline - time.monotonic()))


def _swap(engine: Engine, job: DeviceJob, app: App, options: DeployOptions, rep: DeviceReport, link: "DeviceLink",
          *, pulled_ref: tuple[str, object], spec_id: str) -> tuple[bool, str]:
    """Steps 4-5: take the app's lock on the device, create NAME.new, then start the
    device-side transaction (swap, health, commit or roll back: :mod:`fleet.deploy.devicetxn`)
    and follow it to its outcome. Returns ``(healthy, detail)``; when not healthy, ``rep``
    holds the outcome (rolled-back, failed, refused)."""
    name = app.spec.name
    new = parked_names(name)[0]
    deployment = options.deployment
    record = rep.actions.append
    client = TxnClient(link.session, name, deployment, link.become, getattr(engine, "counters", None))
    lock = client.lock()
    if lock.uncollected is not None and lock.uncollected.deployment:
        o = lock.uncollected
        if job.record is None or job.record.last != o.deployment:
            record(f"found on the device: deployment {o.deployment} ended {o.outcome} while no controller "
                   f"followed it" + (f" ({o.detail})" if o.detail else ""))
        client.mark_collected()
    if lock.state == "locked":
        rep.result = Result.REFUSED
        rep.reason = (f"deployment {lock.holder} holds {name} on this device (its lock was taken {lock.age} s "
                      f"ago and its transaction is alive): not touched; run again when it ends")
        return False, ""
    try:
        if lock.state == "stale":
            record(f"recovering the dead transaction of deployment {lock.holder}")
            txn.apply(engine, txn.rollback_ops(name, lock.holder, options.stop_timeout), record)
        txn.apply(engine, txn.prepare_ops(name), record)
        current = engine.container(name)
        e = job.expected
        labels = deployment_labels(deployment=deployment, playbook=app.playbook, reference=app.reference,
                                   repository=e.repository, index_digest=e.index_digest,
                                   manifest_digest=e.manifest_digest, config_digest=e.config_digest,
                                   platform=str(e.platform), spec_id=spec_id, previous=current)
        image_ref, platform = pulled_ref
        engine.create_container(new, str(image_ref), app.spec, labels, platform=platform)  # type: ignore[arg-type]
        record(f"create {new} from {str(image_ref)[:19]}")
    except BaseException:
        with contextlib.suppress(Exception):
            client.unlock()
        raise

    def on_status(phase: str) -> None:
        if phase == "health" and options.hooks.before_health:
            options.hooks.before_health(job.host, engine)

    script = transaction_script(name, deployment, app.health, options.stop_timeout)
    settle = settle_seconds(app.health, options.stop_timeout)
    started = time.monotonic()
    try:
        outcome = client.launch(script, settle, on_status)
    except SSHError as exc:
        record(f"link lost while the device worked ({exc.reason}); it finishes by itself")
        outcome = _collect(client, started + settle, record)
    if outcome is None:
        outcome = _collect(client, started + settle, record)
    if outcome is None:
        rep.result = Result.FAILED
        rep.reason = (f"the device-side transaction of {name} gave no outcome within {settle} s; the device "
                      f"finishes it by itself: run verify (or deploy again) to see where it ended")
        return False, ""
    record(f"device transaction: {outcome.outcome}" + (f" ({outcome.detail})" if outcome.detail else ""))
    if outcome.outcome == "committed":
        return True, outcome.detail
    failed = engine.container(parked_names(name)[2])
    rep.log_tail = engine.logs(failed.name, options.log_tail) if failed is not None else ""
    detail = outcome.detail
    crash = crash_reason(failed, rep.log_tail)
    if crash and crash not in detail:
        detail += f" ({crash})"
    restored = engine.container(name)
    if outcome.outcome == "rolled-back" and restored is not None:
        back = "running again" if restored.running else f"NOT running ({restored.status})"
        rep.result = Result.ROLLED_BACK
        rep.reason = f"new version unhealthy: {detail}; previous container {back}"
    else:
        rep.result = Result.FAILED
        rep.reason = f"new version unhealthy: {detail}; there was no previous container to restore"
    return False, detail


def _collect(client: TxnClient, deadline: float, record: Callable[[str], None]) -> Outcome | None:
    """Reconnect and collect the transaction's outcome until ``deadline`` (monotonic)."""
    while True:
        left = deadline - time.monotonic()
        try:
            return client.collect(max(1.0, min(left, 60.0)))
        except SSHError as exc:
            if time.monotonic() >= deadline:
                record(f"could not reach the device again: {exc.reason}")
                return None
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            return None


def verify_device(engine: Engine, rep: DeviceReport, expected: Expected, name: str, *,
                  log_tail: int = 10, link: DeviceLink | None = None, record: AppRecord | None = None) -> DeviceReport:
    """Fill ``rep`` with what ``engine`` runs as container ``name`` against ``expected``:
    checks, config digest, pulled child (from the container's label), log tail, and the
    verdict (verified, drifted, crashed, missing).

    With ``link``, leftovers of an interrupted transaction are reported and cleaned first,
    never leaving the device without its app: a transaction that ended unattended is
    reported (``record``); when no transaction holds the app, ``NAME.previous`` gets its
    name back and runs if ``NAME`` is gone, and a never-started ``NAME.new`` is removed.
    """
    t0 = time.monotonic()
    if link is not None:
        unattended = _report_unattended(record, rep)
        if record is not None and record.lock:
            rep.actions.append(f"deployment {record.lock} holds {name} on this device: leftovers not touched")
        else:
            _clean_leftovers(engine, name, rep)
        if unattended:
            TxnClient(link.session, name, "-", link.become).mark_collected()
    view = observe(engine, name, expected, planned=False, logs=log_tail, leftovers=False)
    checks = check_image(expected, view.current_image, view.store) if view.current is not None else []
    checks += check_container(expected, view.current, view.current_image, view.store, view.logs)
    result, reason = verdict(checks)
    rep.checks = [c.to_dict() for c in checks]
    rep.config_digest = view.current_image.id if view.current_image else None
    rep.pulled = view.current.labels.get(LABEL["manifest"]) if view.current else None
    rep.log_tail = view.logs
    rep.result = result
    rep.reason = reason or (f"deployment {view.current.labels.get(LABEL['deployment'], '-')}"
                            if view.current else "")
    rep.seconds = round(time.monotonic() - t0, 1)
    return rep


def _clean_leftovers(engine: Engine, name: str, rep: DeviceReport) -> None:
    new, prev, failed = parked_names(name)
    left = {n: engine.container(n) for n in engine.names(name + ".") if n in (new, prev, failed)}
    if not left:
        return
    rep.actions.append("leftovers of an earlier transaction: " + ", ".join(
        f"{n} ({c.status})" for n, c in left.items() if c is not None))
    ops = [txn.Op("rename", prev, to=name, if_missing=name), txn.Op("start", name, if_stopped=True, if_exists=prev),
           txn.Op("remove", new, if_stopped=True)]
    if engine.container(name) is None and prev in left:
        ops[1] = txn.Op("start", name, if_stopped=True)
    txn.apply(engine, ops, lambda s: rep.actions.append(f"cleaned: {s}"))
