"""``fleet plan`` and ``fleet publish``: glue between the CLI, the probe fan-out
(:func:`fleet.cli.probe.probe_devices`), :func:`fleet.plan.make_plan` and
:func:`fleet.publish.publish`.

Both load the playbook first (exit 2 on a mistake, naming file:line), then probe the
selected devices when an inventory is given, then plan. A plan with errors (an undecided
device, a device no entry fits, a platform no source provides) exits 1 before anything is
pushed.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

from fleet.cli.options import DeviceSelection
from fleet.errors import UsageError
from fleet.output import emit_json, err, error, out, table
from fleet.platform import Platform
from fleet.plan import Plan, make_plan
from fleet.playbook import Playbook, load_playbook

__all__ = ["build_plan", "run_plan", "run_publish"]


def _parse_platforms(values: Sequence[str] | None) -> list[Platform]:
    out_: list[Platform] = []
    for v in values or ():
        p = Platform.parse(v)  # PlatformError (UsageError, exit 2) names the string
        if p in out_:
            raise UsageError(f"--platform {v}: duplicate platform {p}")
        out_.append(p)
    return out_


def build_plan(playbook: Playbook, sel: DeviceSelection | None, platforms: Sequence[str] | None) -> Plan:
    """Probe (when ``sel`` is given) and plan. Raises UsageError when ``platforms: auto``
    has neither an inventory nor ``--platform`` to decide from."""
    from fleet.detect import detect

    explicit = _parse_platforms(platforms)
    if sel is None and not explicit and not isinstance(playbook.platforms, tuple):
        raise UsageError(f"{playbook.path}: platforms: auto needs devices to decide from: give "
                         f"-i/--inventory, or --platform P (repeatable)")
    detections: dict[str, Any] = {}
    versions: dict[str, str | None] = {}
    probe_errors: dict[str, str] = {}
    if sel is not None:
        from fleet.cli.probe import probe_devices

        for r in probe_devices(sel):
            if r.facts is None:
                detections[r.host] = None
                probe_errors[r.host] = r.error or "probe failed"
                continue
            detections[r.host] = detect(r.facts)
            versions[r.host] = r.facts.get("engine_version") or None
    return make_plan(playbook, detections, explicit or None, versions, probe_errors)


def _print_plan(plan: Plan, reference: str) -> None:
    rows = [(i, p, plan.sources.get(p, "-")) for i, p in enumerate(plan.platforms)]
    out.print(table(f"{reference}: index entries ({plan.mode})", ["#", "platform", "source"], rows))
    if plan.devices:
        drows = [(d.host, d.platform, d.engine_platform, d.entry_platform,
                  "yes" if d.explicit_platform else "no", d.error or d.note)
                 for d in plan.devices]
        out.print(table(None, ["host", "platform", "engine platform", "receives", "pull --platform", "note / error"], drows))


def run_plan(playbook_path: str, sel: DeviceSelection | None, platforms: Sequence[str] | None,
             as_json: bool) -> int:
    """``fleet plan``: print the plan; exit 0 when publishable, 1 when it has errors."""
    playbook = load_playbook(playbook_path)
    plan = build_plan(playbook, sel, platforms)
    if as_json:
        emit_json({"reference": playbook.image, **plan.to_dict()})
    else:
        _print_plan(plan, playbook.image)
    for e in plan.errors:
        error(e)
    return 1 if plan.errors else 0


def _native_sessions(sel: DeviceSelection | None):
    if sel is None:
        return None

    def open_session(device: str):
        from fleet.inventory import load_inventory
        from fleet.ssh import connect, target_for

        inv = load_inventory(list(sel.inventory))
        host = inv.hosts.get(device)
        if host is None:
            raise UsageError(f"native builder {device!r} is not in the inventory")
        return contextlib.closing(connect(target_for(host, sel.settings), sel.settings))

    return open_session


def run_publish(playbook_path: str, sel: DeviceSelection | None, platforms: Sequence[str] | None,
                media_type: str | None, as_json: bool) -> int:
    """``fleet publish``: plan, build/pick each platform, check, push one index tag.

    Human output: the plan, then a table platform -> child manifest digest -> config digest
    and the index digest. JSON: ``{"reference", "index_digest", "media_type", "entries",
    "uploads", "plan"}``. Returns 0, or 1 when the plan has errors (nothing pushed).
    Source, check and registry failures raise FleetError (exit 1).
    """
    from fleet.publish import publish

    playbook = load_playbook(playbook_path)
    plan = build_plan(playbook, sel, platforms)
    if plan.errors:
        if as_json:
            emit_json({"reference": playbook.image, "index_digest": None, "plan": plan.to_dict(),
                       "errors": plan.errors})
        else:
            _print_plan(plan, playbook.image)
        for e in plan.errors:
            error(e)
        error("nothing published")
        return 1
    if not as_json:
        _print_plan(plan, playbook.image)

    def log(msg: str) -> None:
        err.print(msg, highlight=False)

    result = publish(playbook, plan, media_type=media_type, log=log, native_session=_native_sessions(sel))
    if as_json:
        emit_json({**result.to_dict(), "plan": plan.to_dict()})
        return 0
    rows = [(e.platform, e.manifest_digest, e.config_digest, e.size, e.checked) for e in result.entries]
    out.print(table(f"published {result.reference}", ["platform", "manifest digest", "config digest", "bytes", "content check"], rows))
    out.print(f"index {result.index_digest} ({result.media_type}, {len(result.entries)} platforms"
              f"{f', {result.attestations} attestations' if result.attestations else ''}); "
              f"blobs uploaded by sources: {result.uploads}", highlight=False)
    return 0
