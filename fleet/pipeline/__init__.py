"""The one composer: the only place where the stages meet.

    select devices -> probe (raw facts) -> detect (platform) -> plan -> build/pick +
    publish (one tag) -> deploy, batch by batch (pull, device-side transaction, verify)
    -> verify

Each function takes the previous stage's typed value and returns its own; the CLI modules
(:mod:`fleet.cli`) only parse options, call these and render what comes back. One
:class:`Run` holds what a command run shares: the device selection and ONE SSH session per
device, reused by every stage. :mod:`.stages` holds the first stages, :mod:`.rollouts`
deploy and rollback, :mod:`.inspecting` verify, status and prune.

Ctrl-C: the probe and verify stop at once (sessions closed, unfinished devices reported
"interrupted"); a deploy stops starting new devices, lets those already at work finish,
and stops waiting at a second Ctrl-C. Either way what was gathered is returned, printed
and saved.
"""

from fleet.pipeline.apps import AppImage, Planned, app_name, plan_app
from fleet.pipeline.inspecting import PruneRow, StatusRow, prune, status, verify, verify_app
from fleet.pipeline.rollouts import DeployRun, deploy, rollback
from fleet.pipeline.stages import Probed, Run, parse_platforms, plan, plan_from_facts, probe, publish

__all__ = ["Run", "Probed", "probe", "plan", "plan_from_facts", "publish", "parse_platforms", "DeployRun", "deploy",
           "rollback", "verify", "verify_app", "status", "StatusRow", "prune", "PruneRow", "AppImage", "Planned", "app_name",
           "plan_app"]
