"""Deploy one published index to devices: per device, observe (:mod:`.view`), decide
(:mod:`.decide`, pure), pull and check, then the swap, health check and commit or rollback
as one transaction the device runs by itself (:mod:`.txn` the steps as data,
:mod:`.devicetxn` the device side, :mod:`.remote` the controller side), orchestrated by
:mod:`.device`. What fleet records on a container is :mod:`.container`.
"""

from fleet.deploy.decide import DEFAULT_MIN_FREE, PULL_EXPANSION, space_needed
from fleet.deploy.device import (
    App,
    DeployHooks,
    DeployOptions,
    DeviceJob,
    DeviceLink,
    deploy_device,
    new_deployment_id,
    report_for,
    verify_device,
)

__all__ = ["App", "DeployHooks", "DeployOptions", "DeviceJob", "DeviceLink", "deploy_device", "verify_device",
           "new_deployment_id", "report_for", "PULL_EXPANSION", "DEFAULT_MIN_FREE", "space_needed"]
