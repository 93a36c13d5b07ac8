"""Deploy one published index to devices: pull by digest, verify, run, health, rollback.

Per device (:func:`deploy_device`), in this order, so that a failure at any step leaves
the device running what it ran before:

1. **Unchanged?** If the app's container already runs this index's planned child with the
   same container settings (labels ``io.fleet.index-digest``, ``io.fleet.config-digest``,
   ``io.fleet.spec``) and passes verification, nothing is touched ("unchanged").
2. **Space.** Unless the image is already present, the free space of the engine's data root
   (``docker info`` DockerRootDir, then ``df -Pk`` on the device) must hold the child:
   ``PULL_EXPANSION`` x its compressed size (downloaded blobs plus extracted layers) plus
   ``min_free``. Otherwise the device is refused before pulling, instead of filling an SD
   card.
3. **Pull by digest**: ``docker pull REPO@<index digest>``, never the tag, which may move
   during a rollout. When the device's engine would pick another entry by itself
   (:attr:`fleet.plan.DevicePlan.explicit_platform`: Docker 20.10 on a 32-bit Pi 4 asks for
   arm/v8 and takes the FIRST arm entry, lab-recipe.md), the pull names the planned
   platform (``--platform linux/arm/v7``) and the report says so. Registry credentials go
   through :meth:`fleet.engine.Engine.pull` (stdin, temporary DOCKER_CONFIG, removed).
4. **Verify the pulled image** against the planned entry (:func:`fleet.verify.check_image`:
   config digest, platform, layers). A wrong child is never started.
5. **Run**: the new container is created as ``NAME.new`` from the pulled image's ID (the
   config digest on the classic store; engine 20.10 refuses nothing then, because no
   ``--platform`` is needed on ``create``), labelled with the deployment, index, child and
   what ran before (``io.fleet.*``, :data:`fleet.verify.LABEL`). Then the running
   ``NAME`` is renamed ``NAME.previous`` and stopped (not removed), and ``NAME.new``
   becomes ``NAME`` and starts.
6. **Health** (:class:`fleet.playbook.HealthSpec`): running without a restart for N
   seconds, a command inside the container, an HTTP URL fetched on the device.
7. **Rollback** on failure: the new container is stopped and kept as ``NAME.failed`` (for
   ``docker logs``), ``NAME.previous`` is renamed back and started; the device is reported
   "rolled-back". On success ``NAME.previous`` is removed (its image stays, so a manual
   rollback needs no download).
8. **Verify** the running container (:func:`fleet.verify.check_container`).

Rollout mechanics follow balena's default ``download-then-kill`` update strategy (download
and check first, stop the old container only then) with Ansible's recap-style report.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

from fleet.engine import ContainerState, Engine, EngineError
from fleet.errors import FleetError
from fleet.fanout import DEFAULT_FORKS, run_each
from fleet.platform import Platform
from fleet.playbook import ContainerSpec, HealthSpec
from fleet.registry.credentials import Credentials, docker_config_json
from fleet.verify import LABEL, Check, Expected, check_container, check_image, crash_reason, verdict

__all__ = [
    "PULL_EXPANSION",
    "DEFAULT_MIN_FREE",
    "DeployHooks",
    "DeployOptions",
    "DeviceJob",
    "DeviceReport",
    "new_deployment_id",
    "create_args",
    "spec_digest",
    "space_needed",
    "deploy_device",
    "deploy_devices",
]

#: A pull needs room for the compressed blobs while they download AND for the extracted
#: layers (overlay2 keeps both until the pull ends); gzip'd layers of typical images
#: expand about 2-3x, so budget 3x the compressed size.
PULL_EXPANSION = 3
#: Free space (bytes) that must remain on the data root after a pull (``--min-free``).
DEFAULT_MIN_FREE = 32 * 1024 * 1024

RESULTS_OK = ("verified", "unchanged")


def new_deployment_id(now: datetime | None = None) -> str:
    """``YYYYmmddTHHMMSSZ-xxxxxx`` (UTC time + 6 random hex digits): names one deploy run in
    labels and the report file."""
    import secrets

    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


@dataclass
class DeployHooks:
    """Callbacks for tests and integrations (never needed by users).

    ``after_publish(result)`` runs once the index is pushed, before any device pulls;
    ``before_health(host, engine)`` runs on a device once its new container started, before
    its health check."""

    after_publish: Callable[[Any], None] | None = None
    before_health: Callable[[str, Engine], None] | None = None


@dataclass
class DeployOptions:
    """``forks`` (devices at once), ``min_free`` (bytes to keep free), ``log_tail`` (log
    lines kept per device), ``pull_timeout`` (s), ``stop_timeout`` (s given to a container
    to stop), ``deployment`` (id, default :func:`new_deployment_id`), ``hooks``."""

    forks: int = DEFAULT_FORKS
    min_free: int = DEFAULT_MIN_FREE
    log_tail: int = 10
    pull_timeout: float = 1800.0
    stop_timeout: int = 10
    deployment: str = field(default_factory=new_deployment_id)
    hooks: DeployHooks = field(default_factory=DeployHooks)


@dataclass
class DeviceJob:
    """One device's work: ``host`` (inventory name), ``target`` (:class:`fleet.ssh.Target`),
    ``plan`` (:class:`fleet.plan.DevicePlan`), ``expected`` (the planned entry)."""

    host: str
    target: Any
    plan: Any
    expected: Expected


@dataclass
class DeviceReport:
    """One row of the deploy/verify report.

    ``platform`` decided for the device, ``engine_platform`` what its engine asks for,
    ``entry_platform`` the index entry planned for it, ``explicit_platform`` (pulled with
    ``--platform``), ``pulled`` the child manifest digest pulled, ``config_digest`` what the
    device's engine holds, ``result`` (verified, unchanged, rolled-back, failed, refused,
    unreachable, drifted, missing, crashed; ``--check``: would-deploy, would-keep), ``reason``,
    ``seconds``, ``actions`` taken in order, ``checks`` (name/ok/detail), ``log_tail``,
    ``previous`` (what ran before: deployment, index and config digest), ``free_bytes`` and
    ``needed_bytes`` on the data root.
    """

    host: str
    platform: str | None = None
    engine_platform: str | None = None
    entry_platform: str | None = None
    explicit_platform: bool = False
    pulled: str | None = None
    config_digest: str | None = None
    result: str = "failed"
    reason: str = ""
    seconds: float = 0.0
    actions: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    log_tail: str = ""
    previous: dict[str, str] | None = None
    free_bytes: int | None = None
    needed_bytes: int | None = None

    @property
    def ok(self) -> bool:
        return self.result in RESULTS_OK

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


# --------------------------------------------------------------------------- pure helpers


def spec_digest(spec: ContainerSpec) -> str:
    """Short sha256 of the container settings (``io.fleet.spec``): a changed setting makes
    the next deploy recreate the container even when the image is the same."""
    doc = {k: (list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v)
           for k, v in asdict(spec).items()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def create_args(spec: ContainerSpec, image: str, name: str, labels: Mapping[str, str], *,
                env_from_stdin: bool, platform: Platform | None = None) -> list[str]:
    """``docker create`` arguments for ``spec`` (Docker CLI flags; ``docker run`` reference).

    A multi-word ``entrypoint`` becomes ``--entrypoint FIRST`` plus the rest in front of the
    command, as ``--entrypoint`` takes one executable. With ``env_from_stdin`` the
    environment is read from ``--env-file /proc/self/fd/0`` (sent on the SSH channel) so that
    values never appear in a process's arguments on the device.
    """
    args = ["--name", name]
    if platform is not None:
        args += ["--platform", str(platform)]
    if spec.env and env_from_stdin:
        args += ["--env-file", "/proc/self/fd/0"]
    for p in spec.ports:
        args += ["-p", p]
    for v in spec.volumes:
        args += ["-v", v]
    for d in spec.devices:
        args += ["--device", d]
    if spec.restart:
        args += ["--restart", spec.restart]
    if spec.privileged:
        args.append("--privileged")
    if spec.network_mode:
        args += ["--network", spec.network_mode]
    for k, v in {**spec.labels, **labels}.items():
        args += ["--label", f"{k}={v}"]
    tail: list[str] = []
    if spec.entrypoint:
        args += ["--entrypoint", spec.entrypoint[0]]
        tail = list(spec.entrypoint[1:])
    return args + [image] + tail + list(spec.command or ())


def env_file(spec: ContainerSpec) -> bytes:
    """The ``--env-file`` text for ``spec.env`` (``NAME=value`` lines). Raises FleetError for
    a value with a newline, which that format cannot carry."""
    lines = []
    for k, v in spec.env.items():
        if "\n" in v or "\r" in v:
            raise FleetError(f"container.env.{k}: a value with a line break cannot be passed to docker")
        lines.append(f"{k}={v}")
    return ("\n".join(lines) + "\n").encode()


def space_needed(size: int, min_free: int) -> int:
    """Bytes the data root must have free before pulling a child of ``size`` compressed
    bytes (:data:`PULL_EXPANSION` x size + ``min_free``)."""
    return PULL_EXPANSION * max(0, size) + max(0, min_free)


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1048576:.1f} MiB"


# --------------------------------------------------------------------------- health


# Fetch a URL on the device. `timeout` bounds wget instead of its own -T, which makes
# Debian's static busybox 1.35 wget segfault (seen on every lab device).
_HTTP_CHECK = r"""
if command -v wget >/dev/null 2>&1; then
  if command -v timeout >/dev/null 2>&1; then timeout 10 wget -q -O /dev/null "$1"
  else wget -q -O /dev/null "$1"; fi
