"""Rendering shared by the per-device report commands (deploy, verify): Ansible's PLAY
RECAP, one row per device, then the reasons and log tails of those that did not make it."""

from __future__ import annotations

from typing import Sequence

from fleet.output import line, out, table
from fleet.results import DeviceReport, summary_line

__all__ = ["short_digest", "print_report", "print_services", "device_line"]


def short_digest(d: str | None) -> str | None:
    """``sha256:0123456789ab...`` -> ``0123456789ab`` (Docker's short-ID style)."""
    if not d:
        return None
    algo, _, h = d.partition(":")
    return h[:12] if h and algo == "sha256" else d


def print_report(title: str, reports: Sequence[DeviceReport], summary: str | None = None) -> None:
    """The per-device table, each failure's reason and log tail, the summary line."""
    rows = []
    for r in reports:
        entry = r.entry_platform
        if entry and r.explicit_platform:
            entry += " (--platform)"
        rows.append((r.host, r.platform, r.engine_platform, entry, short_digest(r.pulled),
                     short_digest(r.config_digest), str(r.result), f"{r.seconds:.1f}s"))
    out.print(table(title, ["device", "platform", "engine platform", "planned entry", "pulled child",
                            "config digest", "result", "time"], rows))
    print_services(reports)
    for r in reports:
        if r.reason:
            line(f"{r.host}: {r.result}: {r.reason}")
        if r.log_tail and not r.ok:
            line(f"{r.host}: last log lines:\n" + "\n".join("  | " + ln for ln in r.log_tail.splitlines()[-5:]))
    line(summary or summary_line([r.result for r in reports]))


def print_services(reports: Sequence[DeviceReport]) -> None:
    """For an app of several services (a Compose stack): one row per device and service
    (its container, planned entry, pulled child, config digest, result). Nothing for a
    one-container app, whose row above says it all."""
    rows = [(r.host, s.get("service") or "", s.get("container") or "", s.get("entry_platform") or "",
             short_digest(s.get("pulled")), short_digest(s.get("config_digest")), str(s.get("result") or ""))
            for r in reports for s in r.services]
    if any(len(r.services) > 1 for r in reports):
        out.print(table("services", ["device", "service", "container", "planned entry", "pulled child",
                                     "config digest", "result"], rows))


def device_line(r: DeviceReport) -> str:
    """One progress line as a device finishes (Ansible prints a line per host): what a CI
    log shows while the run goes on."""
    return f"{r.host}: {r.result}" + (f" ({r.reason[:120]})" if r.reason and not r.ok else "") + f" [{r.seconds:.1f}s]"
