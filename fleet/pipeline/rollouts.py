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
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from fleet.deploy import App, DeployOptions, DeviceJob, DeviceLink, deploy_device, report_for
from fleet.deploy.devicetxn import AppRecord, parse_app_records
from fleet.engine import PullAuth
from fleet.errors import FleetError, UsageError
from fleet.fanout import run_each
from fleet.history import History
from fleet.labels import LABEL
from fleet.output import progress_line
from fleet.pipeline.stages import Probed, Run, costed, plan, probe, publish
from fleet.plan import DevicePlan, Plan, plan_devices
from fleet.playbook import Playbook, RegistrySettings
from fleet.publish import PublishResult, read_published, registry_credentials
from fleet.registry import Reference
from fleet.results import DeviceReport, Result, summary_line
from fleet.rollout import RolloutSpec, batches, threshold_crossed
from fleet.verify import Expected

__all__ = ["DeployRun", "deploy", "rollback"]


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

    def to_dict(self) -> dict[str, Any]:
        """The saved report: ``{"deployment", "kind", "playbook", "reference",
        "index_digest", "check", "started", "finished", "plan", "publish", "batches",
        "stopped", "devices", "summary", "ok", "errors"}``."""
        return {"deployment": self.deployment, "kind": self.kind, "playbook": self.playbook,
                "reference": self.reference, "index_digest": self.index_digest, "check": self.check,
                "started": self.started, "finished": self.finished,
                "plan": self.plan.to_dict() if self.plan else None,
                "publish": self.published.to_dict() if self.published else None,
                "batches": self.batches, "stopped": self.stopped,
                "devices": [r.to_dict() for r in self.devices], "summary": self.summary, "ok": self.ok,
                "errors": list(self.errors)}


def _auth(playbook: Playbook, repository: str) -> PullAuth | None:
    registry = Reference.parse(repository).registry
    creds = registry_credentials(playbook.registry, registry)
    return PullAuth(registry, creds) if creds else None


def _records(p: Probed, app: str) -> AppRecord | None:
    return parse_app_records((p.facts or {}).get("fleet_apps")).get(app)


def _row(o, host: str, plan_: DevicePlan | None) -> DeviceReport:
    """The report of a fan-out outcome (its value, or its error classified by type)."""
    if o.ok and o.value is not None:
        return o.value
    rep = report_for(host, plan_)
    rep.seconds = round(o.seconds, 1)
    if o.interrupted:
        rep.result, rep.reason = Result.INTERRUPTED, o.error.reason
    else:
        rep.fail(o.error)
    return rep


class _Rollout:
    """The batch loop shared by deploy and rollback: each batch's devices through
    ``work`` (forks at a time), each batch's results into the history, the threshold check,
    and what a crossed threshold means for later batches."""

    def __init__(self, run: Run, out: DeployRun, spec: RolloutSpec, options: DeployOptions,
                 history: History | None, on_done: Callable[[DeviceReport], None] | None, label: str):
        self.run, self.out, self.spec, self.options = run, out, spec, options
        self.history, self.on_done, self.label = history, on_done, label

    def go(self, order: Sequence[str], jobs: dict[str, DeviceJob], preset: dict[str, DeviceReport],
           work: Callable[[DeviceJob], DeviceReport], graceful: bool = True) -> dict[str, DeviceReport]:
        groups = batches(list(order), self.spec.batches)
        self.out.batches = [list(g) for g in groups]
        reports: dict[str, DeviceReport] = {}
        for n, hosts in enumerate(groups, 1):
            if self.out.stopped or any(r.result is Result.INTERRUPTED for r in reports.values()):
                for h in hosts:
                    rep = report_for(h, jobs[h].plan if h in jobs else None)
                    rep.result = Result.SKIPPED
                    rep.reason = (f"not touched: the rollout stopped at {self.out.stopped}" if self.out.stopped
                                  else "not touched: the rollout was interrupted")
                    reports[h] = rep
                continue
            if n > 1 and self.spec.pause:
                progress_line(f"batch {n - 1} done; pausing {self.spec.pause:g} s before batch {n} of {len(groups)}")
                time.sleep(self.spec.pause)
            todo = [jobs[h] for h in hosts if h in jobs]
            batch: list[DeviceReport] = [preset[h] for h in hosts if h in preset]

            def done(o) -> None:
                if self.on_done is not None:
                    self.on_done(_row(o, o.item.host, o.item.plan))

            for o in run_each(todo, work, self.options.forks,
                              f"{self.label} batch {n}/{len(groups)}" if len(groups) > 1 else self.label,
                              on_interrupt=self.run.connections.abort, graceful=graceful, on_done=done):
                batch.append(_row(o, o.item.host, o.item.plan))
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
        history.start_run(out.deployment, out.kind, playbook=out.playbook, app=playbook.container_spec.name,
                          reference=out.reference, index_digest=out.index_digest, started=out.started,
                          publish=out.published.to_dict() if out.published else None)


