"""The first stages of every command run: select devices, probe (raw facts), detect
(platform), plan, build/pick + publish. :class:`Run` holds what a command run shares: the
device selection and ONE SSH session per device (:class:`fleet.connections.Connections`),
reused by every stage.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Sequence

from fleet.connections import Connections
from fleet.detect import Detection, detect
from fleet.errors import UsageError
from fleet.engine.probe import EngineProbe, gather_with_api
from fleet.factsfile import load_facts_file
from fleet.fanout import run_each
from fleet.plan import Plan, make_plan
from fleet.platform import Platform
from fleet.playbook import Playbook
from fleet.publish import PublishResult, publish as publish_index
from fleet.results import DeviceReport
from fleet.selection import DeviceSelection

__all__ = ["Run", "Probed", "probe", "plan", "plan_from_facts", "publish", "parse_platforms", "costed"]


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
    failed), ``seconds`` spent, ``interrupted`` (Ctrl-C came first), ``engine_via`` (``api``:
    the engine answered on its socket channel, no docker CLI ran; ``cli``), ``cost``
    (channels, processes, API calls and bytes the probe asked of the device)."""

    host: str
    address: str
    facts: dict[str, str] | None
    detection: Detection | None
    error: str | None
    seconds: float
    interrupted: bool = False
    engine_via: str | None = None
    cost: dict | None = None


def _reason(exc: BaseException) -> str:
    from fleet.results import classify

    return classify(exc)[1]


def probe(run: Run, label: str = "probing") -> list[Probed]:
    """Probe every selected device (``selection.forks`` at a time) and detect its
    platform; results in inventory order. Raises InputFileError/UsageError (exit 2) for
    inventory, ``--limit`` or host-variable mistakes; a device that cannot be reached or
    probed gives a result with ``error``."""
    hosts = run.hosts()

    def one(host: str) -> EngineProbe:
        target = run.connections.target(host)
        found = gather_with_api(run.connections.session(host), target.become, device=host,
                                timeout=target.probe_timeout)
        if found.engine is not None:
            found.engine.seed(found.version, found.info)
            run.connections.adopt_engine(host, found.engine)
        return found

    results = []
    for o in run_each(hosts, one, run.selection.forks, label, on_interrupt=run.connections.abort):
        facts = o.value.facts if o.ok and o.value is not None else None
        results.append(Probed(o.item, run.address(o.item), facts, detect(facts) if facts is not None else None,
                              None if o.ok else _reason(o.error), o.seconds, o.interrupted,
                              engine_via=o.value.engine_via if o.value is not None else None,
                              cost=o.value.counters.to_dict() if o.value is not None else None))
    return results


def costed(engine, work: Callable[[], DeviceReport]) -> DeviceReport:
    """Run one device's ``work`` on ``engine`` and record what it asked of the device
    (:attr:`fleet.results.DeviceReport.cost`)."""
    counters = getattr(engine, "counters", None)
    before = counters.to_dict() if counters is not None else None
    rep = work()
    if counters is not None and before is not None:
        rep.cost = counters.since(before)
    return rep


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
