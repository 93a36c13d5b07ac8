"""``fleet history``, ``fleet status`` and ``fleet prune``: render the history and what the
devices run against it (:func:`fleet.pipeline.status`, :func:`fleet.pipeline.prune`)."""

from __future__ import annotations

from fleet import pipeline
from fleet.cli.options import make_executor
from fleet.cli.render import short_digest
from fleet.executor import ExecutorOptions
from fleet.history import History
from fleet.output import emit_json, line, out, table
from fleet.playbook import load_playbook
from fleet.selection import DeviceSelection

__all__ = ["run_history", "run_status", "run_prune"]


def run_history(*, device: str | None, deployment: str | None, limit: int, as_json: bool) -> int:
    """``fleet history``: runs newest first with their devices' results. Exit 0 (1 when a
    named deployment is not there)."""
    with History() as history:
        runs = history.runs(device=device, run_id=deployment, limit=limit)
    if as_json:
        emit_json(runs)
    else:
        out.print(table(None, ["deployment", "kind", "started", "reference", "index", "result", "stopped"],
                        [(r["id"], r["kind"], r["started"], r["reference"], short_digest(r["index_digest"]),
                          r["summary"], r["stopped"]) for r in runs]))
        if device or deployment:
            out.print(table(None, ["deployment", "device", "batch", "result", "reason"],
                            [(r["id"], d["host"], d["batch"], d["result"], d["reason"])
                             for r in runs for d in r["devices"]]))
    return 1 if deployment and not runs else 0


def run_status(playbook_path: str, sel: DeviceSelection, as_json: bool, executor: ExecutorOptions | None = None) -> int:
    """``fleet status``: exit 0 when every device runs what its last rollout intended."""
    playbook = load_playbook(playbook_path)
    with History() as history, pipeline.Run(sel, make_executor(executor)) as run:
        run.preflight()
        rows = pipeline.status(run, playbook, history)
    if as_json:
        emit_json([r.to_dict() for r in rows])
    else:
        out.print(table(f"status of {playbook.container_spec.name}", ["device", "state", "runs", "index", "intended",
                                                                      "intended index", "detail"],
                        [(r.host, r.state, r.deployment, short_digest(r.index_digest), r.intended_deployment,
                          short_digest(r.intended_index), r.detail) for r in rows]))
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.state] = counts.get(r.state, 0) + 1
        line(f"{len(rows)} devices: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    return 0 if all(r.state == "as intended" for r in rows) else 1


def run_prune(playbook_path: str, sel: DeviceSelection, as_json: bool, executor: ExecutorOptions | None = None) -> int:
    """``fleet prune``: exit 0 when every device could be reached."""
    playbook = load_playbook(playbook_path)
    with pipeline.Run(sel, make_executor(executor)) as run:
        run.preflight()
        rows = pipeline.prune(run, playbook)
    if as_json:
        emit_json([r.to_dict() for r in rows])
    else:
        out.print(table(f"prune {playbook.image} (keep {playbook.rollout.keep_images})",
                        ["device", "removed", "still in use", "error"],
                        [(r.host, len(r.removed), len(r.refused), r.error) for r in rows]))
    return 0 if all(r.error is None for r in rows) else 1
