"""Pure helpers of the registry transport: URL redaction for logs, Retry-After."""

from __future__ import annotations

import email.utils
import time

import requests

from fleet.registry import redact_url
from fleet.registry.transport import retry_after_seconds


def test_redact_url_keeps_what_helps_and_drops_secrets():
    # an upload location as distribution 2.8 sends it, with its HMAC-signed session state
    loc = ("https://127.0.0.1:5443/v2/fleet/app/blobs/uploads/44f49bdf-8e51-4e78-9446-6b8062575f1f"
           "?_state=Zm9vYmFyYmF6&digest=sha256:6f5fe4b0")
    assert redact_url(loc) == ("https://127.0.0.1:5443/v2/fleet/app/blobs/uploads/"
                               "44f49bdf-8e51-4e78-9446-6b8062575f1f?_state=<redacted>&digest=sha256:6f5fe4b0")
    # a token request keeps its scopes; a signed S3 redirect loses its signature
    assert redact_url("https://auth/token?service=reg&scope=repository:a/b:pull,push") == \
        "https://auth/token?service=reg&scope=repository:a/b:pull,push"
    s3 = redact_url("https://bucket.s3/x?X-Amz-Credential=AKIA&X-Amz-Signature=abc123&X-Amz-Expires=1200")
    assert "AKIA" not in s3 and "abc123" not in s3 and "X-Amz-Expires=1200" in s3
    assert redact_url("https://user:pw@reg.example/v2/") == "https://reg.example/v2/"
    assert redact_url("/v2/app/blobs/uploads/u?_state=s3cret") == "/v2/app/blobs/uploads/u?_state=<redacted>"


def _with_retry_after(value: str) -> requests.Response:
    resp = requests.Response()
    resp.status_code = 429
    resp.headers["Retry-After"] = value
    return resp


def test_retry_after_seconds_and_http_dates():
    assert retry_after_seconds(_with_retry_after("3")) == 3.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after_seconds(_with_retry_after(later)) <= 31
    assert retry_after_seconds(_with_retry_after("Wed, 21 Oct 2015 07:28:00 GMT")) == 0.0
    assert retry_after_seconds(_with_retry_after("soon")) is None
    assert retry_after_seconds(requests.Response()) is None
