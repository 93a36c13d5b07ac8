"""ProxyCommand: a local process whose stdin/stdout carry the device's SSH connection.

Shape: ``ProxyProcess(command, device)`` starts it; ``.sock`` is a real socket for
paramiko's Transport; ``.close()`` stops it (SIGTERM, then SIGKILL after a grace period)
and reaps it; ``.returncode`` / ``.stderr_tail()`` describe a proxy that died.

The command (already %-expanded, see :func:`fleet.ssh.target.target_for`) is run as
ssh(1) runs it (sshconnect.c ssh_proxy_connect()): ``$SHELL -c "exec COMMAND"``, so the
shell replaces itself with the command and no shell process stays behind.

Not ``paramiko.ProxyCommand``: its ``recv`` loops without end once the process has exited
(paramiko/paramiko#1277, #1180), its ``close`` sends SIGTERM without reaping the child
(paramiko/paramiko#1713) or closing its pipes (#1715), and it never reads the process's
stderr, so a chatty proxy blocks once the pipe buffer is full. Here the process gets one
end of a ``socketpair`` as stdin and stdout: EOF, timeouts and ``select`` work as on a TCP
socket, and the last 4 KiB of its stderr are kept (by a reader thread) for the error
message.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading

from fleet.ssh._util import log, printable
from fleet.ssh.errors import Unreachable

__all__ = ["ProxyProcess"]

_STDERR_KEPT = 4096
#: Seconds a proxy gets to exit after SIGTERM before SIGKILL.
TERMINATE_GRACE = 2.0


class ProxyProcess:
    """One running ProxyCommand for device ``device`` (see module docstring)."""

    def __init__(self, command: str, device: str):
        self.command = command
        self.device = device
        shell = os.environ.get("SHELL") or "/bin/sh"
        ours, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [shell, "-c", f"exec {command}"],
                stdin=theirs, stdout=theirs, stderr=subprocess.PIPE, close_fds=True,
            )
        except OSError as e:
            ours.close()
            raise Unreachable(device, f"cannot start ProxyCommand with {shell}: {e.strerror or e}") from None
        finally:
            theirs.close()
        self.sock = ours
        self._tail = bytearray()
        self._lock = threading.Lock()
        self._closed = False
        self._reader = threading.Thread(target=self._read_stderr, name=f"proxy-stderr-{self.proc.pid}", daemon=True)
        self._reader.start()
        log.debug("%s: ProxyCommand started (pid %d): exec %s", device, self.proc.pid, command)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has ended (negative: killed by that signal)."""
        return self.proc.poll()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self._tail += chunk
                del self._tail[:-_STDERR_KEPT]

    def stderr_tail(self) -> str:
        """The last (at most 4 KiB) of what the process wrote on stderr, one line."""
        self._reader.join(timeout=0.2)  # collect what a just-exited process wrote
        with self._lock:
            text = bytes(self._tail).decode("utf-8", "replace")
        return printable(" / ".join(line.strip() for line in text.splitlines() if line.strip()))

    def describe_exit(self) -> str | None:
        """"ProxyCommand exited with status N: <stderr>" once it has ended, else None."""
        try:
            code = self.proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            return None
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        tail = self.stderr_tail()
        return f"ProxyCommand {how}{': ' + tail if tail else ''}"

    def close(self) -> None:
        """Close our end, stop the process (SIGTERM, SIGKILL after TERMINATE_GRACE s) and
        reap it. Idempotent and safe from any thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.sock.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            try:
                self.proc.terminate()
                self.proc.wait(timeout=TERMINATE_GRACE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            except ProcessLookupError:
                pass
        self._reader.join(timeout=1.0)
        if self.proc.stderr is not None and not self._reader.is_alive():
            # (a grandchild may still hold the pipe open; then the reader ends at its EOF)
            self.proc.stderr.close()
        log.debug("%s: ProxyCommand (pid %d) stopped, exit status %s", self.device, self.proc.pid,
                  self.proc.returncode)
