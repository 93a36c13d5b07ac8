"""What one device's deploy works on: its units (the app's containers, each with its
planned image entry and settings), the app-wide settings, and the run's options.

Each of them is also JSON data (``to_dict``/``from_dict``), the payload of a device's job
when the work runs elsewhere (:mod:`fleet.executor.handlers_deploy`)::

    {"job": DeviceJob.to_dict(), "app": App.to_dict(), "options": DeployOptions.to_dict(),
     "check_only": false}

No secret material travels: a unit's registry credentials are an :class:`AuthRef` (where
the credentials are: variable names, a Docker config path), resolved where the work runs;
the stack's interpolated values (what ``fleet plan`` shows) stay on the controller, and
:meth:`DeviceJob.secret_names` names the secret values a job's settings still hold (an
executor that sends jobs off this machine refuses those).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from fleet.compose.model import NetworkSpec, ServiceSpec, VolumeSpec, is_secret_name
from fleet.deploy.decide import DEFAULT_MIN_FREE
from fleet.deploy.devicetxn import LOCK_GRACE, AppRecord, settle_seconds
from fleet.engine import Engine
from fleet.errors import FleetError
from fleet.plan import DevicePlan
from fleet.playbook import HealthSpec
from fleet.results import DeviceReport
from fleet.verify import Expected

if TYPE_CHECKING:
    from fleet.compose import ResolvedStack
    from fleet.ssh import Session

__all__ = ["AuthRef", "Unit", "DeviceJob", "App", "DeployHooks", "DeployOptions", "DeviceLink", "new_deployment_id",
           "report_for", "JobFormatError", "deploy_hooks", "hooks_for", "deploy_deadline", "verify_deadline"]


class JobFormatError(FleetError):
    """A device's job that cannot be read (malformed, or written by another version of
    fleet): the message names the field."""


def _read(what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except (ValueError, TypeError, KeyError) as e:
        raise JobFormatError(f"malformed {what}: {e}") from None


@dataclass(frozen=True)
class AuthRef:
    """Where the credentials a device pulls ``registry``'s images with are found, never what
    they are: ``username_env``/``password_env`` (names of environment variables),
    ``docker_config`` (a Docker ``config.json`` path; None: the default one, with its
    credential helpers), as a playbook's ``registry:`` section names them. Resolved where
    the work runs (:func:`fleet.registry.resolve_credentials`): the controller's
    environment for a local run, the site worker's for a job at a site."""

    registry: str
    username_env: str | None = None
    password_env: str | None = None
    docker_config: str | None = None

    def settings(self) -> dict[str, str | None]:
        """``{"username_env", "password_env", "docker_config"}``."""
        return {"username_env": self.username_env, "password_env": self.password_env,
                "docker_config": self.docker_config}

    def to_dict(self) -> dict[str, str | None]:
        return {"registry": self.registry, **self.settings()}

    @classmethod
    def from_dict(cls, data: Any) -> "AuthRef":
        keys = ("registry", "username_env", "password_env", "docker_config")
        if not isinstance(data, dict) or set(data) - set(keys) or not isinstance(data.get("registry"), str) \
                or not all(data.get(k) is None or isinstance(data.get(k), str) for k in keys):
            raise ValueError(f"auth: not a credentials reference: {sorted(map(str, data)) if isinstance(data, dict) else data!r}")
        return cls(**{k: data.get(k) for k in keys})


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
    (the device's plan against that image's index), ``auth`` (where the credentials for
    its registry are, resolved where the work runs; None: the device's own)."""

    service: str
    container: str
    spec: ServiceSpec
    expected: Expected
    plan: DevicePlan
    size: int = 0
    auth: AuthRef | None = None

    @property
    def checked(self) -> bool:
        """It has a healthcheck of its own that must report healthy."""
        hc = self.spec.healthcheck
        return hc is not None and bool(hc.test) and hc.test[0].upper() != "NONE"

    def to_dict(self) -> dict[str, Any]:
        return {"service": self.service, "container": self.container, "spec": self.spec.to_dict(),
                "expected": self.expected.to_dict(), "plan": self.plan.to_dict(), "size": self.size,
                "auth": self.auth.to_dict() if self.auth is not None else None}

    @classmethod
    def from_dict(cls, data: Any) -> "Unit":
        """From :meth:`to_dict`'s output. Raises :class:`JobFormatError` naming the field."""
        if not isinstance(data, dict) or set(data) != {"service", "container", "spec", "expected", "plan", "size",
                                                       "auth"}:
            raise JobFormatError(f"malformed unit: {sorted(map(str, data)) if isinstance(data, dict) else data!r}")
        if not isinstance(data["service"], str) or not isinstance(data["container"], str) \
                or isinstance(data["size"], bool) or not isinstance(data["size"], int):
            raise JobFormatError("malformed unit: service, container or size")
        where = f"unit {data['container']}"
        return cls(data["service"], data["container"], _read(where, lambda: ServiceSpec.from_dict(data["spec"])),
                   _read(where, lambda: Expected.from_dict(data["expected"])),
                   _read(where, lambda: DevicePlan.from_dict(data["plan"])), data["size"],
                   None if data["auth"] is None else _read(where, lambda: AuthRef.from_dict(data["auth"])))


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

    def secret_names(self) -> list[str]:
        """The secret values this job's settings hold, by name: the stack's interpolated
        values marked secret (:class:`fleet.compose.VariableValue`), and container
        variables named like a secret (:func:`fleet.compose.is_secret_name`) with a value.
        Each as ``NAME`` or ``SERVICE: NAME``."""
        names: list[str] = []
        if self.stack is not None:
            names += [v.name for v in self.stack.values.values if v.secret and v.value]
        for u in self.units:
            for k, v in u.spec.env.items():
                if v and is_secret_name(k):
                    names.append(f"{u.service}: {k}" if len(self.units) > 1 or self.stack is not None else k)
        return list(dict.fromkeys(names))

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON data (module docstring). The stack travels as what the device
        needs (project, networks, volumes, start order), never its values."""
        stack = None
        if self.stack is not None:
            stack = {"project": self.stack.project, "networks": [n.to_dict() for n in self.stack.networks.values()],
                     "volumes": [v.to_dict() for v in self.stack.volumes.values()], "order": list(self.stack.order),
                     "healthy_before": [[k, list(v)] for k, v in self.stack.healthy_before.items()]}
        return {"host": self.host, "units": [u.to_dict() for u in self.units], "app": self.app,
                "record": self.record.to_dict() if self.record is not None else None,
                "healthy_before": [[k, list(v)] for k, v in self.healthy_before.items()], "stack": stack}

    @classmethod
    def from_dict(cls, data: Any) -> "DeviceJob":
        """From :meth:`to_dict`'s output. Raises :class:`JobFormatError` naming the field."""
        if not isinstance(data, dict) or set(data) != {"host", "units", "app", "record", "healthy_before", "stack"}:
            raise JobFormatError(f"malformed job: {sorted(map(str, data)) if isinstance(data, dict) else data!r}")
        host, app = data["host"], data["app"]
        if not isinstance(host, str) or not isinstance(app, str) or not isinstance(data["units"], list) \
                or not data["units"]:
            raise JobFormatError("malformed job: host, app or units")
        units = tuple(Unit.from_dict(u) for u in data["units"])
        record = None if data["record"] is None else _read("record", lambda: AppRecord.from_dict(data["record"]))
        before = _pairs(data["healthy_before"], "healthy_before")
        stack = None
        if data["stack"] is not None:
            stack = _stack(host, data["stack"], units)
        return cls(host, units, app, record, before, stack)


def _pairs(data: Any, where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(data, list) or not all(
            isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], list)
            and all(isinstance(x, str) for x in p[1]) for p in data):
        raise JobFormatError(f"malformed job: {where}")
    return {k: tuple(v) for k, v in data}


