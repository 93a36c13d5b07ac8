"""Error classes and the transient/permanent classification (fleet.registry.errors): a pure
decision, tested on registry answers as distribution 2.8 sends them (bodies from
docs/spec/api.md "Errors" and the codes of registry/api/v2/errors.go), built as real
``requests.Response`` objects."""

from __future__ import annotations

import json

import pytest
import requests

from fleet.errors import FleetError
from fleet.registry import (
    AuthError,
    DigestMismatch,
    ManifestInvalid,
    NotFound,
    RegistryError,
    error_from_response,
    is_transient_status,
)

REG = "127.0.0.1:5443"


def answer(status: int, code: str | None = None, message: str = "", *, method: str = "GET",
           headers: dict | None = None, body: bytes | None = None) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp.reason = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
                   500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "")
    resp.headers.update({"Docker-Distribution-Api-Version": "registry/2.0",
                         "Content-Type": "application/json; charset=utf-8", **(headers or {})})
    if body is None and code:
        body = json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()
    resp._content = body or b""
    resp.request = requests.Request(method, f"https://{REG}/v2/app/manifests/v1").prepare()
    return resp


@pytest.mark.parametrize("status,code,cls,transient", [
    (401, "UNAUTHORIZED", AuthError, False),
    (403, "DENIED", AuthError, False),
    (404, "MANIFEST_UNKNOWN", NotFound, False),
    (404, "BLOB_UNKNOWN", NotFound, False),
    (404, "NAME_UNKNOWN", NotFound, False),
    (404, "BLOB_UPLOAD_UNKNOWN", NotFound, False),
    (400, "MANIFEST_INVALID", ManifestInvalid, False),
    (400, "MANIFEST_BLOB_UNKNOWN", ManifestInvalid, False),
    (400, "TAG_INVALID", ManifestInvalid, False),
    (400, "DIGEST_INVALID", DigestMismatch, False),
    (400, "SIZE_INVALID", RegistryError, False),
    (405, "UNSUPPORTED", RegistryError, False),
    (429, "TOOMANYREQUESTS", RegistryError, True),
    (500, "UNKNOWN", RegistryError, True),
    (502, None, RegistryError, True),
    (503, "UNAVAILABLE", RegistryError, True),
    (504, None, RegistryError, True),
])
def test_classification(status, code, cls, transient):
    err = error_from_response(answer(status, code, "why"), f"{REG}/app:v1", "manifest GET", REG)
    assert type(err) is cls and err.transient is transient
    assert err.status == status and err.code == code and err.registry == REG
    assert f"{REG}/app:v1: manifest GET failed" in str(err) and f"HTTP {status} from {REG}" in str(err)
    if code:
        assert code in str(err)


def test_a_bare_400_on_a_manifest_put_is_an_invalid_manifest():
    err = error_from_response(answer(400, body=b"bad"), "r/a:v1", "manifest PUT", REG, manifest=True)
    assert type(err) is ManifestInvalid and not err.transient and "bad" in str(err)


def test_plain_http_to_a_tls_port_is_permanent():
    # Go's TLS listener answers plain HTTP with a bare 400 and no registry header
    resp = answer(400, body=b"Client sent an HTTP request to an HTTPS server.\n")
    del resp.headers["Docker-Distribution-Api-Version"]
    err = error_from_response(resp, REG, "API version check", REG, insecure=True)
    assert "speaks TLS" in str(err) and not err.transient


def test_head_answers_have_no_body_to_read():
    err = error_from_response(answer(404, method="HEAD"), "r/a:v1", "manifest HEAD", REG)
    assert type(err) is NotFound and err.code is None and "Not Found" in str(err)


def test_transient_statuses_and_codes():
    assert [s for s in (200, 400, 401, 404, 409, 429, 500, 502, 503, 599) if is_transient_status(s)] == \
        [429, 500, 502, 503, 599]
    assert is_transient_status(None, "UNAVAILABLE") and is_transient_status(400, "TOOMANYREQUESTS")
    assert not is_transient_status(None) and not is_transient_status(None, "DENIED")


def test_subclasses_are_always_permanent_and_fleet_errors():
    for cls in (AuthError, NotFound, ManifestInvalid, DigestMismatch):
        err = cls("x", status=503, code="UNAVAILABLE")  # even if someone passes a 5xx
        assert err.transient is False and isinstance(err, RegistryError) and isinstance(err, FleetError)
    assert RegistryError("cannot reach", transient=True).transient is True
    assert RegistryError("no status").transient is False
    assert RegistryError("x", status=503).transient is True
