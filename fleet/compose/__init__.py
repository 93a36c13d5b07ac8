"""Compose stacks: a playbook's ``compose: FILE`` (issue 12).

* :func:`load_compose` reads and checks the file once (YAML 1.2, the Compose
  Specification's JSON schema, the keys fleet implements) -> :class:`ComposeFile`;
* :func:`resolve` / :func:`resolve_fleet` make each device's :class:`ResolvedStack`:
  values interpolated from the device's inventory variables, then the controller's
  environment; services as :class:`ServiceSpec`;
* :func:`start_order`, :func:`healthy_before`: ``depends_on``;
* :func:`ensure_stack_objects`: a device's networks and named volumes, created when
  missing (never removed);
* :func:`service_from_container`: a playbook's ``container:`` as a ServiceSpec.

docs/compose.md lists every key, its CLI flag and API field, and the keys refused.
"""

from fleet.compose.bridge import as_service, service_from_container
from fleet.compose.interpolate import InterpolationError, MissingRequired, substitute
from fleet.compose.load import ComposeFile, compose_of_playbook, load_compose
from fleet.compose.model import (
    DEFAULT_LOGGING,
    BuildSpec,
    Dependency,
    Healthcheck,
    Logging,
    Mount,
    NetworkAttachment,
    NetworkSpec,
    ServiceSpec,
    Ulimit,
    VolumeSpec,
    is_secret_name,
)
from fleet.compose.provision import StackObject, ensure_stack_objects
from fleet.compose.stack import (
    MASK,
    DeviceValues,
    ResolvedStack,
    VariableValue,
    device_lookup,
    healthy_before,
    resolve,
    resolve_fleet,
    start_order,
)

__all__ = [
    "as_service", "service_from_container", "InterpolationError", "MissingRequired", "substitute",
    "ComposeFile", "load_compose", "compose_of_playbook", "DEFAULT_LOGGING", "BuildSpec", "Dependency", "Healthcheck", "Logging",
    "Mount", "NetworkAttachment", "NetworkSpec", "ServiceSpec", "Ulimit", "VolumeSpec", "is_secret_name",
    "MASK", "DeviceValues", "ResolvedStack", "VariableValue", "device_lookup", "healthy_before", "resolve",
    "resolve_fleet", "start_order", "StackObject", "ensure_stack_objects",
]
