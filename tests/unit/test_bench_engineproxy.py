"""The benchmark's counting proxy (bench/engineproxy.py) counts what an engine receives:
requests in sequence on a keep-alive connection (bodies skipped by Content-Length or
chunked framing), nothing after a request that hijacks the connection."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from engineproxy import _Parser, template  # noqa: E402


def test_template_names_the_endpoint_not_the_object():
    assert template("/v1.41/containers/abc123/json?size=1") == "/containers/{id}/json"
    assert template("/v1.41/containers/json?all=1") == "/containers/json"
    assert template("/v1.41/containers/create?name=app.new") == "/containers/create"
    assert template("/v1.41/images/198.18.0.1:5443/fleet/app@sha256:00ff/json") == "/images/{name}/json"
    assert template("/v1.41/images/create?fromImage=x&tag=1") == "/images/create"
    assert template("/_ping") == "/_ping"


def test_requests_counted_in_sequence_and_not_after_a_hijack():
    seen = []
    p = _Parser(lambda m, path: seen.append(f"{m} {template(path)}"))
    body = b'{"Image":"GET /containers/x/json HTTP/1.1\\r\\n"}'
    stream = (b"HEAD /_ping HTTP/1.1\r\nHost: docker\r\n\r\n"
              b"POST /v1.41/containers/create?name=a HTTP/1.1\r\nContent-Length: " + str(len(body)).encode()
              + b"\r\n\r\n" + body
              + b"POST /v1.41/build HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
              + b"POST /v1.41/exec/e1/start HTTP/1.1\r\nUpgrade: tcp\r\nContent-Length: 2\r\n\r\n{}"
              + b"GET /v1.41/info HTTP/1.1\r\n\r\n")  # raw stream after the hijack: not a request
    for i in range(0, len(stream), 7):  # in small pieces, as a socket may deliver them
        p.feed(stream[i:i + 7])
    assert seen == ["HEAD /_ping", "POST /containers/create", "POST /build", "POST /exec/{id}/start"]
