"""The ``deploy``, ``rollback`` and ``verify`` handlers: one device's deploy, rollback or
verify, wherever the executor runs it.

Payloads (all JSON, :mod:`fleet.deploy.jobs`)::

    deploy, rollback: {"job": DeviceJob.to_dict(), "app": App.to_dict(),
                       "options": DeployOptions.to_dict(), "check_only": bool}
    verify:           {"job": DeviceJob.to_dict(), "log_tail": N, "clean": bool}

Result: the device's :class:`fleet.results.DeviceReport` as :meth:`~DeviceReport.to_dict`
gives it (the controller rebuilds it with :meth:`~DeviceReport.from_dict` and adds who ran
it). A device whose deploy fails is a report saying so (``failed``, ``refused``,
``rolled-back``, ``unreachable``...), as :func:`fleet.deploy.deploy_device` reports it;
the handler raises only for a malformed job (:class:`fleet.deploy.jobs.JobFormatError`).

The work reaches the device through ``ctx``: its session (the run's own on the
controller, reused from the probe; the worker's own at a site), its engine, and the
registry credentials the job names by reference (``ctx.registry_credentials``: the
controller's environment and Docker config locally, the worker's at a site).
"""

from __future__ import annotations

from typing import Any

from fleet.deploy import App, DeployOptions, DeviceJob, DeviceLink, deploy_device, report_for, verify_device
from fleet.deploy.jobs import AuthRef, JobFormatError
from fleet.engine import PullAuth
from fleet.executor.handlers import WorkerContext, register
from fleet.executor.work import DeviceWork

__all__ = ["deploy_handler", "rollback_handler", "verify_handler", "deploy_payload", "verify_payload"]

#: What a rollback adds to a report when the release it went back to had to be downloaded.
REPULLED = "the previous release's image was no longer on the device: pulled it"


def deploy_payload(job: DeviceJob, app: App, options: DeployOptions, check_only: bool = False) -> dict[str, Any]:
    """The payload of a ``deploy`` or ``rollback`` work item (module docstring)."""
    return {"job": job.to_dict(), "app": app.to_dict(), "options": options.to_dict(), "check_only": bool(check_only)}


def verify_payload(job: DeviceJob, log_tail: int = 10, clean: bool = True) -> dict[str, Any]:
    """The payload of a ``verify`` work item (module docstring)."""
    return {"job": job.to_dict(), "log_tail": int(log_tail), "clean": bool(clean)}


def _job(work: DeviceWork) -> DeviceJob:
    job = DeviceJob.from_dict(work.payload.get("job"))
    if job.host != work.host:
        raise JobFormatError(f"the job is for {job.host!r}, the work item for {work.host!r}")
    return job


def _link(ctx: WorkerContext) -> DeviceLink:
    return DeviceLink(ctx.session, ctx.target().become)


def _credentials(ctx: WorkerContext):
    def resolve(ref: AuthRef) -> PullAuth | None:
        creds = ctx.registry_credentials(ref.registry, ref.settings())
        return PullAuth(ref.registry, creds) if creds else None

    return resolve


def _costed(ctx: WorkerContext, work) -> dict[str, Any]:
    """Run ``work(engine)`` on the device's engine; its report with what it asked of the
    device (:attr:`fleet.results.DeviceReport.cost`) as a dict."""
    engine = ctx.engine()
    counters = getattr(engine, "counters", None)
    before = counters.to_dict() if counters is not None else None
    rep = work(engine)
    if counters is not None and before is not None:
        rep.cost = counters.since(before)
    return rep.to_dict()


def _deploy(work: DeviceWork, ctx: WorkerContext, rollback: bool) -> dict[str, Any]:
    job = _job(work)
    p = work.payload
    app, options = App.from_dict(p.get("app")), DeployOptions.from_dict(p.get("options"))
    check_only = p.get("check_only", False)
    if not isinstance(check_only, bool):
        raise JobFormatError("check_only is not a boolean")
    link = _link(ctx)

    def run(engine):
        rep = deploy_device(engine, job, app, options, link, check_only=check_only, credentials=_credentials(ctx))
        if rollback and any(a.startswith("pull ") for a in rep.actions):
            rep.actions.append(REPULLED)
        return rep

    return _costed(ctx, run)


@register("deploy")
def deploy_handler(work: DeviceWork, ctx: WorkerContext) -> dict[str, Any]:
    """Deploy the job's units on ``work.host`` (:func:`fleet.deploy.deploy_device`)."""
    return _deploy(work, ctx, rollback=False)


@register("rollback")
def rollback_handler(work: DeviceWork, ctx: WorkerContext) -> dict[str, Any]:
    """Deploy the release the job goes back to (the same work as a deploy; its report says
    when the image had to be downloaded again)."""
    return _deploy(work, ctx, rollback=True)


@register("verify")
def verify_handler(work: DeviceWork, ctx: WorkerContext) -> dict[str, Any]:
    """Verify ``work.host`` against the job's planned entries
    (:func:`fleet.deploy.verify_device`; with ``clean``, leftovers of an interrupted
    transaction are reported and cleaned first)."""
    job = _job(work)
    log_tail, clean = work.payload.get("log_tail", 10), work.payload.get("clean", True)
    if isinstance(log_tail, bool) or not isinstance(log_tail, int) or log_tail < 0 or not isinstance(clean, bool):
        raise JobFormatError("log_tail must be a count of lines and clean a boolean")
    link = _link(ctx) if clean else None
    return _costed(ctx, lambda engine: verify_device(engine, report_for(job.host, job.plan), job,
                                                     log_tail=log_tail, link=link))
