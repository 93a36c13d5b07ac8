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
5. swap (:mod:`fleet.deploy.txn`), health check (:mod:`fleet.deploy.health`), then commit,
   or roll back to the previous container ("rolled-back");
6. verify what runs now.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from fleet.deploy import txn
from fleet.deploy.container import LABEL, deployment_labels, parked_names, previous_of, spec_digest
from fleet.deploy.decide import DEFAULT_MIN_FREE, create_from, decide, pull_platform, space_needed, space_refusal
from fleet.deploy.health import wait_healthy
from fleet.deploy.view import observe
from fleet.engine import Engine, EngineError, PullAuth
from fleet.plan import DevicePlan
from fleet.playbook import ContainerSpec, HealthSpec
from fleet.results import DeviceReport, Result
from fleet.verify import Expected, check_container, check_image, crash_reason, verdict

__all__ = ["App", "DeviceJob", "DeployOptions", "DeployHooks", "new_deployment_id", "deploy_device",
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
    ``before_health(host, engine)`` runs on a device once its new container started, before
    its health check."""

    after_publish: Callable[..., None] | None = None
    before_health: Callable[[str, Engine], None] | None = None


@dataclass
class DeployOptions:
    """``forks`` (devices at once), ``min_free`` (bytes to keep free), ``log_tail`` (log
    lines kept per device), ``pull_timeout`` (s), ``stop_timeout`` (s given to a container
    to stop), ``deployment`` (id, default :func:`new_deployment_id`), ``hooks``."""

    forks: int = 50
    min_free: int = DEFAULT_MIN_FREE
    log_tail: int = 10
    pull_timeout: float = 1800.0
    stop_timeout: int = 10
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
    ``expected`` planned entry, and ``size`` (bytes the child weighs compressed)."""

    host: str
    plan: DevicePlan
    expected: Expected
    size: int = 0


def report_for(host: str, plan: DevicePlan | None) -> DeviceReport:
    """An empty report row for ``host`` with its planned platforms filled in."""
    def s(p) -> str | None:
        return None if p is None else str(p)

    if plan is None:
        return DeviceReport(host)
    return DeviceReport(host, s(plan.platform), s(plan.engine_platform), s(plan.entry_platform),
                        bool(plan.explicit_platform))


def deploy_device(engine: Engine, job: DeviceJob, app: App, options: DeployOptions, *,
                  check_only: bool = False) -> DeviceReport:
    """Steps 1-6 of the module docstring on one device; returns its report. Never raises for
    a device-side failure: the report says "failed", "refused", "rolled-back" or (with
    ``check_only``) "would-deploy"/"would-keep"; an SSH failure is "unreachable"."""
    t0 = time.monotonic()
    rep = report_for(job.host, job.plan)
    try:
        _deploy(engine, job, app, options, rep, check_only)
    except Exception as exc:  # classified by type: one device's failure is its row
        if rep.result is not Result.ROLLED_BACK:
            rep.fail(exc)
            rep.reason = rep.reason.removeprefix(f"{job.host}: ")
    rep.seconds = round(time.monotonic() - t0, 1)
    return rep


def _deploy(engine: Engine, job: DeviceJob, app: App, options: DeployOptions, rep: DeviceReport,
            check_only: bool) -> None:
    e = job.expected
    name = app.spec.name
    spec_id = spec_digest(app.spec)
    view = observe(engine, name, e)
    store = view.store
    decision = decide(view, e, spec_id)
    rep.checks = [c.to_dict() for c in decision.checks]
    current = view.current
    if decision.keep:
        rep.config_digest = view.current_image.id if view.current_image else None
        rep.pulled = current.labels.get(LABEL["manifest"]) if current else None
        rep.result = Result.WOULD_KEEP if check_only else Result.UNCHANGED
        rep.reason = decision.reason
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
        engine.pull(e.pull_reference, platform=platform, auth=app.auth, timeout=options.pull_timeout)
    pulled = engine.image(e.pull_reference)
    checks = check_image(e, pulled, store)
    rep.config_digest = pulled.id if pulled else None
    result, why = verdict(checks)
    if result is not Result.VERIFIED or pulled is None:
        rep.checks = [c.to_dict() for c in checks]
        rep.result, rep.reason = Result.FAILED, f"pulled image is not the planned {e.platform} child: {why}; nothing replaced"
        return
    rep.pulled = e.manifest_digest
    healthy, detail = _swap(engine, job, app, options, rep, pulled_ref=create_from(e, pulled, store), spec_id=spec_id)
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


def _swap(engine: Engine, job: DeviceJob, app: App, options: DeployOptions, rep: DeviceReport, *,
          pulled_ref: tuple[str, object], spec_id: str) -> tuple[bool, str]:
    """Steps 4-5: create NAME.new, swap, health, then commit or roll back. Returns
    ``(healthy, detail)``; when not healthy, ``rep`` holds the outcome (rolled-back or
    failed)."""
    name = app.spec.name
    new = parked_names(name)[0]
    deployment = options.deployment
    record = rep.actions.append
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
    healthy, detail = False, ""
    try:
        txn.apply(engine, txn.swap_ops(name, options.stop_timeout), record)
        if options.hooks.before_health:
            options.hooks.before_health(job.host, engine)
        healthy, detail = wait_healthy(engine, name, app.health)
    except EngineError as exc:
        detail = f"{exc.command} failed: {exc.output[-200:]}"
    if healthy:
        record(f"healthy: {detail}")
        txn.apply(engine, txn.commit_ops(name), record)
        return True, detail
    rep.log_tail = engine.logs(name, options.log_tail)
    crash = crash_reason(engine.container(name), rep.log_tail)
    if crash and crash not in detail:
        detail += f" ({crash})"
    record(f"unhealthy: {detail}")
    txn.apply(engine, txn.rollback_ops(name, deployment, options.stop_timeout), record)
    restored = engine.container(name)
    if restored is not None and restored.labels.get(LABEL["deployment"]) != deployment:
        back = "running again" if restored.running else f"NOT running ({restored.status})"
        rep.result = Result.ROLLED_BACK
        rep.reason = f"new version unhealthy: {detail}; previous container {back}"
    else:
        rep.result = Result.FAILED
        rep.reason = f"new version unhealthy: {detail}; there was no previous container to restore"
    return False, detail


def verify_device(engine: Engine, rep: DeviceReport, expected: Expected, name: str, *,
                  log_tail: int = 10) -> DeviceReport:
    """Fill ``rep`` with what ``engine`` runs as container ``name`` against ``expected``:
    checks, config digest, pulled child (from the container's label), log tail, and the
    verdict (verified, drifted, crashed, missing)."""
    t0 = time.monotonic()
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
