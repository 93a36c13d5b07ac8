"""The rollout decisions for one device. Pure: a :class:`fleet.deploy.view.DeviceView` and
the planned entry in, a :class:`Decision` out; :mod:`fleet.deploy.device` performs it.

Rules, in order:

1. **Unchanged?** The app's container already runs this index's planned child with the
   same container settings (labels ``io.fleet.index-digest``, ``io.fleet.config-digest``,
   ``io.fleet.spec``), is running, and its image and container pass verification:
   nothing is touched.
2. **Pull?** Not when the engine already holds the planned ``REPO@<index digest>`` and it
   checks out as the planned child.
3. **Space** (only when pulling): the free space of the engine's data root must hold
   :data:`PULL_EXPANSION` x the child's compressed size (downloaded blobs plus extracted
   layers) plus ``min_free``; otherwise the device is refused before pulling, instead of
   filling an SD card.
4. **Which ``--platform``**: the pull names the planned platform when the device's engine
   would pick another entry by itself (:attr:`fleet.plan.DevicePlan.explicit_platform`:
   Docker 20.10 on a 32-bit Pi 4 asks for arm/v8 and takes the FIRST arm entry) or when
   its engine platform is unknown.
5. **Create with** the pulled image's ID on the classic store (its config digest: no
   ``--platform`` needed on create), or the index reference plus ``--platform`` on the
   containerd store, where the ID is the index digest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet.deploy.container import LABEL
from fleet.deploy.view import DeviceView
from fleet.engine import DiskSpace, ImageState
from fleet.platform import Platform
from fleet.results import Result
from fleet.verify import Check, Expected, check_container, check_image, verdict

__all__ = ["PULL_EXPANSION", "DEFAULT_MIN_FREE", "Decision", "decide", "space_needed", "space_refusal",
           "pull_platform", "create_from"]

#: A pull needs room for the compressed blobs while they download AND for the extracted
#: layers (overlay2 keeps both until the pull ends); gzip'd layers of typical images
#: expand about 2-3x, so budget 3x the compressed size.
PULL_EXPANSION = 3
#: Free space (bytes) that must remain on the data root after a pull (``--min-free``).
DEFAULT_MIN_FREE = 32 * 1024 * 1024


@dataclass
class Decision:
    """What to do on one device: ``keep`` (True: it already runs the planned child),
    ``pull`` (the image must be downloaded), ``reason`` (why keep, or what is redeployed and
    why), ``checks`` (the verification behind a keep or a redeploy)."""

    keep: bool
    pull: bool
    reason: str = ""
    checks: list[Check] = field(default_factory=list)


def _image_ok(expected: Expected, image: ImageState | None, store: str) -> bool:
    return image is not None and all(c.ok is not False for c in check_image(expected, image, store))


def decide(view: DeviceView, expected: Expected, spec_id: str) -> Decision:
    """Rules 1 and 2 of the module docstring for ``view`` and the planned ``expected``
    entry with container settings digest ``spec_id``."""
    current = view.current
    reason = ""
    checks: list[Check] = []
    if current is not None and current.running \
            and current.labels.get(LABEL["index"]) == expected.index_digest \
            and current.labels.get(LABEL["config"]) == expected.config_digest \
            and current.labels.get(LABEL["spec"]) == spec_id:
        checks = check_image(expected, view.current_image, view.store) + \
            check_container(expected, current, view.current_image, view.store)
        result, why = verdict(checks)
        if result is Result.VERIFIED:
            return Decision(True, False, f"already runs deployment {current.labels.get(LABEL['deployment'])}",
                            checks)
        reason = f"current container does not verify ({why}): redeploy"
    return Decision(False, not _image_ok(expected, view.planned_image, view.store), reason, checks)


def space_needed(size: int, min_free: int) -> int:
    """Bytes the data root must have free before pulling a child of ``size`` compressed
    bytes (:data:`PULL_EXPANSION` x size + ``min_free``)."""
    return PULL_EXPANSION * max(0, size) + max(0, min_free)


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1048576:.1f} MiB"


def space_refusal(space: DiskSpace, root: str, size: int, min_free: int) -> str | None:
    """Why a pull of a ``size``-byte child must not start on a data root ``root`` with
    ``space`` free, or None when it fits (rule 3)."""
    needed = space_needed(size, min_free)
    if space.available_bytes >= needed:
        return None
    where = root + (f" (measured at {space.path})" if space.path and space.path != root else "")
    return (f"not enough space on the engine's data root {where}: {_mib(space.available_bytes)} "
            f"free, {_mib(needed)} needed ({PULL_EXPANSION} x {_mib(size)} child + "
            f"{_mib(min_free)} --min-free); nothing pulled")


def pull_platform(expected: Expected, explicit_platform: bool, engine_platform: Platform | None) -> Platform | None:
    """The ``--platform`` a pull must name (rule 4), or None to let the engine pick."""
    return expected.platform if (explicit_platform or engine_platform is None) else None


def create_from(expected: Expected, pulled: ImageState, store: str) -> tuple[str, Platform | None]:
    """``(image reference, platform)`` to create the container from (rule 5)."""
    if store == "classic":
        return pulled.id, None
    return expected.pull_reference, expected.platform
