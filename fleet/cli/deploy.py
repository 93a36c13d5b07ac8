"""``fleet deploy`` and ``fleet verify``: glue between the CLI, the probe and plan
(:func:`fleet.cli.plan.build_plan`), :func:`fleet.publish.publish`, the per-device rollout
(:mod:`fleet.deploy`) and verification (:mod:`fleet.verify`).

``deploy`` = probe -> plan -> publish -> per device (pull by digest, verify, run, health,
rollback) -> verify -> report. A plan with errors (an undecided device, a platform the
index would lack) stops before anything is published or any device is touched.

Reports: a per-device table on stdout (Ansible's PLAY RECAP: one row per device, then a
summary line), ``--json`` prints the list of per-device objects instead, and every deploy
and verify run also saves the full report (plan, publish result, devices) as JSON to
``--report-dir``, else ``$FLEET_REPORT_DIR``, else ``$XDG_STATE_HOME/fleet/reports`` (default
``~/.local/state/fleet/reports``), named ``deploy-<deployment id>.json`` /
``verify-<time>.json``. Exit 0 only when every targeted device verified.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from fleet.cli.options import DeviceSelection
from fleet.deploy import (DeployHooks, DeployOptions, DeviceJob, DeviceReport, auth_for_devices, deploy_devices,
                          new_deployment_id)
from fleet.errors import FleetError, UsageError
from fleet.output import emit_json, err, error, out, table, warn
from fleet.platform import Platform, choose

__all__ = ["report_dir", "run_deploy", "run_verify", "deploy", "verify_devices"]

ENV_REPORT_DIR = "FLEET_REPORT_DIR"


def report_dir(option: str | os.PathLike | None = None) -> Path:
    """Where reports are saved: ``option``, else ``$FLEET_REPORT_DIR``, else
    ``$XDG_STATE_HOME/fleet/reports`` (XDG Base Directory spec: state data such as logs and
    history; default ``~/.local/state``)."""
    if option:
        return Path(option)
    if os.environ.get(ENV_REPORT_DIR):
        return Path(os.environ[ENV_REPORT_DIR])
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "fleet" / "reports"


def _usable_report_dir(directory: Path) -> Path:
    """Create ``directory`` (parents too) and check it is writable BEFORE any device is
    touched, so a bad ``--report-dir`` is a usage error (exit 2), not a lost report after a
    rollout. Raises UsageError naming the directory."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{directory}: cannot create the report directory: {exc.strerror or exc}") from None
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"{directory}: the report directory is not a writable directory")
    return directory


def _save(doc: dict[str, Any], directory: Path, name: str) -> Path | None:
    """Write the report; a failure here (disk full...) is a warning: the results were
    already printed and the devices already changed."""
    path = directory / name
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        warn(f"{path}: cannot save the report: {exc.strerror or exc}")
        return None
    return path


def _short(d: str | None) -> str | None:
    """``sha256:0123456789ab...`` -> ``0123456789ab`` (Docker's short-ID style)."""
    if not d:
        return None
    algo, _, h = d.partition(":")
    return h[:12] if h and algo == "sha256" else d


def _print_report(title: str, reports: Sequence[DeviceReport], summary: str) -> None:
    rows = []
    for r in reports:
        entry = r.entry_platform
        if entry and r.explicit_platform:
            entry += " (--platform)"
        rows.append((r.host, r.platform, r.engine_platform, entry, _short(r.pulled), _short(r.config_digest),
                     r.result, f"{r.seconds:.1f}s"))
    out.print(table(title, ["device", "platform", "engine platform", "planned entry", "pulled child",
                            "config digest", "result", "time"], rows))
    for r in reports:
        if r.reason:
            out.print(f"{r.host}: {r.result}: {r.reason}", highlight=False, markup=False)
        if r.log_tail and not r.ok:
            out.print(f"{r.host}: last log lines:\n" + "\n".join("  | " + ln for ln in r.log_tail.splitlines()[-5:]),
                      highlight=False, markup=False)
    out.print(summary, highlight=False, markup=False)


def _summary(reports: Sequence[DeviceReport]) -> str:
    counts: dict[str, int] = {}
    for r in reports:
        counts[r.result] = counts.get(r.result, 0) + 1
    order = ["verified", "unchanged", "would-deploy", "would-keep", "rolled-back", "drifted", "crashed", "missing",
             "refused", "failed", "unreachable"]
    parts = [f"{counts[k]} {k}" for k in order if counts.get(k)]
    parts += [f"{v} {k}" for k, v in counts.items() if k not in order]
    n = len(reports)
    return f"{n} device{'s' if n != 1 else ''}: " + (", ".join(parts) or "none")


# --------------------------------------------------------------------------- deploy


