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
from fleet.executor import DeviceWork, Executor, LocalExecutor, work_for
from fleet.factsfile import load_facts_file
from fleet.fanout import Outcome
from fleet.plan import Plan, make_plan
from fleet.platform import Platform
from fleet.playbook import Playbook
from fleet.publish import PublishResult, publish as publish_index
from fleet.selection import DeviceSelection

__all__ = ["Run", "Probed", "probe", "plan", "plan_from_facts", "publish", "parse_platforms", "where",
           "probe_deadline"]


class Run:
    """One command run over a device selection: ``selection``, ``connections`` (one SSH
    session per device, closed when the run ends) and the ``executor`` every per-device
    step goes through (default :class:`fleet.executor.LocalExecutor` on ``connections``;
    ``executor`` may also be a function of the connections that makes one, e.g.
    :meth:`fleet.executor.ExecutorOptions.make`). A context manager."""

    def __init__(self, selection: DeviceSelection,
                 executor: "Executor | Callable[[Connections], Executor] | None" = None):
        self.selection = selection
        self.connections = Connections(selection)
        if executor is None:
            self.executor: Executor = LocalExecutor(self.connections)
        elif hasattr(executor, "map"):
            self.executor = executor  # type: ignore[assignment]
        else:
            self.executor = executor(self.connections)  # type: ignore[operator]

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

    def work(self, host: str, kind: str, payload: dict | None = None, deadline: float = 300.0,
             secrets: Sequence[str] = ()) -> DeviceWork:
        """The work item ``kind`` for inventory host ``host`` (:func:`fleet.executor.work_for`)."""
        return work_for(self.connections.host(host), kind, payload, deadline, tuple(secrets))

    def connect_seconds(self) -> float:
        """Seconds opening one device's session may take, by the run's SSH settings: each
        attempt's TCP connect, banner, key exchange and authentication, with the retries
        for transient network errors (part of every job's deadline)."""
        s = self.selection.settings
        return max(1, s.retries) * (4 * s.connect_timeout + 5)

    def preflight(self) -> None:
        """Check, before anything else of a command, what would stop its per-device work:
        the selection (exit 2), and what the executor needs (every device has a site, the
        broker answers: :meth:`fleet.executor.CeleryExecutor.preflight`). Touches no device."""
        hosts = self.hosts()
        self.executor.preflight([self.work(h, "noop") for h in hosts])

    def map(self, works: Sequence[DeviceWork], label: str, *, forks: int | None = None, graceful: bool = False,
            on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
        """``works`` through the run's executor, ``forks`` (default the selection's) at a
        time; Ctrl-C closes the run's own sessions (:meth:`Connections.abort`)."""
        return self.executor.map(works, forks=forks or self.selection.forks, label=label,
                                 on_interrupt=self.connections.abort, graceful=graceful, on_done=on_done)


def where(o: Outcome) -> tuple[str | None, str | None]:
    """``(worker, site)`` an outcome names (a :class:`fleet.executor.WorkOutcome`): the
    worker None when none ran the work (no worker of the site took the job)."""
    worker = getattr(o, "worker", "local")
    return (None if worker in (None, "", "-") else worker), getattr(o, "site", None)


@dataclass
class Probed:
    """One device's probe: ``host``, ``address`` (``host:port`` connected to), ``facts``
    (None when the probe failed), ``detection`` (None without facts), ``error`` (why it
    failed), ``seconds`` spent, ``interrupted`` (Ctrl-C came first), ``engine_via`` (``api``:
    the engine answered on its socket channel, no docker CLI ran; ``cli``), ``cost``
    (channels, processes, API calls and bytes the probe asked of the device), ``worker`` and
    ``site`` (who probed it: ``local``/None on this machine, a site worker's name and its
    site)."""

    host: str
    address: str
    facts: dict[str, str] | None
    detection: Detection | None
    error: str | None
    seconds: float
    interrupted: bool = False
    engine_via: str | None = None
    cost: dict | None = None
    worker: str | None = None
    site: str | None = None


def _reason(exc: BaseException) -> str:
    from fleet.results import classify

    return classify(exc)[1]


def probe(run: Run, label: str = "probing") -> list[Probed]:
    """Probe every selected device (``selection.forks`` at a time) and detect its
    platform; results in inventory order. Raises InputFileError/UsageError (exit 2) for
    inventory, ``--limit`` or host-variable mistakes; a device that cannot be reached or
    probed gives a result with ``error``."""
    hosts = run.hosts()
    command_timeout = run.selection.settings.command_timeout
    works = [run.work(h, "probe", deadline=probe_deadline(run, run.connections.target(h).probe_timeout
                                                          or command_timeout)) for h in hosts]
    results = []
    for o in run.map(works, label):
        value = o.value if o.ok and isinstance(o.value, dict) else None
        facts = value.get("facts") if value is not None else None
        host = o.item.host
        worker, site = where(o)
        results.append(Probed(host, run.address(host), facts, detect(facts) if facts is not None else None,
                              None if o.ok else _reason(o.error), o.seconds, o.interrupted,
                              engine_via=value.get("engine_via") if value is not None else None,
                              cost=value.get("cost") if value is not None else None, worker=worker, site=site))
    return results


def probe_deadline(run: Run, probe_timeout: float) -> float:
    """Seconds one device's probe may take (its job's deadline): opening the session
    (:meth:`Run.connect_seconds`), the probe command's ``probe_timeout``, and a minute for
    the engine's answers and the way back."""
    return run.connect_seconds() + float(probe_timeout) + 60.0


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
