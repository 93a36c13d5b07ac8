"""A counting proxy in front of a Docker engine's Unix socket (benchmark instrument).

:class:`CountingProxy` listens on a Unix socket and forwards every connection to the
engine's socket, counting the HTTP requests the engine receives (``METHOD /path`` with
ids and image names replaced by ``{id}``/``{name}``, the API version prefix and the query
removed), the connections, and the bytes each way. Whoever talks to the engine through
it - the docker CLI on the device, ``docker system dial-stdio``, sshd's
``direct-streamlocal`` channels - is counted the same way, so the CLI way and the API way
of reaching an engine are measured with one instrument.

Requests are parsed in sequence (request line, headers, a ``Content-Length`` or chunked
body); after a request that hijacks the connection (``Upgrade`` header, exec start,
attach: the raw output stream follows) the rest of that connection is not parsed.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections import Counter
from pathlib import Path

_VERSION = re.compile(r"^/v\d+\.\d+(?=/)")
_OBJECT = re.compile(r"^/(containers|exec|networks|volumes|plugins|services|tasks|secrets|configs)/"
                     r"(?!(?:json|create|prune)(?:/|$))[^/]+")
_IMAGE = re.compile(r"^/images/(?!create$|json$|load$|prune$|search$|get$)(.+?)(/json|/history|/push|/tag)?$")
_DIST = re.compile(r"^/distribution/.+/json$")


def template(path: str) -> str:
    """``/v1.41/containers/abc/json?x=1`` -> ``/containers/{id}/json``."""
    p = _VERSION.sub("", path.split("?", 1)[0])
    p = _OBJECT.sub(lambda m: f"/{m.group(1)}/{{id}}", p)
    m = _IMAGE.match(p)
    if m:
        p = "/images/{name}" + (m.group(2) or "")
    if _DIST.match(p):
        p = "/distribution/{name}/json"
    return p


class _Parser:
    """Counts requests in one client->engine byte stream."""

    def __init__(self, on_request):
        self.buf = b""
        self.mode = "head"
        self.left = 0
        self.after = "head"
        self.on_request = on_request

    def feed(self, data: bytes) -> None:
        if self.mode == "raw":
            return
        self.buf += data
        while self.buf and self.mode != "raw":
            if self.mode == "head":
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > 65536:
                        self.mode = "raw"  # not HTTP as we know it: stop parsing
                    return
                head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4:]
                lines = head.split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) < 3:
                    self.mode = "raw"
                    return
                method, path = parts[0], parts[1]
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
                self.on_request(method, path)
                tpl = template(path)
                hijack = "upgrade" in headers or (method == "POST" and (tpl.endswith("/attach")
                                                                        or tpl == "/exec/{id}/start"))
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    self.mode = "chunk"
                else:
                    self.left = int(headers.get("content-length", "0") or 0)
                    self.mode = "body"
                if hijack:
                    self.after = "raw"
                else:
                    self.after = "head"
            elif self.mode == "body":
                take = min(self.left, len(self.buf))
                self.buf, self.left = self.buf[take:], self.left - take
                if self.left:
                    return
                self.mode = self.after
            elif self.mode == "chunk":
                end = self.buf.find(b"\r\n")
                if end < 0:
                    return
                size = int(self.buf[:end].split(b";")[0] or b"0", 16)
                if len(self.buf) < end + 2 + size + 2:
                    return
                self.buf = self.buf[end + 2 + size + 2:]
                if size == 0:
                    self.mode = self.after
            if self.mode == "head" and not self.buf:
                return


class CountingProxy:
    """Listens on ``path`` (mode 0660, group ``group``), forwards to ``target``; read
    :meth:`snapshot`, zero with :meth:`reset`."""

    def __init__(self, path: Path, target: Path, group: str | None = None):
        self.path, self.target, self.group = Path(path), Path(target), group
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.reset()
        self._srv: socket.socket | None = None

    def reset(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            self.requests: Counter = Counter()
            self.connections = 0
            self.bytes_to_engine = 0
            self.bytes_from_engine = 0

    def snapshot(self) -> dict:
        with self._lock:
            return {"api_calls": sum(self.requests.values()), "by_call": dict(sorted(self.requests.items())),
                    "connections": self.connections, "bytes_to_engine": self.bytes_to_engine,
                    "bytes_from_engine": self.bytes_from_engine}

    def start(self) -> "CountingProxy":
        self.path.unlink(missing_ok=True)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(self.path))
        if self.group:
            import grp

            os.chown(self.path, 0, grp.getgrnam(self.group).gr_gid)
        os.chmod(self.path, 0o660)
        srv.listen(64)
        srv.settimeout(0.2)
        self._srv = srv
        threading.Thread(target=self._accept, daemon=True, name="engine-proxy").start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._srv is not None:
            self._srv.close()
        self.path.unlink(missing_ok=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                c, _ = self._srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                up.connect(str(self.target))
            except OSError:
                c.close()
                continue
            with self._lock:
                self.connections += 1
            parser = _Parser(self._request)
            threading.Thread(target=self._pump, args=(c, up, parser, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, c, None, False), daemon=True).start()

    def _request(self, method: str, path: str) -> None:
        with self._lock:
            self.requests[f"{method} {template(path)}"] += 1

    def _pump(self, src: socket.socket, dst: socket.socket, parser: _Parser | None, to_engine: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self._lock:
                    if to_engine:
                        self.bytes_to_engine += len(data)
                    else:
                        self.bytes_from_engine += len(data)
                if parser is not None:
                    parser.feed(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            if not to_engine:
                for s in (src, dst):
                    try:
                        s.close()
                    except OSError:
                        pass