def _history_end(history: History | None, out: DeployRun) -> None:
    if history is not None:
        history.update_run(out.deployment, finished=out.finished, summary=out.summary, ok=int(out.ok),
                           stopped=out.stopped, index_digest=out.index_digest, reference=out.reference,
                           publish=out.published.to_dict() if out.published else None)


def deploy(run: Run, playbook: Playbook, *, check: bool = False, options: DeployOptions | None = None,
           published: PublishResult | None = None, rollout: RolloutSpec | None = None,
           history: History | None = None, log: Callable[[str], None] = lambda s: None,
           on_done: Callable[[DeviceReport], None] | None = None) -> DeployRun:
    """The whole deploy: probe, plan, publish ONE tag (unless ``check``), then the devices
    batch by batch (``rollout``, default the playbook's): pull by digest, check, the
    device-side transaction, verify (:func:`fleet.deploy.deploy_device`).

    A device the probe could not reach is "unreachable" in its batch (and counts against
    the threshold). ``published``: an already published index to roll out instead of
    publishing the playbook (tests use it to push an index around fleet's own checks). A
    plan with errors (an undecided device, a platform no entry fits) returns ``errors``
    before anything is published or any device is touched.
    """
    options = options or DeployOptions()
    spec = rollout or playbook.rollout
    out = DeployRun(options.deployment, str(playbook.path), playbook.image, check, _now(),
                    kind="check" if check else "deploy")
    explicit = [e.platform for e in published.entries] if published is not None else []
    probed = probe(run)
    reachable = [p for p in probed if p.facts is not None]
    planned = plan(playbook, reachable, explicit)
    out.plan = planned
    if planned.errors:
        out.errors = planned.errors + ["nothing published, no device touched"]
        out.summary_text = "plan has errors: nothing published, no device touched"
        return out
    result = published if published is not None or check else publish(playbook, planned, run, log=log)
    if result is not None:
        out.published, out.index_digest, out.reference = result, result.index_digest, result.reference
        if options.hooks.after_publish:
            options.hooks.after_publish(result)
    repository = result.repository if result is not None else Reference.parse(playbook.image).name
    app = App(out.reference, playbook.name, playbook.container_spec, playbook.health,
              None if check else _auth(playbook, repository))
    name = app.spec.name
    jobs: dict[str, DeviceJob] = {}
    by_host = {p.host: p for p in probed}
    for dp in planned.devices:
        assert dp.entry_index is not None  # a plan without errors places every device
        if result is not None:
            entry = result.entries[dp.entry_index]
            expected = Expected.from_entry(result.repository, result.index_digest, entry)
            size = entry.size
        else:
            assert dp.entry_platform is not None
            expected, size = Expected(repository, "sha256:(this publish)", dp.entry_platform, "", "", ()), 0
        jobs[dp.host] = DeviceJob(dp.host, dp, expected, size, _records(by_host[dp.host], name))
    preset = {p.host: _unreachable(p) for p in probed if p.facts is None}
    if not check:
        _history_start(history, out, playbook)
    opts = options if check or options.keep_images is None else replace(options, keep_images=spec.keep_images)

    def work(job: DeviceJob) -> DeviceReport:
        link = DeviceLink(lambda: run.connections.session(job.host), run.connections.target(job.host).become)
        engine = run.connections.engine(job.host)
        return costed(engine, lambda: deploy_device(engine, job, app, opts, link, check_only=check))

    roll = _Rollout(run, out, spec if not check else RolloutSpec(), opts, None if check else history, on_done,
                    "checking" if check else "deploying")
    reports = roll.go([p.host for p in probed], jobs, preset, work, graceful=not check)
    if out.stopped and spec.on_failure == "rollback" and not check:
        updated = [h for h, r in reports.items() if r.result is Result.VERIFIED]
        if updated:
            progress_line(f"rollout stopped at {out.stopped}: rolling back {len(updated)} updated device(s)")
            back = _roll_back(run, playbook, updated, options, history=None, reason=out.stopped,
                              by_host=by_host)
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
    rep = DeviceReport(p.host)
    if p.interrupted:
        rep.result, rep.reason = Result.INTERRUPTED, p.error or "interrupted"
    else:
        rep.result, rep.reason = Result.UNREACHABLE, p.error or "probe failed"
    rep.seconds = round(p.seconds, 1)
    return rep


