"""Deploy and rollback over a fleet: batches, failure thresholds, rollback of what a stopped
rollout updated, history.

    probe -> plan -> publish ONE tag -> per batch (forks at a time): pull, check, device-side
    transaction, verify -> threshold? stop (later batches skipped; on_failure: rollback)

The decisions are :mod:`fleet.rollout`'s (pure); one device's work is
:func:`fleet.deploy.deploy_device`. A rollback is the same work aimed at the release a
device ran before (its container's ``io.fleet.previous-*`` labels) or at a named
deployment of the history, with the image already on the device (no download when it is
there).

Ctrl-C: no new device starts; devices already in their transaction are followed to their
outcome (they would finish anyway); a second Ctrl-C stops following at once, the devices
still finish by themselves.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Sequence

from fleet.compose import resolve_fleet
from fleet.deploy import App, DeployOptions, DeviceJob, Unit, report_for
from fleet.deploy.jobs import AuthRef, deploy_deadline, deploy_hooks
from fleet.errors import FleetError, UsageError
from fleet.executor import DeviceWork, RemoteError
from fleet.executor.handlers_deploy import deploy_payload
from fleet.history import History
from fleet.labels import LABEL
from fleet.output import progress_line
from fleet.pipeline.apps import AppImage, Planned, app_images, app_name, auth_for, device_jobs, plan_app, \
    publish_app, stack_job
from fleet.pipeline.stages import Probed, Run, probe, where
from fleet.plan import DevicePlan, Plan, plan_devices
from fleet.playbook import Playbook, RegistrySettings
from fleet.publish import PublishResult, read_published
from fleet.registry import Reference
from fleet.results import DeviceReport, Result, summary_line
from fleet.rollout import RolloutSpec, batches, threshold_crossed
from fleet.verify import Expected

__all__ = ["DeployRun", "deploy", "rollback", "INSPECT_WORK"]

#: Seconds reading a device's containers may take (besides opening the session).
INSPECT_WORK = 120.0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class DeployRun:
    """What one deploy or rollback did: ``deployment`` id, ``kind`` (deploy, rollback,
    check), ``playbook`` path, ``reference`` (the tag), ``index_digest``, ``started``/
    ``finished`` (ISO 8601 UTC), ``plan``, ``published``, ``devices`` (one
    :class:`DeviceReport` per selected device, inventory order), ``batches`` (host names per
    batch), ``stopped`` (which batch stopped the rollout and why), ``errors`` (why nothing
    was touched, when that is the case)."""

    deployment: str
    playbook: str
    reference: str
    check: bool
    started: str
    kind: str = "deploy"
    index_digest: str | None = None
    finished: str | None = None
    plan: Plan | None = None
    published: PublishResult | None = None
    planned: Planned | None = None
    devices: list[DeviceReport] = field(default_factory=list)
    batches: list[list[str]] = field(default_factory=list)
    stopped: str | None = None
    errors: list[str] = field(default_factory=list)
    summary_text: str | None = None

    @property
    def ok(self) -> bool:
        """Every device verified or unchanged (``--check``: would deploy or keep)."""
        if self.errors:
            return False
        return all(r.ok or (self.check and Result(r.result).ok_in_check) for r in self.devices)

    @property
    def interrupted(self) -> bool:
        return any(r.result is Result.INTERRUPTED for r in self.devices)

    @property
    def stragglers(self) -> list[str]:
        """Devices that did not end verified or unchanged (a retry file's content)."""
        return [r.host for r in self.devices if not r.ok]

    @property
    def summary(self) -> str:
        text = self.summary_text or summary_line([r.result for r in self.devices])
        return text + (f"; stopped at {self.stopped}" if self.stopped else "")

    def images(self) -> list[dict[str, Any]]:
        """Every image of the app as published or read: ``{"service", "reference",
        "index_digest", "built"}`` (one for a single container)."""
        if self.planned is None:
            return [{"service": None, "reference": self.reference, "index_digest": self.index_digest, "built": True}]
        return [{"service": i.service, "reference": i.published.reference if i.published else i.reference,
                 "index_digest": i.published.index_digest if i.published else None, "built": i.built}
                for i in self.planned.images]

    def to_dict(self) -> dict[str, Any]:
        """The saved report: ``{"deployment", "kind", "playbook", "reference",
        "index_digest", "check", "started", "finished", "plan", "publish", "images",
        "batches", "stopped", "devices", "summary", "ok", "errors"}``."""
        return {"deployment": self.deployment, "kind": self.kind, "playbook": self.playbook,
                "reference": self.reference, "index_digest": self.index_digest, "check": self.check,
                "started": self.started, "finished": self.finished,
                "plan": self.plan.to_dict() if self.plan else None,
                "publish": self.published.to_dict() if self.published else None,
                "images": self.images(), "batches": self.batches, "stopped": self.stopped,
                "devices": [r.to_dict() for r in self.devices], "summary": self.summary, "ok": self.ok,
                "errors": list(self.errors)}


def _row(o, host: str, plan_: DevicePlan | None, aborted: bool = False) -> DeviceReport:
    """The report of an executor's outcome (the handler's report, or its error classified
    by type), naming the worker and site that ran it. With ``aborted`` (a second Ctrl-C
    closed every session), a device that failed is reported interrupted: its failure is
    the closed link, and its transaction goes on by itself."""
    worker, site = where(o)
    if o.ok and isinstance(o.value, dict):
        try:
            rep = DeviceReport.from_dict(o.value)
        except ValueError as e:  # a worker of another fleet version: its answer is not used
            rep = report_for(host, plan_)
            rep.fail(RemoteError(f"unreadable report from worker {worker or '?'}: {e}"))
        rep.worker, rep.site = worker, site
        if aborted and rep.result in (Result.FAILED, Result.UNREACHABLE):
            rep.result = Result.INTERRUPTED
            rep.reason = (f"interrupted (Ctrl-C) while at work ({rep.reason}); if its transaction had started, "
                          "the device finishes it by itself (verify shows where it ended)")
        return rep
    rep = report_for(host, plan_)
    rep.seconds = round(o.seconds, 1)
    rep.worker, rep.site = worker, site
    if o.interrupted:
        rep.result, rep.reason = Result.INTERRUPTED, o.error.reason
    else:
        rep.fail(o.error)
    return rep


def _deploy_work(run: Run, job: DeviceJob, app: App, options: DeployOptions, *, check: bool = False,
                 kind: str = "deploy") -> DeviceWork:
    """The work item of one device's deploy (or rollback): its job, with the deadline what
    the job may take (:func:`fleet.deploy.jobs.deploy_deadline`)."""
    return run.work(job.host, kind, deploy_payload(job, app, options, check),
                    deploy_deadline(job, app, options, check_only=check, connect=run.connect_seconds()),
                    job.secret_names())


class _Rollout:
    """The batch loop shared by deploy and rollback: each batch's devices through
    ``work`` (forks at a time), each batch's results into the history, the threshold check,
    and what a crossed threshold means for later batches."""

    def __init__(self, run: Run, out: DeployRun, spec: RolloutSpec, options: DeployOptions,
                 history: History | None, on_done: Callable[[DeviceReport], None] | None, label: str):
        self.run, self.out, self.spec, self.options = run, out, spec, options
        self.history, self.on_done, self.label = history, on_done, label

    def go(self, order: Sequence[str], jobs: dict[str, DeviceJob], preset: dict[str, DeviceReport],
           work: Callable[[DeviceJob], DeviceWork], graceful: bool = True) -> dict[str, DeviceReport]:
        works = {h: work(jobs[h]) for h in order if h in jobs}
        # every device's job is checked before the first batch: what the executor would
        # refuse (a secret, a deadline) must not stop the rollout half way
        self.run.executor.preflight(list(works.values()))
        groups = batches(list(order), self.spec.batches)
        self.out.batches = [list(g) for g in groups]
        reports: dict[str, DeviceReport] = {}
        for n, hosts in enumerate(groups, 1):
            if self.out.stopped or any(r.result is Result.INTERRUPTED for r in reports.values()):
                skipped = []
                for h in hosts:
                    rep = report_for(h, jobs[h].plan if h in jobs else None)
                    rep.result = Result.SKIPPED
                    rep.reason = (f"not touched: the rollout stopped at {self.out.stopped}" if self.out.stopped
                                  else "not touched: the rollout was interrupted")
                    reports[h] = rep
                    skipped.append(rep)
                if self.history is not None:  # the history says why these devices were not updated
                    self.history.add_devices(self.out.deployment, skipped, n)
                continue
            if n > 1 and self.spec.pause:
                progress_line(f"batch {n - 1} done; pausing {self.spec.pause:g} s before batch {n} of {len(groups)}")
                time.sleep(self.spec.pause)
            todo = [works[h] for h in hosts if h in works]
            batch: list[DeviceReport] = [preset[h] for h in hosts if h in preset]

            def done(o) -> None:
                if self.on_done is not None:
                    self.on_done(_row(o, o.item.host, jobs[o.item.host].plan, self.run.connections.aborted))

            for o in self.run.map(todo, f"{self.label} batch {n}/{len(groups)}" if len(groups) > 1 else self.label,
                                  forks=self.options.forks, graceful=graceful, on_done=done):
                batch.append(_row(o, o.item.host, jobs[o.item.host].plan, self.run.connections.aborted))
            for rep in batch:
                reports[rep.host] = rep
            if self.history is not None:
                self.history.add_devices(self.out.deployment, batch, n)
            why = threshold_crossed([r.result for r in batch], self.spec)
            if why and n < len(groups):
                self.out.stopped = f"batch {n} of {len(groups)}: {why}"
            elif why:
                self.out.stopped = f"batch {n} of {len(groups)} (the last): {why}"
        return {h: reports[h] for h in order if h in reports}


def _history_start(history: History | None, out: DeployRun, playbook: Playbook) -> None:
    if history is not None:
        history.start_run(out.deployment, out.kind, playbook=out.playbook, app=app_name(playbook),
                          reference=out.reference, index_digest=out.index_digest, started=out.started,
                          publish=out.published.to_dict() if out.published else None)


def _history_end(history: History | None, out: DeployRun) -> None:
    if history is not None:
        history.update_run(out.deployment, finished=out.finished, summary=out.summary, ok=int(out.ok),
                           stopped=out.stopped, index_digest=out.index_digest, reference=out.reference,
                           publish=out.published.to_dict() if out.published else None, images=out.images())


@contextmanager
def _history_open(history: History | None, out: DeployRun) -> Iterator[None]:
    """Close the run's history row when what happens between its start and its end raises
    (a bug, a broker gone, a full disk): ``ok`` 0 and ``stopped`` "aborted: ..." with the
    error, instead of a row that reads as still running forever. The error goes on up."""
    try:
        yield
    except BaseException as exc:
        if history is not None:
            what = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
            try:
                history.update_run(out.deployment, finished=_now(), ok=0, stopped=f"aborted: {what}"[:500],
                                   summary="aborted")
            except Exception:  # the history itself failing must not hide the first error
                pass
        raise


def deploy(run: Run, playbook: Playbook, *, check: bool = False, options: DeployOptions | None = None,
           published: PublishResult | None = None, rollout: RolloutSpec | None = None,
           history: History | None = None, log: Callable[[str], None] = lambda s: None,
           on_done: Callable[[DeviceReport], None] | None = None) -> DeployRun:
    """The whole deploy: probe, plan (and resolve each device's Compose values), publish
    every built image as ONE multi-arch tag (unless ``check``), then the devices batch by
    batch (``rollout``, default the playbook's): pull by digest, check, the device-side
    transaction, verify (:func:`fleet.deploy.deploy_device`).

    A device the probe could not reach is "unreachable" in its batch (and counts against
    the threshold). ``published``: an already published index to roll out instead of
    publishing the playbook (tests use it to push an index around fleet's own checks). A
    plan with errors (an undecided device, a platform no entry fits, a missing required
    value) returns ``errors`` before anything is published or any device is touched.
    """
    options = options or DeployOptions()
    spec = rollout or playbook.rollout
    out = DeployRun(options.deployment, str(playbook.path), playbook.image or app_name(playbook), check, _now(),
                    kind="check" if check else "deploy")
    explicit = [e.platform for e in published.entries] if published is not None else []
    probed = probe(run)
    planned = plan_app(run, playbook, probed, explicit)
    out.planned = planned
    out.plan = planned.main.plan
    if planned.errors:
        out.errors = planned.errors + ["nothing published, no device touched"]
        out.summary_text = "plan has errors: nothing published, no device touched"
        return out
    opts = options if check or options.keep_images is None else replace(options, keep_images=spec.keep_images)
    # what the executor refuses (a secret in a job, a deadline above the workers') stops
    # the run before anything is published
    draft = App(playbook.image or app_name(playbook), playbook.name, playbook.health)
    run.executor.preflight([_deploy_work(run, job, draft, opts, check=check)
                            for job in device_jobs(playbook, planned, probed, check=True).values()])
    if published is not None:
        planned.main.published = published
    elif not check:
        publish_app(run, planned, log)
    main = planned.main.published
    if main is not None:
        out.published, out.index_digest, out.reference = main, main.index_digest, main.reference
        if options.hooks.after_publish:
            options.hooks.after_publish(main)
    app = App(out.reference, playbook.name, playbook.health)
    jobs = device_jobs(playbook, planned, probed, check=check)
    preset = {p.host: _unreachable(p) for p in probed if p.facts is None}
    if not check:
        _history_start(history, out, playbook)
    with _history_open(None if check else history, out):
        roll = _Rollout(run, out, spec if not check else RolloutSpec(), opts, None if check else history, on_done,
                        "checking" if check else "deploying")
        with deploy_hooks(opts.deployment, opts.hooks):
            reports = roll.go([p.host for p in probed], jobs, preset,
                              lambda job: _deploy_work(run, job, app, opts, check=check), graceful=not check)
        by_host = {p.host: p for p in probed}
        if out.stopped and spec.on_failure == "rollback" and not check:
            updated = [h for h, r in reports.items() if r.result is Result.VERIFIED]
            if updated:
                progress_line(f"rollout stopped at {out.stopped}: rolling back {len(updated)} updated device(s)")
                back = _roll_back(run, playbook, updated, options, reason=out.stopped, by_host=by_host)
                for h, rep in back.items():
                    reports[h] = rep
                if history is not None:
                    history.add_devices(out.deployment, list(back.values()))
    out.devices = list(reports.values())
    out.finished = _now()
    if not check:
        _history_end(history, out)
    return out


def _unreachable(p: Probed) -> DeviceReport:
    rep = DeviceReport(p.host, worker=p.worker, site=p.site)
    if p.interrupted:
        rep.result, rep.reason = Result.INTERRUPTED, p.error or "interrupted"
    else:
        rep.result, rep.reason = Result.UNREACHABLE, p.error or "probe failed"
    rep.seconds = round(p.seconds, 1)
    return rep


def _roll_back(run: Run, playbook: Playbook, hosts: Sequence[str], options: DeployOptions, *,
               reason: str, by_host: dict[str, Probed]) -> dict[str, DeviceReport]:
    """Return ``hosts`` to the release each ran before this one (on_failure: rollback)."""
    sub = replace(options, deployment=options.deployment + "-rollback", keep_images=None)
    out = DeployRun(sub.deployment, str(playbook.path), out_reference(playbook), False, _now(), kind="rollback")
    reports = _rollback_devices(run, playbook, [by_host[h] for h in hosts], None, sub, None, out, None)
    for rep in reports.values():
        if rep.result is Result.VERIFIED:
            rep.result = Result.ROLLED_BACK
            rep.reason = f"rolled back to deployment {(rep.previous or {}).get('deployment') or '?'} because the " \
                         f"rollout stopped at {reason}"
    return reports


def out_reference(playbook: Playbook) -> str:
    return playbook.image or app_name(playbook)


def rollback(run: Run, playbook: Playbook, *, to: str | None = None, options: DeployOptions | None = None,
             rollout: RolloutSpec | None = None, history: History | None = None,
             on_done: Callable[[DeviceReport], None] | None = None) -> DeployRun:
    """``fleet rollback``: every selected device back to what it ran before its current
    deployment (its container's ``io.fleet.previous-*`` labels), or to deployment ``to`` of
    the history; with the image already on the device when it is there (no download), and
    through the same device-side transaction and verification as a deploy."""
    options = replace(options or DeployOptions(), keep_images=None)
    out = DeployRun(options.deployment, str(playbook.path), out_reference(playbook), False, _now(), kind="rollback")
    target = None
    if to is not None:
        if history is None:
            raise UsageError("--to needs the history of deployments")
        target = history.run(to)
        if target is None or not target.get("index_digest"):
            raise UsageError(f"--to {to}: no deployment with that id in the history ({history.path})")
    probed = probe(run)
    _history_start(history, out, playbook)
    with _history_open(history, out):
        reports = _rollback_devices(run, playbook, probed, target, options, history, out, on_done,
                                    spec=rollout or playbook.rollout)
    out.devices = list(reports.values())
    out.finished = _now()
    _history_end(history, out)
    return out


def _rollback_devices(run: Run, playbook: Playbook, probed: Sequence[Probed], target: dict | None,
                      options: DeployOptions, history: History | None, out: DeployRun,
                      on_done: Callable[[DeviceReport], None] | None,
                      spec: RolloutSpec = RolloutSpec()) -> dict[str, DeviceReport]:
    """Plan each device's way back (for each of the app's containers: which index, which
    entry) and run it batch by batch."""
    images = app_images(playbook)
    preset: dict[str, DeviceReport] = {}
    reachable = [p for p in probed if p.facts is not None]
    for p in probed:
        if p.facts is None:
            preset[p.host] = _unreachable(p)
    stacks = dict(resolve_fleet(playbook.compose, [run.connections.host(p.host) for p in reachable])) \
        if playbook.compose is not None else {}

    def containers(host: str) -> list[tuple[AppImage, str]]:
        stack = stacks.get(host)
        return [(img, playbook.container_spec.name if img.service is None else f"{stack.project}-{img.service}")
                for img in images]

    def where_to(host: str, states: dict[str, Any]) -> list[tuple[str, str]]:
        """(repository, index digest) to go back to, per container of the app, from what
        the device's containers record (the ``inspect`` handler's answer)."""
        found = []
        for img, container in containers(host):
            c = states.get(container)
            if c is None:
                raise FleetError(f"no container {container} on the device: nothing to roll back")
            index = c["labels"].get(LABEL["previous_index"])
            if not index:
                raise FleetError(f"container {container} records no previous release (io.fleet.previous-index-digest)")
            found.append((c["labels"].get(LABEL["repository"]) or Reference.parse(img.reference).name, index))
        return found

    wanted: dict[str, list[tuple[str, str]]] = {}
    if target is not None:
        tagged = {Reference.parse(r["reference"]).name: r["index_digest"] for r in target.get("images") or []}
        for p in reachable:
            wanted[p.host] = [(Reference.parse(img.reference).name,
                               tagged.get(Reference.parse(img.reference).name) or target["index_digest"])
                              for img, _ in containers(p.host)]
    else:
        works = [run.work(p.host, "inspect", {"containers": [c for _, c in containers(p.host)]},
                          deadline=run.connect_seconds() + INSPECT_WORK) for p in reachable]
        for o in run.map(works, "reading previous releases"):
            host = o.item.host
            try:
                if not o.ok:
                    raise o.error
                wanted[host] = where_to(host, (o.value or {}).get("containers") or {})
            except Exception as exc:  # one device's failure is its row
                preset[host] = _row(replace(o, value=None, error=exc) if o.ok else o, host, None)
    published: dict[tuple[str, str], PublishResult] = {}
    for repo, index in sorted({key for keys in wanted.values() for key in keys}):
        own = any(Reference.parse(i.reference).name == repo for i in images if i.built)
        published[(repo, index)] = read_published(f"{repo}@{index}", playbook.registry if own else RegistrySettings())
    jobs: dict[str, DeviceJob] = {}
    by_host = {p.host: p for p in probed}
    auths: dict[str, AuthRef | None] = {}
    for host, keys in wanted.items():
        p = by_host[host]
        units = []
        for (img, container), key in zip(containers(host), keys):
            pub = published[key]
            dp = plan_devices({host: p.detection}, [e.platform for e in pub.entries],
                              {host: p.detection.engine_version if p.detection else None})[0]
            if dp.error or dp.entry_index is None:
                rep = report_for(host, dp)
                rep.result, rep.reason = Result.FAILED, f"{container}: {dp.error or 'no entry'}"
                preset[host] = rep
                break
            entry = pub.entries[dp.entry_index]
            if pub.repository not in auths:
                auths[pub.repository] = auth_for(playbook, pub.repository)
            # (not "spec": that is the rollout's, used for the batches below)
            svc = playbook.container_spec.to_service() if img.service is None else stacks[host].services[img.service]
            units.append(Unit(img.service or container, container, svc,
                              Expected.from_entry(pub.repository, pub.index_digest, entry), dp, entry.size,
                              auths[pub.repository]))
        else:
            jobs[host] = stack_job(host, units, app_name(playbook), p.facts, stacks.get(host))
    app = App(out.reference, playbook.name, playbook.health)
    return _Rollout(run, out, spec, options, history, on_done, "rolling back").go(
        [p.host for p in probed], jobs, preset, lambda job: _deploy_work(run, job, app, options, kind="rollback"))
