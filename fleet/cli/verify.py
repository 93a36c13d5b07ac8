"""``fleet verify PLAYBOOK|REF``: render :func:`fleet.pipeline.verify` /
:func:`fleet.pipeline.verify_app`, save the report and append the run to the history."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fleet import pipeline
from fleet.cli.options import make_executor
from fleet.cli.render import print_report, short_digest
from fleet.deploy import new_deployment_id
from fleet.errors import UsageError
from fleet.executor import ExecutorOptions
from fleet.fanout import INTERRUPTED_EXIT
from fleet.history import History
from fleet.output import emit_json, progress_line
from fleet.playbook import RegistrySettings, load_playbook
from fleet.publish import read_published
from fleet.registry import Reference
from fleet.reports import report_dir, save_report, usable_report_dir
from fleet.results import DeviceReport, Result, summary_line
from fleet.selection import DeviceSelection

__all__ = ["run_verify"]


def run_verify(what: str, sel: DeviceSelection, *, name: str | None, as_json: bool,
               report_directory: str | None, executor: ExecutorOptions | None = None) -> int:
    """``fleet verify PLAYBOOK|REF``. With a playbook: every image of its app read back from
    its registry (the ``image`` tag, or each Compose service's image) and every container
    of the app compared on each device (:func:`fleet.pipeline.verify_app`). With REF (a tag
    or ``repo@digest``): one container, ``--name``, else the repository's last path
    component (:func:`fleet.pipeline.verify`). The run goes into the history (kind
    ``verify``). Exit 0 only when every device verified, 130 when interrupted."""
    p = Path(what)
    directory = usable_report_dir(report_dir(report_directory))
    now = datetime.now(timezone.utc)
    run_id = new_deployment_id(now) + "-verify"
    if p.is_file() or p.exists():
        playbook = load_playbook(p)
        if name:
            raise UsageError("--name goes with a REF; a playbook names its own containers")
        sel.hosts()  # a malformed inventory or --limit is a usage error before the registry is asked
        with History() as history, pipeline.Run(sel, make_executor(executor)) as run:
            run.preflight()
            _start(history, run_id, now, playbook=str(p), app=pipeline.app_name(playbook),
                   reference=playbook.image or pipeline.app_name(playbook))
            reports, images = pipeline.verify_app(run, playbook)
            image_rows = [{"service": i.service, "reference": i.published.reference if i.published else i.reference,
                           "index_digest": i.published.index_digest if i.published else None, "built": i.built}
                          for i in images]
            main = images[0].published
            _end(history, run_id, reports, index_digest=main.index_digest if main else None, images=image_rows)
        title = f"verify {p.name} (app {pipeline.app_name(playbook)}: " + ", ".join(
            f"{r['service'] or 'container'} {short_digest(r['index_digest'])}" for r in image_rows) + ")"
        doc: dict[str, Any] = {"run": run_id, "playbook": str(p), "app": pipeline.app_name(playbook),
                               "images": image_rows, "reference": main.reference if main else None,
                               "index_digest": main.index_digest if main else None,
                               "publish": main.to_dict() if main else None}
    else:
        if what.endswith((".yaml", ".yml")):
            raise UsageError(f"{what}: no such playbook file")
        ref = Reference.parse(what)
        name = name or ref.repository.rsplit("/", 1)[-1]
        sel.hosts()
        published = read_published(what, RegistrySettings())
        with History() as history, pipeline.Run(sel, make_executor(executor)) as run:
            run.preflight()
            _start(history, run_id, now, playbook="", app=name, reference=published.reference,
                   index_digest=published.index_digest)
            reports = pipeline.verify(run, published, name)
            _end(history, run_id, reports, index_digest=published.index_digest,
                 images=[{"service": None, "reference": published.reference,
                          "index_digest": published.index_digest, "built": False}])
        title = f"verify {published.reference} @ {short_digest(published.index_digest)} (container {name})"
        doc = {"run": run_id, "reference": published.reference, "index_digest": published.index_digest,
               "container": name, "publish": published.to_dict()}
    summary = summary_line([r.result for r in reports])
    doc.update({"time": now.isoformat(timespec="seconds"), "devices": [r.to_dict() for r in reports],
                "summary": summary})
    if as_json:
        emit_json([{**r.to_dict(), "index_digest": doc["index_digest"]} for r in reports])
    else:
        print_report(title, reports, summary)
    path = save_report(doc, directory, f"verify-{now:%Y%m%dT%H%M%SZ}-{os.getpid()}.json")
    if path:
        progress_line(f"report saved to {path}")
    if any(r.result is Result.INTERRUPTED for r in reports):
        return INTERRUPTED_EXIT
    return 0 if all(r.result is Result.VERIFIED for r in reports) else 1


def _start(history: History, run_id: str, now: datetime, **fields: Any) -> None:
    history.start_run(run_id, "verify", started=now.isoformat(timespec="seconds"), **fields)


def _end(history: History, run_id: str, reports: list[DeviceReport], **fields: Any) -> None:
    history.add_devices(run_id, reports)
    results = [r.result for r in reports]
    history.update_run(run_id, finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       summary=summary_line(results), ok=int(all(r is Result.VERIFIED for r in results)), **fields)
