"""Registry errors, classified so callers know what is worth retrying.

Every :class:`RegistryError` carries ``transient``:

* True for failures that may pass on their own: the connection was refused or reset, a
  timeout (connect, read, TLS handshake), HTTP 5xx and 429 (distribution-spec "Error
  codes": ``UNAVAILABLE``, ``TOOMANYREQUESTS``; RFC 9110 section 15.6 and RFC 6585
  section 4). The client has already retried these ``retries`` times; a rollout may retry
  the whole step later.
* False for answers that will not change by asking again: credentials refused (401/403,
  ``UNAUTHORIZED``, ``DENIED``), unknown manifest/blob/repository (404, ``*_UNKNOWN``),
  a manifest the registry refuses (``MANIFEST_INVALID``...), bytes that do not hash to
  their digest, an untrusted TLS certificate, a plain-HTTP/TLS mix-up.

:func:`error_from_response` turns a registry's HTTP answer into the right class; it reads
the registry's own code from the JSON body (``errors[].code``).
"""

from __future__ import annotations

from typing import Any

from fleet.errors import FleetError, UsageError

__all__ = ["ReferenceError", "RegistryError", "AuthError", "NotFound", "ManifestInvalid",
           "DigestMismatch", "is_transient_status", "error_from_response", "registry_error_body"]

#: Registry error codes that mean "try again later" (distribution-spec "Error codes",
#: distribution ``registry/api/errcode``).
TRANSIENT_CODES = frozenset({"UNAVAILABLE", "TOOMANYREQUESTS"})


def is_transient_status(status: int | None, code: str | None = None) -> bool:
    """True for HTTP 5xx, 429 and the registry codes ``UNAVAILABLE``/``TOOMANYREQUESTS``."""
    if code in TRANSIENT_CODES:
        return True
    return status is not None and (status == 429 or 500 <= status <= 599)


class ReferenceError(UsageError):  # noqa: A001 - the name agreed in the brief
    """A malformed image reference; the message quotes the reference."""


class RegistryError(FleetError):
    """A registry request failed.

    ``str()`` names the reference (or registry) and includes the registry's own error code
    from the JSON body (``errors[].code``, distribution-spec "Error codes") when it sent one.
    Attributes: ``reference`` (str), ``registry`` (host[:port]), ``status`` (HTTP status or
    None), ``code`` (e.g. ``"MANIFEST_UNKNOWN"`` or None), ``transient`` (bool: worth
    retrying later; by default derived from ``status``/``code`` with
    :func:`is_transient_status`, connection failures pass ``transient=True``).
    """

    def __init__(self, message: str, *, reference: str = "", registry: str = "",
                 status: int | None = None, code: str | None = None,
                 transient: bool | None = None):
        super().__init__(message)
        self.reference = reference
        self.registry = registry
        self.status = status
        self.code = code
        self.transient = is_transient_status(status, code) if transient is None else bool(transient)


class _Permanent(RegistryError):
    def __init__(self, message: str, **kw: Any):
        kw["transient"] = False
        super().__init__(message, **kw)


class AuthError(_Permanent):
    """The registry or its token service refused our credentials (HTTP 401/403). Permanent."""


class NotFound(_Permanent):
    """Manifest, blob or repository unknown (MANIFEST_UNKNOWN, BLOB_UNKNOWN, NAME_UNKNOWN).
    Permanent."""


class ManifestInvalid(_Permanent):
    """The registry refused a manifest (MANIFEST_INVALID, MANIFEST_BLOB_UNKNOWN, ...).
    Permanent."""


class DigestMismatch(_Permanent):
    """Bytes do not hash to the digest asked for, or to the one the registry reported.
    Permanent."""


def registry_error_body(resp: Any) -> tuple[str | None, str]:
    """(first ``errors[].code``, its message) from a registry error response (a
    ``requests.Response``); ``(None, first line of the body)`` when it is not the JSON
    error format, ``(None, "")`` for a HEAD (no body)."""
    if resp.request is not None and resp.request.method == "HEAD":
        return None, ""
    try:
        body = resp.json()
        first = body["errors"][0]
        return str(first.get("code") or "") or None, str(first.get("message") or "")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        text = (resp.text or "").strip().splitlines()
        return None, text[0][:200] if text else ""


def error_from_response(resp: Any, what: str, action: str, registry: str, *,
                        insecure: bool = False, manifest: bool = False) -> RegistryError:
    """The error for a registry answer that was not the success ``action`` expected.

    ``what`` names the reference, ``action`` what was attempted (``"manifest PUT"``);
    ``manifest=True`` maps a bare 400 to :class:`ManifestInvalid`. The class follows the
    registry's code first, then the HTTP status.
    """
    code, message = registry_error_body(resp)
    detail = f"{code}: {message}" if code else (message or resp.reason or "")
    text = f"{what}: {action} failed: {detail} (HTTP {resp.status_code} from {registry})"
    kw: dict[str, Any] = dict(reference=what, registry=registry, status=resp.status_code, code=code)
    if (resp.status_code == 400 and insecure
            and "Docker-Distribution-Api-Version" not in resp.headers):
        # Go's TLS listener answers a plain-HTTP request with a bare 400.
        return RegistryError(f"{what}: {registry} answered a plain-HTTP request with "
                             f"HTTP 400; it probably speaks TLS (connect without insecure)",
                             transient=False, **kw)
    if resp.status_code in (401, 403) or code in ("UNAUTHORIZED", "DENIED"):
        return AuthError(text, **kw)
    if code == "DIGEST_INVALID":
        return DigestMismatch(text, **kw)
    if manifest and resp.status_code == 400 or code in (
            "MANIFEST_INVALID", "MANIFEST_BLOB_UNKNOWN", "MANIFEST_UNVERIFIED", "TAG_INVALID"):
        return ManifestInvalid(text, **kw)
    if resp.status_code == 404 or code in ("MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "NAME_UNKNOWN",
                                           "BLOB_UPLOAD_UNKNOWN"):
        return NotFound(text, **kw)
    return RegistryError(text, **kw)