def _roll_back(run: Run, playbook: Playbook, hosts: Sequence[str], options: DeployOptions, *,
               history: History | None, reason: str, by_host: dict[str, Probed]) -> dict[str, DeviceReport]:
    """Return ``hosts`` to the release each ran before this one (on_failure: rollback)."""
    sub = replace(options, deployment=options.deployment + "-rollback", keep_images=None)
    out = DeployRun(sub.deployment, str(playbook.path), playbook.image, False, _now(), kind="rollback")
    reports = _rollback_devices(run, playbook, [by_host[h] for h in hosts], None, sub, history, out, None)
    for rep in reports.values():
        if rep.result is Result.VERIFIED:
            rep.result = Result.ROLLED_BACK
            rep.reason = f"rolled back to deployment {(rep.previous or {}).get('deployment') or '?'} because the " \
                         f"rollout stopped at {reason}"
    return reports


def rollback(run: Run, playbook: Playbook, *, to: str | None = None, options: DeployOptions | None = None,
             rollout: RolloutSpec | None = None, history: History | None = None,
             on_done: Callable[[DeviceReport], None] | None = None) -> DeployRun:
    """``fleet rollback``: every selected device back to what it ran before its current
    deployment (its container's ``io.fleet.previous-*`` labels), or to deployment ``to`` of
    the history; with the image already on the device when it is there (no download), and
    through the same device-side transaction and verification as a deploy."""
    options = replace(options or DeployOptions(), keep_images=None)
    out = DeployRun(options.deployment, str(playbook.path), playbook.image, False, _now(), kind="rollback")
    target = None
    if to is not None:
        if history is None:
            raise UsageError("--to needs the history of deployments")
        target = history.run(to)
        if target is None or not target.get("index_digest"):
            raise UsageError(f"--to {to}: no deployment with that id in the history ({history.path})")
    probed = probe(run)
    _history_start(history, out, playbook)
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
    """Plan each device's way back (which index, which entry) and run it batch by batch."""
    name = playbook.container_spec.name
    preset: dict[str, DeviceReport] = {}
    wanted: dict[str, tuple[str, str]] = {}  # host -> (repository, index digest)
    reachable = [p for p in probed if p.facts is not None]
    for p in probed:
        if p.facts is None:
            preset[p.host] = _unreachable(p)

    def where_to(p: Probed) -> tuple[str, str] | None:
        if target is not None:
            return Reference.parse(target["reference"]).name, target["index_digest"]
        c = run.connections.engine(p.host).container(name)
        if c is None:
            raise FleetError(f"no container {name} on the device: nothing to roll back")
        index = c.labels.get(LABEL["previous_index"])
        repo = c.labels.get(LABEL["repository"]) or Reference.parse(playbook.image).name
        if not index:
            raise FleetError(f"container {name} records no previous release (io.fleet.previous-index-digest)")
        return repo, index

    for o in run_each(reachable, where_to, run.selection.forks, "reading previous releases",
                      on_interrupt=run.connections.abort):
        if o.ok and o.value is not None:
            wanted[o.item.host] = o.value
        else:
            preset[o.item.host] = _row(o, o.item.host, None)
    published: dict[tuple[str, str], PublishResult] = {}
    for repo, index in sorted(set(wanted.values())):
        settings = playbook.registry if repo == Reference.parse(playbook.image).name else RegistrySettings()
        published[(repo, index)] = read_published(f"{repo}@{index}", settings)
    jobs: dict[str, DeviceJob] = {}
    by_host = {p.host: p for p in probed}
    for host, key in wanted.items():
        pub = published[key]
        p = by_host[host]
        dp = plan_devices({host: p.detection}, [e.platform for e in pub.entries],
                          {host: p.detection.engine_version if p.detection else None})[0]
        if dp.error or dp.entry_index is None:
            rep = report_for(host, dp)
            rep.result, rep.reason = Result.FAILED, dp.error or "no entry"
            preset[host] = rep
            continue
        entry = pub.entries[dp.entry_index]
        jobs[host] = DeviceJob(host, dp, Expected.from_entry(pub.repository, pub.index_digest, entry), entry.size,
                               _records(p, name))
    apps = {pub.index_digest: App(pub.reference, playbook.name, playbook.container_spec, playbook.health,
                                  _auth(playbook, pub.repository)) for pub in published.values()}

    def work(job: DeviceJob) -> DeviceReport:
        link = DeviceLink(lambda: run.connections.session(job.host), run.connections.target(job.host).become)
        app = apps[job.expected.index_digest]
        engine = run.connections.engine(job.host)
        rep = costed(engine, lambda: deploy_device(engine, job, app, options, link))
        if any(a.startswith("pull ") for a in rep.actions):
            rep.actions.append("the previous release's image was no longer on the device: pulled it")
        return rep

    return _Rollout(run, out, spec, options, history, on_done, "rolling back").go(
        [p.host for p in probed], jobs, preset, work)
