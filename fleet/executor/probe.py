"""The ``probe`` handler: the device's raw facts, as :func:`fleet.pipeline.probe` gathers them.

Payload (all optional): ``timeout`` seconds for the probe command (default the host's
``fleet_probe_timeout``, else the session's command timeout), ``socket_path`` of the
engine (default ``/var/run/docker.sock``). Result::

    {"facts": {...}, "engine_via": "api" | "cli", "cost": {...}, "error": None}

``facts`` exactly as :func:`fleet.engine.probe.gather_with_api` returns them (the
controller runs :func:`fleet.detect.detect` on them: decisions stay with the controller),
``cost`` the channels, processes, API calls and bytes the probe asked of the device.
``error`` is always None in a result: a device that cannot be reached or probed makes the
handler raise, and the executor's Outcome carries that error.
"""

from __future__ import annotations

from typing import Any

from fleet.engine.probe import gather_with_api
from fleet.engine.transport import DEFAULT_SOCKET
from fleet.errors import UsageError
from fleet.executor.handlers import WorkerContext, register
from fleet.executor.work import DeviceWork

__all__ = ["probe_handler"]


@register("probe")
def probe_handler(work: DeviceWork, ctx: WorkerContext) -> dict[str, Any]:
    """Probe ``work.host`` through ``ctx`` (see the module docstring)."""
    target = ctx.target()
    wanted = work.payload.get("timeout", target.probe_timeout)
    if wanted is not None and (isinstance(wanted, bool) or not isinstance(wanted, (int, float)) or wanted <= 0):
        raise UsageError(f"{work.host}: probe timeout {wanted!r} is not a number of seconds above 0")
    socket_path = work.payload.get("socket_path", DEFAULT_SOCKET)
    if not isinstance(socket_path, str) or not socket_path.startswith("/"):
        raise UsageError(f"{work.host}: engine socket path {socket_path!r} is not an absolute path")
    session = ctx.session()
    if wanted is None:
        wanted = session.settings.command_timeout
    found = gather_with_api(session, target.become, device=work.host, socket_path=socket_path,
                            timeout=ctx.timeout(wanted))
    if found.engine is not None:
        found.engine.seed(found.version, found.info)
        ctx.adopt_engine(found.engine)
    return {"facts": dict(found.facts), "engine_via": found.engine_via, "cost": found.counters.to_dict(),
            "error": None}
