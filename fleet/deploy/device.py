"""Deploy on ONE device: observe, decide (pure), act. The app is one or more containers
(units: a playbook's ``container:``, or the services of a Compose stack) changed together.

:func:`deploy_device` runs, in this order, so that a failure at any step leaves the device
running what it ran before:

1. observe each unit's container, its image, the planned image and leftovers
   (:func:`fleet.deploy.view.observe`) and decide (:func:`fleet.deploy.decide.decide`):
   when every unit already runs its planned child with its settings, nothing is touched;
2. space check for what must be downloaded, then pull each ``REPO@<index digest>`` (never
   a tag, which may move during a rollout), with ``--platform`` where the engine would
   pick another entry; transient failures are retried;
3. verify every pulled image against its planned entry (config digest, platform,
   layers): a wrong child is never started;
4. make the stack's networks and named volumes when missing (never removed), take the
   app's lock on the device, create each changed unit as ``NAME.new`` labelled with the
   deployment (:mod:`fleet.deploy.container`);
5. start the device-side transaction (:mod:`fleet.deploy.devicetxn`: swap every changed
   unit in start order, health-check them together, commit, or roll back all of them),
   which finishes by itself whatever happens to the controller or the link; follow it to
   its outcome ("rolled-back" when the new release was unhealthy);
6. verify what runs now, and prune images older than the previous release.
"""

from __future__ import annotations

import contextlib
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Callable

import tenacity

from fleet.compose import ensure_stack_objects
from fleet.deploy import txn
from fleet.deploy.container import LABEL, deployment_labels, parked_names, previous_of
from fleet.deploy.decide import Decision, create_from, decide, pull_platform, space_needed, space_refusal
from fleet.deploy.devicetxn import LOCK_GRACE, AppRecord, Outcome, settle_seconds, transaction_script
from fleet.deploy.jobs import App, AuthRef, DeployOptions, DeviceJob, DeviceLink, Unit, report_for
from fleet.deploy.prune import prune_app
from fleet.deploy.remote import TxnClient
from fleet.deploy.view import DeviceView, observe
from fleet.engine import Engine, EngineError
from fleet.fanout import Interrupted
from fleet.results import DeviceReport, Result
from fleet.ssh import SSHError
from fleet.verify import check_container, check_image, crash_reason, verdict

if TYPE_CHECKING:
    from fleet.engine import PullAuth

__all__ = ["deploy_device", "unit_report", "report_unattended", "stop_timeout_of", "resolve_here", "Credentials"]


def report_unattended(record: AppRecord | None, rep: DeviceReport) -> bool:
    """Add to ``rep`` a transaction that ended on the device while no controller followed
    it (a dropped link, a killed controller); True when there was one."""
    if record is None or not record.uncollected:
        return False
    rep.actions.append(f"found on the device: deployment {record.last} ended {record.outcome or 'without an outcome'} "
                       f"while no controller followed it")
    return True


def stop_timeout_of(unit: Unit, options: DeployOptions) -> int:
    """Seconds a unit's container is given to stop: its ``stop_grace_period``, else the
    run's ``stop_timeout``."""
    grace = unit.spec.stop_grace_period
    return int(round(grace)) if grace is not None else options.stop_timeout


def unit_report(unit: Unit) -> dict:
    """A unit's entry of :attr:`fleet.results.DeviceReport.services`."""
    return {"service": unit.service, "container": unit.container, "entry_platform": str(unit.expected.platform),
            "pulled": None, "config_digest": None, "result": None, "reason": "", "checks": []}


Credentials = Callable[[AuthRef], "PullAuth | None"]


def resolve_here(ref: AuthRef) -> "PullAuth | None":
    """``ref``'s credentials as this process finds them (its environment, the Docker config
    it names or the default one); None: none (anonymous)."""
    from fleet.engine import PullAuth
    from fleet.registry import resolve_credentials

    creds = resolve_credentials(SimpleNamespace(**ref.settings()), ref.registry)
    return PullAuth(ref.registry, creds) if creds else None