elif command -v curl >/dev/null 2>&1; then curl -fsS -m 10 -o /dev/null "$1"
else echo "neither wget nor curl on the device" >&2; exit 127; fi
"""


def wait_healthy(engine: Engine, name: str, health: HealthSpec, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> tuple[bool, str]:
    """Wait until container ``name`` passes ``health`` or fails it; returns (ok, detail).

    Fails at once when the container stops, restarts or dies on its CPU
    (:func:`fleet.verify.crash_reason`); otherwise retries every ``health.interval`` seconds
    until ``health.timeout``. ``command`` runs with ``docker exec``; ``http`` is fetched on
    the device with ``wget`` (busybox has it) or ``curl``.
    """
    start = clock()
    deadline = start + health.timeout
    command_ok = health.command is None
    http_ok = health.http is None
    last = "not checked yet"
    first: ContainerState | None = None
    while True:
        c = engine.container(name)
        if c is None:
            return False, "the container disappeared"
        if first is None:
            first = c
        if not c.running or c.restarting or c.restart_count > (first.restart_count if first else 0) \
                or (first and c.started_at != first.started_at):
            logs = engine.logs(name, 5)
            crash = crash_reason(c, logs)
            state = crash or f"{c.status} (exit code {c.exit_code}{', restarting' if c.restarting else ''})"
            return False, f"stopped within {clock() - start:.0f} s: {state}"
        if c.health == "unhealthy":
            return False, "the image's own HEALTHCHECK reports unhealthy"
        if not command_ok:
            status, output = engine.exec(name, health.command or (), timeout=max(5.0, health.interval * 5))
            command_ok = status == 0
            if not command_ok:
                last = f"health command exited {status}: {output.strip()[-160:]}"
        if not http_ok:
            status, out, err = engine.shell(_HTTP_CHECK, health.http or "", timeout=30)
            http_ok = status == 0
            if not http_ok:
                last = f"{health.http}: {(err or out).strip()[-160:] or f'exit status {status}'}"
        ran = clock() - start
        if command_ok and http_ok and ran >= health.running:
            checks = [f"running {ran:.0f} s without a restart"]
            if health.command:
                checks.append("command ok")
            if health.http:
                checks.append(f"{health.http} answered")
            return True, ", ".join(checks)
        if command_ok and http_ok:
            last = f"running {ran:.0f} of {health.running:g} s"
        if clock() >= deadline:
            return False, f"not healthy after {health.timeout:g} s: {last}"
        sleep(min(health.interval, max(0.0, deadline - clock())))


# --------------------------------------------------------------------------- one device


def _labels(job: DeviceJob, reference: str, deployment: str, playbook_name: str, spec_id: str,
            previous: ContainerState | None) -> dict[str, str]:
    e = job.expected
    labels = {
        LABEL["deployment"]: deployment,
        LABEL["playbook"]: playbook_name,
        LABEL["reference"]: reference,
        LABEL["repository"]: e.repository,
        LABEL["index"]: e.index_digest,
        LABEL["manifest"]: e.manifest_digest,
        LABEL["config"]: e.config_digest,
        LABEL["platform"]: str(e.platform),
        LABEL["spec"]: spec_id,
    }
    if previous is not None:
        pl = previous.labels
        labels[LABEL["previous_deployment"]] = pl.get(LABEL["deployment"], "")
        labels[LABEL["previous_index"]] = pl.get(LABEL["index"], "")
        labels[LABEL["previous_config"]] = pl.get(LABEL["config"], "") or previous.image_id
        labels[LABEL["previous_image"]] = previous.image_ref
    return labels


def _record(rep: DeviceReport, checks: Sequence[Check]) -> None:
    rep.checks = [c.to_dict() for c in checks]


def deploy_device(engine: Engine, job: DeviceJob, *, reference: str, playbook_name: str,
                  spec: ContainerSpec, health: HealthSpec, size: int,
                  auth_config: bytes | None, options: DeployOptions, check_only: bool = False) -> DeviceReport:
    """Run steps 1-8 of the module docstring on one device; returns its report (never raises
    for a device-side failure: the report says "failed", "refused" or "rolled-back")."""
    t0 = time.monotonic()
    e = job.expected
    dp = job.plan
    rep = DeviceReport(job.host, _s(dp.platform), _s(dp.engine_platform), _s(dp.entry_platform),
                       bool(dp.explicit_platform))
    name = spec.name
    spec_id = spec_digest(spec)
    try:
        _deploy_steps(engine, job, rep, reference=reference, playbook_name=playbook_name, spec=spec,
                      spec_id=spec_id, health=health, size=size, auth_config=auth_config,
                      options=options, check_only=check_only, name=name)
    except EngineError as exc:
        rep.result = "failed" if rep.result not in ("rolled-back",) else rep.result
        rep.reason = rep.reason or str(exc).removeprefix(f"{job.host}: ")
    except FleetError as exc:
        rep.result = "unreachable" if exc.__class__.__name__ in ("Unreachable", "HostKeyUnknown", "HostKeyChanged",
                                                                 "AuthenticationFailed") else "failed"
        rep.reason = str(getattr(exc, "reason", None) or exc)
    rep.seconds = round(time.monotonic() - t0, 1)
    return rep


def _s(p: Any) -> str | None:
    return None if p is None else str(p)


def _deploy_steps(engine: Engine, job: DeviceJob, rep: DeviceReport, *, reference: str, playbook_name: str,
                  spec: ContainerSpec, spec_id: str, health: HealthSpec, size: int,
                  auth_config: bytes | None, options: DeployOptions, check_only: bool, name: str) -> None:
    e = job.expected
    info = engine.info()
    store = info.store
    current = engine.container(name)
    # 1. unchanged?
    if current is not None and current.labels.get(LABEL["index"]) == e.index_digest \
            and current.labels.get(LABEL["config"]) == e.config_digest \
            and current.labels.get(LABEL["spec"]) == spec_id and current.running:
        image = engine.image(current.image_id)
        checks = check_image(e, image, store) + check_container(e, current, image, store)
        status, reason = verdict(checks)
        _record(rep, checks)
        rep.config_digest = image.id if image else None
        rep.pulled = current.labels.get(LABEL["manifest"])
        if status == "verified":
            rep.result = "would-keep" if check_only else "unchanged"
            rep.reason = f"already runs deployment {current.labels.get(LABEL['deployment'])}"
            return
        rep.actions.append(f"current container does not verify ({reason}): redeploy")
    if current is not None:
        rep.previous = {"deployment": current.labels.get(LABEL["deployment"], ""),
                        "index_digest": current.labels.get(LABEL["index"], ""),
                        "config_digest": current.labels.get(LABEL["config"], "") or current.image_id,
                        "image": current.image_ref, "status": current.status}
    # 2. space (skipped when the engine already holds the planned image)
    have = engine.image(e.pull_reference)
    have_ok = have is not None and all(c.ok is not False for c in check_image(e, have, store))
    if not have_ok:
        space = engine.free_space(info.docker_root_dir)
        rep.free_bytes = space.available_bytes
        rep.needed_bytes = space_needed(size, options.min_free)
        where = info.docker_root_dir + (f" (measured at {space.path})" if space.path != info.docker_root_dir else "")
        if space.available_bytes < rep.needed_bytes:
            rep.result = "refused"
            rep.reason = (f"not enough space on the engine's data root {where}: {_mib(space.available_bytes)} "
                          f"free, {_mib(rep.needed_bytes)} needed ({PULL_EXPANSION} x {_mib(size)} child + "
                          f"{_mib(options.min_free)} --min-free); nothing pulled")
            return
    platform = e.platform if (job.plan.explicit_platform or job.plan.engine_platform is None) else None
    if check_only:
        pull = f"pull {e.pull_reference}" + (f" --platform {platform}" if platform else "") if not have_ok \
            else "image already present"
        replace = (f"replace {name} ({current.status}, deployment {current.labels.get(LABEL['deployment'], '-')})"
                   if current is not None else f"create {name}")
        rep.result = "would-deploy"
        rep.reason = f"{pull}; {replace}"
        return
    # 3. pull by digest
    if not have_ok:
        rep.actions.append(f"pull {e.pull_reference}" + (f" --platform {platform}" if platform else ""))
        engine.pull(e.pull_reference, platform=platform, auth_config=auth_config, timeout=options.pull_timeout)
    # 4. verify the pulled image
    pulled = engine.image(e.pull_reference)
    checks = check_image(e, pulled, store)
    rep.config_digest = pulled.id if pulled else None
    status, reason = verdict(checks)
    if status != "verified":
        _record(rep, checks)
        rep.result = "failed"
        rep.reason = f"pulled image is not the planned {e.platform} child: {reason}; nothing replaced"
        return
    rep.pulled = e.manifest_digest
    # 5. run: create NAME.new, park the current one as NAME.previous (stopped), start
    new, prev, failed = f"{name}.new", f"{name}.previous", f"{name}.failed"
    for stale in engine.names(name + "."):
        if stale in (new, failed) or (stale == prev and current is not None):
            engine.remove(stale)
    if current is None and engine.container(prev) is not None:
        # an interrupted earlier run left only NAME.previous: it is the one to fall back to
        current = engine.container(prev)
        engine.rename(prev, name)
        rep.actions.append(f"found only {prev}: restored its name")
        current = engine.container(name)
    labels = _labels(job, reference, options.deployment, playbook_name, spec_id, current)
    image_ref = pulled.id if store == "classic" else e.pull_reference
    args = create_args(spec, image_ref, new, labels, env_from_stdin=bool(spec.env),
                       platform=e.platform if store == "containerd" else None)
    engine.run(["create", *args], stdin=env_file(spec) if spec.env else None)
    rep.actions.append(f"create {new} from {image_ref[:19]}")
    if current is not None:
        engine.rename(name, prev)
        rep.actions.append(f"{name} -> {prev}")
        try:
            if current.running:
                engine.stop(prev, options.stop_timeout)
            rep.actions.append(f"{prev} stopped, kept")
            engine.rename(new, name)
        except EngineError:
            _restore(engine, rep, name, prev, new)
            raise
    else:
        engine.rename(new, name)
    started = True
    try:
        engine.start(name)
        rep.actions.append(f"start {name}")
    except EngineError as exc:
        started = False
        detail = f"start failed: {exc.output[-200:]}"
    # 6. health
    if started:
        if options.hooks.before_health:
            options.hooks.before_health(job.host, engine)
        healthy, detail = wait_healthy(engine, name, health)
    else:
        healthy = False
    if not healthy:
        rep.log_tail = engine.logs(name, options.log_tail)
        crash = crash_reason(engine.container(name), rep.log_tail)
        if crash and crash not in detail:
            detail += f" ({crash})"
        # 7. rollback
        engine.stop(name, options.stop_timeout)
        engine.rename(name, failed)
        rep.actions.append(f"health failed: {name} -> {failed} (stopped)")
        if current is not None:
            engine.rename(prev, name)
            engine.start(name)
            restored = engine.container(name)
            rep.actions.append(f"{prev} -> {name}, started")
            rep.result = "rolled-back"
            back = "running again" if restored and restored.running else \
                f"NOT running ({restored.status if restored else 'missing'})"
            rep.reason = f"new version unhealthy: {detail}; previous container {back}"
        else:
            rep.result = "failed"
            rep.reason = f"new version unhealthy: {detail}; there was no previous container to restore"
        return
    rep.actions.append(f"healthy: {detail}")
    if current is not None:
        engine.remove(prev)
        rep.actions.append(f"remove {prev}")
    # 8. verify what runs now
    c = engine.container(name)
    image = engine.image(c.image_id) if c else None
    logs = engine.logs(name, options.log_tail)
    checks = check_image(e, image, store) + check_container(e, c, image, store, logs)
    _record(rep, checks)
    rep.log_tail = logs
    status, reason = verdict(checks)
    rep.result = "verified" if status == "verified" else "failed"
    rep.reason = detail if status == "verified" else f"{status}: {reason}"


def _restore(engine: Engine, rep: DeviceReport, name: str, prev: str, new: str) -> None:
    """Best effort after a docker command failed mid-swap: put ``prev`` back as ``name`` and
    start it, so a failed rollout never leaves the device without its app."""
    try:
        if engine.container(name) is not None and engine.container(prev) is not None:
            engine.rename(name, new)
        if engine.container(prev) is not None:
            engine.rename(prev, name)
        engine.start(name)
        rep.actions.append(f"{prev} -> {name}, started again after the error")
        rep.result = "rolled-back"
    except (EngineError, FleetError) as exc:
        rep.actions.append(f"could not restore {prev}: {exc}")


def deploy_devices(jobs: Sequence[DeviceJob], settings: Any, *, reference: str, playbook_name: str,
                   spec: ContainerSpec, health: HealthSpec, sizes: Mapping[str, int],
                   auth_config: bytes | None, options: DeployOptions,
                   check_only: bool = False, label: str = "deploying") -> list[DeviceReport]:
    """:func:`deploy_device` on every job, ``options.forks`` at a time (``run_each``);
    ``sizes``: host -> bytes of its planned child. Reports in job order; a device that
    cannot be reached is reported "unreachable"."""
    from fleet.ssh import connect

    def one(job: DeviceJob) -> DeviceReport:
        with connect(job.target, settings) as session:
            engine = Engine(session, job.host, become=bool(getattr(job.target, "become", False)))
            return deploy_device(engine, job, reference=reference, playbook_name=playbook_name, spec=spec,
                                 health=health, size=sizes.get(job.host, 0), auth_config=auth_config,
                                 options=options, check_only=check_only)

    reports = []
    for o in run_each(list(jobs), one, options.forks, label):
        if o.ok:
            reports.append(o.value)
            continue
        job = o.item
        dp = job.plan
        rep = DeviceReport(job.host, _s(dp.platform), _s(dp.engine_platform), _s(dp.entry_platform),
                           bool(dp.explicit_platform), seconds=round(o.seconds, 1))
        exc = o.error
        rep.result = "unreachable" if exc.__class__.__module__ == "fleet.ssh" else "failed"
        rep.reason = str(getattr(exc, "reason", None) or exc) if isinstance(exc, FleetError) \
            else f"internal error: {type(exc).__name__}: {exc}"
        reports.append(rep)
    return reports


def auth_for_devices(credentials: Credentials | tuple[str, str] | None, registry: str) -> bytes | None:
    """The Docker config devices pull with (:func:`fleet.registry.docker_config_json`), or None
    to let devices use their own configuration (anonymous or pre-provisioned)."""
    if not credentials:
        return None
    return docker_config_json(Credentials.of(credentials), registry)
