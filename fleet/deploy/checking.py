"""Verify on ONE device: does each of the app's containers run the child of the index
that was planned for it? After reporting, and cleaning, what an interrupted transaction
left behind."""

from __future__ import annotations

import time

from fleet.deploy import txn
from fleet.deploy.container import LABEL, parked_names
from fleet.deploy.device import report_unattended, unit_report
from fleet.deploy.jobs import DeviceJob, DeviceLink
from fleet.deploy.remote import TxnClient
from fleet.deploy.view import observe
from fleet.engine import Engine
from fleet.results import DeviceReport, Result
from fleet.verify import check_container, check_image, verdict

__all__ = ["verify_device"]

# worst first: a device's result is the worst of its containers'
_SEVERITY = [Result.VERIFIED, Result.CRASHED, Result.DRIFTED, Result.MISSING]


def verify_device(engine: Engine, rep: DeviceReport, job: DeviceJob, *, log_tail: int = 10,
                  link: DeviceLink | None = None) -> DeviceReport:
    """Fill ``rep`` with what ``engine`` runs for each unit of ``job`` against its planned
    entry: checks, config digest, pulled child (from the container's label), log tail, and
    the verdict (verified, drifted, crashed, missing; the worst of the units').

    With ``link``, leftovers of an interrupted transaction are reported and cleaned first,
    never leaving the device without its app: a transaction that ended unattended is
    reported (``job.record``); when no transaction holds the app, ``NAME.previous`` gets
    its name back and runs if ``NAME`` is gone, and a never-started ``NAME.new`` is removed.
    """
    t0 = time.monotonic()
    if link is not None:
        unattended = report_unattended(job.record, rep)
        if job.record is not None and job.record.lock:
            rep.actions.append(f"deployment {job.record.lock} holds {job.app} on this device: leftovers not touched")
        else:
            for u in job.units:
                _clean_leftovers(engine, u.container, rep)
        if unattended:
            TxnClient(link.session, job.app, "-", link.become).mark_collected()
    rep.services = []
    results, reasons = [], []
    for u in job.units:
        view = observe(engine, u.container, u.expected, planned=False, logs=log_tail, leftovers=False)
        checks = check_image(u.expected, view.current_image, view.store) if view.current is not None else []
        checks += check_container(u.expected, view.current, view.current_image, view.store, view.logs)
        result, reason = verdict(checks)
        svc = unit_report(u)
        svc.update(result=str(result), reason=reason, checks=[c.to_dict() for c in checks],
                   config_digest=view.current_image.id if view.current_image else None,
                   pulled=view.current.labels.get(LABEL["manifest"]) if view.current else None)
        rep.services.append(svc)
        results.append(result)
        if reason:
            reasons.append(f"{u.container}: {reason}" if len(job.units) > 1 else reason)
        if u is job.units[0]:
            rep.checks, rep.log_tail = svc["checks"], view.logs
            rep.config_digest, rep.pulled = svc["config_digest"], svc["pulled"]
            first = view.current
    rep.result = max(results, key=lambda r: _SEVERITY.index(r) if r in _SEVERITY else len(_SEVERITY))
    rep.reason = "; ".join(reasons) or (f"deployment {first.labels.get(LABEL['deployment'], '-')}"
                                        if first is not None else "")
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
