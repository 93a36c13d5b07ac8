"""The ``noop`` handler: touches no device; answers who ran it.

It checks and measures the path to a site (signing, the broker, a worker of the site, the
result coming back) without opening an SSH session: bench/sitebench.py uses it for the
dispatch cost per device. Payload: none. Result: ``{"host", "worker", "site"}``.
"""

from __future__ import annotations

from typing import Any

from fleet.executor.handlers import WorkerContext, register
from fleet.executor.work import DeviceWork

__all__ = ["noop_handler"]


@register("noop")
def noop_handler(work: DeviceWork, ctx: WorkerContext) -> dict[str, Any]:
    """Return ``{"host", "worker", "site"}`` without reaching the device."""
    return {"host": work.host, "worker": ctx.worker, "site": ctx.site}