def deploy_device(engine: Engine, job: DeviceJob, app: App, options: DeployOptions, link: DeviceLink, *,
                  check_only: bool = False, credentials: Credentials | None = None) -> DeviceReport:
    """Steps 1-6 of the module docstring on one device; returns its report. Never raises for
    a device-side failure: the report says "failed", "refused", "rolled-back" or (with
    ``check_only``) "would-deploy"/"would-keep"; an SSH failure is "unreachable".
    ``credentials``: turns a unit's :class:`AuthRef` into the pull's credentials where this
    runs (default :func:`resolve_here`).

    The same job run again (a job delivered a second time after its worker stopped
    mid-job) never swaps twice: when this deployment's transaction already ended on the
    device its outcome is reported; when it still runs it is followed to its end."""
    t0 = time.monotonic()
    rep = report_for(job.host, job.plan)
    rep.services = [unit_report(u) for u in job.units]
    rep.index_digest = job.units[0].expected.index_digest if job.units else None
    try:
        _deploy(engine, job, app, options, rep, link, check_only, credentials or resolve_here)
    except Interrupted:
        rep.result = Result.INTERRUPTED
        rep.reason = ("interrupted (Ctrl-C): if its transaction had started, the device finishes it by itself "
                      "(verify shows where it ended)")
    except Exception as exc:  # classified by type: one device's failure is its row
        if rep.result is not Result.ROLLED_BACK:
            rep.fail(exc)
            rep.reason = rep.reason.removeprefix(f"{job.host}: ")
    rep.seconds = round(time.monotonic() - t0, 1)
    return rep


def _deploy(engine: Engine, job: DeviceJob, app: App, options: DeployOptions, rep: DeviceReport,
            link: DeviceLink, check_only: bool, credentials: Credentials) -> None:
    views: dict[str, DeviceView] = {}
    decisions: dict[str, Decision] = {}
    for u in job.units:
        views[u.container] = observe(engine, u.container, u.expected)
        decisions[u.container] = decide(views[u.container], u.expected, u.spec.digest())
    first = job.units[0]
    rep.checks = [c.to_dict() for c in decisions[first.container].checks]
    unattended = report_unattended(job.record, rep)
    changed = [u for u in job.units if not decisions[u.container].keep]
    if not changed and not check_only and _applied(views, job, options.deployment):
        _already_applied(engine, job, options, rep, link, views)
        return
    if not changed:
        for svc, u in zip(rep.services, job.units):
            v = views[u.container]
            svc.update(result=str(Result.UNCHANGED), config_digest=v.current_image.id if v.current_image else None,
                       pulled=v.current.labels.get(LABEL["manifest"]) if v.current else None)
        rep.config_digest, rep.pulled = rep.services[0]["config_digest"], rep.services[0]["pulled"]
        rep.result = Result.WOULD_KEEP if check_only else Result.UNCHANGED
        rep.reason = decisions[first.container].reason
        if unattended and not check_only:
            TxnClient(link.session, job.app, options.deployment, link.become).mark_collected()
        return
    for u in changed:
        if decisions[u.container].reason:
            rep.actions.append(f"{u.container}: {decisions[u.container].reason}" if len(job.units) > 1
                               else decisions[u.container].reason)
    current = views[first.container].current
    if current is not None:
        rep.previous = previous_of(current)
    to_pull = [u for u in changed if decisions[u.container].pull]
    if to_pull:
        info = views[first.container].info
        size = sum(u.size for u in to_pull)
        space = engine.free_space(info.docker_root_dir)
        rep.free_bytes = space.available_bytes
        rep.needed_bytes = space_needed(size, options.min_free)
        refusal = space_refusal(space, info.docker_root_dir, size, options.min_free)
        if refusal:
            rep.result, rep.reason = Result.REFUSED, refusal
            return
    if check_only:
        parts = []
        for u in changed:
            platform = pull_platform(u.expected, u.plan.explicit_platform, u.plan.engine_platform)
            pull = (f"pull {u.expected.pull_reference}" + (f" --platform {platform}" if platform else "")
                    if decisions[u.container].pull else "image already present")
            cur = views[u.container].current
            replace = (f"replace {u.container} ({cur.status}, deployment {cur.labels.get(LABEL['deployment'], '-')})"
                       if cur is not None else f"create {u.container}")
            parts.append(f"{pull}; {replace}")
        rep.result, rep.reason = Result.WOULD_DEPLOY, "; ".join(parts)
        return
    pulled_refs: dict[str, tuple[str, object]] = {}
    for u in changed:
        e = u.expected
        store = views[u.container].store
        if decisions[u.container].pull:
            platform = pull_platform(e, u.plan.explicit_platform, u.plan.engine_platform)
            rep.actions.append(f"pull {e.pull_reference}" + (f" --platform {platform}" if platform else ""))
            _pull(engine, e.pull_reference, platform, credentials(u.auth) if u.auth is not None else None,
                  options, rep)
        pulled = engine.image(e.pull_reference)
        checks = check_image(e, pulled, store)
        result, why = verdict(checks)
        if result is not Result.VERIFIED or pulled is None:
            rep.checks = [c.to_dict() for c in checks]
            rep.result = Result.FAILED
            rep.reason = (f"pulled image of {u.container} is not the planned {e.platform} child: {why}; "
                          f"nothing replaced")
            return
        pulled_refs[u.container] = create_from(e, pulled, store)
    if job.stack is not None:
        for obj in ensure_stack_objects(engine, job.stack):
            rep.actions.append(f"create {obj.kind} {obj.name}")
    healthy, detail = _swap(engine, job, changed, app, options, rep, link, pulled_refs)
    if not healthy:
        return
    _final(engine, job, options, rep, detail)


