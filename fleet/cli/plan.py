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
from fleet.cli.options import make_executor
from fleet.errors import UsageError
from fleet.executor import ExecutorOptions
from fleet.output import emit_json, error, line, out, progress_line, table
from fleet.plan import Plan
from fleet.playbook import load_playbook
from fleet.selection import DeviceSelection

__all__ = ["run_plan", "run_publish", "print_plan", "print_published", "print_values"]


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


def print_values(planned: pipeline.Planned) -> None:
    """Per device the Compose values its stack was resolved with (secrets masked) and where
    each came from (host vars, group vars, the environment, a default)."""
    rows = [(s.values.device, v.name, "(unset)" if v.shown is None else v.shown, v.source)
            for s in planned.stacks.values() for v in s.values.values]
    if rows:
        out.print(table("values per device (secrets masked)", ["host", "variable", "value", "from"], rows))
    for s in planned.stacks.values():
        for w in s.values.warnings:
            line(f"{s.values.device}: warning: {w}")


def _plan_app(playbook, sel: DeviceSelection | None, platforms: Sequence[str] | None,
              run: pipeline.Run | None) -> pipeline.Planned:
    explicit = pipeline.parse_platforms(platforms)
    return pipeline.plan_app(run, playbook, pipeline.probe(run) if run is not None else None, explicit)


def _print_app(planned: pipeline.Planned) -> None:
    """One plan per image (the services running it named), then the values per device."""
    services: dict[str, list[str]] = {}
    for img in planned.images:
        services.setdefault(img.reference, []).append(img.service or "container")
    shown = set()
    for img in planned.images:
        if img.reference in shown or img.plan is None:
            continue
        shown.add(img.reference)
        print_plan(img.plan, f"{', '.join(services[img.reference])}: {img.reference}"
                   + ("" if img.built else " (picked)"))
    print_values(planned)


def _open_run(sel: DeviceSelection | None, executor: ExecutorOptions | None) -> pipeline.Run | None:
    """The run whose probe the plan starts from (None without an inventory), checked
    before any device is probed (:meth:`fleet.pipeline.Run.preflight`)."""
    if sel is None:
        return None
    run = pipeline.Run(sel, make_executor(executor))
    try:
        run.preflight()
    except BaseException:
        run.connections.close_all()
        raise
    return run


def _run_compose_plan(playbook, sel: DeviceSelection | None, platforms: Sequence[str] | None, as_json: bool,
                      facts: str | None, executor: ExecutorOptions | None = None) -> int:
    if facts is not None:
        raise UsageError("--facts FILE plans one image; a Compose playbook is planned from a probe (-i/--inventory)")
    run = _open_run(sel, executor)
    try:
        planned = _plan_app(playbook, sel, platforms, run)
    finally:
        if run is not None:
            run.connections.close_all()
    if as_json:
        emit_json({"app": pipeline.app_name(playbook), **planned.to_dict()})
    else:
        _print_app(planned)
    for e in planned.errors:
        error(e)
    return 1 if planned.errors else 0


def run_plan(playbook_path: str, sel: DeviceSelection | None, platforms: Sequence[str] | None,
             as_json: bool, *, facts: str | None = None, executor: ExecutorOptions | None = None) -> int:
    """``fleet plan``: print the plan; exit 0 when publishable, 1 when it has errors. A
    Compose playbook: one plan per image, and per device the values its stack gets."""
    playbook = load_playbook(playbook_path)
    if playbook.compose is not None:
        return _run_compose_plan(playbook, sel, platforms, as_json, facts, executor)
    run = _open_run(sel, executor) if facts is None else None
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
                media_type: str | None, as_json: bool, executor: ExecutorOptions | None = None) -> int:
    """``fleet publish``: plan, build/pick each platform, check, push one index tag.

    Human output: the plan, then a table platform -> child manifest digest -> config digest
    and the index digest. JSON: ``{"reference", "index_digest", "media_type", "entries",
    "uploads", "plan"}``. Returns 0, or 1 when the plan has errors (nothing pushed).
    Source, check and registry failures raise FleetError (exit 1).
    """
    playbook = load_playbook(playbook_path)
    if playbook.compose is not None:
        return _run_compose_publish(playbook, sel, platforms, media_type, as_json, executor)
    run = _open_run(sel, executor)
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
    print_published(result)
    return 0


def print_published(result) -> None:
    """Platform -> child manifest digest -> config digest, and the index digest."""
    rows = [(e.platform, e.manifest_digest, e.config_digest, e.size, e.checked) for e in result.entries]
    out.print(table(f"published {result.reference}", ["platform", "manifest digest", "config digest", "bytes",
                                                      "content check"], rows))
    line(f"index {result.index_digest} ({result.media_type}, {len(result.entries)} platforms"
         f"{f', {result.attestations} attestations' if result.attestations else ''}); "
         f"blobs uploaded by sources: {result.uploads}")


def _run_compose_publish(playbook, sel: DeviceSelection | None, platforms: Sequence[str] | None,
                         media_type: str | None, as_json: bool, executor: ExecutorOptions | None = None) -> int:
    """Publish every image of a Compose stack that fleet builds (one multi-arch tag each);
    the picked ones are checked to cover the devices, not pushed. JSON: ``{"app",
    "images": [{"service", "reference", "built", "publish"}], "plan"}``."""
    run = _open_run(sel, executor)
    try:
        planned = _plan_app(playbook, sel, platforms, run)
        if not as_json:
            _print_app(planned)
        if planned.errors:
            if as_json:
                emit_json({"app": pipeline.app_name(playbook), "images": [], "plan": planned.to_dict(),
                           "errors": planned.errors})
            for e in planned.errors:
                error(e)
            error("nothing published")
            return 1
        pipeline.publish_app(run, planned, progress_line, media_type=media_type)
    finally:
        if run is not None:
            run.connections.close_all()
    images = [{"service": i.service, "reference": i.reference, "built": i.built,
               "publish": i.published.to_dict() if i.published else None} for i in planned.images]
    if as_json:
        emit_json({"app": pipeline.app_name(playbook), "images": images, "plan": planned.to_dict()})
        return 0
    for img in planned.images:
        if img.built and img.published is not None:
            print_published(img.published)
        elif img.published is not None:
            line(f"{img.service}: {img.reference} picked as published ({img.published.index_digest})")
    return 0
