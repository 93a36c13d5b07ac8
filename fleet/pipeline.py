"""The one composer: the only module where the stages meet.

    select devices -> probe (raw facts) -> detect (platform) -> plan -> build/pick +
    publish (one tag) -> deploy (pull, swap, health, commit or roll back) -> verify

Each function takes the previous stage's typed value and returns its own; the CLI modules
(:mod:`fleet.cli`) only parse options, call these and render what comes back. One
:class:`Run` holds what a command run shares: the device selection and ONE SSH session per
device (:class:`fleet.connections.Connections`), reused by every stage.

Ctrl-C: the probe and verify stop at once (sessions closed, unfinished devices reported
"interrupted"); a deploy stops starting new devices, lets those already at work finish,
and stops waiting at a second Ctrl-C. Either way what was gathered is returned, printed
and saved.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from fleet.connections import Connections
from fleet.deploy import App, DeployOptions, DeviceJob, DeviceLink, deploy_device, report_for, verify_device
from fleet.detect import Detection, detect
from fleet.engine import PullAuth
from fleet.errors import UsageError
from fleet.facts import gather
from fleet.factsfile import load_facts_file
from fleet.fanout import run_each
from fleet.plan import Plan, make_plan, plan_devices
from fleet.platform import Platform
from fleet.playbook import Playbook
from fleet.publish import PublishResult, publish as publish_index, registry_credentials
from fleet.registry import Reference
from fleet.results import DeviceReport, Result, summary_line
from fleet.selection import DeviceSelection
from fleet.verify import Expected

__all__ = ["Run", "Probed", "DeployRun", "probe", "plan", "plan_from_facts", "publish", "deploy", "verify",
           "parse_platforms"]


class Run:
    """One command run over a device selection: ``selection`` and ``connections`` (one SSH
    session per device, closed when the run ends). A context manager."""

    def __init__(self, selection: DeviceSelection):
        self.selection = selection
        self.connections = Connections(selection)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.connections.close_all()

    def hosts(self) -> list[str]:
        """The selected host names, with every SSH target resolved first: a mistake in a
        host's connection variables stops the run (exit 2) before any device is touched."""
        names = [h.name for h in self.selection.hosts()]
        for name in names:
            self.connections.target(name)
        return names

    def address(self, host: str) -> str:
        """``address`` or ``address:port`` of ``host``'s SSH target."""
        t = self.connections.target(host)
        return t.hostname if t.port == 22 else f"{t.hostname}:{t.port}"


@dataclass
class Probed:
    """One device's probe: ``host``, ``address`` (``host:port`` connected to), ``facts``
    (None when the probe failed), ``detection`` (None without facts), ``error`` (why it
    failed), ``seconds`` spent, ``interrupted`` (Ctrl-C came first)."""

    host: str
    address: str
    facts: dict[str, str] | None
    detection: Detection | None
    error: str | None
    seconds: float
    interrupted: bool = False


def _reason(exc: BaseException) -> str:
    from fleet.results import classify

    return classify(exc)[1]


def probe(run: Run, label: str = "probing") -> list[Probed]:
    """Probe every selected device (``selection.forks`` at a time) and detect its
    platform; results in inventory order. Raises InputFileError/UsageError (exit 2) for
    inventory, ``--limit`` or host-variable mistakes; a device that cannot be reached or
    probed gives a result with ``error``."""
    hosts = run.hosts()

    def one(host: str) -> dict[str, str]:
        target = run.connections.target(host)
        return gather(run.connections.session(host), target.become)

    results = []
    for o in run_each(hosts, one, run.selection.forks, label, on_interrupt=run.connections.abort):
        facts = o.value
        results.append(Probed(o.item, run.address(o.item), facts, detect(facts) if facts is not None else None,
                              None if o.ok else _reason(o.error), o.seconds, o.interrupted))
    return results


def parse_platforms(values: Sequence[str] | None) -> list[Platform]:
    """``--platform`` values (repeatable, each possibly a comma list as buildx takes them)
    as Platforms. Raises UsageError naming a malformed or duplicate one."""
    out: list[Platform] = []
    for v in values or ():
        for part in v.split(","):
            if not part.strip():
                raise UsageError(f"--platform {v!r}: empty platform in the list")
            p = Platform.parse(part)  # PlatformError (UsageError, exit 2) names the string
            if p in out:
                raise UsageError(f"--platform {part.strip()}: duplicate platform {p}")
            out.append(p)
    return out


