"""What one device's deploy works on: its units (the app's containers, each with its
planned image entry and settings), the app-wide settings, and the run's options."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping

from fleet.compose.model import ServiceSpec
from fleet.deploy.decide import DEFAULT_MIN_FREE
from fleet.deploy.devicetxn import AppRecord
from fleet.engine import Engine, PullAuth
from fleet.plan import DevicePlan
from fleet.playbook import HealthSpec
from fleet.results import DeviceReport
from fleet.verify import Expected

if TYPE_CHECKING:
    from fleet.compose import ResolvedStack
    from fleet.ssh import Session

__all__ = ["Unit", "DeviceJob", "App", "DeployHooks", "DeployOptions", "DeviceLink", "new_deployment_id",
           "report_for"]


def new_deployment_id(now: datetime | None = None) -> str:
    """``YYYYmmddTHHMMSSZ-xxxxxx`` (UTC time + 6 random hex digits): names one deploy run in
    labels and the report file."""
    import secrets

    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


@dataclass(frozen=True)
class Unit:
    """One container of the app on one device: ``service`` (its Compose service, or the
    container's name for a playbook's ``container:``), ``container`` (its name on the
    device), ``spec`` (its settings, values resolved for this device), ``expected`` (the
    planned entry of its image), ``size`` (bytes the child weighs compressed), ``plan``
    (the device's plan against that image's index), ``auth`` (credentials for its
    registry, None: the device's own)."""

    service: str
    container: str
    spec: ServiceSpec
    expected: Expected
    plan: DevicePlan
    size: int = 0
    auth: PullAuth | None = None

    @property
    def checked(self) -> bool:
        """It has a healthcheck of its own that must report healthy."""
        hc = self.spec.healthcheck
        return hc is not None and bool(hc.test) and hc.test[0].upper() != "NONE"


@dataclass(frozen=True)
class DeviceJob:
    """One device's work: ``host``, ``units`` (in start order), ``app`` (the name of the app
    on the device: its transaction records and lock), ``record`` (what the probe read of
    those records), ``healthy_before`` (container -> the containers that must be healthy
    before it starts), ``stack`` (the resolved Compose stack: networks and volumes to
    make; None for a single container)."""

    host: str
    units: tuple[Unit, ...]
    app: str
    record: AppRecord | None = None
    healthy_before: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    stack: "ResolvedStack | None" = None

    @property
    def plan(self) -> DevicePlan:
        """The device's plan (its first unit's: the platforms are the device's)."""
        return self.units[0].plan

    @property
    def expected(self) -> Expected:
        return self.units[0].expected


@dataclass(frozen=True)
class App:
    """What every device runs: ``reference`` (the tag published, or the stack's first
    image), ``playbook`` (its name) and ``health`` (the playbook's check of the whole app)."""

    reference: str
    playbook: str
    health: HealthSpec


@dataclass
class DeployHooks:
    """Callbacks for tests and integrations (never needed by users).

    ``after_publish(result)`` runs once the index is pushed, before any device pulls;
    ``before_health(host, engine)`` runs when a device's transaction reports that the new
    containers started and their health check began."""

    after_publish: Callable[..., None] | None = None
    before_health: Callable[[str, Engine], None] | None = None


@dataclass
class DeployOptions:
    """``forks`` (devices at once), ``min_free`` (bytes to keep free), ``log_tail`` (log
    lines kept per device), ``pull_timeout`` (s, all attempts), ``pull_attempts`` (for
    transient errors), ``stop_timeout`` (s given to a container to stop unless its
    ``stop_grace_period`` says otherwise), ``keep_images`` (images of each of the app's
    repositories kept after a verified deploy; None: no pruning), ``deployment`` (id,
    default :func:`new_deployment_id`), ``hooks``."""

    forks: int = 50
    min_free: int = DEFAULT_MIN_FREE
    log_tail: int = 10
    pull_timeout: float = 1800.0
    pull_attempts: int = 4
    stop_timeout: int = 10
    keep_images: int | None = 2
    deployment: str = field(default_factory=new_deployment_id)
    hooks: DeployHooks = field(default_factory=DeployHooks)


@dataclass(frozen=True)
class DeviceLink:
    """How the deploy reaches one device besides its engine: ``session()`` returns its open
    SSH session (a new one after a drop), ``become`` runs docker through ``sudo -n``."""

    session: Callable[[], "Session"]
    become: bool = False


def report_for(host: str, plan: DevicePlan | None) -> DeviceReport:
    """An empty report row for ``host`` with its planned platforms filled in."""
    def s(p: Any) -> str | None:
        return None if p is None else str(p)

    if plan is None:
        return DeviceReport(host)
    return DeviceReport(host, s(plan.platform), s(plan.engine_platform), s(plan.entry_platform),
                        bool(plan.explicit_platform))
