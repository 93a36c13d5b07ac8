"""The probe with the engine's facts from its API, in the probe's one round trip.

:func:`fleet.facts.gather` runs one script whose costliest part on a weak device is the
``docker`` CLI (a Go binary started twice: ``docker version``, ``docker info``).
:func:`gather_with_api` gets the same facts without starting it when the engine's socket
is reachable:

1. it sends the ``direct-streamlocal@openssh.com`` open for the engine's socket
   (:func:`fleet.engine.transport.begin_streamlocal`) and, without waiting, opens the
   session channel for the probe script: both answers come back in the same round trip;
2. it starts the script - without its engine section (``engine_cli=False``) when the
   socket channel opened, with it (the CLI path, unchanged) when sshd refused it;
3. while the script runs, ``GET /version`` and ``GET /info`` go over the socket channel
   (an :class:`fleet.engine.api.ApiEngine` on a second thread);
4. the engine's answers fill the keys the CLI section fills (``engine_arch`` = ``/version``
   ``Arch``, ``engine_os`` = ``Os``, ``engine_version`` = ``Version``, ``engine_info_arch``
   = ``/info`` ``Architecture``; the CLI's ``{{.Server.*}}`` templates read those very
   fields), so :func:`fleet.detect.detect` decides the same platform.

The ApiEngine is handed back with its connection open and the API version known, so a
command that goes on to deploy talks to the engine without another handshake.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from paramiko.ssh_exception import SSHException

from fleet.engine import EngineError, EngineInfo, EngineVersion
from fleet.engine.api import ApiEngine
from fleet.engine.transport import (
    DEFAULT_SOCKET,
    EngineConnector,
    EngineCounters,
    StreamLocalRefused,
    begin_streamlocal,
    tcp_nodelay,
)
from fleet.facts import ProbeError, new_boundary, parse_probe_output, probe_command
from fleet.log import logger
from fleet.ssh import CommandResult, CommandTimeout, SSHError, close_channel, wait_readable
from fleet.ssh._util import printable

__all__ = ["EngineProbe", "gather_with_api", "API_FACTS"]

log = logger("engine")
#: Remote commands are logged where the SSH session logs its own (``-vv``: ``fleet.ssh: HOST: run: ...``).
ssh_log = logger("ssh")

#: The facts the API answers replace (the probe script's engine section).
API_FACTS = ("engine_arch", "engine_os", "engine_version", "engine_info_arch")


@dataclass
class EngineProbe:
    """What :func:`gather_with_api` found.

    ``facts``: the probe's facts, keys and text exactly as :func:`fleet.facts.gather`
    returns them; ``engine_via``: ``"api"`` (the engine answered on its socket channel,
    no docker CLI ran) or ``"cli"`` (the script's docker section ran); ``reason``: why;
    ``version``/``info``: the engine's answers on the API path; ``engine``: an
    :class:`ApiEngine` on the open socket channel (API path only; close it or the
    session when done); ``counters``: channels, processes, API calls and bytes of the
    probe (the engine's later use adds to the same object).
    """

    facts: dict[str, str]
    engine_via: str
    reason: str
    counters: EngineCounters
    version: EngineVersion | None = None
    info: EngineInfo | None = None
    engine: ApiEngine | None = None


def gather_with_api(session: Any, become: bool, *, device: str | None = None, socket_path: str = DEFAULT_SOCKET,
                    timeout: float | None = None) -> EngineProbe:
    """Probe ``session``'s device (one script, as :func:`fleet.facts.gather`) and read its
    engine's facts through the API on the same connection when its socket is reachable.

    ``become``: as for :func:`fleet.facts.probe_command` (only the CLI path uses it: a
    login that can open the socket needs no sudo); ``socket_path``: the engine's socket;
    ``timeout``: seconds for the whole probe (default the session's command timeout).
    Raises :class:`ProbeError` when the script's output is unreadable, the session's
    :class:`fleet.ssh.SSHError` subclasses when the connection fails. An engine that
    accepted the socket connection but failed to answer gives ``engine_error``, as the
    CLI path does for an engine it cannot reach.
    """
    name = device or session.target.name
    settings = session.settings
    limit = float(settings.command_timeout if timeout is None else timeout)
    deadline = time.monotonic() + limit
    open_timeout = min(limit, float(settings.connect_timeout))
    counters = EngineCounters()
    t = session.transport
    tcp_nodelay(t)
    try:
        pending = begin_streamlocal(t, socket_path)
    except (SSHException, EOFError, OSError) as e:
        raise SSHError(name, f"cannot open the probe's channels: {e}") from None
    try:
        chan = t.open_session(timeout=open_timeout)
    except (SSHException, EOFError, OSError) as e:
        pending.discard()
        raise SSHError(name, f"cannot open the probe's channels: {e}") from None
    counters.add(channels_opened=1, remote_processes=1)
    try:
        sock = pending.wait(open_timeout)
        counters.add(channels_opened=1)
        via, reason = "api", f"the engine answered on a streamlocal channel to {socket_path}"
    except StreamLocalRefused as e:
        sock = None
        via, reason = "cli", f"{e}: the script's docker CLI section reads the engine"
    except (SSHException, EOFError, OSError) as e:
        close_channel(chan)
        raise SSHError(name, f"cannot open the probe's channels: {e}") from None
    log.info("%s: probe: engine facts via %s (%s)", name, via, reason)

    token = new_boundary()
    command = probe_command(become, token, engine_cli=sock is None)
    engine: ApiEngine | None = None
    box: dict[str, Any] = {}
    worker: threading.Thread | None = None
    if sock is not None:
        connector = EngineConnector(t, name, counters, socket_path=socket_path, become=become,
                                    open_timeout=open_timeout, first_channel=sock)
        engine = ApiEngine(session, name, become=become, timeout=limit, connector=connector)

        def ask() -> None:
            try:
                box["version"] = engine.version()
                box["info"] = engine.info()
            except (EngineError, SSHError) as e:
                box["error"] = e

        worker = threading.Thread(target=ask, name=f"probe-api-{name}", daemon=True)
    if worker is not None:
        worker.start()  # its requests overlap exec_command's own round trip
    ssh_log.debug("%s: run: %s", name, printable(command, 4096))  # no secret in the probe script
    started = time.monotonic()
    try:
        chan.exec_command(command)
        chan.shutdown_write()
        result = _read_all(chan, deadline, name, command)
        ssh_log.debug("%s: exit status %d, %d bytes stdout, %d bytes stderr, %.2f s", name, result.exit_status,
                      len(result.stdout), len(result.stderr), time.monotonic() - started)
    except (SSHException, EOFError, OSError) as e:
        raise SSHError(name, f"probe failed: connection lost ({e})") from None
    finally:
        close_channel(chan)
    try:
        facts = parse_probe_output(result.stdout, token)
    except ProbeError as exc:
        detail = " ".join(result.stderr.decode("utf-8", "replace").split())[:300]
        raise ProbeError(f"{exc} (exit status {result.exit_status}{'; ' + detail if detail else ''})") from None

    probe = EngineProbe(facts, via, reason, counters, engine=engine)
    if worker is not None:
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            box.setdefault("error", CommandTimeout(name, f"engine API did not answer within {limit:g} s"))
        if "error" in box:
            facts["engine_error"] = str(box["error"]).removeprefix(f"{name}: ")
            probe.reason = f"the socket channel to {socket_path} opened, but the engine did not answer"
            engine.close()
            probe.engine = None
        else:
            v, i = box["version"], box["info"]
            probe.version, probe.info = v, i
            for key, value in zip(API_FACTS, (v.arch, v.os, v.server_version, i.architecture)):
                if value:
                    facts[key] = value
    return probe


def _read_all(chan: Any, deadline: float, name: str, command: str) -> CommandResult:
    """Both streams of an exec channel (no stdin) to EOF and its exit status, by
    ``deadline`` (raises :class:`CommandTimeout` with what arrived)."""
    out: list[bytes] = []
    err: list[bytes] = []
    while True:
        while chan.recv_ready():
            out.append(chan.recv(65536))
        while chan.recv_stderr_ready():
            err.append(chan.recv_stderr(65536))
        if (chan.eof_received or chan.closed) and not chan.recv_ready() and not chan.recv_stderr_ready():
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CommandTimeout(name, f"probe timed out: {command[:60]}", stdout=b"".join(out), stderr=b"".join(err))
        wait_readable(chan, remaining)
    if not chan.status_event.wait(max(0.0, deadline - time.monotonic())):
        raise CommandTimeout(name, "probe timed out waiting for its exit status", stdout=b"".join(out),
                             stderr=b"".join(err))
    return CommandResult(chan.recv_exit_status(), b"".join(out), b"".join(err))
