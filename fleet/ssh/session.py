"""Connecting (directly, through jump hosts or a ProxyCommand), retries, and remote commands.

Shapes: ``connect(target, settings) -> Session``; ``Session.run(command, ...) ->
CommandResult``; ``Session.close()``.

* ProxyJump (``-J``/``-o ProxyJump=``/ssh config), which paramiko's SSHClient ignores:
  each hop is connected and verified like a target, then a ``direct-tcpip`` channel
  carries the next hop's SSH connection.
* ProxyCommand: see :mod:`fleet.ssh.proxy`; the device's key is checked under the
  device's own known_hosts name, exactly as on a direct connection. A proxy that exits
  before the SSH handshake is reported with its exit status and stderr, not retried (the
  proxy has its own retry policy, e.g. ssh's ConnectionAttempts).
* Algorithms: OpenSSH 9.2's default lists (:mod:`fleet.ssh.algorithms`); no algorithm in
  common -> :class:`NegotiationFailed` naming what the device offers and the option that
  would allow it.
* Retries: only transient network failures are retried (tenacity, exponential backoff
  with jitter): connection refused, reset or closed before the SSH banner (a device
  rebooting, an sshd at ``MaxStartups``), a TCP connect timeout, a refused
  ``direct-tcpip`` open on a jump host. At most ``settings.retries`` attempts, and no new
  attempt starts once ``RETRY_BUDGET`` seconds have passed since the first one, so a dead
  device costs at most about ``RETRY_BUDGET + connect_timeout`` seconds. "No route to
  host", "network unreachable" and name-resolution failures are definitive answers and
  are not retried. Authentication, host-key and negotiation failures are never retried.
* Output: ``Session.run`` keeps at most ``max_output`` bytes of a command's stdout and
  stderr together; past that it closes the channel (the remote command then gets SIGPIPE
  or EOF) and raises :class:`OutputTooLarge`, so an endless stream costs bounded memory.
* Closing: ``Session.close()`` may be called from any thread, any number of times; a
  ``run`` in progress on another thread then raises :class:`SessionClosed` at once
  (fleet closes sessions on Ctrl-C to unblock its worker threads).
"""

from __future__ import annotations

import errno
import math
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

import paramiko
import tenacity
from paramiko.ssh_exception import ChannelException, IncompatiblePeer, SSHException

from fleet.log import TRACE
from fleet.netguard import unattached_benchmark_address
from fleet.ssh._util import log, printable
from fleet.ssh.algorithms import OPENSSH_KNOWN, disabled
from fleet.ssh.algorithms import apply as apply_algorithms
from fleet.ssh.auth import authenticate
from fleet.ssh.errors import (
    CommandTimeout,
    NegotiationFailed,
    OutputTooLarge,
    SessionClosed,
    SSHError,
    Unreachable,
)
from fleet.ssh.known_hosts import lookup_known, preferred_key_types, verify_host_key
from fleet.ssh.proxy import ProxyProcess
from fleet.ssh.target import SSHSettings, Target

__all__ = ["connect", "Session", "CommandResult", "wait_readable", "close_channel", "RETRY_BUDGET",
           "DEFAULT_MAX_OUTPUT", "PROBE_MAX_OUTPUT"]

#: Seconds after the first connect attempt during which a transient failure is retried.
RETRY_BUDGET = 5.0
#: Bytes of stdout+stderr ``Session.run`` keeps by default (64 MiB).
DEFAULT_MAX_OUTPUT = 64 << 20
#: What the probe needs at most (its output is a few KiB): 4 MiB.
PROBE_MAX_OUTPUT = 4 << 20
_CHUNK = 65536


@dataclass
class CommandResult:
    """``exit_status`` (-1 when the remote sent none, e.g. killed by a signal),
    ``stdout``/``stderr`` raw bytes."""

    exit_status: int
    stdout: bytes
    stderr: bytes


def wait_readable(chan: Any, timeout: float | None) -> bool:
    """Wait until paramiko channel ``chan`` has data or EOF or is closed (its
    :meth:`~paramiko.channel.Channel.fileno` pipe is readable), at most ``timeout`` seconds
    (None: no limit). True when it is readable.

    poll(2), not select(2): select takes only descriptors below FD_SETSIZE (1024; select(2)
    "BUGS") and fails with "filedescriptor out of range in select()" above it. A controller
    holding one session per device passes 1024 descriptors at a few hundred devices (a
    socket per session, two pipe descriptors per waited-on channel); a poll object takes
    any descriptor and, unlike an epoll selector, needs none of its own.
    """
    p = select.poll()
    p.register(chan.fileno(), select.POLLIN)
    ms = None if timeout is None else max(0, math.ceil(timeout * 1000))
    return bool(p.poll(ms))


