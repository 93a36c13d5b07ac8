"""Where a lab device's received bytes go (benchmark instrument for bench/deploybench.py).

:class:`VethCapture` reads every frame the host sends into a lab device's veth pair
(``AF_PACKET`` on the host end ``flabNN``, frames of type ``PACKET_OUTGOING``: what the
device receives; the same frames, at the same length, that the interface's ``tx_bytes``
counter adds up) and sorts them by TCP port: to port 22 (SSH connections; those whose
host-side port belongs to the measured run - :class:`OwnPorts` - apart from other
sessions' on a shared lab), from the registry's port (the engine's pull over TLS),
anything else. Per class: frames, frame bytes, TCP payload bytes; for the registry, the
TCP connections the device opened (each starts with a TLS handshake). Nothing is
decrypted.

:func:`tls_handshake_bytes` measures what one TLS handshake with the registry costs the
client in received bytes (the server's flights: ServerHello, certificate chain, ..., and
any session ticket that arrives with the first response), by completing a handshake and
one HTTP request through memory BIOs and counting what the server sent before the
response body.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import threading
import time
from collections import defaultdict
from pathlib import Path

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


class VethCapture(threading.Thread):
    """Frames the host sends to a device through ``ifname``, classified (module docstring).
    ``registry_port``: the registry's TCP port. Use as a context manager; read
    :meth:`result` after it stopped."""

    def __init__(self, ifname: str, registry_port: int, ssh_port: int = 22, own: "OwnPorts | None" = None):
        super().__init__(daemon=True, name=f"capture-{ifname}")
        self.ifname, self.registry_port, self.ssh_port = ifname, registry_port, ssh_port
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
        self.sock.bind((ifname, 0))
        self.sock.settimeout(0.2)
        self._halt = threading.Event()
        self.classes: dict[str, dict[str, int]] = defaultdict(lambda: {"frames": 0, "bytes": 0, "payload": 0})
        self.conns: dict[int, dict[str, int]] = defaultdict(lambda: {"frames": 0, "bytes": 0, "payload": 0})
        self.syn_to_registry = 0
        self.own = own
        self.ssh_by_port: dict[int, dict[str, int]] = defaultdict(lambda: {"frames": 0, "bytes": 0, "payload": 0})

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                data, addr = self.sock.recvfrom(1 << 18)
            except socket.timeout:
                continue
            except OSError:
                return
            if addr[2] == PACKET_OUTGOING:
                self._inbound(data)
            else:
                self._outbound(data)

    def _tcp(self, data: bytes):
        """(sport, dport, flags, payload length) of an IPv4 TCP frame, else None."""
        if len(data) < 34 or data[12:14] != b"\x08\x00":
            return None
        ihl = (data[14] & 0x0F) * 4
        if data[23] != 6:
            return None
        total = struct.unpack_from("!H", data, 16)[0]
        t = 14 + ihl
        sport, dport = struct.unpack_from("!HH", data, t)
        off = (data[t + 12] >> 4) * 4
        flags = data[t + 13]
        return sport, dport, flags, max(0, total - ihl - off)

    def _inbound(self, data: bytes) -> None:
        tcp = self._tcp(data)
        if tcp is None:
            cls, payload = "other", 0
        else:
            sport, dport, _, payload = tcp
            cls = "ssh" if dport == self.ssh_port else "registry" if sport == self.registry_port else "other"
            if cls == "ssh":
                c = self.ssh_by_port[sport]
                c["frames"] += 1
                c["bytes"] += len(data)
                c["payload"] += payload
            if cls == "registry":
                c = self.conns[dport]
                c["frames"] += 1
                c["bytes"] += len(data)
                c["payload"] += payload
        k = self.classes[cls]
        k["frames"] += 1
        k["bytes"] += len(data)
        k["payload"] += payload

    def _outbound(self, data: bytes) -> None:
        tcp = self._tcp(data)
        if tcp is not None and tcp[1] == self.registry_port and tcp[2] & 0x12 == 0x02:  # SYN, not SYN-ACK
            self.syn_to_registry += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.sock.close()

    def __enter__(self) -> "VethCapture":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def result(self) -> dict:
        """{"ssh"|"registry"|"other": {"frames", "bytes", "payload"}, "registry_connections",
        "registry_conns": [{"frames", "bytes", "payload"}...], "total_bytes"}."""
        classes = {k: dict(v) for k, v in self.classes.items()}
        for k in ("ssh", "registry", "other"):
            classes.setdefault(k, {"frames": 0, "bytes": 0, "payload": 0})
        total = sum(v["bytes"] for v in classes.values())
        mine = self.own.ports if self.own is not None else set()
        own = {"frames": 0, "bytes": 0, "payload": 0, "connections": 0}
        for port, c in self.ssh_by_port.items():
            if port in mine:
                own["connections"] += 1
                for k in ("frames", "bytes", "payload"):
                    own[k] += c[k]
        classes["ssh_this_run"] = own
        classes["ssh_other_sessions"] = {k: classes["ssh"][k] - own[k] for k in ("frames", "bytes", "payload")}
        classes["ssh_other_sessions"]["connections"] = len(self.ssh_by_port) - own["connections"]
        return {**classes, "registry_connections": self.syn_to_registry,
                "registry_conns": sorted((dict(v) for v in self.conns.values()), key=lambda c: -c["payload"]),
                "total_bytes": total}


class OwnPorts(threading.Thread):
    """The local TCP ports of the processes whose command line contains ``marker`` (the
    measured run's unique playbook path), sampled every ``interval`` s from
    ``/proc/PID/fd`` socket inodes and ``/proc/net/tcp``: which SSH connections on a shared
    lab were the measured run's own."""

    def __init__(self, marker: str, interval: float = 0.1):
        super().__init__(daemon=True, name="own-ports")
        self.marker, self.interval = marker.encode(), interval
        self.ports: set[int] = set()
        self._halt = threading.Event()

    def _sample(self) -> None:
        inodes: set[str] = set()
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                if self.marker not in (d / "cmdline").read_bytes():
                    continue
                for fd in (d / "fd").iterdir():
                    link = os.readlink(fd)
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
            except OSError:
                continue
        if not inodes:
            return
        try:
            lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
        except OSError:
            return
        for ln in lines:
            f = ln.split()
            if len(f) > 9 and f[9] in inodes:
                self.ports.add(int(f[1].rsplit(":", 1)[1], 16))

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self._sample()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self._sample()


def tls_handshake_bytes(host: str, port: int, ca: Path | None, path: str = "/v2/") -> dict:
    """Bytes a client receives from ``host:port`` for one TLS handshake, and for one HTTP/1.1
    request of ``path`` on it (status line, headers, body), through memory BIOs.

    Returns {"handshake_received", "handshake_sent", "request_received", "tls_version",
    "cipher", "status"}: ``handshake_*`` until the handshake completed (the server's
    flights; a TLS 1.3 session ticket, sent after the client's Finished, is counted in the
    request's bytes), ``request_received`` what the response cost on the wire (TLS records
    included)."""
    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=host)
    sock = socket.create_connection((host, port), timeout=10)
    counts = {"sent": 0, "received": 0}

    def flush() -> None:
        data = outgoing.read()
        if data:
            sock.sendall(data)
            counts["sent"] += len(data)

    def feed() -> bool:
        data = sock.recv(65536)
        if not data:
            return False
        counts["received"] += len(data)
        incoming.write(data)
        return True

    try:
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                flush()
                if not feed():
                    raise ConnectionError("closed during the TLS handshake")
        flush()
        hs_recv, hs_sent = counts["received"], counts["sent"]
        obj.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        flush()
        body = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = obj.read(65536)
                if not chunk:
                    break
                body += chunk
            except ssl.SSLWantReadError:
                if not feed():
                    break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
        status = body.split(b"\r\n", 1)[0].decode("latin-1", "replace")
        return {"handshake_received": hs_recv, "handshake_sent": hs_sent,
                "request_received": counts["received"] - hs_recv, "response_bytes": len(body),
                "tls_version": obj.version(), "cipher": (obj.cipher() or ("?",))[0], "status": status}
    finally:
        sock.close()
