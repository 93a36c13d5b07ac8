"""Per-device outcomes and the typed report row every fan-out command returns.

One :class:`Result` per device and command run (Ansible's recap has ok/changed/failed/
unreachable; fleet says what happened to the app). Errors are classified into results by
their TYPE where they enter (:func:`classify`), never by matching class or module names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any

from fleet.errors import FleetError

__all__ = ["Result", "DeviceReport", "classify", "summary_line", "RESULT_ORDER"]


class Result(str, Enum):
    """What one device ended with. The value is the word reports and ``--json`` carry."""

    VERIFIED = "verified"          # runs the planned child, checked
    UNCHANGED = "unchanged"        # already ran it: nothing touched
    WOULD_DEPLOY = "would-deploy"  # --check: would pull and replace
    WOULD_KEEP = "would-keep"      # --check: already runs it
    ROLLED_BACK = "rolled-back"    # new release unhealthy: back on the previous one
    DRIFTED = "drifted"            # runs another image/index/platform than planned
    CRASHED = "crashed"            # the planned image, not running (SIGILL, exec format error...)
    MISSING = "missing"            # no container of that name
    REFUSED = "refused"            # not attempted: a pre-check failed (disk space)
    FAILED = "failed"              # attempted and failed
    UNREACHABLE = "unreachable"    # no SSH session (network, host key, authentication)
    SKIPPED = "skipped"            # not attempted: the rollout stopped before its batch
    INTERRUPTED = "interrupted"    # Ctrl-C came before this device finished

    def __str__(self) -> str:
        return self.value

    @property
    def ok(self) -> bool:
        """True for the outcomes a rollout counts as success."""
        return self in (Result.VERIFIED, Result.UNCHANGED)

    @property
    def ok_in_check(self) -> bool:
        """True for the outcomes a ``--check`` run counts as success."""
        return self in (Result.WOULD_DEPLOY, Result.WOULD_KEEP)


#: Order of the summary line (``5 devices: 3 verified, 1 rolled-back, 1 unreachable``).
RESULT_ORDER = tuple(Result)


def classify(exc: BaseException) -> tuple[Result, str]:
    """``(result, reason)`` for an error raised while working on one device.

    SSH-level failures (:class:`fleet.ssh.SSHError`: unreachable, host key unknown/changed/
    revoked, authentication) are ``unreachable``; every other :class:`FleetError` is
    ``failed`` with its own message; anything else is an internal error (``failed``, with
    the exception type named so it can be reported).
    """
    from fleet.ssh import SSHError

    if isinstance(exc, SSHError):
        return Result.UNREACHABLE, str(getattr(exc, "reason", None) or exc)
    if isinstance(exc, FleetError):
        return Result.FAILED, str(getattr(exc, "reason", None) or exc)
    return Result.FAILED, f"internal error: {type(exc).__name__}: {exc}"


@dataclass
class DeviceReport:
    """One row of a deploy/verify/rollback report.

    ``platform`` decided for the device, ``engine_platform`` what its engine asks for,
    ``entry_platform`` the index entry planned for it, ``explicit_platform`` (pulled with
    ``--platform``), ``pulled`` the child manifest digest pulled, ``config_digest`` what the
    device's engine holds, ``result`` (:class:`Result`), ``reason``, ``seconds``,
    ``actions`` taken in order, ``checks`` (name/ok/detail), ``log_tail``, ``previous``
    (what ran before: deployment, index and config digest), ``free_bytes`` and
    ``needed_bytes`` on the data root, ``cost`` (what the work asked of the device),
    ``services`` (per unit of the app), ``worker`` (who did the work: ``local`` for this
    machine, the Celery node name of a site worker; None when no work ran for the device:
    skipped, or no worker took it), ``site`` (the site worker's site; None locally) and
    ``index_digest`` the image index the device was aimed at (a deploy's; for a rollback,
    the release that device goes back to).
    """

    host: str
    platform: str | None = None
    engine_platform: str | None = None
    entry_platform: str | None = None
    explicit_platform: bool = False
    pulled: str | None = None
    config_digest: str | None = None
    result: Result = Result.FAILED
    reason: str = ""
    seconds: float = 0.0
    actions: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    log_tail: str = ""
    previous: dict[str, str] | None = None
    free_bytes: int | None = None
    needed_bytes: int | None = None
    cost: dict[str, Any] | None = None
    services: list[dict[str, Any]] = field(default_factory=list)
    worker: str | None = None
    site: str | None = None
    index_digest: str | None = None

    @property
    def ok(self) -> bool:
        return Result(self.result).ok

    def fail(self, exc: BaseException) -> "DeviceReport":
        """Record ``exc`` as this device's outcome (:func:`classify`); returns self."""
        self.result, self.reason = classify(exc)
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["result"] = str(self.result)
        d["ok"] = self.ok
        return d

    @classmethod
    def from_dict(cls, data: Any) -> "DeviceReport":
        """The report in :meth:`to_dict`'s output (``ok`` is derived, not read). Raises
        ValueError naming an unknown field, a missing ``host`` or an unknown result."""
        if not isinstance(data, dict) or not isinstance(data.get("host"), str):
            raise ValueError(f"device report: not a report: {str(data)[:200]}")
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names - {"ok"}
        if unknown:
            raise ValueError(f"device report of {data['host']}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        values = {k: v for k, v in data.items() if k in names}
        try:
            values["result"] = Result(values.get("result", Result.FAILED.value))
        except ValueError:
            raise ValueError(f"device report of {data['host']}: unknown result {values.get('result')!r}") from None
        for key in ("actions", "checks", "services"):
            if not isinstance(values.get(key, []), list):
                raise ValueError(f"device report of {data['host']}: {key} is not a list")
        return cls(**values)


def summary_line(results: list[Result] | tuple[Result, ...]) -> str:
    """``"5 devices: 3 verified, 1 rolled-back, 1 unreachable"`` (fixed order)."""
    counts: dict[Result, int] = {}
    for r in results:
        counts[Result(r)] = counts.get(Result(r), 0) + 1
    parts = [f"{counts[k]} {k}" for k in RESULT_ORDER if counts.get(k)]
    n = len(results)
    return f"{n} device{'s' if n != 1 else ''}: " + (", ".join(parts) or "none")
