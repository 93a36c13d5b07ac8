"""``fleet verify PLAYBOOK|REF``: render :func:`fleet.pipeline.verify`."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from fleet import pipeline
from fleet.cli.render import print_report, short_digest
from fleet.errors import UsageError
from fleet.fanout import INTERRUPTED_EXIT
from fleet.output import emit_json, progress_line
from fleet.playbook import RegistrySettings, load_playbook
from fleet.publish import read_published
from fleet.registry import Reference
from fleet.reports import report_dir, save_report, usable_report_dir
from fleet.results import Result, summary_line
from fleet.selection import DeviceSelection

__all__ = ["run_verify"]


def run_verify(what: str, sel: DeviceSelection, *, name: str | None, as_json: bool,
               report_directory: str | None) -> int:
    """``fleet verify PLAYBOOK|REF``: read the index back from the registry (the playbook's
    ``image`` tag, or REF: a tag or ``repo@digest``), then :func:`fleet.pipeline.verify`.
    The container is the playbook's ``container.name``, else ``--name``, else the
    repository's last path component. Exit 0 only when every device verified."""
    p = Path(what)
    if p.is_file() or p.exists():
        playbook = load_playbook(p)
        reference, settings = playbook.image, playbook.registry
        name = name or playbook.container_spec.name
    else:
        if what.endswith((".yaml", ".yml")):
            raise UsageError(f"{what}: no such playbook file")
        ref = Reference.parse(what)
        reference, settings = what, RegistrySettings()
        name = name or ref.repository.rsplit("/", 1)[-1]
    directory = usable_report_dir(report_dir(report_directory))
    sel.hosts()  # a malformed inventory or --limit is a usage error before the registry is asked
    published = read_published(reference, settings)
    with pipeline.Run(sel) as run:
        reports = pipeline.verify(run, published, name)
    summary = summary_line([r.result for r in reports])
    now = datetime.now(timezone.utc)
    doc = {"reference": published.reference, "index_digest": published.index_digest, "container": name,
           "time": now.isoformat(timespec="seconds"), "publish": published.to_dict(),
           "devices": [r.to_dict() for r in reports], "summary": summary}
    if as_json:
        emit_json([{**r.to_dict(), "index_digest": published.index_digest} for r in reports])
    else:
        print_report(f"verify {published.reference} @ {short_digest(published.index_digest)} (container {name})",
                     reports, summary)
    path = save_report(doc, directory, f"verify-{now:%Y%m%dT%H%M%SZ}-{os.getpid()}.json")
    if path:
        progress_line(f"report saved to {path}")
    if any(r.result is Result.INTERRUPTED for r in reports):
        return INTERRUPTED_EXIT
    return 0 if all(r.result is Result.VERIFIED for r in reports) else 1
