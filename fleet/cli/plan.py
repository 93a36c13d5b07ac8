"""``fleet plan`` and ``fleet publish``: render :func:`fleet.pipeline.plan` and
:func:`fleet.pipeline.publish`.

Both load the playbook first (exit 2 on a mistake, naming file:line), then probe the
selected devices when an inventory is given (or read ``--facts FILE``), then plan. A plan
with errors (an undecided device, a device no entry fits, a platform no source provides)
exits 1 before anything is pushed.
"""

from __future__ import annotations

from typing import Sequence

from fleet import pipeline
from fleet.errors import UsageError
from fleet.output import emit_json, error, line, out, progress_line, table
from fleet.plan import Plan
from fleet.playbook import load_playbook
from fleet.selection import DeviceSelection

__all__ = ["run_plan", "run_publish", "print_plan"]


def print_plan(plan: Plan, reference: str) -> None:
    """The plan's index entries and, per device, the entry it receives."""
    rows = [(i, p, plan.sources.get(p, "-")) for i, p in enumerate(plan.platforms)]
    out.print(table(f"{reference}: index entries ({plan.mode})", ["#", "platform", "source"], rows))
    if plan.devices:
        drows = [(d.host, d.platform, d.engine_platform, d.entry_platform,
                  "yes" if d.explicit_platform else "no", d.error or d.note)
                 for d in plan.devices]
        out.print(table(None, ["host", "platform", "engine platform", "receives", "pull --platform", "note / error"],
                        drows))


def _plan(playbook, sel: DeviceSelection | None, platforms: Sequence[str] | None, facts: str | None,
          run: pipeline.Run | None) -> Plan:
    explicit = pipeline.parse_platforms(platforms)
    if facts is not None:
        if sel is not None:
            raise UsageError("--facts FILE and -i/--inventory exclude each other: plan from saved facts or from a probe")
        return pipeline.plan_from_facts(playbook, facts, explicit)
    return pipeline.plan(playbook, pipeline.probe(run) if run is not None else None, explicit)


def run_plan(playbook_path: str, sel: DeviceSelection | None, platforms: Sequence[str] | None,
             as_json: bool, *, facts: str | None = None) -> int:
    """``fleet plan``: print the plan; exit 0 when publishable, 1 when it has errors."""
    playbook = load_playbook(playbook_path)
    run = pipeline.Run(sel) if sel is not None else None
    try:
        plan = _plan(playbook, sel, platforms, facts, run)
    finally:
        if run is not None:
            run.connections.close_all()
    if as_json:
        emit_json({"reference": playbook.image, **plan.to_dict()})
    else:
        print_plan(plan, playbook.image)
    for e in plan.errors:
        error(e)
    return 1 if plan.errors else 0


def run_publish(playbook_path: str, sel: DeviceSelection | None, platforms: Sequence[str] | None,
                media_type: str | None, as_json: bool) -> int:
    """``fleet publish``: plan, build/pick each platform, check, push one index tag.

    Human output: the plan, then a table platform -> child manifest digest -> config digest
    and the index digest. JSON: ``{"reference", "index_digest", "media_type", "entries",
    "uploads", "plan"}``. Returns 0, or 1 when the plan has errors (nothing pushed).
    Source, check and registry failures raise FleetError (exit 1).
    """
    playbook = load_playbook(playbook_path)
    run = pipeline.Run(sel) if sel is not None else None
    try:
        plan = _plan(playbook, sel, platforms, None, run)
        if plan.errors:
            if as_json:
                emit_json({"reference": playbook.image, "index_digest": None, "plan": plan.to_dict(),
                           "errors": plan.errors})
            else:
                print_plan(plan, playbook.image)
            for e in plan.errors:
                error(e)
            error("nothing published")
            return 1
        if not as_json:
            print_plan(plan, playbook.image)
        result = pipeline.publish(playbook, plan, run, media_type=media_type, log=progress_line)
    finally:
        if run is not None:
            run.connections.close_all()
    if as_json:
        emit_json({**result.to_dict(), "plan": plan.to_dict()})
        return 0
    rows = [(e.platform, e.manifest_digest, e.config_digest, e.size, e.checked) for e in result.entries]
    out.print(table(f"published {result.reference}", ["platform", "manifest digest", "config digest", "bytes",
                                                      "content check"], rows))
    line(f"index {result.index_digest} ({result.media_type}, {len(result.entries)} platforms"
         f"{f', {result.attestations} attestations' if result.attestations else ''}); "
         f"blobs uploaded by sources: {result.uploads}")
    return 0