def plan(playbook: Playbook, probed: Sequence[Probed] | None, platforms: Sequence[Platform] = ()) -> Plan:
    """Plan the publish of ``playbook`` for the probed devices (None: no inventory) and/or
    the explicit ``platforms``. Raises UsageError when ``platforms: auto`` has neither
    devices nor platforms to decide from."""
    if probed is None and not platforms and not isinstance(playbook.platforms, tuple):
        raise UsageError(f"{playbook.path}: platforms: auto needs devices to decide from: give "
                         f"-i/--inventory, --facts FILE, or --platform P (repeatable)")
    detections: dict[str, Detection | None] = {}
    versions: dict[str, str | None] = {}
    errors: dict[str, str] = {}
    for p in probed or ():
        detections[p.host] = p.detection
        if p.facts is None:
            errors[p.host] = p.error or "probe failed"
        elif p.detection is not None:
            versions[p.host] = p.detection.engine_version
    return make_plan(playbook, detections, list(platforms) or None, versions, errors)


def plan_from_facts(playbook: Playbook, path: str, platforms: Sequence[Platform] = ()) -> Plan:
    """:func:`plan` from a saved facts file (``fleet facts --json``), no SSH."""
    probed = [Probed(e.host, "-", e.facts, detect(e.facts) if e.facts is not None else None,
                     None if e.facts is not None else (e.note or "no facts gathered"), 0.0)
              for e in load_facts_file(path)]
    return plan(playbook, probed, platforms)


def publish(playbook: Playbook, planned: Plan, run: Run | None, *, media_type: str | None = None,
            log: Callable[[str], None] = lambda s: None) -> PublishResult:
    """Build or pick each planned platform, check every child, push ONE index tag. Native
    builder devices are reached through the run's sessions (any inventory host, also one
    outside ``--limit``)."""
    def native(device: str):
        assert run is not None
        return contextlib.nullcontext(run.connections.session(device))

    return publish_index(playbook, planned, media_type=media_type, log=log,
                         native_session=native if run is not None else None)


