"""Commands that look at what the devices run, and tidy them: verify (is each device on its
planned child?), status (does it run what the last rollout intended?) and prune (drop
images of the app older than the previous release)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleet.deploy import DeviceLink, report_for, verify_device
from fleet.deploy.devicetxn import parse_app_records
from fleet.deploy.prune import prune_app
from fleet.fanout import run_each
from fleet.history import History
from fleet.labels import LABEL
from fleet.pipeline.stages import Run, costed, probe
from fleet.plan import plan_devices
from fleet.playbook import Playbook
from fleet.publish import PublishResult
from fleet.registry import Reference
from fleet.results import DeviceReport, Result
from fleet.verify import Expected

__all__ = ["verify", "status", "StatusRow", "prune", "PruneRow"]


def _link(run: Run, host: str) -> DeviceLink:
    return DeviceLink(lambda: run.connections.session(host), run.connections.target(host).become)


def verify(run: Run, published: PublishResult, name: str, *, log_tail: int = 10) -> list[DeviceReport]:
    """Verify every selected device against ``published``: probe it, pick its entry with
    the one chooser (:func:`fleet.plan.plan_devices`), then compare what its engine runs as
    container ``name`` (:func:`fleet.deploy.verify_device`), after reporting and cleaning
    what an interrupted transaction left. Reports in inventory order."""
    probed = probe(run)
    platforms = [e.platform for e in published.entries]
    plans = {dp.host: dp for dp in plan_devices({p.host: p.detection for p in probed}, platforms,
                                                {p.host: p.detection.engine_version if p.detection else None
                                                 for p in probed},
                                                {p.host: p.error or "" for p in probed if p.facts is None})}
    reports: dict[str, DeviceReport] = {}
    jobs: list[tuple[DeviceReport, Expected, Any]] = []
    for p in probed:
        dp = plans[p.host]
        rep = report_for(p.host, dp)
        reports[p.host] = rep
        if p.interrupted:
            rep.result, rep.reason = Result.INTERRUPTED, p.error or "interrupted"
        elif p.facts is None:
            rep.result, rep.reason = Result.UNREACHABLE, p.error or "probe failed"
        elif dp.error or dp.entry_index is None:
            rep.result, rep.reason = Result.FAILED, dp.error or "no entry"
        else:
            entry = published.entries[dp.entry_index]
            record = parse_app_records(p.facts.get("fleet_apps")).get(name)
            jobs.append((rep, Expected.from_entry(published.repository, published.index_digest, entry), record))

    def one(job) -> DeviceReport:
        rep, expected, record = job
        engine = run.connections.engine(rep.host)
        return costed(engine, lambda: verify_device(engine, rep, expected, name, log_tail=log_tail,
                                                    link=_link(run, rep.host), record=record))

    for o in run_each(jobs, one, run.selection.forks, "verifying", on_interrupt=run.connections.abort):
        if not o.ok:
            rep = o.item[0]
            if o.interrupted:
                rep.result, rep.reason = Result.INTERRUPTED, o.error.reason
            else:
                rep.fail(o.error)
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

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def status(run: Run, playbook: Playbook, history: History) -> list[StatusRow]:
    """``fleet status``: per selected device, what runs now against what the last deploy or
    rollback of the playbook's app intended (the history); changes nothing."""
    name = playbook.container_spec.name
    hosts = run.hosts()

    def one(host: str) -> StatusRow:
        c = run.connections.engine(host).container(name)
        want = history.intended(name, host)
        row = StatusRow(host, "", intended_deployment=want["id"] if want else None,
                        intended_index=want["index_digest"] if want else None,
                        intended_kind=want["kind"] if want else None)
        if c is not None:
            row.deployment = c.labels.get(LABEL["deployment"])
            row.index_digest = c.labels.get(LABEL["index"])
            row.config_digest = c.labels.get(LABEL["config"]) or c.image_id
            row.running = c.running and not c.restarting
        if want is None:
            row.state = "no rollout recorded"
        elif c is None:
            row.state, row.detail = "missing", f"no container {name}"
        elif row.index_digest != want["index_digest"] or (want["config_digest"] and
                                                          row.config_digest != want["config_digest"]):
            row.state = "drifted"
            row.detail = (f"runs deployment {row.deployment or '?'}, the last {want['kind']} "
                          f"({want['id']}, ended {want['result']}) intended index {want['index_digest']}")
        elif not row.running:
            row.state, row.detail = "not running", f"{c.status}, exit code {c.exit_code}"
        else:
            row.state = "as intended"
        return row

    rows = []
    for o in run_each(hosts, one, run.selection.forks, "reading", on_interrupt=run.connections.abort):
        rows.append(o.value if o.ok else StatusRow(o.item, "unreachable" if not o.interrupted else "interrupted",
                                                   str(getattr(o.error, "reason", None) or o.error)))
    return rows


@dataclass
class PruneRow:
    """One device in ``fleet prune``: ``removed`` and ``refused`` image IDs, ``error``."""

    host: str
    removed: list[str]
    refused: list[str]
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def prune(run: Run, playbook: Playbook) -> list[PruneRow]:
    """``fleet prune``: on every selected device, remove the images of the app's
    repository older than the previous release (``rollout.keep_images``)."""
    name = playbook.container_spec.name
    repository = Reference.parse(playbook.image).name
    keep = playbook.rollout.keep_images

    def one(host: str) -> PruneRow:
        engine = run.connections.engine(host)
        c = engine.container(name)
        keep_ids = {c.image_id, c.labels.get(LABEL["previous_config"], "")} if c is not None else set()
        removed, refused = prune_app(engine, repository, keep_ids, keep)
        return PruneRow(host, removed, refused)

    rows = []
    for o in run_each(run.hosts(), one, run.selection.forks, "pruning", on_interrupt=run.connections.abort):
        rows.append(o.value if o.ok else PruneRow(o.item, [], [], str(getattr(o.error, "reason", None) or o.error)))
    return rows
