"""What fleet records on a device: labels on the app's containers (which deployment,
index, child and config digest a container came from, and what ran before) and the
device-side state folder of the transactions (:mod:`fleet.deploy.devicetxn`). Written by
:mod:`fleet.deploy`, read back by the probe, :mod:`fleet.verify`, the next deploy and
rollback."""

from __future__ import annotations

__all__ = ["LABEL", "STATE_DIR"]

#: The device-side state folder of the login user (a shell word, expanded on the device):
#: per app, its transaction lock, status, outcome and audit log.
STATE_DIR = "${FLEET_STATE_DIR:-$HOME/.fleet}"

#: Container labels fleet records a deployment under (read back by verify and by the next
#: deploy; ``previous-*`` hold the same keys of what ran before).
LABEL = {
    "deployment": "io.fleet.deployment",
    "playbook": "io.fleet.playbook",
    "reference": "io.fleet.reference",
    "repository": "io.fleet.repository",
    "index": "io.fleet.index-digest",
    "manifest": "io.fleet.manifest-digest",
    "config": "io.fleet.config-digest",
    "platform": "io.fleet.platform",
    "spec": "io.fleet.spec",
    "app": "io.fleet.app",
    "service": "io.fleet.service",
    "previous_deployment": "io.fleet.previous-deployment",
    "previous_index": "io.fleet.previous-index-digest",
    "previous_config": "io.fleet.previous-config-digest",
    "previous_image": "io.fleet.previous-image",
}
