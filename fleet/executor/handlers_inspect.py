"""The ``inspect`` and ``prune`` handlers: read the app's containers, tidy the app's images.

``inspect`` payload ``{"containers": [NAME, ...]}``; result ``{"containers": {NAME: STATE
| null}}`` with ``STATE`` = ``{"image_id", "status", "running", "restarting",
"exit_code", "labels"}`` (``labels``: fleet's own, ``io.fleet.*``, only: the records
status and rollback read; an app's own labels stay on the device). The controller decides
what they mean (``fleet status`` against its history, ``fleet rollback`` which release to
go back to).

``prune`` payload ``{"pairs": [[REPOSITORY, CONTAINER], ...], "keep": N}``; result
``{"removed": [IMAGE_ID...], "refused": [IMAGE_ID...]}`` (:func:`fleet.deploy.prune.prune_app`:
images of each repository older than what the container runs and ran before, beyond the
newest ``keep``).
"""

from __future__ import annotations

from typing import Any

from fleet.deploy.jobs import JobFormatError
from fleet.deploy.prune import prune_app
from fleet.executor.handlers import WorkerContext, register
from fleet.executor.work import DeviceWork
from fleet.labels import LABEL

__all__ = ["inspect_handler", "prune_handler", "FLEET_LABEL_PREFIX"]

FLEET_LABEL_PREFIX = "io.fleet."


def _names(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise JobFormatError(f"{what} must be a non-empty list of names")
    return value


@register("inspect")
def inspect_handler(work: DeviceWork, ctx: WorkerContext) -> dict[str, Any]:
    """The state of each named container of ``work.host`` (module docstring)."""
    engine = ctx.engine()
    out: dict[str, Any] = {}
    for name in _names(work.payload.get("containers"), "containers"):
        c = engine.container(name)
        out[name] = None if c is None else {
            "image_id": c.image_id, "status": c.status, "running": c.running, "restarting": c.restarting,
            "exit_code": c.exit_code,
            "labels": {k: v for k, v in c.labels.items() if k.startswith(FLEET_LABEL_PREFIX)}}
    return {"containers": out}


@register("prune")
def prune_handler(work: DeviceWork, ctx: WorkerContext) -> dict[str, Any]:
    """Remove the images of each repository the app no longer needs (module docstring)."""
    pairs, keep = work.payload.get("pairs"), work.payload.get("keep")
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
                                              for p in pairs):
        raise JobFormatError("pairs must be a list of [repository, container]")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise JobFormatError("keep must be a count of images (at least 1)")
    engine = ctx.engine()
    removed: list[str] = []
    refused: list[str] = []
    for repository, container in pairs:
        c = engine.container(container)
        keep_ids = {c.image_id, c.labels.get(LABEL["previous_config"], "")} if c is not None else set()
        gone, kept = prune_app(engine, repository, keep_ids, keep)
        removed += gone
        refused += kept
    return {"removed": removed, "refused": refused}
