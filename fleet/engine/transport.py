"""Connections to a device's Docker engine over the SSH connection a run already holds.

No new TCP connection, no SSH login, and - on the preferred path - no process on the
device: every HTTP connection to the engine is one SSH channel on the session's
:class:`paramiko.Transport`.

* **streamlocal** (preferred): a ``direct-streamlocal@openssh.com`` channel, i.e. sshd
  itself connects to the engine's Unix socket (``/var/run/docker.sock`` or the path of a
  ``DOCKER_HOST=unix://...`` the device declares) as the login user, like
  ``ssh -L /local.sock:/var/run/docker.sock``. Wire format: OpenSSH ``PROTOCOL`` section
  2.4 (https://github.com/openssh/openssh-portable/blob/master/PROTOCOL). paramiko cannot
  build that request (paramiko/paramiko#544, open since 2015), see
  :func:`begin_streamlocal`.
* **dial-stdio** (fallback, when sshd refuses the channel: ``AllowStreamLocalForwarding
  no``, ``DisableForwarding``, a ``restrict`` key, or the login may not connect to the
  socket): an exec channel running ``docker system dial-stdio`` (``sudo -n`` first with
  become), the transport docker's own ``ssh://`` hosts use (docker/cli
  ``cli/connhelper``). One remote process per HTTP connection, so the pool keeps ONE
  keep-alive connection per device.

:class:`DeviceAPIClient` is and :class:`ChannelAdapter`, a requests adapter whose connections are such channels (the
pattern of docker-py's ``docker/transport/sshconn.py``), which
:class:`fleet.engine.api.DeviceAPIClient` mounts; :class:`EngineCounters` counts what it
costs.
"""

from __future__ import annotations

import io
import logging
import re
import shlex
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paramiko
import urllib3
import urllib3.connection
import urllib3.connectionpool
from docker.transport.basehttpadapter import BaseHTTPAdapter
from paramiko.channel import Channel
from paramiko.common import cMSG_CHANNEL_OPEN
from paramiko.message import Message
from paramiko.ssh_exception import ChannelException, SSHException

from fleet.log import logger
from fleet.ssh import close_channel

__all__ = [
    "DEFAULT_SOCKET",
    "STREAMLOCAL",
    "EngineCounters",
    "StreamLocalRefused",
    "begin_streamlocal",
    "open_streamlocal_channel",
    "socket_path_from_docker_host",
    "dial_stdio_command",
    "tcp_nodelay",
    "EngineConnector",
    "ChannelAdapter",
]

log = logger("engine")

#: The engine's socket when the device declares no ``DOCKER_HOST`` (dockerd's default).
DEFAULT_SOCKET = "/var/run/docker.sock"
#: The channel type of an OpenSSH Unix-socket forward (PROTOCOL section 2.4).
STREAMLOCAL = "direct-streamlocal@openssh.com"


# --------------------------------------------------------------------------- counters


