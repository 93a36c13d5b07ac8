"""Deploy one published release to devices: per device, observe (:mod:`.view`), decide
(:mod:`.decide`, pure), pull and check, then the swap, health check and commit or rollback
as one transaction the device runs by itself (:mod:`.txn` the steps as data,
:mod:`.devicetxn` the device side, :mod:`.remote` the controller side), orchestrated by
:mod:`.device`; verify by :mod:`.checking`. What one device works on is :mod:`.jobs`;
what fleet records on a container is :mod:`.container`.
"""

from fleet.deploy.checking import verify_device
from fleet.deploy.decide import DEFAULT_MIN_FREE, PULL_EXPANSION, space_needed
from fleet.deploy.device import deploy_device
from fleet.deploy.jobs import App, DeployHooks, DeployOptions, DeviceJob, DeviceLink, Unit, new_deployment_id, report_for

__all__ = ["App", "DeployHooks", "DeployOptions", "DeviceJob", "DeviceLink", "Unit", "deploy_device", "verify_device",
           "new_deployment_id", "report_for", "PULL_EXPANSION", "DEFAULT_MIN_FREE", "space_needed"]
