"""Housekeeping on a device: images of the app older than the previous release go, so an
SD card does not fill release after release (Kamal's ``prune``: keep the last N images of
the service). Only images of the app's repository are considered, and the engine itself
refuses to remove an image a container still uses."""

from __future__ import annotations

from typing import Iterable, Sequence

from fleet.engine import Engine, ImageSummary

__all__ = ["images_to_prune", "prune_app"]


def images_to_prune(images: Sequence[ImageSummary], repository: str, keep_ids: Iterable[str],
                    keep: int) -> list[ImageSummary]:
    """Which images of ``repository`` to remove: all but those in ``keep_ids`` (what the app
    runs now and ran before) topped up with the newest ones until ``keep`` are kept.
    Newest first by the engine's creation time."""
    mine = sorted((i for i in images if i.of(repository)), key=lambda i: i.created, reverse=True)
    kept = {i for i in keep_ids if i}
    for image in mine:
        if len(kept) >= keep:
            break
        kept.add(image.id)
    return [i for i in mine if i.id not in kept]


def prune_app(engine: Engine, repository: str, keep_ids: Iterable[str], keep: int) -> tuple[list[str], list[str]]:
    """Remove the images :func:`images_to_prune` picks; returns ``(removed, refused)`` image
    IDs (refused: still used by a container, or the engine said no)."""
    removed, refused = [], []
    for image in images_to_prune(engine.images(), repository, keep_ids, keep):
        (removed if engine.remove_image(image.id) else refused).append(image.id)
    return removed, refused
