"""The controller's side of the device transaction (:mod:`fleet.deploy.devicetxn`): take the
app's lock, start the transaction and follow it on the same SSH connection, and when the
link or the controller was lost, collect what the device did meanwhile."""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from typing import Callable

from fleet.deploy.devicetxn import COLLECT, LAUNCH, LOCK, LOCK_GRACE, RECOVER, UNLOCK, Outcome
from fleet.labels import STATE_DIR
from fleet.errors import FleetError
from fleet.log import logger

__all__ = ["Lock", "TxnClient", "TxnError"]

log = logger("deploy")


class TxnError(FleetError):
    """The transaction could not be started or followed (the device's reason in ``str()``)."""


@dataclass(frozen=True)
class Lock:
    """What taking the app's lock found: ``state`` ``ok`` (taken), ``locked`` (a live
    transaction or a fresh lock of ``holder`` holds it since ``age`` s), ``stale`` (taken
    over from ``holder``'s dead transaction); ``uncollected``: an outcome the device
    recorded that no controller read."""

    state: str
    holder: str = ""
    age: int = 0
    uncollected: Outcome | None = None


class TxnClient:
    """One app's transaction on one device. ``session``: returns the device's open SSH
    session (a new one after a drop); ``name``: the app's container name; ``deployment``;
    ``become``: docker through ``sudo -n``."""

    def __init__(self, session: Callable[[], object], name: str, deployment: str, become: bool,
                 counters: object | None = None):
        self._session = session
        self.name = name
        self.deployment = deployment
        self.become = become
        self._counters = counters

    def _count(self, processes: int = 1) -> None:
        if self._counters is not None:
            self._counters.add(channels_opened=1, remote_processes=processes)  # type: ignore[attr-defined]

    def _command(self, script: str, extra: str) -> str:
        folder = f'"{STATE_DIR}/apps/"{shlex.quote(self.name)}'
        return (f"sh -c {shlex.quote(script)} fleet-txn {folder} {shlex.quote(self.deployment)} "
                f"{'1' if self.become else '0'} {shlex.quote(extra)}")

    def _run(self, script: str, extra: str = "", timeout: float = 60.0) -> list[str]:
        self._count()
        res = self._session().run(self._command(script, extra), timeout=timeout)  # type: ignore[attr-defined]
        lines = res.stdout.decode("utf-8", "replace").splitlines()
        if res.exit_status not in (0,):
            detail = (res.stderr.decode("utf-8", "replace").strip() or " ".join(lines))[-300:]
            raise TxnError(f"device transaction step failed (exit status {res.exit_status}): {detail}")
        return lines

    def lock(self) -> Lock:
        """Take the app's lock for this deployment (see :class:`Lock`)."""
        lines = self._run(LOCK, str(LOCK_GRACE))
        state, holder, age, uncollected = "ok", "", 0, None
        for ln in lines:
            word, _, rest = ln.partition(" ")
            if word in ("LOCKED", "STALE"):
                parts = rest.split()
                state = word.lower()
                holder = parts[0] if parts else "?"
                age = int(parts[1]) if len(parts) > 1 and parts[1].lstrip("-").isdigit() else 0
            elif word == "OUTCOME":
                uncollected = Outcome.parse(rest)
        log.info("%s: lock %s (holder %s, %s s)", self.name, state, holder or "-", age)
        return Lock(state, holder, age, uncollected)

    def unlock(self) -> None:
        """Release the lock (the controller stopped before starting the transaction)."""
        self._run(UNLOCK)

    def mark_collected(self) -> None:
        """Record that the outcome found on the device was reported."""
        self._run(RECOVER)

    def launch(self, script: str, follow: float, on_status: Callable[[str], None] = lambda s: None) -> Outcome | None:
        """Start ``script`` detached on the device and follow it for at most ``follow``
        seconds; returns its outcome, or None when it still runs after ``follow`` seconds.
        Raises TxnError when the device refused to start it, and the SSH layer's errors
        when the link drops (the device goes on by itself: :meth:`collect` then)."""
        session = self._session()
        result: list[Outcome] = []

        def line(text: str) -> None:
            word, _, rest = text.partition(" ")
            if word == "STATUS" and rest:
                log.debug("%s: device transaction %s: %s", self.name, self.deployment, rest)
                on_status(rest)
            elif word == "OUTCOME":
                result.append(Outcome.parse(rest))
            elif word == "NOLOCK":
                raise TxnError("the app's lock on the device is no longer this deployment's")
            elif word == "DIED":
                raise TxnError("the device-side transaction ended without an outcome (see txn.log in its folder)")

        self._count(2)  # the launcher and the detached transaction
        status = _stream(session, self._command(LAUNCH, str(int(follow))), script.encode(), follow + 60, line)
        if status not in (0, None) and not result:
            raise TxnError(f"the device-side transaction could not start (exit status {status})")
        if result and self._counters is not None:
            self._counters.add(remote_processes=result[0].docker_calls)  # type: ignore[attr-defined]
        if result:
            self.mark_collected()  # received: only now may the device call it collected
        return result[0] if result else None

    def collect(self, wait: float) -> Outcome | None:
        """The outcome of this deployment's transaction, waiting up to ``wait`` seconds for
        it to end; None when it still runs or never ran on this device."""
        for ln in self._run(COLLECT, str(int(wait)), timeout=wait + 60):
            word, _, rest = ln.partition(" ")
            if word == "OUTCOME":
                self.mark_collected()
                return Outcome.parse(rest)
        return None


def _stream(session, command: str, stdin: bytes, timeout: float, on_line: Callable[[str], None]) -> int | None:
    """Run ``command`` on a new exec channel of ``session``'s transport, send ``stdin`` then
    EOF, and call ``on_line`` for every line of its stdout as it arrives. Returns the exit
    status. Raises the session's SSHError when the connection drops."""
    from paramiko.ssh_exception import SSHException

    from fleet.ssh import SSHError, close_channel, wait_readable

    name = session.target.name
    try:
        chan = session.transport.open_session(timeout=30)
    except (SSHException, EOFError, OSError) as e:
        raise SSHError(name, f"cannot open a session channel: {e}") from None
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        chan.exec_command(command)
        chan.sendall(stdin)
        chan.shutdown_write()
        while True:
            if chan.recv_ready():
                data = chan.recv(65536)
                buf += data
                while b"\n" in buf:
                    ln, buf = buf.split(b"\n", 1)
                    on_line(ln.decode("utf-8", "replace"))
                continue
            while chan.recv_stderr_ready():
                chan.recv_stderr(65536)
            if chan.exit_status_ready() and not chan.recv_ready():
                break
            if chan.eof_received and not chan.recv_ready():
                # the exit status follows the EOF in its own message: wait for it
                if chan.status_event.wait(min(30.0, max(0.0, deadline - time.monotonic()))):
                    break
                raise SSHError(name, "connection lost while following the device transaction")
            if chan.closed:
                raise SSHError(name, "connection lost while following the device transaction")
            if time.monotonic() > deadline:
                raise SSHError(name, f"no end of the device transaction after {timeout:.0f} s")
            if not session.transport.is_active():
                raise SSHError(name, "connection lost while following the device transaction")
            wait_readable(chan, 1.0)
        if buf:
            on_line(buf.decode("utf-8", "replace"))
        return chan.recv_exit_status()
    except (SSHException, EOFError, OSError) as e:
        raise SSHError(name, f"connection lost while following the device transaction ({e})") from None
    finally:
        close_channel(chan)
