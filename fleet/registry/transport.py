"""HTTP exchanges with one registry: TLS trust, retries of transient failures, diagnostics.

* ``requests`` lets ``REQUESTS_CA_BUNDLE`` override ``Session.verify`` when
  ``trust_env=True`` (psf/requests#3829), so the session runs with ``trust_env=False`` and
  passes ``verify=`` on every request.
* Retries (tenacity): connection refused/reset, timeouts (TLS handshake included), HTTP
  429/502/503/504, honouring ``Retry-After`` (RFC 9110 section 10.2.3). Never other
  statuses: a 404 or 401 does not change by asking again.
* Diagnostics through ``fleet.log`` (logger ``fleet.registry``): INFO the endpoint at first
  contact and how TLS is verified; DEBUG every request (method, URL, status, bytes sent and
  received, milliseconds); TRACE request and response headers through
  :func:`fleet.log.redact_headers` (``Authorization`` never shown). URLs are logged through
  :func:`redact_url` (upload session state, signed-URL signatures and tokens removed).
"""

from __future__ import annotations

import email.utils
import logging
import re
import threading
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests
import tenacity

from fleet.log import TRACE, logger, redact_headers
from fleet.registry.errors import RegistryError

__all__ = ["Transport", "redact_url", "retry_after_seconds", "RETRY_STATUSES"]

log = logger("registry")

#: Statuses retried by the transport (the other 5xx are reported, classed transient).
RETRY_STATUSES = (429, 502, 503, 504)

# Query parameters whose values are secrets or opaque session state: distribution's
# upload ``_state`` (an HMAC-signed session), OAuth2 tokens, S3/GCS/Azure signed URLs a
# registry may redirect blob downloads to.
_SECRET_PARAMS = frozenset({
    "_state", "token", "access_token", "refresh_token", "password", "client_secret", "code",
    "signature", "sig", "x-amz-signature", "x-amz-credential", "x-amz-security-token",
    "x-goog-signature", "x-goog-credential", "se", "sp", "sv", "st", "skoid", "sktid",
})


def redact_url(url: str) -> str:
    """``url`` with userinfo dropped and secret query values replaced by ``<redacted>``."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if not parts.query:
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    query = [(k, "<redacted>" if k.lower() in _SECRET_PARAMS else v)
             for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe=":<>/,"), ""))


def retry_after_seconds(response: requests.Response) -> float | None:
    """Seconds asked by ``Retry-After`` (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def short_reason(exc: BaseException) -> str:
    """The useful words of a ``requests`` exception (its text nests urllib3's and ssl's)."""
    text = str(exc)
    m = re.search(r"\[SSL: [A-Z_]+\][^')\"(]*", text)
    if m:
        return m.group(0).strip()
    m = re.search(r"(Connection refused|Name or service not known|timed out|Connection reset"
                  r"|Connection aborted|Remote end closed connection)", text)
    return m.group(1) if m else type(exc).__name__


def _is_handshake_timeout(exc: BaseException) -> bool:
    return isinstance(exc, requests.exceptions.SSLError) and "timed out" in str(exc)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, _TransientStatus):
        return True
    if isinstance(exc, requests.exceptions.SSLError):
        return _is_handshake_timeout(exc)
    return isinstance(exc, (requests.ConnectionError, requests.Timeout,
                            requests.exceptions.ChunkedEncodingError))


class _TransientStatus(Exception):
    def __init__(self, response: requests.Response):
        self.response = response


def _body_size(body: Any) -> int:
    return len(body) if isinstance(body, (bytes, bytearray, str)) else 0