@dataclass
class DeployRun:
    """What one deploy did: ``deployment`` id, ``playbook`` path, ``reference`` (the tag),
    ``index_digest``, ``check`` (dry run), ``started``/``finished`` (ISO 8601 UTC),
    ``plan``, ``published``, ``devices`` (one :class:`DeviceReport` per planned device),
    ``errors`` (why nothing was touched, when that is the case)."""

    deployment: str
    playbook: str
    reference: str
    check: bool
    started: str
    index_digest: str | None = None
    finished: str | None = None
    plan: Plan | None = None
    published: PublishResult | None = None
    devices: list[DeviceReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    summary_text: str | None = None

    @property
    def ok(self) -> bool:
        """Every device verified or unchanged (``--check``: would deploy or keep)."""
        if self.errors:
            return False
        return all(r.ok or (self.check and Result(r.result).ok_in_check) for r in self.devices)

    @property
    def interrupted(self) -> bool:
        return any(r.result is Result.INTERRUPTED for r in self.devices)

    @property
    def summary(self) -> str:
        return self.summary_text or summary_line([r.result for r in self.devices])

    def to_dict(self) -> dict[str, Any]:
        """The saved report: ``{"deployment", "playbook", "reference", "index_digest",
        "check", "started", "finished", "plan", "publish", "devices", "summary", "ok",
        "errors"}``."""
        return {"deployment": self.deployment, "playbook": self.playbook, "reference": self.reference,
                "index_digest": self.index_digest, "check": self.check, "started": self.started,
                "finished": self.finished, "plan": self.plan.to_dict() if self.plan else None,
                "publish": self.published.to_dict() if self.published else None,
                "devices": [r.to_dict() for r in self.devices], "summary": self.summary, "ok": self.ok,
                "errors": list(self.errors)}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _repository(image: str) -> str:
    return Reference.parse(image).name


def deploy(run: Run, playbook: Playbook, *, check: bool = False, options: DeployOptions | None = None,
           published: PublishResult | None = None, log: Callable[[str], None] = lambda s: None,
           on_done: Callable[[DeviceReport], None] | None = None) -> DeployRun:
    """The whole deploy: probe, plan, publish ONE tag (unless ``check``), then every device
    (``options.forks`` at a time): pull by digest, check, swap, health, commit or roll
    back, verify (:func:`fleet.deploy.deploy_device`).

    ``published``: an already published index to roll out instead of publishing the
    playbook (tests use it to push an index around fleet's own checks). A plan with errors
    returns ``errors`` before anything is published or any device is touched.
    """
    options = options or DeployOptions()
    out = DeployRun(options.deployment, str(playbook.path), playbook.image, check, _now())
    explicit = [e.platform for e in published.entries] if published is not None else []
    planned = plan(playbook, probe(run), explicit)
    out.plan = planned
    if planned.errors:
        out.errors = planned.errors + ["nothing published, no device touched"]
        out.summary_text = "plan has errors: nothing published, no device touched"
        return out
    result = published if published is not None or check else publish(playbook, planned, run, log=log)
    if result is not None:
        out.published, out.index_digest, out.reference = result, result.index_digest, result.reference
        if options.hooks.after_publish:
            options.hooks.after_publish(result)
    repository = result.repository if result is not None else _repository(playbook.image)
    jobs: list[DeviceJob] = []
    for dp in planned.devices:
        assert dp.entry_index is not None  # a plan without errors places every device
        if result is not None:
            entry = result.entries[dp.entry_index]
            jobs.append(DeviceJob(dp.host, dp, Expected.from_entry(result.repository, result.index_digest, entry),
                                  entry.size))
        else:
            assert dp.entry_platform is not None
            jobs.append(DeviceJob(dp.host, dp, Expected(repository, "sha256:(this publish)", dp.entry_platform,
                                                        "", "", ())))
    auth = None
    if not check:
        registry = Reference.parse(repository).registry
        creds = registry_credentials(playbook.registry, registry)
        auth = PullAuth(registry, creds) if creds else None
    app = App(out.reference, playbook.name, playbook.container_spec, playbook.health, auth)

    def one(job: DeviceJob) -> DeviceReport:
        link = DeviceLink(lambda: run.connections.session(job.host), run.connections.target(job.host).become)
        return deploy_device(run.connections.engine(job.host), job, app, options, link, check_only=check)

    def done(o) -> None:
        if on_done is not None and o.value is not None:
            on_done(o.value)

    for o in run_each(jobs, one, options.forks, "checking" if check else "deploying",
                      on_interrupt=run.connections.abort, graceful=not check, on_done=done):
        out.devices.append(o.value if o.ok else _failed(o, o.item.host, o.item.plan))
    out.finished = _now()
    return out


def _failed(o, host: str, plan_) -> DeviceReport:
    rep = report_for(host, plan_)
    rep.seconds = round(o.seconds, 1)
    if o.interrupted:
        rep.result, rep.reason = Result.INTERRUPTED, o.error.reason
    else:
        rep.fail(o.error)
    return rep


def verify(run: Run, published: PublishResult, name: str, *, log_tail: int = 10) -> list[DeviceReport]:
    """Verify every selected device against ``published``: probe it, pick its entry with
    the one chooser (:func:`fleet.plan.plan_devices`), then compare what its engine runs as
    container ``name`` (:func:`fleet.deploy.verify_device`). Reports in inventory order."""
    probed = probe(run)
    platforms = [e.platform for e in published.entries]
    plans = {dp.host: dp for dp in plan_devices({p.host: p.detection for p in probed}, platforms,
                                                {p.host: p.detection.engine_version if p.detection else None
                                                 for p in probed},
                                                {p.host: p.error or "" for p in probed if p.facts is None})}
    reports: dict[str, DeviceReport] = {}
    jobs: list[tuple[DeviceReport, Expected]] = []
    for p in probed:
        dp = plans[p.host]
        rep = report_for(p.host, dp)
        reports[p.host] = rep
        if p.interrupted:
            rep.result, rep.reason = Result.INTERRUPTED, p.error or "interrupted"
        elif p.facts is None:
            rep.result, rep.reason = Result.UNREACHABLE, p.error or "probe failed"
        elif dp.error or dp.entry_index is None:
            rep.result, rep.reason = Result.FAILED, dp.error or "no entry"
        else:
            entry = published.entries[dp.entry_index]
            jobs.append((rep, Expected.from_entry(published.repository, published.index_digest, entry)))

    def one(job: tuple[DeviceReport, Expected]) -> DeviceReport:
        rep, expected = job
        return verify_device(run.connections.engine(rep.host), rep, expected, name, log_tail=log_tail)

    for o in run_each(jobs, one, run.selection.forks, "verifying", on_interrupt=run.connections.abort):
        if not o.ok:
            rep = o.item[0]
            if o.interrupted:
                rep.result, rep.reason = Result.INTERRUPTED, o.error.reason
            else:
                rep.fail(o.error)
    return [reports[p.host] for p in probed]

