"""Rollout decisions for a fleet: batches, failure thresholds, what to do when one is
crossed. Pure, no I/O: :func:`fleet.pipeline.deploy` asks these and acts.

* **Batches** follow Ansible's ``serial`` (ansible-core
  ``lib/ansible/executor/playbook_executor.py`` ``_get_serialized_batches``): each entry is
  the size of one batch, a count or a percentage of the selected devices (at least 1), and
  the last entry repeats until every device has had its batch. ``[1, "10%", "100%"]`` is a
  canary, then a tenth of the fleet, then the rest.
* **Failure threshold** per batch: ``max_fail_percentage`` is crossed when the failed
  share EXCEEDS it (Ansible: "must be exceeded, not equalled"); ``max_fail`` when more than
  that many devices failed; with neither, when every device of the batch failed (Ansible's
  default). Unlike Ansible's ``serial``, an unreachable device counts as failed: a device
  that could not be updated is not a success.
* When a batch crosses a threshold the rollout stops: later batches are not touched
  (``skipped``), and with ``on_failure: rollback`` the devices this rollout already
  updated go back to what they ran before.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence, TypeVar

from fleet.errors import UsageError
from fleet.results import Result

__all__ = ["RolloutSpec", "BatchSize", "parse_batch", "parse_batches", "batches", "FAILED_RESULTS",
           "threshold_crossed"]

T = TypeVar("T")

#: Results that count against a batch's failure threshold.
FAILED_RESULTS = frozenset({Result.FAILED, Result.UNREACHABLE, Result.ROLLED_BACK, Result.REFUSED, Result.CRASHED,
                            Result.DRIFTED, Result.MISSING, Result.INTERRUPTED})

_PERCENT = re.compile(r"(\d+(?:\.\d+)?)%")


@dataclass(frozen=True)
class BatchSize:
    """One ``batches`` entry: ``count`` devices, or ``percent`` of the selected devices."""

    count: int | None = None
    percent: float | None = None

    def size(self, total: int) -> int:
        """Devices in a batch of this size for ``total`` selected devices (at least 1):
        ansible-core ``pct_to_int(value, num_items, min_value=1)``."""
        if self.count is not None:
            return max(1, self.count)
        assert self.percent is not None
        return max(1, int(total * self.percent / 100.0))

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{self.percent:g}%"


@dataclass(frozen=True)
class RolloutSpec:
    """A playbook's ``rollout:``: ``batches`` (empty: one batch of every device),
    ``pause`` (seconds between batches), ``max_fail_percentage`` and ``max_fail`` (None:
    no threshold; both may be set, either stops), ``on_failure`` (``stop`` or ``rollback``),
    ``keep_images`` (images of the app kept on a device after a verified deploy: the
    current and previous releases by default)."""

    batches: tuple[BatchSize, ...] = ()
    pause: float = 0.0
    max_fail_percentage: float | None = None
    max_fail: int | None = None
    on_failure: str = "stop"
    keep_images: int = 2


def parse_batch(value: object, where: str) -> BatchSize:
    """A batch size from a playbook or ``--batch`` value: a positive integer, or a
    percentage ``"N%"`` (0 < N <= 100). Raises UsageError naming ``where``."""
    if isinstance(value, bool):
        raise UsageError(f"{where}: a batch is a count or a percentage such as \"10%\", got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise UsageError(f"{where}: a batch has at least 1 device, got {value}")
        return BatchSize(count=value)
    text = str(value).strip()
    if text.isdigit():
        return parse_batch(int(text), where)
    m = _PERCENT.fullmatch(text)
    if not m:
        raise UsageError(f"{where}: a batch is a count or a percentage such as \"10%\", got {value!r}")
    pct = float(m.group(1))
    if not (0 < pct <= 100) or not math.isfinite(pct):
        raise UsageError(f"{where}: a batch percentage is more than 0% and at most 100%, got {text}")
    return BatchSize(percent=pct)


def parse_batches(text: str) -> tuple[BatchSize, ...]:
    """``--batch 1,10%,100%`` as batch sizes. Raises UsageError."""
    parts = [p for p in text.split(",")]
    if not text.strip() or any(not p.strip() for p in parts):
        raise UsageError(f"--batch {text!r}: give counts and percentages separated by commas, e.g. 1,10%,100%")
    return tuple(parse_batch(p, f"--batch {text}") for p in parts)


def batches(items: Sequence[T], sizes: Sequence[BatchSize]) -> list[list[T]]:
    """Split ``items`` (in order) into batches of ``sizes`` (the last size repeats);
    no sizes: one batch of everything. ansible-core ``_get_serialized_batches``."""
    items = list(items)
    if not items:
        return []
    if not sizes:
        return [items]
    total = len(items)
    out: list[list[T]] = []
    i = 0
    while i < total:
        size = sizes[min(len(out), len(sizes) - 1)].size(total)
        out.append(items[i:i + size])
        i += size
    return out


def threshold_crossed(results: Sequence[Result], spec: RolloutSpec) -> str | None:
    """Why a batch with ``results`` stops the rollout (a sentence), or None when it
    does not. Without ``max_fail``/``max_fail_percentage`` a batch stops the rollout only
    when every device of it failed (Ansible's default for ``serial``)."""
    n = len(results)
    failed = sum(1 for r in results if Result(r) in FAILED_RESULTS)
    if not n or not failed:
        return None
    if spec.max_fail is None and spec.max_fail_percentage is None:
        return f"all {n} device{'s' if n != 1 else ''} of the batch failed" if failed == n else None
    if spec.max_fail is not None and failed > spec.max_fail:
        return f"{failed} of {n} devices failed, more than max_fail {spec.max_fail}"
    if spec.max_fail_percentage is not None and 100.0 * failed / n > spec.max_fail_percentage:
        return (f"{failed} of {n} devices failed ({100.0 * failed / n:.0f}%), more than max_fail_percentage "
                f"{spec.max_fail_percentage:g}%")
    return None