class Transport:
    """HTTP to one registry: a ``requests.Session`` (connection pool shared by threads),
    ``verify`` a CA bundle path or True for the system store (plain HTTP comes from the
    ``http://`` scheme of ``base_url``, never from turning verification off), ``timeout``
    seconds per connect/read, ``retries`` attempts for transient failures, at most
    ``max_retry_wait`` seconds apart. ``trust`` describes the TLS trust for the INFO record."""

    def __init__(self, registry: str, base_url: str, verify: str | bool, *, timeout: float,
                 retries: int, max_retry_wait: float, trust: str):
        self.registry = registry
        self.base_url = base_url
        self.verify = verify
        self.timeout = timeout
        self.retries = max(1, retries)
        self.max_retry_wait = max_retry_wait
        self._trust = trust
        self._announced = False
        self._announce_lock = threading.Lock()
        self.session = requests.Session()
        # Environment CA variables would override verify= on the session (psf/requests#3829).
        self.session.trust_env = False
        self.session.headers["User-Agent"] = "fleet-registry-client"

    def close(self) -> None:
        self.session.close()

    def url(self, path: str) -> str:
        """An absolute URL for an API path (``/v2/...``) or a registry-given location."""
        if path.startswith(("http://", "https://")):
            return path
        return urljoin(self.base_url + "/", path.lstrip("/"))

    def _announce(self) -> None:
        with self._announce_lock:
            if self._announced:
                return
            self._announced = True
        log.info("registry %s: endpoint %s (%s)", self.registry, self.base_url, self._trust)

    def _log_exchange(self, method: str, url: str, resp: requests.Response, started: float,
                      stream: bool) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            return
        sent = _body_size(resp.request.body) if resp.request is not None else 0
        first = resp.history[0] if resp.history else resp
        if first.request is not None and first.request.url:
            url = first.request.url  # with the query requests built from params=
        if stream:
            length = resp.headers.get("Content-Length")
            received = f"{length} B streamed" if length else "streamed"
        else:
            received = f"{len(resp.content)} B"
        hops = "".join(f" -> {h.status_code} {redact_url(h.headers.get('Location', ''))}"
                       for h in resp.history)
        log.debug("%s %s%s -> %s (sent %d B, received %s, %d ms)", method, redact_url(url), hops,
                  resp.status_code, sent, received, (time.monotonic() - started) * 1000)
        if log.isEnabledFor(TRACE):
            req_headers = dict(resp.request.headers) if resp.request is not None else {}
            log.log(TRACE, "%s %s request headers: %s", method, redact_url(url),
                    _headers_text(req_headers))
            log.log(TRACE, "%s %s response headers: %s", method, redact_url(url),
                    _headers_text(dict(resp.headers)))

    def send(self, method: str, url: str, **kw: Any) -> requests.Response:
        """One HTTP exchange with retries on connection errors, timeouts, 429 and
        502/503/504; never on other statuses. Returns the last response even if it is a
        transient status. Raises :class:`RegistryError` (``transient`` True when the
        registry could not be reached, False for a TLS trust or protocol failure)."""
        self._announce()
        stream = bool(kw.get("stream"))

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _TransientStatus):
                after = retry_after_seconds(exc.response)
                if after is not None:
                    return min(after, self.max_retry_wait)
            return tenacity.wait_exponential_jitter(multiplier=0.2, max=self.max_retry_wait,
                                                    jitter=0.2)(state)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            why = (f"HTTP {exc.response.status_code}" if isinstance(exc, _TransientStatus)
                   else short_reason(exc) if exc else "?")
            log.debug("%s %s: %s, attempt %d of %d, retrying in %.1f s", method, redact_url(url),
                      why, state.attempt_number, self.retries,
                      state.next_action.sleep if state.next_action else 0.0)

        def once() -> requests.Response:
            started = time.monotonic()
            resp = self.session.request(method, url, timeout=self.timeout, verify=self.verify,
                                        allow_redirects=True, **kw)
            self._log_exchange(method, url, resp, started, stream)
            if resp.status_code in RETRY_STATUSES:
                resp.close()
                raise _TransientStatus(resp)
            return resp

        retryer = tenacity.Retrying(stop=tenacity.stop_after_attempt(self.retries), wait=wait,
                                    retry=tenacity.retry_if_exception(_retryable),
                                    before_sleep=before_sleep, reraise=True)
        try:
            return retryer(once)
        except _TransientStatus as e:
            return e.response
        except requests.exceptions.SSLError as e:
            if _is_handshake_timeout(e):
                raise RegistryError(f"{self.registry}: TLS handshake with {self.base_url} timed out "
                                    f"after {self.retries} attempts", registry=self.registry,
                                    transient=True) from None
            text = str(e)
            hint = ("; if it is a plain-HTTP registry, use an insecure (HTTP) connection"
                    if "WRONG_VERSION_NUMBER" in text.upper()
                    else "; pass the registry's CA certificate" if "CERTIFICATE_VERIFY_FAILED" in text
                    else "")
            raise RegistryError(f"{self.registry}: TLS connection failed ({short_reason(e)}){hint}",
                                registry=self.registry, transient=False) from None
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as e:
            raise RegistryError(f"{self.registry}: cannot reach registry at {self.base_url} "
                                f"after {self.retries} attempts ({short_reason(e)})",
                                registry=self.registry, transient=True) from None


def _headers_text(headers: dict[str, str]) -> str:
    clean = redact_headers(headers)
    if "Location" in clean:
        clean["Location"] = redact_url(clean["Location"])
    return "; ".join(f"{k}: {v}" for k, v in clean.items())
