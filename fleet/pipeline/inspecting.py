"""Commands that look at what the devices run, and tidy them: verify (is each device on its
planned child?), status (does it run what the last rollout intended?) and prune (drop
images of the app older than the previous release)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleet.compose import ServiceSpec
from fleet.deploy import DeviceJob, Unit, report_for
from fleet.deploy.devicetxn import parse_app_records
from fleet.deploy.jobs import verify_deadline
from fleet.executor import RemoteError
from fleet.executor.handlers_deploy import verify_payload
from fleet.history import History
from fleet.labels import LABEL
from fleet.pipeline.apps import AppImage, Planned, app_images, app_name, containers, device_jobs, resolve_stacks
from fleet.pipeline.rollouts import INSPECT_WORK
from fleet.pipeline.stages import Run, probe, where
from fleet.plan import Plan, plan_devices
from fleet.playbook import Playbook, RegistrySettings
from fleet.publish import PublishResult, read_published
from fleet.registry import Reference
from fleet.results import DeviceReport, Result
from fleet.verify import Expected

__all__ = ["verify", "verify_app", "status", "StatusRow", "prune", "PruneRow", "PRUNE_WORK"]

#: Seconds removing a device's old images may take (besides opening the session): an SD
#: card deletes layers slowly.
PRUNE_WORK = 600.0


def verify(run: Run, published: PublishResult, name: str, *, log_tail: int = 10) -> list[DeviceReport]:
    """Verify every selected device against ``published`` (one image, container ``name``):
    probe it, pick its entry with the one chooser (:func:`fleet.plan.plan_devices`), then
    compare what its engine runs (:func:`fleet.deploy.verify_device`), after reporting and
    cleaning what an interrupted transaction left. Reports in inventory order."""
    probed = probe(run)
    platforms = [e.platform for e in published.entries]
    plans = {dp.host: dp for dp in plan_devices({p.host: p.detection for p in probed}, platforms,
                                                {p.host: p.detection.engine_version if p.detection else None
                                                 for p in probed},
                                                {p.host: p.error or "" for p in probed if p.facts is None})}
    jobs: dict[str, DeviceJob] = {}
    for p in probed:
        dp = plans[p.host]
        if p.facts is None or dp.error or dp.entry_index is None:
            continue
        entry = published.entries[dp.entry_index]
        unit = Unit(name, name, ServiceSpec(name=name), Expected.from_entry(published.repository,
                                                                               published.index_digest, entry), dp)
        jobs[p.host] = DeviceJob(p.host, (unit,), name, parse_app_records(p.facts.get("fleet_apps")).get(name))
    return _verify_jobs(run, probed, jobs, plans, log_tail)


def verify_app(run: Run, playbook: Playbook, *, log_tail: int = 10) -> tuple[list[DeviceReport], list[AppImage]]:
    """Verify every selected device against the app of ``playbook`` as its registries hold
    it now: each image's tag read back (built ones from the playbook's registry, picked
    ones from theirs), each device's entry in each picked with the one chooser, each of its
    containers compared. Returns the reports and the images read."""
    probed = probe(run)
    reachable = [p for p in probed if p.facts is not None]
    images = app_images(playbook)
    for img in images:
        img.published = read_published(img.reference, img.playbook.registry if img.built else RegistrySettings())
        platforms = [e.platform for e in img.published.entries]
        img.plan = Plan(tuple(platforms), {}, plan_devices(
            {p.host: p.detection for p in reachable}, platforms,
            {p.host: p.detection.engine_version if p.detection else None for p in reachable}), mode="published")
    planned = Planned(images, resolve_stacks(run, playbook, reachable))
    placed = [p for p in reachable if all(d.entry_index is not None for img in images
                                          for d in img.plan.devices if d.host == p.host)]  # type: ignore[union-attr]
    plans = {d.host: d for d in images[0].plan.devices}  # type: ignore[union-attr]
    return _verify_jobs(run, probed, device_jobs(playbook, planned, placed), plans, log_tail), images


def _verify_jobs(run: Run, probed, jobs: dict[str, DeviceJob], plans: dict, log_tail: int) -> list[DeviceReport]:
    reports: dict[str, DeviceReport] = {}
    for p in probed:
        dp = plans.get(p.host)
        rep = report_for(p.host, dp)
        reports[p.host] = rep
        if p.interrupted:
            rep.result, rep.reason = Result.INTERRUPTED, p.error or "interrupted"
        elif p.facts is None:
            rep.result, rep.reason = Result.UNREACHABLE, p.error or "probe failed"
        elif p.host not in jobs:
            rep.result, rep.reason = Result.FAILED, (dp.error if dp is not None and dp.error else
                                                     "no entry of the index fits this device")

    for p in probed:
        reports[p.host].worker, reports[p.host].site = p.worker, p.site
    works = [run.work(job.host, "verify", verify_payload(job, log_tail), verify_deadline(job, run.connect_seconds()))
             for job in jobs.values()]
    run.executor.preflight(works)
    for o in run.map(works, "verifying"):
        host = o.item.host
        rep = reports[host]
        worker, site = where(o)
        if o.ok and isinstance(o.value, dict):
            try:
                rep = reports[host] = DeviceReport.from_dict(o.value)
            except ValueError as e:  # a worker of another fleet version: its answer is not used
                rep.fail(RemoteError(f"unreadable report from worker {worker or '?'}: {e}"))
        elif o.interrupted:
            rep.result, rep.reason = Result.INTERRUPTED, o.error.reason
        else:
            rep.fail(o.error)
        rep.worker, rep.site = worker, site
    return [reports[p.host] for p in probed]


@dataclass
class StatusRow:
    """One device in ``fleet status``: what runs now (``deployment``, ``index_digest``,
    ``config_digest``, ``running``) against what the last rollout that reached it intended
    (``intended_deployment``, ``intended_index``, ``intended_kind``), and the ``state``:
    ``as intended``, ``drifted`` (another index or config than intended), ``not running``,
    ``missing``, ``no rollout recorded``, ``unreachable``; ``detail`` says more."""

    host: str
    state: str
    detail: str = ""
    deployment: str | None = None
    index_digest: str | None = None
    config_digest: str | None = None
    running: bool | None = None
    intended_deployment: str | None = None
    intended_index: str | None = None
    intended_kind: str | None = None
    worker: str | None = None
    site: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def status(run: Run, playbook: Playbook, history: History) -> list[StatusRow]:
    """``fleet status``: per selected device, what runs now against what the last deploy or
    rollback of the playbook's app intended (the history); changes nothing."""
    name = app_name(playbook)
    first = containers(playbook)[0]
    works = [run.work(h, "inspect", {"containers": [first]}, run.connect_seconds() + INSPECT_WORK)
             for h in run.hosts()]

    def row_of(host: str, c: dict[str, Any] | None) -> StatusRow:
        want = history.intended(name, host)
        row = StatusRow(host, "", intended_deployment=want["id"] if want else None,
                        intended_index=want["index_digest"] if want else None,
                        intended_kind=want["kind"] if want else None)
        if c is not None:
            labels = c["labels"]
            row.deployment = labels.get(LABEL["deployment"])
            row.index_digest = labels.get(LABEL["index"])
            row.config_digest = labels.get(LABEL["config"]) or c["image_id"]
            row.running = bool(c["running"]) and not c["restarting"]
        if want is None:
            row.state = "no rollout recorded"
        elif c is None:
            row.state, row.detail = "missing", f"no container {first}"
        elif (row.index_digest != want["index_digest"] if want["index_digest"]
              # a rollback records no index of its own: each device went back to its own
              # previous release, which it labels with the rollback's id
              else row.deployment != want["id"]) or (want["config_digest"] and
                                                     row.config_digest != want["config_digest"]):
            row.state = "drifted"
            intended = f"index {want['index_digest']}" if want["index_digest"] else f"deployment {want['id']}"
            row.detail = (f"runs deployment {row.deployment or '?'}, the last {want['kind']} "
                          f"({want['id']}, ended {want['result']}) intended {intended}")
        elif not row.running:
            row.state, row.detail = "not running", f"{c['status']}, exit code {c['exit_code']}"
        else:
            row.state = "as intended"
        return row

    rows = []
    for o in run.map(works, "reading"):
        host = o.item.host
        if o.ok:
            row = row_of(host, ((o.value or {}).get("containers") or {}).get(first))
        else:
            row = StatusRow(host, "unreachable" if not o.interrupted else "interrupted",
                            str(getattr(o.error, "reason", None) or o.error))
        row.worker, row.site = where(o)
        rows.append(row)
    return rows


@dataclass
class PruneRow:
    """One device in ``fleet prune``: ``removed`` and ``refused`` image IDs, ``error``,
    ``worker``/``site`` (who did it)."""

    host: str
    removed: list[str]
    refused: list[str]
    error: str | None = None
    worker: str | None = None
    site: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def prune(run: Run, playbook: Playbook) -> list[PruneRow]:
    """``fleet prune``: on every selected device, remove the images of the app's
    repository older than the previous release (``rollout.keep_images``)."""
    keep = playbook.rollout.keep_images
    pairs = [[Reference.parse(img.reference).name, container]
             for img, container in zip(app_images(playbook), containers(playbook))]
    works = [run.work(h, "prune", {"pairs": pairs, "keep": keep}, run.connect_seconds() + PRUNE_WORK)
             for h in run.hosts()]
    rows = []
    for o in run.map(works, "pruning"):
        if o.ok and isinstance(o.value, dict):
            row = PruneRow(o.item.host, list(o.value.get("removed") or []), list(o.value.get("refused") or []))
        else:
            row = PruneRow(o.item.host, [], [], str(getattr(o.error, "reason", None) or o.error))
        row.worker, row.site = where(o)
        rows.append(row)
    return rows