@dataclass
class EngineCounters:
    """What talking to one device's engine cost.

    ``channels_opened``: SSH channels opened (streamlocal + exec); ``remote_processes``:
    exec channels, i.e. processes started on the device (dial-stdio, ``df``, shell
    checks, the probe script); ``api_calls``: engine API requests by ``METHOD
    /path/{template}``; ``bytes_sent``/``bytes_received``: HTTP bytes on the engine
    channels (not SSH framing); ``path``: ``"streamlocal"`` or ``"dial-stdio"`` once
    decided; ``path_reason``: why.
    """

    channels_opened: int = 0
    remote_processes: int = 0
    api_calls: dict[str, int] = field(default_factory=dict)
    bytes_sent: int = 0
    bytes_received: int = 0
    path: str = ""
    path_reason: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for k, v in deltas.items():
                setattr(self, k, getattr(self, k) + v)

    def call(self, key: str) -> None:
        with self._lock:
            self.api_calls[key] = self.api_calls.get(key, 0) + 1

    @property
    def api_call_total(self) -> int:
        return sum(self.api_calls.values())

    def since(self, before: dict[str, Any]) -> dict[str, Any]:
        """What was added since ``before`` (an earlier :meth:`to_dict`): the cost of one
        operation (a deploy, a verify) in the :meth:`to_dict` shape."""
        now = self.to_dict()
        out = dict(now)
        for k in ("channels_opened", "remote_processes", "api_call_total", "bytes_sent", "bytes_received"):
            out[k] = now[k] - before.get(k, 0)
        calls = {k: v - before.get("api_calls", {}).get(k, 0) for k, v in now["api_calls"].items()}
        out["api_calls"] = {k: v for k, v in calls.items() if v}
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field plus ``api_call_total``; ``api_calls`` sorted by key."""
        with self._lock:
            return {
                "path": self.path,
                "path_reason": self.path_reason,
                "channels_opened": self.channels_opened,
                "remote_processes": self.remote_processes,
                "api_call_total": sum(self.api_calls.values()),
                "api_calls": dict(sorted(self.api_calls.items())),
                "bytes_sent": self.bytes_sent,
                "bytes_received": self.bytes_received,
            }


# ------------------------------------------------------------- the streamlocal channel


class StreamLocalRefused(Exception):
    """sshd answered SSH_MSG_CHANNEL_OPEN_FAILURE (RFC 4254 section 5.1): ``code``
    (1 administratively prohibited, 2 connect failed, ...), ``server_text`` (sshd's
    description, e.g. ``"open failed"``), ``path``."""

    def __init__(self, path: str, code: int, code_text: str, server_text: str):
        self.path, self.code, self.server_text = path, code, server_text
        super().__init__(f"sshd refused a {STREAMLOCAL} channel to {path} "
                         f"(code {code} {code_text}{': ' + server_text if server_text else ''})")


# paramiko logs every refused channel open at ERROR ("Secsh channel 3 open FAILED: ...")
# on the shared "paramiko.transport" logger, which Python's last-resort handler prints on
# stderr. A refused streamlocal open is an expected decision (we fall back), not an
# error: this filter keeps sshd's reason text for our pending opens and drops the line.
_OPEN_FAILED = re.compile(r"^Secsh channel (\d+) open FAILED: (.*): [^:]*$", re.DOTALL)
_pending_lock = threading.Lock()
_pending: dict[tuple[int, int], list[str]] = {}  # (id(transport), chanid) -> [server text]


class _RefusalFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        m = _OPEN_FAILED.match(record.getMessage())
        if not m:
            return True
        with _pending_lock:
            boxes = [box for (_, cid), box in _pending.items() if cid == int(m.group(1))]
            for box in boxes:
                box.append(m.group(2))
        return not boxes


_filter_installed = False


def _install_filter() -> None:
    global _filter_installed
    with _pending_lock:
        if not _filter_installed:
            logging.getLogger("paramiko.transport").addFilter(_RefusalFilter())
            _filter_installed = True


class _PendingOpen:
    """A ``direct-streamlocal`` open request in flight (see :func:`begin_streamlocal`)."""

    def __init__(self, transport: paramiko.Transport, chan: Channel, event: threading.Event, path: str):
        # paramiko's channel map holds channels by WEAK reference: this one keeps the
        # Channel alive until the answer comes (open_channel keeps it in a local).
        self.transport, self.chan, self.chanid, self.event, self.path = transport, chan, chan.chanid, event, path
        self._key = (id(transport), self.chanid)

    def discard(self) -> None:
        """Give up on the answer: close the channel should it open (bounded wait)."""
        try:
            self.wait(1.0).close()
        except Exception:  # refused, timed out or the connection is gone: nothing to close
            pass

    def wait(self, timeout: float) -> Channel:
        """The open channel; raises :class:`StreamLocalRefused` when sshd refused it,
        :class:`paramiko.SSHException` when the connection died or ``timeout`` passed."""
        t = self.transport
        deadline = time.monotonic() + timeout
        try:
            # the same wait as paramiko's Transport.open_channel
            while not self.event.wait(0.1):
                if not t.active:
                    raise t.get_exception() or SSHException("SSH session not active")
                if time.monotonic() > deadline:
                    raise SSHException(f"timeout opening a {STREAMLOCAL} channel to {self.path}")
            if t._channels.get(self.chanid) is self.chan:
                return self.chan
            e = t.get_exception()
            if isinstance(e, ChannelException):
                with _pending_lock:
                    texts = _pending.get(self._key) or []
                raise StreamLocalRefused(self.path, e.code, e.text, texts[0] if texts else "")
            raise e or SSHException(f"unable to open a {STREAMLOCAL} channel to {self.path}")
        finally:
            with _pending_lock:
                _pending.pop(self._key, None)


def begin_streamlocal(transport: paramiko.Transport, path: str, *, window_size: int | None = None,
                      max_packet_size: int | None = None) -> _PendingOpen:
    """Send SSH_MSG_CHANNEL_OPEN for a ``direct-streamlocal@openssh.com`` channel to the
    Unix socket ``path`` on the server, without waiting for the answer (so a caller can
    open another channel meanwhile: the probe does). ``.wait(timeout)`` returns the
    :class:`paramiko.Channel`.

    The request, from OpenSSH ``PROTOCOL`` section 2.4 "connection: Unix domain socket
    forwarding"::

        byte    SSH_MSG_CHANNEL_OPEN
        string  "direct-streamlocal@openssh.com"
        uint32  sender channel
        uint32  initial window size
        uint32  maximum packet size
        string  socket path
        string  reserved
        uint32  reserved

    ("The client currently sends the empty string for this field"; OpenSSH's sshd reads
    exactly these three fields and rejects trailing bytes, serverloop.c
    ``server_request_direct_streamlocal``.)

    Why not ``Transport.open_channel``: it appends a body only for ``direct-tcpip``,
    ``forwarded-tcpip`` and ``x11`` (paramiko/paramiko#544 asks for streamlocal). This
    function is that method's body (paramiko 5.x ``transport.py``) with the streamlocal
    fields: the same lock, channel id allocation, registration of the :class:`Channel`
    and its open event, and ``_send_user_message`` (which waits out a key
    re-exchange), so paramiko's own reader thread completes or fails the open exactly
    as for its built-in kinds. Those members are private: the project pins paramiko
    ``<6``, and :func:`_check_paramiko` refuses loudly if any is missing.
    """
    _check_paramiko(transport)
    if not transport.active:
        raise SSHException("SSH session not active")
    _install_filter()
    m = Message()
    with transport.lock:
        window_size = transport._sanitize_window_size(window_size)
        max_packet_size = transport._sanitize_packet_size(max_packet_size)
        chanid = transport._next_channel()
        m.add_byte(cMSG_CHANNEL_OPEN)
        m.add_string(STREAMLOCAL)
        m.add_int(chanid)
        m.add_int(window_size)
        m.add_int(max_packet_size)
        m.add_string(path)  # socket path
        m.add_string("")    # reserved (string)
        m.add_int(0)        # reserved (uint32)
        chan = Channel(chanid)
        transport._channels.put(chanid, chan)
        transport.channel_events[chanid] = event = threading.Event()
        transport.channels_seen[chanid] = True
        chan._set_transport(transport)
        chan._set_window(window_size, max_packet_size)
    pending = _PendingOpen(transport, chan, event, path)
    with _pending_lock:
        _pending[pending._key] = []
    try:
        transport._send_user_message(m)
    except BaseException:
        with _pending_lock:
            _pending.pop(pending._key, None)
        raise
    return pending


def open_streamlocal_channel(transport: paramiko.Transport, path: str, timeout: float = 10.0) -> Channel:
    """:func:`begin_streamlocal` and wait: the open channel, or :class:`StreamLocalRefused`
    / :class:`paramiko.SSHException`."""
    return begin_streamlocal(transport, path).wait(timeout)


_PARAMIKO_MEMBERS = ("lock", "_sanitize_window_size", "_sanitize_packet_size", "_next_channel", "_channels",
                     "channel_events", "channels_seen", "_send_user_message", "get_exception")


def _check_paramiko(transport: Any) -> None:
    missing = [n for n in _PARAMIKO_MEMBERS if not hasattr(transport, n)]
    if missing or not hasattr(Channel, "_set_transport") or not hasattr(Channel, "_set_window"):
        raise SSHException(f"this paramiko {paramiko.__version__} lacks {', '.join(missing) or 'Channel hooks'}: "
                           f"cannot build a {STREAMLOCAL} request")


def tcp_nodelay(transport: Any) -> bool:
    """Turn Nagle's algorithm off on the SSH connection's TCP socket (``TCP_NODELAY``);
    True when set. Engine API traffic is small request/response exchanges: with Nagle on,
    a small write that follows another unacknowledged one (a request body after its
    headers, a request after a window adjust) waits for the peer's delayed ACK, about
    40 ms on Linux (tcp(7) ``TCP_NODELAY``, ``TCP_QUICKACK``). OpenSSH's client sets it for
    interactive sessions (``ssh_packet_set_interactive``). A connection through a jump
    host has no socket of its own here (its transport runs over a channel): unchanged."""
    sock = getattr(transport, "sock", None)
    if not isinstance(sock, socket.socket) or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        return False
    return True


# ----------------------------------------------------------------------- dial-stdio


def socket_path_from_docker_host(value: str | None) -> str | None:
    """The socket path of a ``DOCKER_HOST`` value (``unix:///run/user/1000/docker.sock``
    -> ``/run/user/1000/docker.sock``); None when unset or not a Unix socket (``tcp://``,
    ``ssh://``: only ``docker system dial-stdio`` on the device can follow those)."""
    if not value or not value.startswith("unix://"):
        return None
    path = value[len("unix://"):]
    return path if path.startswith("/") else None


def dial_stdio_command(become: bool, socket_path: str | None = None) -> str:
    """The remote command of the fallback: ``[sudo -n] docker [-H unix://PATH] system
    dial-stdio`` (docker/cli ``cli/command/system/dial_stdio.go``: copies stdin/stdout to
    the engine's socket). ``-H`` only for a non-default ``socket_path`` (sudo's
    ``env_reset`` would drop the login's ``DOCKER_HOST``)."""
    argv = (["sudo", "-n"] if become else []) + ["docker"]
    if socket_path and socket_path != DEFAULT_SOCKET:
        argv += ["-H", "unix://" + socket_path]
    return " ".join(shlex.quote(a) for a in argv + ["system", "dial-stdio"])


# ------------------------------------------------------------------- channel as socket


class _ChannelReader(io.RawIOBase):
    """``makefile("rb")`` of a :class:`_ChannelSocket` (what http.client reads responses
    from), reference-counted like :class:`socket.SocketIO`: see :meth:`_ChannelSocket.close`."""

    def __init__(self, sock: "_ChannelSocket"):
        self._sock = sock
        sock._io_refs += 1

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self._sock._io_refs -= 1
            if self._sock._closed:
                self._sock._real_close()
        super().close()

    def readinto(self, b) -> int:
        data = self._sock.recv(len(b))
        b[: len(data)] = data
        return len(data)


class _ChannelSocket:
    """The socket interface http.client/urllib3 use, over one SSH channel, counting the
    bytes. For an exec channel (dial-stdio), :meth:`failure` tells why it ended."""

    def __init__(self, chan: Channel, counters: EngineCounters, kind: str, command: str = ""):
        self.chan, self.counters, self.kind, self.command = chan, counters, kind, command
        self._io_refs = 0
        self._closed = False
        self._failure: str | None = None

    def sendall(self, data) -> None:
        self.chan.sendall(data)
        self.counters.add(bytes_sent=len(data))

    def send(self, data) -> int:
        n = self.chan.send(data)
        self.counters.add(bytes_sent=n)
        return n

    def recv(self, n: int) -> bytes:
        data = self.chan.recv(n)
        self.counters.add(bytes_received=len(data))
        if not data and self.kind == "exec":
            self._capture()
        return data

    def recv_into(self, buf, nbytes: int = 0) -> int:
        data = self.recv(nbytes or len(buf))
        buf[: len(data)] = data
        return len(data)

    def makefile(self, mode: str = "rb", buffering: int = -1, **_: Any):
        if "w" in mode:
            raise ValueError("engine channel: write via sendall")
        return io.BufferedReader(_ChannelReader(self), buffering if buffering > 0 else io.DEFAULT_BUFFER_SIZE)

    def settimeout(self, t: float | None) -> None:
        self.chan.settimeout(t)

    def gettimeout(self) -> float | None:
        return self.chan.gettimeout()

    def setsockopt(self, *args: Any) -> None:  # urllib3 may tune TCP options; a channel has none
        pass

    def fileno(self) -> int:
        return self.chan.fileno()  # paramiko's pipe: readable on data or EOF (urllib3's drop check)

    def shutdown(self, how: int) -> None:
        self.chan.shutdown(how)

    def close(self) -> None:
        # As socket.socket: the channel closes when the socket AND every file made by
        # makefile() are closed. http.client relies on it: for a response that ends with
        # the connection (an exec's output stream), it closes the connection's socket
        # right after the headers and reads the body through the response's file.
        self._closed = True
        if self._io_refs <= 0:
            self._real_close()

    def _real_close(self) -> None:
        if self.kind == "exec" and self.chan.eof_received:
            self._capture()  # once closed, paramiko drops the exit status if it comes later
        close_channel(self.chan)

    def _capture(self) -> None:
        if self._failure is not None:
            return
        self.chan.status_event.wait(2.0)
        err = b""
        while self.chan.recv_stderr_ready() and len(err) < 4096:
            err += self.chan.recv_stderr(4096)
        status = self.chan.exit_status if self.chan.exit_status_ready() else -1
        text = " | ".join(ln.strip() for ln in err.decode("utf-8", "replace").splitlines() if ln.strip())
        self._failure = f"`{self.command}` exited {status}" + (f": {text[:500]}" if text else "")

    def failure(self) -> str:
        """For an exec channel that ended: ``"`CMD` exited N: STDERR"``; else ``""``."""
        if self.kind != "exec":
            return ""
        if self._failure is None and self.chan.eof_received:
            self._capture()
        return self._failure or ""


# ------------------------------------------------------------------------- connector


class EngineConnector:
    """Opens HTTP connections to one device's engine on ``transport``.

    The first connection decides the path: a streamlocal channel to ``socket_path``; if
    sshd refuses it, the exec channel ``dial_stdio_command(become, socket_path)``, for this
    and every later connection (a refused open costs a round trip; asking again each time
    would not change sshd's mind). ``first_channel`` hands over a streamlocal channel that
    is already open (the probe opens one while its script runs). ``counters`` record
    ``path``/``path_reason``.
    """

    def __init__(self, transport: paramiko.Transport, device: str, counters: EngineCounters, *,
                 socket_path: str = DEFAULT_SOCKET, become: bool = False, open_timeout: float = 10.0,
                 first_channel: Channel | None = None, streamlocal: bool = True):
        self.transport = transport
        self.device = device
        self.counters = counters
        self.socket_path = socket_path
        self.become = become
        self.open_timeout = open_timeout
        self._first = first_channel
        self._streamlocal = streamlocal
        self.last_socket: _ChannelSocket | None = None
        self._lock = threading.Lock()
        tcp_nodelay(transport)
        if first_channel is not None:
            self._decide("streamlocal", f"{STREAMLOCAL} channel to {socket_path} opened")
        elif not streamlocal:
            self._decide("dial-stdio", "streamlocal not tried (disabled by the caller)")

    @property
    def path(self) -> str:
        return self.counters.path

    def _decide(self, path: str, reason: str) -> None:
        self.counters.path, self.counters.path_reason = path, reason
        log.info("%s: engine API over %s: %s", self.device, path, reason)

    def open(self) -> _ChannelSocket:
        """A new connection to the engine. Raises :class:`paramiko.SSHException` (or
        OSError/EOFError) when the SSH connection cannot carry one."""
        with self._lock:
            if self._first is not None:
                chan, self._first = self._first, None
                sock = _ChannelSocket(chan, self.counters, "streamlocal")
                self.last_socket = sock
                return sock
            if self.path in ("", "streamlocal"):
                try:
                    chan = open_streamlocal_channel(self.transport, self.socket_path, self.open_timeout)
                except StreamLocalRefused as e:
                    self._decide("dial-stdio", f"{e}: AllowStreamLocalForwarding off, or the login may not "
                                               f"connect to the socket; falling back to `docker system dial-stdio`"
                                               f"{' through sudo -n' if self.become else ''}")
                else:
                    self.counters.add(channels_opened=1)
                    if not self.path:
                        self._decide("streamlocal", f"{STREAMLOCAL} channel to {self.socket_path} opened")
                    log.debug("%s: engine connection: new %s channel to %s", self.device, STREAMLOCAL,
                              self.socket_path)
                    sock = _ChannelSocket(chan, self.counters, "streamlocal")
                    self.last_socket = sock
                    return sock
            command = dial_stdio_command(self.become, self.socket_path)
            chan = self.transport.open_session(timeout=self.open_timeout)
            self.counters.add(channels_opened=1, remote_processes=1)
            log.debug("%s: engine connection: exec channel `%s`", self.device, command)
            chan.exec_command(command)
            sock = _ChannelSocket(chan, self.counters, "exec", command)
            self.last_socket = sock
            return sock

    def failure(self) -> str:
        """Why the last dial-stdio connection ended (its exit status and stderr), or ""."""
        s = self.last_socket
        return s.failure() if s is not None else ""


# ----------------------------------------------------------- requests/urllib3 plumbing


class _ChannelConnection(urllib3.connection.HTTPConnection):
    def __init__(self, connector: EngineConnector, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._connector = connector

    def connect(self) -> None:
        self.sock = self._connector.open()
        self.sock.settimeout(self.timeout if isinstance(self.timeout, (int, float)) else None)


class _ChannelPool(urllib3.connectionpool.HTTPConnectionPool):
    """At most one kept connection (``maxsize=1``); ``block=False`` makes a concurrent
    caller open a second, unkept one instead of deadlocking on a streaming response."""

    def __init__(self, connector: EngineConnector, timeout: float):
        super().__init__("localhost", timeout=timeout, maxsize=1, block=False)
        self._connector = connector
        self._conn_timeout = timeout

    def _new_conn(self) -> _ChannelConnection:
        return _ChannelConnection(self._connector, self._conn_timeout)


class ChannelAdapter(BaseHTTPAdapter):
    """A requests adapter whose every connection is ``connector.open()`` (one kept)."""

    def __init__(self, connector: EngineConnector, timeout: float):
        self._pool = _ChannelPool(connector, timeout)
        super().__init__(pool_connections=1, pool_maxsize=1, max_retries=0)

    def get_connection(self, url, proxies=None):
        return self._pool

    def request_url(self, request, proxies):
        return request.path_url  # as docker-py's UnixHTTPAdapter: no host part, no proxy

    def close(self) -> None:
        super().close()
        self._pool.close()
