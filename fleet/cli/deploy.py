"""``fleet deploy``: render :func:`fleet.pipeline.deploy`.

Reports: a per-device table on stdout (Ansible's PLAY RECAP: one row per device, then a
summary line), ``--json`` prints the list of per-device objects instead, and every run
also saves the full report (plan, publish result, devices) as JSON in the report directory
(:mod:`fleet.reports`) as ``deploy-<deployment id>.json`` (``check-...`` for ``--check``).
Exit 0 only when every targeted device verified or was unchanged; 130 when interrupted.
"""

from __future__ import annotations

from fleet import pipeline
from fleet.cli.render import device_line, print_report, short_digest
from fleet.deploy import DeployHooks, DeployOptions, new_deployment_id
from fleet.errors import UsageError
from fleet.fanout import INTERRUPTED_EXIT
from fleet.output import emit_json, err, error, progress_line
from fleet.playbook import load_playbook
from fleet.reports import report_dir, save_report, usable_report_dir
from fleet.selection import DeviceSelection

__all__ = ["run_deploy"]


def run_deploy(playbook_path: str, sel: DeviceSelection, *, check: bool, as_json: bool, min_free_mib: float,
               report_directory: str | None, hooks: DeployHooks | None = None) -> int:
    """``fleet deploy``: see :func:`fleet.pipeline.deploy`. Prints the report (table or
    ``--json`` list of per-device objects), saves the full report JSON, returns the exit
    status."""
    import math

    if not math.isfinite(min_free_mib) or min_free_mib < 0:
        raise UsageError("--min-free must be a finite number >= 0 (MiB)")
    playbook = load_playbook(playbook_path)
    directory = usable_report_dir(report_dir(report_directory))
    options = DeployOptions(forks=sel.forks, min_free=int(min_free_mib * 1048576), deployment=new_deployment_id(),
                            hooks=hooks or DeployHooks())
    on_done = None if err.is_terminal else (lambda r: progress_line(device_line(r)))
    with pipeline.Run(sel) as run:
        result = pipeline.deploy(run, playbook, check=check, options=options, log=progress_line, on_done=on_done)
    devices = [r.to_dict() for r in result.devices]
    if as_json:
        emit_json([{**d, "deployment": result.deployment, "index_digest": result.index_digest} for d in devices])
    elif result.devices:
        title = (f"{'check' if check else 'deploy'} {result.reference}"
                 + (f" @ {short_digest(result.index_digest)}" if result.index_digest else "")
                 + f" (deployment {result.deployment})")
        print_report(title, result.devices, result.summary)
    for e in result.errors:
        error(e)
    path = save_report(result.to_dict(), directory, f"{'check' if check else 'deploy'}-{options.deployment}.json")
    if path:
        progress_line(f"report saved to {path}")
    if result.interrupted:
        return INTERRUPTED_EXIT
    return 0 if result.ok else 1
