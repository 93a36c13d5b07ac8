"""``fleet deploy`` and ``fleet rollback``: render :func:`fleet.pipeline.deploy` and
:func:`fleet.pipeline.rollback`.

Reports: a per-device table on stdout (Ansible's PLAY RECAP: one row per device, then a
summary line), ``--json`` prints the list of per-device objects instead, and every run
also saves the full report (plan, publish result, batches, devices) as JSON in the report
directory (:mod:`fleet.reports`) as ``deploy-<deployment id>.json`` (``check-...``,
``rollback-...``), appends the run to the history (:mod:`fleet.history`), and writes the
devices that did not end verified to ``<report dir>/<playbook name>.retry`` (for
``--limit @FILE``, as Ansible's retry files). Exit 0 only when every selected device
verified or was unchanged; 130 when interrupted.
"""

from __future__ import annotations

import math

from fleet import pipeline
from fleet.cli.options import make_executor
from fleet.cli.render import device_line, print_report, short_digest
from fleet.deploy import DeployHooks, DeployOptions, new_deployment_id
from fleet.errors import UsageError
from fleet.executor import ExecutorOptions
from fleet.fanout import INTERRUPTED_EXIT
from fleet.history import History
from fleet.output import emit_json, err, error, line, progress_line
from fleet.playbook import load_playbook
from fleet.reports import report_dir, save_report, save_text, usable_report_dir
from fleet.rollout import parse_batches
from fleet.selection import DeviceSelection

__all__ = ["run_deploy", "run_rollback"]


def _finish(result: "pipeline.DeployRun", playbook, as_json: bool, directory, prefix: str) -> int:
    devices = [r.to_dict() for r in result.devices]
    if as_json:
        emit_json([{**d, "deployment": result.deployment, "index_digest": d["index_digest"] or result.index_digest}
                   for d in devices])
    elif result.devices:
        title = (f"{prefix} {result.reference}"
                 + (f" @ {short_digest(result.index_digest)}" if result.index_digest else "")
                 + f" (deployment {result.deployment})")
        print_report(title, result.devices, result.summary)
        if len(result.batches) > 1 and not as_json:
            line("batches: " + "; ".join(f"{n}: {', '.join(b)}" for n, b in enumerate(result.batches, 1)))
    for e in result.errors:
        error(e)
    path = save_report(result.to_dict(), directory, f"{prefix}-{result.deployment}.json")
    if path:
        progress_line(f"report saved to {path}")
    if result.devices and prefix != "check":
        stragglers = result.stragglers
        retry = save_text("".join(h + "\n" for h in stragglers), directory, f"{playbook.name}.retry", "retry file")
        if retry and stragglers:
            progress_line(f"{len(stragglers)} device(s) did not end verified; to retry them: --limit @{retry}")
    if result.interrupted:
        return INTERRUPTED_EXIT
    return 0 if result.ok else 1


def _options(sel: DeviceSelection, min_free_mib: float, hooks: DeployHooks | None) -> DeployOptions:
    if not math.isfinite(min_free_mib) or min_free_mib < 0:
        raise UsageError("--min-free must be a finite number >= 0 (MiB)")
    return DeployOptions(forks=sel.forks, min_free=int(min_free_mib * 1048576), deployment=new_deployment_id(),
                         hooks=hooks or DeployHooks())


def _rollout(playbook, batch: str | None):
    from dataclasses import replace

    return replace(playbook.rollout, batches=parse_batches(batch)) if batch else playbook.rollout


def run_deploy(playbook_path: str, sel: DeviceSelection, *, check: bool, as_json: bool, min_free_mib: float,
               report_directory: str | None, batch: str | None = None, hooks: DeployHooks | None = None,
               executor: ExecutorOptions | None = None) -> int:
    """``fleet deploy``: see :func:`fleet.pipeline.deploy`. Prints the report (table or
    ``--json`` list of per-device objects), saves it, returns the exit status."""
    playbook = load_playbook(playbook_path)
    rollout = _rollout(playbook, batch)
    directory = usable_report_dir(report_dir(report_directory))
    options = _options(sel, min_free_mib, hooks)
    on_done = None if err.is_terminal else (lambda r: progress_line(device_line(r)))
    with History() as history, pipeline.Run(sel, make_executor(executor)) as run:
        run.preflight()
        result = pipeline.deploy(run, playbook, check=check, options=options, rollout=rollout, history=history,
                                 log=progress_line, on_done=on_done)
    return _finish(result, playbook, as_json, directory, "check" if check else "deploy")


def run_rollback(playbook_path: str, sel: DeviceSelection, *, to: str | None, as_json: bool, min_free_mib: float,
                 report_directory: str | None, batch: str | None = None,
                 executor: ExecutorOptions | None = None) -> int:
    """``fleet rollback``: see :func:`fleet.pipeline.rollback`."""
    playbook = load_playbook(playbook_path)
    rollout = _rollout(playbook, batch)
    directory = usable_report_dir(report_dir(report_directory))
    options = _options(sel, min_free_mib, None)
    on_done = None if err.is_terminal else (lambda r: progress_line(device_line(r)))
    with History() as history, pipeline.Run(sel, make_executor(executor)) as run:
        run.preflight()
        result = pipeline.rollback(run, playbook, to=to, options=options, rollout=rollout, history=history,
                                   on_done=on_done)
    return _finish(result, playbook, as_json, directory, "rollback")