def _applied(views: dict[str, DeviceView], job: DeviceJob, deployment: str) -> bool:
    """Some unit already runs a container of ``deployment`` (deployment ids are unique per
    run: only this same job, delivered again, can have made it)."""
    return any(views[u.container].current is not None
               and views[u.container].current.labels.get(LABEL["deployment"]) == deployment for u in job.units)


def _already_applied(engine: Engine, job: DeviceJob, options: DeployOptions, rep: DeviceReport, link: DeviceLink,
                     views: dict[str, DeviceView]) -> None:
    """This deployment's transaction already swapped the device (an earlier delivery of
    the job whose worker stopped before answering): report its outcome, verify, never swap
    again."""
    client = TxnClient(link.session, job.app, options.deployment, link.become, getattr(engine, "counters", None))
    outcome = client.collect(1)
    rep.actions.append(f"deployment {options.deployment} was already applied on the device by an earlier delivery "
                       f"of this job" + (f" (device transaction: {outcome.outcome})" if outcome else "")
                       + "; not applied again")
    current = views[job.units[0].container].current
    if current is not None:
        rep.previous = {"deployment": current.labels.get(LABEL["previous_deployment"], ""),
                        "index_digest": current.labels.get(LABEL["previous_index"], ""),
                        "config_digest": current.labels.get(LABEL["previous_config"], ""),
                        "image": current.labels.get(LABEL["previous_image"], ""), "status": ""}
    _final(engine, job, options, rep, outcome.detail if outcome else "")


