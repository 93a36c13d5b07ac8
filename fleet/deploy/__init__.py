"""Deploy one published index to devices: per device, observe (:mod:`.view`), decide
(:mod:`.decide`, pure), pull and check, then swap (:mod:`.txn`), health-check
(:mod:`.health`) and commit or roll back (:mod:`.device`). What fleet records on a
container is :mod:`.container`.
"""

from fleet.deploy.decide import DEFAULT_MIN_FREE, PULL_EXPANSION, space_needed
from fleet.deploy.device import (
    App,
    DeployHooks,
    DeployOptions,
    DeviceJob,
    deploy_device,
    new_deployment_id,
    report_for,
    verify_device,
)

__all__ = ["App", "DeployHooks", "DeployOptions", "DeviceJob", "deploy_device", "verify_device",
           "new_deployment_id", "report_for", "PULL_EXPANSION", "DEFAULT_MIN_FREE", "space_needed"]
