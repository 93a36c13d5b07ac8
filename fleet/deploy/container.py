"""What fleet records on a device's container, and the names it parks containers under.

Labels (``io.fleet.*``) are the device's own record of a deployment: the next deploy reads
them to decide "unchanged?", verify reads them to prove which index and child a container
came from, rollback reads ``previous-*`` to know where to go back to.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Mapping

from fleet.engine import ContainerState
from fleet.labels import LABEL
from fleet.playbook import ContainerSpec

__all__ = ["LABEL", "spec_digest", "deployment_labels", "previous_of", "NEW", "PREVIOUS", "FAILED",
           "parked_names"]

#: Suffixes of the parked containers of a swap: the one created for the new release, the
#: one that ran before (stopped, kept until commit), the one that failed its health check.
NEW, PREVIOUS, FAILED = ".new", ".previous", ".failed"


def parked_names(name: str) -> tuple[str, str, str]:
    """``(NAME.new, NAME.previous, NAME.failed)``."""
    return name + NEW, name + PREVIOUS, name + FAILED


def spec_digest(spec: ContainerSpec) -> str:
    """Short sha256 of the container settings (``io.fleet.spec``): a changed setting makes
    the next deploy recreate the container even when the image is the same."""
    doc = {k: (list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v)
           for k, v in asdict(spec).items()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def deployment_labels(*, deployment: str, playbook: str, reference: str, repository: str, index_digest: str,
                      manifest_digest: str, config_digest: str, platform: str, spec_id: str,
                      previous: ContainerState | None, app: str = "", service: str = "") -> dict[str, str]:
    """The ``io.fleet.*`` labels of a container created by ``deployment``; ``previous``:
    the container it replaces (its own labels become ``previous-*``); ``app``/``service``:
    the app it belongs to and its service in it."""
    labels = {
        LABEL["deployment"]: deployment,
        LABEL["playbook"]: playbook,
        LABEL["reference"]: reference,
        LABEL["repository"]: repository,
        LABEL["index"]: index_digest,
        LABEL["manifest"]: manifest_digest,
        LABEL["config"]: config_digest,
        LABEL["platform"]: platform,
        LABEL["spec"]: spec_id,
    }
    if app:
        labels[LABEL["app"]] = app
    if service:
        labels[LABEL["service"]] = service
    if previous is not None:
        pl = previous.labels
        labels[LABEL["previous_deployment"]] = pl.get(LABEL["deployment"], "")
        labels[LABEL["previous_index"]] = pl.get(LABEL["index"], "")
        labels[LABEL["previous_config"]] = pl.get(LABEL["config"], "") or previous.image_id
        labels[LABEL["previous_image"]] = previous.image_ref
    return labels


def previous_of(current: ContainerState) -> dict[str, str]:
    """What a report says ran before: ``deployment``, ``index_digest``, ``config_digest``,
    ``image``, ``status`` of the container being replaced."""
    return {"deployment": current.labels.get(LABEL["deployment"], ""),
            "index_digest": current.labels.get(LABEL["index"], ""),
            "config_digest": current.labels.get(LABEL["config"], "") or current.image_id,
            "image": current.image_ref, "status": current.status}