def _final(engine: Engine, job: DeviceJob, options: DeployOptions, rep: DeviceReport, detail: str) -> None:
    """Step 6: verify every unit, then prune."""
    bad = []
    for svc, u in zip(rep.services, job.units):
        e = u.expected
        final = observe(engine, u.container, e, planned=False, logs=options.log_tail, leftovers=False)
        checks = check_image(e, final.current_image, final.store) + \
            check_container(e, final.current, final.current_image, final.store, final.logs)
        result, why = verdict(checks)
        svc.update(result=str(Result.VERIFIED if result is Result.VERIFIED else Result.FAILED), reason=why,
                   checks=[c.to_dict() for c in checks],
                   config_digest=final.current_image.id if final.current_image else None,
                   pulled=final.current.labels.get(LABEL["manifest"]) if final.current else None)
        if u is job.units[0]:
            rep.checks, rep.log_tail = svc["checks"], final.logs
            rep.config_digest, rep.pulled = svc["config_digest"], svc["pulled"]
        if result is not Result.VERIFIED:
            bad.append(f"{u.container}: {result}: {why}" if len(job.units) > 1 else f"{result}: {why}")
        elif options.keep_images and final.current is not None:
            keep = {final.current.image_id, final.current.labels.get(LABEL["previous_config"], "")}
            removed, refused = prune_app(engine, e.repository, keep, options.keep_images)
            if removed or refused:
                rep.actions.append(f"pruned {len(removed)} older image(s) of {e.repository}"
                                   + (f"; {len(refused)} still in use" if refused else ""))
    rep.result = Result.FAILED if bad else Result.VERIFIED
    rep.reason = "; ".join(bad) if bad else detail


def _pull(engine: Engine, ref: str, platform, auth, options: DeployOptions, rep: DeviceReport) -> None:
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


def _members(job: DeviceJob, changed: list[Unit], options: DeployOptions) -> list[txn.Member]:
    names = {u.container for u in changed}
    awaited = {c for container, deps in job.healthy_before.items() if container in names for c in deps}
    return [txn.Member(u.container, stop_timeout_of(u, options), u.container in awaited) for u in changed]


def _swap(engine: Engine, job: DeviceJob, changed: list[Unit], app: App, options: DeployOptions,
          rep: DeviceReport, link: DeviceLink, pulled_refs: dict[str, tuple[str, object]]) -> tuple[bool, str]:
    """Steps 4-5: take the app's lock on the device, create each changed unit as NAME.new,
    then start the device-side transaction and follow it to its outcome. Returns
    ``(healthy, detail)``; when not healthy, ``rep`` holds the outcome (rolled-back,
    failed, refused)."""
    deployment = options.deployment
    record = rep.actions.append
    members = _members(job, changed, options)
    settle = settle_seconds(app.health, max(m.stop_timeout for m in members) * len(members))
    client = TxnClient(link.session, job.app, deployment, link.become, getattr(engine, "counters", None))
    lock = client.lock()
    own = lock.uncollected if lock.uncollected is not None and lock.uncollected.deployment == deployment else None
    if own is not None or (lock.state == "locked" and lock.holder == deployment):
        # this job delivered again: its first delivery's transaction ended (or still runs)
        # on the device; report (follow) that one, never start a second
        if lock.state != "locked":
            client.unlock()
        record(f"the device-side transaction of deployment {deployment} was started by an earlier delivery of "
               f"this job" + (f"; it ended {own.outcome}" if own else "; following it") + ": not started again")
        outcome = own
        if own is not None:
            client.mark_collected()
        deadline = time.monotonic() + settle + LOCK_GRACE
        while outcome is None and time.monotonic() < deadline:
            outcome = _collect(client, deadline, record)
            if outcome is None:
                time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        return _settled(engine, job, changed, options, rep, outcome, settle)
    if lock.uncollected is not None and lock.uncollected.deployment:
        o = lock.uncollected
        if job.record is None or job.record.last != o.deployment:
            record(f"found on the device: deployment {o.deployment} ended {o.outcome} while no controller "
                   f"followed it" + (f" ({o.detail})" if o.detail else ""))
        client.mark_collected()
    if lock.state == "locked":
        rep.result = Result.REFUSED
        rep.reason = (f"deployment {lock.holder} holds {job.app} on this device (its lock was taken {lock.age} s "
                      f"ago and its transaction is alive): not touched; run again when it ends")
        return False, ""
    try:
        if lock.state == "stale":
            record(f"recovering the dead transaction of deployment {lock.holder}")
            all_members = _members(job, list(job.units), options)
            txn.apply(engine, txn.rollback_ops(all_members, lock.holder), record)
        txn.apply(engine, txn.prepare_ops(members), record)
        for u in changed:
            e = u.expected
            current = engine.container(u.container)
            labels = deployment_labels(deployment=deployment, playbook=app.playbook, reference=app.reference,
                                       repository=e.repository, index_digest=e.index_digest,
                                       manifest_digest=e.manifest_digest, config_digest=e.config_digest,
                                       platform=str(e.platform), spec_id=u.spec.digest(), previous=current,
                                       app=job.app if job.stack is not None else "",
                                       service=u.service if job.stack is not None else "")
            image_ref, platform = pulled_refs[u.container]
            new = parked_names(u.container)[0]
            engine.create_container(new, str(image_ref), u.spec, labels, platform=platform)  # type: ignore[arg-type]
            record(f"create {new} from {str(image_ref)[:19]}")
    except BaseException:
        with contextlib.suppress(Exception):
            client.unlock()
        raise

    def on_status(phase: str) -> None:
        if phase == "health" and options.hooks.before_health:
            options.hooks.before_health(job.host, engine)

    checked = [u.container for u in changed if u.checked]
    script = transaction_script(members, deployment, app.health, options.stop_timeout, checked)
    started = time.monotonic()
    try:
        outcome = client.launch(script, settle, on_status)
    except SSHError as exc:
        record(f"link lost while the device worked ({exc.reason}); it finishes by itself")
        outcome = _collect(client, started + settle, record)
    if outcome is None:
        outcome = _collect(client, started + settle, record)
    return _settled(engine, job, changed, options, rep, outcome, settle)