class _NoEvent:
    """What a channel's buffers signal once :func:`close_channel` has detached its pipe."""

    def set(self) -> None:
        pass

    def clear(self) -> None:
        pass

    def is_set(self) -> bool:
        return False


def close_channel(chan: Any) -> None:
    """Close paramiko channel ``chan`` without killing its transport; idempotent.

    ``Channel.close()`` closes the channel's :meth:`~paramiko.channel.Channel.fileno` pipe
    while the transport thread may still be feeding data the device sent before it saw the
    close (a command cut at its output limit or timeout, an Engine API stream dropped
    early). That feed writes one byte to the closed descriptor, the write fails (EBADF, or
    EPIPE once the number is reused), the transport thread dies with "Socket exception: Bad
    file descriptor" and every other channel of the session fails with it; a reused
    descriptor could even receive the byte (paramiko#1700, #2271, #692: still so in paramiko
    5.1's channel.py and pipe.py). The buffers' events are detached first:
    ``BufferedPipe.set_event`` takes the buffer's lock, which ``feed`` holds while it
    signals, so once both calls return no feed can reach the pipe; EOF and close signal it
    under the channel's lock, which ``close`` holds while it closes the pipe.
    """
    for buf in (chan.in_buffer, chan.in_stderr_buffer):
        buf.set_event(_NoEvent())
    chan.close()


