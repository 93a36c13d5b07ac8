"""``fleet detect FILE``: decide the platform of devices from recorded facts.

Reads a JSON or YAML file holding one facts object (``{"uname_m": "armv6l", ...}``), an
object with a ``facts`` key (``{"host": NAME, "facts": {...}}``, the shape ``fleet facts
--json`` prints per device) or a list of either, and runs :func:`fleet.detect.detect` on
each entry.
"""

from __future__ import annotations

from fleet.detect import Detection, detect
from fleet.factsfile import load_facts_file
from fleet.output import emit_json, out, table


def run_detect(path: str, as_json: bool) -> int:
    """Detect every entry of ``path``; print a table (or JSON list); return the exit status.

    0 every entry decided, 1 any entry undecided. Raises InputFileError (exit 2) for a
    malformed file. JSON: a list of ``{"host": ..., "detection": Detection.to_dict()}``
    (the same ``detection`` shape ``fleet probe --json`` prints).
    """
    entries = load_facts_file(path)
    results: list[tuple[str, Detection]] = []
    for entry in entries:
        if entry.facts is None:
            det = Detection(error=f"no facts gathered{': ' + entry.note if entry.note else ''}")
        else:
            det = detect(entry.facts)
        results.append((entry.host, det))
    if as_json:
        emit_json([{"host": host, "detection": det.to_dict()} for host, det in results])
    else:
        rows = [
            (
                host,
                det.platform,
                det.bitness,
                det.endianness,
                det.engine_platform,
                f"error: {det.error}" if det.error else "; ".join(det.warnings),
            )
            for host, det in results
        ]
        out.print(table(None, ["host", "platform", "bits", "endianness", "engine platform", "warnings / error"], rows))
    return 0 if all(det.platform is not None for _, det in results) else 1