def _settled(engine: Engine, job: DeviceJob, changed: list[Unit], options: DeployOptions, rep: DeviceReport,
             outcome: Outcome | None, settle: int) -> tuple[bool, str]:
    """What the device-side transaction's ``outcome`` means for ``rep`` (see :func:`_swap`)."""
    record = rep.actions.append
    if outcome is None:
        rep.result = Result.FAILED
        rep.reason = (f"the device-side transaction of {job.app} gave no outcome within {settle} s; the device "
                      f"finishes it by itself: run verify (or deploy again) to see where it ended")
        return False, ""
    record(f"device transaction: {outcome.outcome}" + (f" ({outcome.detail})" if outcome.detail else ""))
    if outcome.outcome == "committed":
        return True, outcome.detail
    detail, logs = outcome.detail, []
    for u in changed:
        failed = engine.container(parked_names(u.container)[2])
        tail = engine.logs(failed.name, options.log_tail) if failed is not None else ""
        crash = crash_reason(failed, tail)
        if crash and crash not in detail:
            detail += f" ({u.container}: {crash})" if len(changed) > 1 else f" ({crash})"
        if tail:
            logs.append(tail if len(changed) == 1 else f"[{u.container}]\n{tail}")
    rep.log_tail = "\n".join(logs)
    restored = [engine.container(u.container) for u in changed]
    if outcome.outcome == "rolled-back" and all(c is not None for c in restored):
        down = [c.name for c in restored if c is not None and not c.running]
        back = "running again" if not down else f"NOT running ({', '.join(down)})"
        rep.result = Result.ROLLED_BACK
        rep.reason = f"new version unhealthy: {detail}; previous container{'s' if len(changed) > 1 else ''} {back}"
    else:
        rep.result = Result.FAILED
        rep.reason = f"new version unhealthy: {detail}; there was no previous container to restore"
    for svc in rep.services:
        svc["result"] = str(rep.result)
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
