#!/usr/bin/env python3
"""Run one ``fleet`` command with its engine way chosen, and count what it asked of each
device (benchmark instrument for bench/deploybench.py's before/after table).

    python bench/costway.py --way api|cli --out COUNTS.json -- deploy PLAYBOOK -i INV --json

``--way api``: fleet as it is (the Engine API over the SSH connection: a streamlocal
channel, else ``docker system dial-stdio``). ``--way cli``: the same code with the engine
reached the way fleet did before the Engine API (the ``docker`` CLI over SSH,
:class:`fleet.engine.cli.CliEngine`, one exec per step; the probe's engine facts from its
script's docker section, :func:`fleet.facts.gather`). Everything else - inventory,
planning, publishing, the device-side transaction - is the same code in both.

Counted on the controller, per device, identically for both ways:

- ``channels``: SSH channels the run opened on the device's connection (paramiko's channel
  ids: exec, streamlocal, refused opens included);
- ``execs``: exec requests (each starts one command on the device: a shell script, a
  ``docker`` CLI, a dial-stdio), with the first words of each command (no arguments, so
  no value of the run is recorded);
- ``txn_docker``: docker CLI processes the device-side transaction started (its outcome's
  ``calls=``; they run on the device, detached from the SSH session);
- ``ssh_bytes_sent``/``ssh_bytes_received``: TCP payload bytes of the device's SSH
  connection(s) (``TCP_INFO`` ``tcpi_bytes_acked``/``tcpi_bytes_received``, Linux >= 4.2),
  i.e. everything SSH moved, encryption and framing included;
- ``sessions``: SSH connections opened.

The engine's side (API calls the engine received) is counted by a
:class:`engineproxy.CountingProxy` in front of the device's engine socket.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import threading
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_counts: dict[str, dict] = defaultdict(lambda: {"sessions": 0, "channels": 0, "execs": 0, "exec_kinds": {},
                                                "txn_docker": 0, "ssh_bytes_sent": 0, "ssh_bytes_received": 0})
_lock = threading.Lock()
_live: dict[int, tuple[str, object]] = {}  # id(transport) -> (host, transport)


def tcp_bytes(sock) -> tuple[int, int]:
    """(bytes sent and acknowledged, bytes received) of a TCP socket: struct tcp_info's
    ``tcpi_bytes_acked`` (offset 120) and ``tcpi_bytes_received`` (offset 128),
    include/uapi/linux/tcp.h."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    if len(raw) < 136:
        return 0, 0
    return struct.unpack_from("<QQ", raw, 120)


def _settle(transport) -> None:
    with _lock:
        entry = _live.pop(id(transport), None)
    if entry is None:
        return
    host, t = entry
    c = _counts[host]
    c["channels"] += getattr(t, "_channel_counter", 0)
    sock = getattr(t, "sock", None)
    if isinstance(sock, socket.socket):
        try:
            sent, received = tcp_bytes(sock)
        except OSError:
            sent = received = 0
        c["ssh_bytes_sent"] += sent
        c["ssh_bytes_received"] += received


def _kind(command: str) -> str:
    words = command.split()
    if words[:2] == ["sudo", "-n"]:
        words = words[2:]
    if words[:1] == ["docker"]:
        return " ".join(words[:3]) if words[1:2] == ["system"] else " ".join(words[:2])
    if words[:2] == ["sh", "-c"]:
        return "sh -c (script)"
    return words[0] if words else "?"


def install(way: str) -> None:
    import paramiko

    import fleet.ssh.session as session_mod
    from fleet.deploy.remote import TxnClient

    orig_init, orig_close = session_mod.Session.__init__, session_mod.Session.close

    def init(self, target, settings, transport, jumps, proxy=None):
        orig_init(self, target, settings, transport, jumps, proxy)
        with _lock:
            _live[id(transport)] = (target.name, transport)
            _counts[target.name]["sessions"] += 1

    def close(self):
        _settle(self.transport)
        orig_close(self)

    session_mod.Session.__init__ = init
    session_mod.Session.close = close

    orig_exec = paramiko.Channel.exec_command

    def exec_command(self, command):
        t = self.get_transport()
        with _lock:
            host = _live.get(id(t), ("?", None))[0]
            c = _counts[host]
            c["execs"] += 1
            k = _kind(command)
            c["exec_kinds"][k] = c["exec_kinds"].get(k, 0) + 1
        return orig_exec(self, command)

    paramiko.Channel.exec_command = exec_command

    orig_launch = TxnClient.launch

    def launch(self, script, follow, on_status=lambda s: None):
        out = orig_launch(self, script, follow, on_status)
        if out is not None:
            host = self._session().target.name
            with _lock:
                _counts[host]["txn_docker"] += out.docker_calls
        return out

    TxnClient.launch = launch

    if way == "cli":
        _force_cli()


def _force_cli() -> None:
    """The engine reached through the docker CLI, as before the Engine API."""
    import fleet.connections as conns
    import fleet.executor.probe as probe_handler
    from fleet.engine.cli import CliEngine
    from fleet.engine.probe import EngineProbe
    from fleet.engine.transport import EngineCounters
    from fleet.facts import gather

    def gather_cli(session, become, *, device=None, socket_path=None, timeout=None):
        return EngineProbe(gather(session, become), "cli", "forced by bench/costway.py --way cli", EngineCounters())

    # the probe handler (fleet/executor/probe.py) is where every probe gathers its facts,
    # whichever executor runs it; with no engine found there is none to adopt
    probe_handler.gather_with_api = gather_cli

    def engine(self, name):
        session = self.session(name)
        with self._lock:
            known = self._engines.get(name)
        if known is not None and known[0] is session:
            return known[1]
        eng = CliEngine(session, name, become=self.target(name).become)
        eng.counters = EngineCounters()  # what TxnClient adds the transaction's docker calls to
        with self._lock:
            self._engines[name] = (session, eng)
        return eng

    conns.Connections.engine = engine


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--way", choices=("api", "cli"), required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    install(a.way)

    from fleet.cli import main as fleet_main

    sys.argv = ["fleet", *args]
    try:
        fleet_main()
    finally:
        for _, t in list(_live.values()):  # sessions the command left open
            _settle(t)
        a.out.write_text(json.dumps({"way": a.way, "devices": _counts}, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