def _stack(host: str, data: Any, units: tuple[Unit, ...]) -> "ResolvedStack":
    from fleet.compose.stack import DeviceValues, ResolvedStack

    if not isinstance(data, dict) or set(data) != {"project", "networks", "volumes", "order", "healthy_before"} \
            or not isinstance(data["project"], str) or not isinstance(data["networks"], list) \
            or not isinstance(data["volumes"], list) or not isinstance(data["order"], list) \
            or not all(isinstance(s, str) for s in data["order"]):
        raise JobFormatError("malformed job: stack")
    nets = [_read("stack network", lambda n=n: NetworkSpec.from_dict(n)) for n in data["networks"]]
    vols = [_read("stack volume", lambda v=v: VolumeSpec.from_dict(v)) for v in data["volumes"]]
    return ResolvedStack(host, data["project"], {u.service: u.spec for u in units}, {n.key: n for n in nets},
                         {v.key: v for v in vols}, DeviceValues(host), tuple(data["order"]),
                         _pairs(data["healthy_before"], "stack.healthy_before"))


@dataclass(frozen=True)
class App:
    """What every device runs: ``reference`` (the tag published, or the stack's first
    image), ``playbook`` (its name) and ``health`` (the playbook's check of the whole app)."""

    reference: str
    playbook: str
    health: HealthSpec

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "playbook": self.playbook, "health": self.health.to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> "App":
        if not isinstance(data, dict) or set(data) != {"reference", "playbook", "health"} \
                or not isinstance(data["reference"], str) or not isinstance(data["playbook"], str):
            raise JobFormatError("malformed app")
        return cls(data["reference"], data["playbook"], _read("app", lambda: HealthSpec.from_dict(data["health"])))


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

    def to_dict(self) -> dict[str, Any]:
        """Every option but ``hooks`` (callbacks of this process: see :func:`deploy_hooks`)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "hooks"}

    @classmethod
    def from_dict(cls, data: Any) -> "DeployOptions":
        """From :meth:`to_dict`'s output, with the hooks this process registered for the
        deployment (:func:`hooks_for`; none in another process)."""
        kinds: dict[str, tuple[type, ...]] = {"forks": (int,), "min_free": (int,), "log_tail": (int,),
                                              "pull_timeout": (int, float), "pull_attempts": (int,),
                                              "stop_timeout": (int,), "keep_images": (int, type(None)),
                                              "deployment": (str,)}
        if not isinstance(data, dict) or set(data) != set(kinds) or any(
                isinstance(data[k], bool) or not isinstance(data[k], t) for k, t in kinds.items()):
            raise JobFormatError(f"malformed deploy options: {data!r}"[:300])
        return cls(**data, hooks=hooks_for(data["deployment"]) or DeployHooks())


@dataclass(frozen=True)
class DeviceLink:
    """How the deploy reaches one device besides its engine: ``session()`` returns its open
    SSH session (a new one after a drop), ``become`` runs docker through ``sudo -n``."""

    session: Callable[[], "Session"]
    become: bool = False


_HOOKS: dict[str, DeployHooks] = {}
_HOOKS_LOCK = threading.Lock()


@contextlib.contextmanager
def deploy_hooks(deployment: str, hooks: DeployHooks) -> Iterator[None]:
    """Make ``hooks`` the callbacks of ``deployment``'s device work run in THIS process
    while the block runs (work items carry data only; a device's work done at a site
    has no hooks)."""
    with _HOOKS_LOCK:
        _HOOKS[deployment] = hooks
    try:
        yield
    finally:
        with _HOOKS_LOCK:
            if _HOOKS.get(deployment) is hooks:
                del _HOOKS[deployment]


def hooks_for(deployment: str) -> DeployHooks | None:
    """The hooks registered for ``deployment`` in this process (:func:`deploy_hooks`)."""
    with _HOOKS_LOCK:
        return _HOOKS.get(deployment)


#: Seconds a device's deploy may spend besides pulling and its transaction: observing the
#: containers, the space check, creating the new ones, the final verify and pruning.
DEPLOY_WORK = 300
#: Seconds a verify, or a check-only deploy, may spend on the device.
VERIFY_WORK = 300


def deploy_deadline(job: DeviceJob, app: App, options: DeployOptions, *, check_only: bool = False,
                    connect: float = 0.0) -> float:
    """Seconds one device's deploy (or rollback) may take, its job's deadline: ``connect``
    (opening the SSH session, with its retries) + ``options.pull_timeout`` (every pull
    attempt) + the device-side transaction's settle time
    (:func:`fleet.deploy.devicetxn.settle_seconds`: the health timeout, each member's stop
    timeout twice, :data:`fleet.deploy.devicetxn.MARGIN`) + :data:`LOCK_GRACE` (following a
    transaction of the same deployment already running: a job delivered again) +
    :data:`DEPLOY_WORK`. A check-only deploy: ``connect`` + :data:`VERIFY_WORK`."""
    if check_only:
        return float(connect + VERIFY_WORK)
    stops = max(_stop_timeout(u, options) for u in job.units) * len(job.units)  # as the transaction is sized
    return float(connect + options.pull_timeout + settle_seconds(app.health, stops) + LOCK_GRACE + DEPLOY_WORK)


def verify_deadline(job: DeviceJob, connect: float = 0.0) -> float:
    """Seconds one device's verify may take: ``connect`` + :data:`VERIFY_WORK` + 30 s per
    unit beyond the first."""
    return float(connect + VERIFY_WORK + 30 * (len(job.units) - 1))


def _stop_timeout(unit: Unit, options: DeployOptions) -> int:
    grace = unit.spec.stop_grace_period
    return int(round(grace)) if grace is not None else options.stop_timeout


def report_for(host: str, plan: DevicePlan | None) -> DeviceReport:
    """An empty report row for ``host`` with its planned platforms filled in."""
    def s(p: Any) -> str | None:
        return None if p is None else str(p)

    if plan is None:
        return DeviceReport(host)
    return DeviceReport(host, s(plan.platform), s(plan.engine_platform), s(plan.entry_platform),
                        bool(plan.explicit_platform))