def deploy(playbook: Any, sel: DeviceSelection, *, check: bool = False, options: DeployOptions | None = None,
           published: Any = None, log=lambda s: None) -> dict[str, Any]:
    """The whole deploy as a function; returns the report document
    ``{"deployment", "playbook", "reference", "index_digest", "check", "plan", "publish",
    "devices": [DeviceReport.to_dict()...], "summary", "ok", "errors"}``.

    ``published``: an already published :class:`fleet.publish.PublishResult` to roll out
    instead of publishing the playbook (tests use it to push an index around fleet's own
    checks). A plan with errors returns ``ok`` False and ``errors`` before anything is
    published or any device is touched.
    """
    from fleet.cli.plan import build_plan
    from fleet.ssh import target_for

    options = options or DeployOptions()
    started = datetime.now(timezone.utc)
    spec = playbook.container_spec
    doc: dict[str, Any] = {"deployment": options.deployment, "playbook": str(playbook.path),
                           "reference": playbook.image, "index_digest": None, "check": check,
                           "started": started.isoformat(timespec="seconds"), "plan": None, "publish": None,
                           "devices": [], "errors": []}
    hosts = sel.hosts()
    targets = {h.name: target_for(h, sel.settings) for h in hosts}
    explicit = None
    if published is not None:
        explicit = [e.platform for e in published.entries]
    plan = build_plan(playbook, sel, [str(p) for p in explicit] if explicit else None)
    doc["plan"] = plan.to_dict()
    if plan.errors:
        doc["errors"] = plan.errors + ["nothing published, no device touched"]
        doc["ok"] = False
        doc["summary"] = "plan has errors: nothing published, no device touched"
        return doc
    if check:
        result = None
    elif published is not None:
        result = published
    else:
        from fleet.publish import publish

        result = publish(playbook, plan, log=log)
    if result is not None:
        doc["publish"] = result.to_dict()
        doc["index_digest"] = result.index_digest
        doc["reference"] = result.reference
        if options.hooks.after_publish:
            options.hooks.after_publish(result)
    jobs: list[DeviceJob] = []
    sizes: dict[str, int] = {}
    from fleet.verify import Expected

    repository = result.repository if result is not None else _repository(playbook.image)
    for dp in plan.devices:
        if result is not None:
            entry = result.entry_for(dp.entry_platform)
            if entry is None:
                doc["errors"].append(f"{dp.host}: the published index has no {dp.entry_platform} entry")
                continue
            expected = Expected.from_entry(result.repository, result.index_digest, entry)
            sizes[dp.host] = entry.size
        else:
            expected = Expected(repository, "sha256:(this publish)", dp.entry_platform, "", "", ())
        jobs.append(DeviceJob(dp.host, targets[dp.host], dp, expected))
    if doc["errors"]:
        doc["ok"] = False
        doc["summary"] = "the published index does not fit the plan: no device touched"
        return doc
    auth = None
    if not check:
        from fleet.publish import registry_credentials
        from fleet.registry import Reference

        registry = Reference.parse(repository).registry
        auth = auth_for_devices(registry_credentials(playbook.registry, registry), registry)
    reports = deploy_devices(jobs, sel.settings, reference=doc["reference"], playbook_name=playbook.name,
                             spec=spec, health=playbook.health, sizes=sizes, auth_config=auth, options=options,
                             check_only=check, label="checking" if check else "deploying")
    doc["devices"] = [r.to_dict() for r in reports]
    doc["summary"] = _summary(reports)
    doc["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    doc["ok"] = all(r.ok or (check and r.result in ("would-deploy", "would-keep")) for r in reports)
    return doc


def _repository(image: str) -> str:
    from fleet.registry import Reference

    return Reference.parse(image).name


def run_deploy(playbook_path: str, sel: DeviceSelection, *, check: bool, as_json: bool, min_free_mib: float,
               report_directory: str | None, hooks: DeployHooks | None = None) -> int:
    """``fleet deploy``: see :func:`deploy`. Prints the report (table or ``--json`` list of
    per-device objects), saves the full report JSON, returns the exit status (0 only when
    every device verified or was unchanged; with ``--check``, when the plan holds)."""
    from fleet.playbook import load_playbook

    if min_free_mib < 0:
        raise UsageError("--min-free must be >= 0 MiB")
    playbook = load_playbook(playbook_path)
    directory = _usable_report_dir(report_dir(report_directory))
    options = DeployOptions(forks=sel.forks, min_free=int(min_free_mib * 1048576), deployment=new_deployment_id(),
                            hooks=hooks or DeployHooks())
    doc = deploy(playbook, sel, check=check, options=options, log=lambda s: err.print(s, highlight=False))
    reports = [DeviceReport(**{k: v for k, v in d.items() if k != "ok"}) for d in doc["devices"]]
    if as_json:
        emit_json([{**d, "deployment": doc["deployment"], "index_digest": doc["index_digest"]} for d in doc["devices"]])
    elif reports:
        title = (f"{'check' if check else 'deploy'} {doc['reference']}"
                 + (f" @ {_short(doc['index_digest'])}" if doc["index_digest"] else "")
                 + f" (deployment {doc['deployment']})")
        _print_report(title, reports, doc["summary"])
    for e in doc["errors"]:
        error(e)
    path = _save(doc, directory, f"{'check' if check else 'deploy'}-{options.deployment}.json")
    if path:
        err.print(f"report saved to {path}", highlight=False)
    return 0 if doc["ok"] else 1


# --------------------------------------------------------------------------- verify


def verify_devices(published: Any, sel: DeviceSelection, name: str, *, log_tail: int = 10) -> list[DeviceReport]:
    """Verify every selected device against ``published`` (:class:`fleet.publish.PublishResult`):
    probe it (decided and engine platform), pick its planned entry (containerd ``Only()`` of
    its decided platform), then compare what its engine holds for container ``name``
    (:func:`fleet.verify.inspect_device`). Reports in inventory order."""
    from fleet.detect import detect
    from fleet.fanout import run_each
    from fleet.cli.probe import probe_devices
    from fleet.ssh import connect, target_for
    from fleet.engine import Engine
    from fleet.verify import Expected, check_container, check_image, inspect_device, verdict

    hosts = sel.hosts()
    targets = {h.name: target_for(h, sel.settings) for h in hosts}
    platforms = [e.platform for e in published.entries]
    probes = probe_devices(sel)
    jobs: list[tuple[DeviceReport, Any]] = []
    reports: list[DeviceReport] = []
    for r in probes:
        rep = DeviceReport(r.host)
        if r.facts is None:
            rep.result, rep.reason = "unreachable", r.error or "probe failed"
            reports.append(rep)
            continue
        det = detect(r.facts)
        rep.platform = str(det.platform) if det.platform else None
        rep.engine_platform = str(det.engine_platform) if det.engine_platform else None
        if det.platform is None:
            rep.result, rep.reason = "failed", f"undecided platform: {det.error}"
            reports.append(rep)
            continue
        i = choose(det.platform, platforms)
        if i is None:
            rep.result = "failed"
            rep.reason = f"the index holds no entry a {det.platform} device can run"
            reports.append(rep)
            continue
        entry = published.entries[i]
        rep.entry_platform = str(entry.platform)
        jobs.append((rep, Expected.from_entry(published.repository, published.index_digest, entry)))
        reports.append(rep)

    def one(job: tuple[DeviceReport, Any]) -> DeviceReport:
        rep, expected = job
        t0 = time.monotonic()
        with connect(targets[rep.host], sel.settings) as session:
            engine = Engine(session, rep.host, become=targets[rep.host].become)
            state = inspect_device(engine, name, expected, tail=log_tail)
        store = state.store
        checks = check_image(expected, state.image, store) if state.container is not None else []
        checks += check_container(expected, state.container, state.image, store, state.logs)
        status, reason = verdict(checks)
        rep.checks = [c.to_dict() for c in checks]
        rep.config_digest = state.image.id if state.image else None
        rep.pulled = state.container.labels.get("io.fleet.manifest-digest") if state.container else None
        rep.log_tail = state.logs
        rep.result = status
        rep.reason = reason or (f"deployment {state.container.labels.get('io.fleet.deployment', '-')}"
                                if state.container else "")
        rep.seconds = round(time.monotonic() - t0, 1)
        return rep

    for o in run_each(jobs, one, sel.forks, "verifying"):
        if not o.ok:
            rep = o.item[0]
            rep.result = "unreachable" if o.error.__class__.__module__ == "fleet.ssh" else "failed"
            rep.reason = str(getattr(o.error, "reason", None) or o.error)
    return reports


def run_verify(what: str, sel: DeviceSelection, *, name: str | None, as_json: bool,
               report_directory: str | None) -> int:
    """``fleet verify PLAYBOOK|REF``: read the index back from the registry (the playbook's
    ``image`` tag, or REF: a tag or ``repo@digest``), then :func:`verify_devices`. The
    container is the playbook's ``container.name``, else ``--name``, else the repository's
    last path component. Exit 0 only when every device verified."""
    from fleet.publish import read_published
    from fleet.playbook import RegistrySettings, load_playbook

    p = Path(what)
    if p.is_file():
        playbook = load_playbook(p)
        reference, settings = playbook.image, playbook.registry
        name = name or playbook.container_spec.name
    else:
        if what.endswith((".yaml", ".yml")):
            raise UsageError(f"{what}: no such playbook file")
        from fleet.registry import Reference

        ref = Reference.parse(what)
        reference, settings = what, RegistrySettings()
        name = name or ref.repository.rsplit("/", 1)[-1]
    directory = _usable_report_dir(report_dir(report_directory))
    sel.hosts()  # a malformed inventory or --limit is a usage error before the registry is asked
    published = read_published(reference, settings)
    reports = verify_devices(published, sel, name)
    summary = _summary(reports)
    doc = {"reference": published.reference, "index_digest": published.index_digest, "container": name,
           "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "publish": published.to_dict(),
           "devices": [r.to_dict() for r in reports], "summary": summary}
    if as_json:
        emit_json([{**r.to_dict(), "index_digest": published.index_digest} for r in reports])
    else:
        _print_report(f"verify {published.reference} @ {_short(published.index_digest)} (container {name})",
                      reports, summary)
    path = _save(doc, directory, f"verify-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{os.getpid()}.json")
    if path:
        err.print(f"report saved to {path}", highlight=False)
    return 0 if all(r.result == "verified" for r in reports) else 1