class _Transient(Exception):
    """A network failure worth another attempt; ``reason`` is for the final message."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Transport(paramiko.Transport):
    """A Transport that remembers the peer's KEXINIT lists, to say what a device offered
    when no algorithm is in common (paramiko only says "no acceptable ciphers")."""

    fleet_peer_kexinit: dict | None = None

    def _really_parse_kex_init(self, m, ignore_first_byte=False):  # paramiko 5 internals
        parsed = super()._really_parse_kex_init(m, ignore_first_byte)
        if not ignore_first_byte:  # the peer's (ours is re-parsed with ignore_first_byte)
            self.fleet_peer_kexinit = parsed
        return parsed


def _describe(e: BaseException) -> str:
    if isinstance(e, socket.timeout) or isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _tcp_connect(hop: Target, timeout: float) -> socket.socket:
    refused = unattached_benchmark_address(hop.hostname)
    if refused:
        raise Unreachable(hop.name, refused)
    try:
        sock = socket.create_connection((hop.hostname, hop.port), timeout=timeout)
        # fleet's traffic is small request/response exchanges (commands, engine API calls):
        # with Nagle's algorithm a small write waits out the peer's delayed ACK, about 40 ms
        # on Linux (tcp(7) TCP_NODELAY); OpenSSH sets it for interactive sessions too
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    except socket.gaierror as e:
        raise Unreachable(hop.name, f"cannot resolve {hop.hostname}: {e.strerror}") from None
    except (ConnectionRefusedError, ConnectionResetError, TimeoutError, socket.timeout) as e:
        raise _Transient(_describe(e)) from None
    except OSError as e:
        if e.errno in (errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT):
            raise _Transient(_describe(e)) from None
        # EHOSTUNREACH, ENETUNREACH, EADDRNOTAVAIL...: a definitive answer, not retried.
        raise Unreachable(hop.name, f"cannot connect to {hop.hostname}:{hop.port}: {_describe(e)}") from None


_KINDS = {  # paramiko's IncompatiblePeer text -> (kind, peer list key, Algorithms field, option)
    "kex": ("kex", "kex_algo_list", "kex", "KexAlgorithms"),
    "host key": ("hostkey", "server_key_algo_list", "host_keys", "HostKeyAlgorithms"),
    "cipher": ("cipher", "server_encrypt_algo_list", "ciphers", "Ciphers"),
    "mac": ("mac", "server_mac_algo_list", "macs", "MACs"),
}


def _negotiation_failed(hop: Target, t: _Transport, message: str) -> NegotiationFailed:
    text = message.lower()
    key = next((k for k in ("kex", "host key", "cipher", "mac") if k in text), None)
    if key is None:
        return NegotiationFailed(hop.name, f"SSH negotiation with {hop.hostname}:{hop.port} failed: {message}")
    kind, peer_key, field_, option = _KINDS[key]
    peer = t.fleet_peer_kexinit or {}
    offered = [a for a in peer.get(peer_key, []) if not a.startswith(("ext-info-", "kex-strict-"))]
    allowed = list(getattr(hop.algorithms, field_))
    known = [a for a in offered if a in OPENSSH_KNOWN[field_]]
    hint = (f" If this is a legacy device you trust, allow it for this host only, e.g. ansible_ssh_common_args: "
            f"'-o {option}=+{known[0]}' (or '{option} +{known[0]}' in its ssh config entry)") if known else ""
    return NegotiationFailed(
        hop.name,
        f"no {option[:-1] if option.endswith('s') else option} algorithm in common with {hop.hostname}:{hop.port}: "
        f"the device offers {', '.join(offered) or '(unknown)'}; fleet proposes {', '.join(allowed)} "
        f"(OpenSSH 9.2's defaults, as configured).{hint}",
        kind=kind, offered=offered, allowed=allowed,
    )


def _open_hop(hop: Target, settings: SSHSettings, via: paramiko.Transport | None,
              via_label: str = "") -> tuple[paramiko.Transport, ProxyProcess | None]:
    """One authenticated transport to ``hop``: directly, through ``via``'s direct-tcpip,
    or through its ProxyCommand (returned too, to be stopped with the transport)."""
    timeout = settings.connect_timeout
    entries = lookup_known(hop.known_hosts_files, hop.known_hosts_name)
    proxy: ProxyProcess | None = None
    if via is not None:
        log.info("%s: connecting to %s:%d through jump host %s", hop.name, hop.hostname, hop.port, via_label)
        try:
            sock: Any = via.open_channel(
                "direct-tcpip", (hop.hostname, hop.port), ("127.0.0.1", 0), timeout=timeout
            )
        except ChannelException as e:
            # code 2 = connect failed (refused/unreachable as seen by the jump host)
            raise _Transient(f"jump host could not connect: {e.text}") from None
        except (SSHException, EOFError, OSError) as e:
            raise _Transient(f"jump host channel failed: {_describe(e)}") from None
    elif hop.proxy_command is not None:
        log.info("%s: connecting to %s:%d via ProxyCommand", hop.name, hop.hostname, hop.port)
        proxy = ProxyProcess(hop.proxy_command, hop.name)
        sock = proxy.sock
    else:
        log.info("%s: connecting to %s:%d", hop.name, hop.hostname, hop.port)
        sock = _tcp_connect(hop, timeout)

    def proxy_died() -> None:
        died = proxy.describe_exit() if proxy is not None else None
        if died:
            raise Unreachable(hop.name, f"cannot reach {hop.hostname}:{hop.port}: {died}")

    t: _Transport | None = None
    try:
        t = _Transport(sock, disabled_algorithms=disabled(hop.algorithms))
        t.banner_timeout = timeout
        t.auth_timeout = timeout
        t.handshake_timeout = timeout
        t.channel_timeout = timeout
        apply_algorithms(t, hop.algorithms, preferred_key_types(entries))
        try:
            t.start_client(timeout=timeout)
        except IncompatiblePeer as e:
            raise _negotiation_failed(hop, t, str(e)) from None
        except (EOFError, ConnectionResetError, socket.timeout, TimeoutError) as e:
            proxy_died()
            raise _Transient(f"connection closed during SSH handshake ({_describe(e)})") from None
        except SSHException as e:
            proxy_died()
            msg = str(e)
            if "banner" in msg.lower() or "closed" in msg.lower() or "eof" in msg.lower():
                raise _Transient(msg) from None
            raise SSHError(hop.name, f"SSH negotiation with {hop.hostname}:{hop.port} failed: {msg}") from None
        if not t.is_active() or t.host_key is None:
            # paramiko's start_client(timeout=) returns quietly when the handshake times out
            # (a listener that accepts but never sends an SSH banner): say so, don't crash.
            proxy_died()
            raise _Transient(f"no SSH handshake from {hop.hostname}:{hop.port} within {timeout:g} s")
        log.log(TRACE, "%s: negotiated host key %s, cipher %s/%s, MAC %s/%s", hop.name,
                getattr(t, "host_key_type", "?"), getattr(t, "local_cipher", "?"), getattr(t, "remote_cipher", "?"),
                getattr(t, "local_mac", "?"), getattr(t, "remote_mac", "?"))
        key = t.get_remote_server_key()
        strict = hop.strict_host_key_checking
        if settings.accept_new and strict == "yes":
            strict = "accept-new"
        verify_host_key(hop, strict, entries, key)
        authenticate(t, hop)
        return t, proxy
    except BaseException:
        if t is not None:
            t.close()
        try:
            sock.close()  # Transport.close() leaves it open when the handshake never started
        except Exception:
            pass
        if proxy is not None:
            proxy.close()
        raise


def _open_hop_with_retry(hop: Target, settings: SSHSettings, via: paramiko.Transport | None,
                         via_label: str = "") -> tuple[paramiko.Transport, ProxyProcess | None]:
    attempts = max(1, int(settings.retries))

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.info("%s: attempt %d to reach %s:%d failed (%s); retrying", hop.name, state.attempt_number,
                 hop.hostname, hop.port, getattr(exc, "reason", exc))

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts) | tenacity.stop_after_delay(RETRY_BUDGET),
        wait=tenacity.wait_exponential_jitter(multiplier=0.5, max=2.0, jitter=0.2),
        retry=tenacity.retry_if_exception_type(_Transient),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                t, proxy = _open_hop(hop, settings, via, via_label)
                t._fleet_attempts = attempt.retry_state.attempt_number  # type: ignore[attr-defined]
                return t, proxy
    except _Transient as e:
        n = retrying.statistics.get("attempt_number", attempts)
        through = " via its jump host" if via is not None else (" via its ProxyCommand" if hop.proxy_command else "")
        raise Unreachable(
            hop.name,
            f"cannot reach {hop.hostname}:{hop.port}{through}: {e.reason} ({n} attempt{'s' if n != 1 else ''})",
            attempts=n,
        ) from None
    except SSHError as e:
        e.attempts = retrying.statistics.get("attempt_number", 1)
        raise
    raise AssertionError("unreachable")  # pragma: no cover


def _mask(command: str, secrets: Sequence[str]) -> str:
    import shlex

    for s in sorted((s for s in secrets if s), key=len, reverse=True):
        command = command.replace(shlex.quote(s), "<secret>").replace(s, "<secret>")
    return command


class Session:
    """An authenticated SSH connection to one device (context manager).

    ``target`` the Target; ``attempts`` connect attempts it took; ``proxy_pid`` the
    ProxyCommand's process id (None without one). Close it to close the device's
    transport, every jump transport and the ProxyCommand process.
    """

    def __init__(self, target: Target, settings: SSHSettings, transport: paramiko.Transport,
                 jumps: list[paramiko.Transport], proxy: ProxyProcess | None = None):
        self.target = target
        self.settings = settings
        self.transport = transport
        self._jumps = jumps
        self._proxy = proxy
        self._lock = threading.Lock()
        self._closed = False
        self.attempts = getattr(transport, "_fleet_attempts", 1)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def proxy_pid(self) -> int | None:
        return self._proxy.pid if self._proxy is not None else None

    def close(self) -> None:
        """Close the device transport, then jump transports innermost first, then stop the
        ProxyCommand. Thread-safe and idempotent; a ``run`` blocked on another thread
        raises :class:`SessionClosed`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for t in [self.transport, *reversed(self._jumps)]:
            try:
                t.close()
            except Exception:
                pass
        if self._proxy is not None:
            self._proxy.close()
        log.debug("%s: session closed", self.target.name)

    def _closed_error(self, what: str) -> SessionClosed:
        return SessionClosed(self.target.name, f"session closed {what}")

    def run(self, command: str, *, stdin: bytes | None = None, timeout: float | None = None,
            max_output: int | None = DEFAULT_MAX_OUTPUT, secret_args: Sequence[str] = ()) -> CommandResult:
        """Run ``command`` (a remote shell command line; quote inventory values with
        ``shlex.quote``) on one exec channel and return its exit status and output.

        ``stdin`` bytes are sent then EOF (EOF at once when None); they are never logged.
        Both streams are read as they arrive, so a command filling stderr cannot deadlock.
        ``timeout`` seconds (default ``settings.command_timeout``) bounds the whole
        command. ``max_output`` bytes (stdout and stderr together; default 64 MiB, None =
        unbounded) are kept at most. ``secret_args``: strings of ``command`` to mask in
        the ``-vv`` log.

        Raises :class:`CommandTimeout` (partial output attached), :class:`OutputTooLarge`
        (what was kept attached; the channel is closed), :class:`SessionClosed` when the
        session is or gets closed, or :class:`SSHError` if the connection fails.
        """
        limit = self.settings.command_timeout if timeout is None else float(timeout)
        if max_output is not None and max_output < 0:
            raise ValueError(f"max_output must be >= 0 bytes or None, got {max_output}")
        deadline = time.monotonic() + limit
        name = self.target.name
        shown = printable(_mask(command, secret_args))
        log.debug("%s: run: %s", name, printable(shown, 4096))
        started = time.monotonic()
        if self._closed:
            raise self._closed_error(f"before running: {shown[:120]}")
        try:
            chan = self.transport.open_session(timeout=min(limit, self.settings.connect_timeout))
        except (SSHException, EOFError, OSError) as e:
            if self._closed:
                raise self._closed_error(f"before running: {shown[:120]}") from None
            raise SSHError(name, f"cannot open a session channel: {_describe(e)}") from None
        out = bytearray()
        errb = bytearray()

        def take(buf: bytearray, data: bytes) -> None:
            if max_output is not None and len(out) + len(errb) + len(data) > max_output:
                buf += data[: max_output - len(out) - len(errb)]
                close_channel(chan)  # stop reading: the remote command gets EOF/SIGPIPE
                log.debug("%s: output over %d bytes: channel closed", name, max_output)
                raise OutputTooLarge(
                    name, f"command printed more than {max_output} bytes (the limit for this command); "
                          f"stopped reading: {shown[:120]}",
                    limit=max_output, stdout=bytes(out), stderr=bytes(errb),
                )
            buf += data

        try:
            chan.exec_command(command)
            pending = memoryview(stdin) if stdin else None
            if pending is None:
                chan.shutdown_write()
            while True:
                while chan.recv_ready():
                    take(out, chan.recv(_CHUNK))
                while chan.recv_stderr_ready():
                    take(errb, chan.recv_stderr(_CHUNK))
                if self._closed:
                    raise self._closed_error(f"while running: {shown[:120]}")
                if pending is not None and chan.send_ready():
                    n = chan.send(pending[:32768])
                    pending = pending[n:]
                    if not len(pending):
                        pending = None
                        chan.shutdown_write()
                if (chan.eof_received or chan.closed) and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CommandTimeout(name, f"command timed out after {limit:g} s: {shown[:120]}",
                                         stdout=bytes(out), stderr=bytes(errb))
                # the channel's pipe is readable while either buffer holds data or on EOF;
                # while stdin is pending poll briefly for window space as well
                wait_readable(chan, min(remaining, 0.05) if pending is not None else remaining)
            remaining = max(0.0, deadline - time.monotonic())
            if not chan.status_event.wait(remaining):
                raise CommandTimeout(
                    name, f"command timed out after {limit:g} s waiting for its exit status: {shown[:120]}",
                    stdout=bytes(out), stderr=bytes(errb),
                )
            if self._closed:
                raise self._closed_error(f"while running: {shown[:120]}")
            status = chan.recv_exit_status()
            log.debug("%s: exit status %d, %d bytes stdout, %d bytes stderr, %.2f s", name, status, len(out),
                      len(errb), time.monotonic() - started)
            return CommandResult(status, bytes(out), bytes(errb))
        except (SSHException, EOFError, OSError) as e:
            if self._closed:
                raise self._closed_error(f"while running: {shown[:120]}") from None
            raise SSHError(name, f"command failed: connection lost ({_describe(e)})") from None
        finally:
            close_channel(chan)


def connect(target: Target, settings: SSHSettings) -> Session:
    """Open an authenticated :class:`Session` to ``target`` (through its jump hosts or its
    ProxyCommand).

    Raises :class:`HostKeyUnknown`, :class:`HostKeyChanged`, :class:`HostKeyRevoked`,
    :class:`AuthenticationFailed`, :class:`NegotiationFailed` (never retried),
    :class:`Unreachable` (after the retries described in the module docstring) or
    :class:`SSHError`.
    """
    jumps: list[paramiko.Transport] = []
    try:
        via = None
        label = ""
        for hop in target.proxy_jump:
            via, _ = _open_hop_with_retry(hop, settings, via, label)
            jumps.append(via)
            label = str(hop)
        t, proxy = _open_hop_with_retry(target, settings, via, label)
    except BaseException:
        for j in reversed(jumps):
            j.close()
        raise
    session = Session(target, settings, t, jumps, proxy)
    log.info("%s: connected to %s (%d attempt%s)", target.name, target, session.attempts,
             "" if session.attempts == 1 else "s")
    return session
