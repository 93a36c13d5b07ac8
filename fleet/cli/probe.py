"""``fleet probe`` and ``fleet facts``: render what :func:`fleet.pipeline.probe` gathered."""

from __future__ import annotations

from typing import Any

from fleet.cli.options import make_executor
from fleet.detect import Detection
from fleet.executor import ExecutorOptions
from fleet.fanout import INTERRUPTED_EXIT
from fleet.output import emit_json, line, out, table
from fleet.pipeline import Run, probe
from fleet.selection import DeviceSelection

__all__ = ["run_probe", "run_facts", "userland_text"]


def userland_text(facts: dict[str, str], det: Detection) -> str | None:
    """Human summary of the userland, e.g. ``32-bit LE ARM (armhf)``; None when unknown.

    Bits and byte order come from the detection; the instruction set from the ELF header's
    e_machine (else the platform's architecture); the package architecture in brackets.
    """
    if det.bitness is None and det.endianness is None:
        return None
    parts = []
    if det.bitness:
        parts.append(f"{det.bitness}-bit")
    if det.endianness:
        parts.append("LE" if det.endianness == "little" else "BE")
    isa = det.userland_isa
    if isa is None and det.platform is not None:
        isa = det.platform.architecture
    if isa:
        parts.append(isa)
    pkg = next((facts[k] for k in ("dpkg_arch", "apk_arch", "rpm_arch") if facts.get(k)), None)
    text = " ".join(parts)
    return f"{text} ({pkg.strip()})" if pkg else text


def run_probe(sel: DeviceSelection, as_json: bool, executor: ExecutorOptions | None = None) -> int:
    """``fleet probe``: probe, detect, print one row per device and a summary line.

    Returns the exit status: 0 every device decided, 1 any device failed (unreachable,
    authentication, host key, probe error) or undecided, 130 interrupted. JSON: a list of
    ``{"host", "address", "ok", "facts", "detection", "error", "engine_via", "cost"}``:
    ``ok`` true when a platform was decided; ``detection`` is :meth:`Detection.to_dict`
    (None when no facts were gathered); ``error`` why the device failed or stayed
    undecided, else None; ``engine_via`` how the engine's facts were read (``api`` or
    ``cli``); ``cost`` what the probe asked of the device (channels, processes, API calls,
    bytes); ``worker``/``site`` who probed it (``local``/null: this machine; a site
    worker's node name and its site with ``--executor celery``).
    """
    with Run(sel, make_executor(executor)) as run:
        run.preflight()
        results = probe(run)
    docs: list[dict[str, Any]] = []
    rows = []
    decided = undecided = failed = 0
    for r in results:
        det = r.detection
        if det is None:
            failed += 1
        elif det.platform is None:
            undecided += 1
        else:
            decided += 1
        docs.append({"host": r.host, "address": r.address, "ok": det is not None and det.platform is not None,
                     "facts": r.facts, "detection": det.to_dict() if det is not None else None,
                     "error": r.error or (det.error if det is not None else None),
                     "engine_via": r.engine_via, "cost": r.cost, "worker": r.worker, "site": r.site})
        if det is None:
            rows.append((r.host, r.address, None, None, None, None, f"failed: {r.error}"))
        else:
            note = f"undecided: {det.error}" if det.error else "; ".join(det.warnings)
            rows.append((r.host, r.address, (r.facts or {}).get("uname_m"), userland_text(r.facts or {}, det),
                         det.engine_platform, det.platform, note))
    if as_json:
        emit_json(docs)
    else:
        out.print(table(None, ["host", "address", "kernel", "userland", "engine platform", "platform",
                               "warnings / error"], rows))
        line(f"{len(results)} device{'s' if len(results) != 1 else ''}: {decided} decided, "
             f"{undecided} undecided, {failed} unreachable/failed")
    if any(r.interrupted for r in results):
        return INTERRUPTED_EXIT
    return 0 if decided == len(results) else 1


def _first_line(text: str, limit: int = 70) -> str:
    lines = text.splitlines() or [""]
    first = lines[0] if len(lines[0]) <= limit else lines[0][: limit - 3] + "..."
    return first + (f"  (+{len(lines) - 1} lines)" if len(lines) > 1 else "")


def run_facts(sel: DeviceSelection, as_json: bool, executor: ExecutorOptions | None = None) -> int:
    """``fleet facts``: print every selected device's raw facts.

    Returns 0 when every device was probed, 1 otherwise, 130 interrupted. JSON: a list of
    ``{"host": NAME, "facts": {...}}`` (``"facts": null`` plus ``"error"`` for a failed
    device), the shape ``fleet detect FILE`` and ``fleet plan --facts FILE`` read back.
    """
    with Run(sel, make_executor(executor)) as run:
        run.preflight()
        results = probe(run, label="gathering facts")
    if as_json:
        docs: list[dict[str, Any]] = []
        for r in results:
            doc: dict[str, Any] = {"host": r.host, "facts": r.facts}
            if r.error is not None:
                doc["error"] = r.error
            docs.append(doc)
        emit_json(docs)
    else:
        rows = []
        for r in results:
            if r.facts is None:
                rows.append((r.host, None, f"failed: {r.error}"))
                continue
            for key, value in r.facts.items():
                rows.append((r.host, key, _first_line(value)))
        out.print(table(None, ["host", "fact", "value"], rows))
    if any(r.interrupted for r in results):
        return INTERRUPTED_EXIT
    return 0 if all(r.error is None for r in results) else 1
