"""When a freshly started container counts as healthy (the playbook's ``health:``)."""

from __future__ import annotations

import time
from typing import Callable

from fleet.engine import ContainerState, Engine
from fleet.playbook import HealthSpec
from fleet.verify import crash_reason

__all__ = ["wait_healthy"]


def wait_healthy(engine: Engine, name: str, health: HealthSpec, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> tuple[bool, str]:
    """Wait until container ``name`` passes ``health`` or fails it; returns (ok, detail).

    Fails at once when the container stops, restarts or dies on its CPU
    (:func:`fleet.verify.crash_reason`); otherwise retries every ``health.interval`` seconds
    until ``health.timeout``. ``command`` runs inside the container (``docker exec``);
    ``http`` is fetched on the device (:meth:`fleet.engine.Engine.http_check`).
    """
    start = clock()
    deadline = start + health.timeout
    command_ok = health.command is None
    http_ok = health.http is None
    last = "not checked yet"
    first: ContainerState | None = None
    while True:
        c = engine.container(name)
        if c is None:
            return False, "the container disappeared"
        if first is None:
            first = c
        if not c.running or c.restarting or c.restart_count > first.restart_count \
                or c.started_at != first.started_at:
            logs = engine.logs(name, 5)
            crash = crash_reason(c, logs)
            state = crash or f"{c.status} (exit code {c.exit_code}{', restarting' if c.restarting else ''})"
            return False, f"stopped within {clock() - start:.0f} s: {state}"
        if c.health == "unhealthy":
            return False, "the image's own HEALTHCHECK reports unhealthy"
        if not command_ok:
            status, output = engine.exec(name, health.command or (), timeout=max(5.0, health.interval * 5))
            command_ok = status == 0
            if not command_ok:
                last = f"health command exited {status}: {output.strip()[-160:]}"
        if not http_ok:
            http_ok, detail = engine.http_check(health.http or "")
            if not http_ok:
                last = f"{health.http}: {detail}"
        ran = clock() - start
        if command_ok and http_ok and ran >= health.running:
            checks = [f"running {ran:.0f} s without a restart"]
            if health.command:
                checks.append("command ok")
            if health.http:
                checks.append(f"{health.http} answered")
            return True, ", ".join(checks)
        if command_ok and http_ok:
            last = f"running {ran:.0f} of {health.running:g} s"
        if clock() >= deadline:
            return False, f"not healthy after {health.timeout:g} s: {last}"
        sleep(min(health.interval, max(0.0, deadline - clock())))
