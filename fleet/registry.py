"""A thin client for the OCI distribution API (registry v2), over ``requests``.

It speaks the wire protocol and nothing else: references, auth (anonymous, Basic, Bearer
tokens), manifests, blobs, cross-repository mounts and retries. Publishing an image index
and planning which child a device gets sit above it (``fleet.publish.index``, the publish stage).

Rules and where they come from:

* Endpoints, upload sessions, mounts and error codes: OCI distribution-spec v1.1
  ("Pulling", "Pushing", "Error codes") and distribution 2.8 ``docs/spec/api.md``.
* Bearer tokens: distribution ``docs/spec/auth/token.md`` and ``scope.md`` (several
  ``scope`` parameters in one token request, ``token`` or ``access_token``, ``expires_in``
  defaulting to 60 s); refresh tokens per ``oauth.md``.
* Content negotiation: distribution 2.8.2 answers 404 to a GET/HEAD of an OCI manifest or
  index without a matching ``Accept``, and silently down-converts a Docker manifest list to
  its linux/amd64 child when only the Docker v2 manifest type is accepted, so every manifest
  request sends the full Accept list (library-notes section 2.3, checked on this machine).
* ``requests`` lets ``REQUESTS_CA_BUNDLE`` override ``Session.verify`` when
  ``trust_env=True`` (psf/requests#3829), so the session runs with ``trust_env=False`` and
  passes ``verify=`` on every request.
* Credentials: the Docker CLI's config file, resolved with docker-py's own
  ``docker.auth.load_config`` / ``AuthConfig.resolve_authconfig`` (``auths``, ``credsStore``,
  ``credHelpers`` through ``docker-credential-*`` helpers).

Credentials and tokens never appear in log records, exception messages or ``repr``.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence
from urllib.parse import quote, urlencode, urljoin, urlsplit

import requests
import tenacity

from fleet.errors import FleetError, UsageError
from fleet.netguard import unattached_benchmark_address

log = logging.getLogger(__name__)

# Media types (OCI image-spec media-types.md; Docker image manifest v2 schema 2).
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_ACCEPT = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)

DEFAULT_REGISTRY = "docker.io"
# Docker Hub's API endpoint differs from the name used in references and credentials.
_DOCKER_HUB_API = "registry-1.docker.io"

DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024  # bytes held in memory per PATCH of a streamed upload


# --------------------------------------------------------------------------- errors


class ReferenceError(UsageError):  # noqa: A001 - the name agreed in the brief
    """A malformed image reference; the message quotes the reference."""


class RegistryError(FleetError):
    """A registry request failed.

    ``str()`` names the reference (or registry) and includes the registry's own error code
    from the JSON body (``errors[].code``, distribution-spec "Error codes") when it sent one.
    Attributes: ``reference`` (str), ``registry`` (host[:port]), ``status`` (HTTP status or
    None), ``code`` (e.g. ``"MANIFEST_UNKNOWN"`` or None).
    """

    def __init__(self, message: str, *, reference: str = "", registry: str = "",
                 status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.reference = reference
        self.registry = registry
        self.status = status
        self.code = code


class AuthError(RegistryError):
    """The registry or its token service refused our credentials (HTTP 401/403)."""


class NotFound(RegistryError):
    """Manifest, blob or repository unknown (MANIFEST_UNKNOWN, BLOB_UNKNOWN, NAME_UNKNOWN)."""


class ManifestInvalid(RegistryError):
    """The registry refused a manifest (MANIFEST_INVALID, MANIFEST_BLOB_UNKNOWN, ...)."""


class DigestMismatch(RegistryError):
    """Bytes do not hash to the digest asked for, or to the one the registry reported."""


# --------------------------------------------------------------------------- digests

_DIGEST_RE = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    """``"sha256:<hex>"`` of ``data`` (OCI image-spec descriptor.md "Digests")."""
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def _hasher_for(digest: str, reference: str):
    if not _DIGEST_RE.match(digest):
        raise ReferenceError(f"{reference}: invalid digest {digest!r} (want sha256:<64 hex>)")
    return hashlib.new(digest.split(":", 1)[0])


# --------------------------------------------------------------------------- references

# distribution/reference grammar (reference/regexp.go).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_ANY_DIGEST_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")


@dataclass(frozen=True)
class Reference:
    """An image reference ``[registry[:port]/]repository[:tag][@digest]``.

    ``registry`` is ``"docker.io"`` when the first path component is not a host (contains no
    ``.`` or ``:`` and is not ``localhost``), and Docker Hub single-component names get the
    ``library/`` prefix, as in distribution/reference ``ParseNormalizedNamed``.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Reference":
        """Parse ``text``; raises :class:`ReferenceError` naming it when malformed."""
        def bad(why: str) -> ReferenceError:
            return ReferenceError(f"invalid image reference {text!r}: {why}")

        if not text or text != text.strip():
            raise bad("empty or surrounded by whitespace")
        if "://" in text:
            raise bad("a reference has no URL scheme")
        rest, digest = text, None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not _ANY_DIGEST_RE.match(digest):
                raise bad(f"malformed digest {digest!r}")
            if digest.startswith("sha256:") and not _DIGEST_RE.match(digest):
                raise bad(f"malformed sha256 digest {digest!r} (want 64 lower-case hex digits)")
        tag = None
        # A ':' after the last '/' separates the tag; one before it belongs to host:port.
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1:]
            if not _TAG_RE.match(tag):
                raise bad(f"malformed tag {tag!r}")
        first, sep, remainder = rest.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"
                    or first != first.lower()):
            registry, path = first, remainder
            if not _DOMAIN_RE.match(registry):
                raise bad(f"malformed registry host {registry!r}")
        else:
            registry, path = DEFAULT_REGISTRY, rest
        if registry == "index.docker.io":
            registry = DEFAULT_REGISTRY
        if registry == DEFAULT_REGISTRY and "/" not in path:
            path = f"library/{path}"
        if not path:
            raise bad("no repository name")
        if path != path.lower():
            raise bad("repository names must be lower-case")
        if not _PATH_RE.match(path):
            raise bad(f"malformed repository name {path!r}")
        if len(registry) + 1 + len(path) > 255:
            raise bad("name longer than 255 characters")
        return cls(registry, path, tag, digest)

    @property
    def ref(self) -> str:
        """What goes after ``/manifests/``: the digest if any, else the tag (default latest)."""
        return self.digest or self.tag or "latest"

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def with_digest(self, digest: str) -> "Reference":
        return Reference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Descriptor:
    """What a HEAD tells: ``media_type``, ``digest`` and ``size`` (bytes)."""

    media_type: str
    digest: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """A manifest or index as fetched: exact ``raw`` bytes, their verified sha256
    ``digest``, ``size`` (= len(raw)), the ``media_type`` the registry served and the parsed
    ``json``."""

    media_type: str
    digest: str
    size: int
    raw: bytes = field(repr=False)
    json: Any = field(repr=False, compare=False)

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size)


@dataclass
class UploadCounters:
    """Per-client counters for benchmarks: blobs uploaded (mounts and skips excluded),
    bytes sent in them, and mounts that succeeded."""

    blob_uploads: int = 0
    bytes_uploaded: int = 0
    blob_mounts: int = 0
    manifests_put: int = 0


class _Secret:
    """Holds a username/password pair; its repr never shows the password."""

    __slots__ = ("user", "_password", "identity_token")

    def __init__(self, user: str | None, password: str | None, identity_token: str | None = None):
        self.user = user
        self._password = password
        self.identity_token = identity_token

    def basic(self) -> str:
        raw = f"{self.user or ''}:{self._password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def pair(self) -> tuple[str, str]:
        return (self.user or "", self._password or "")

    def __repr__(self) -> str:
        return f"<credentials user={self.user!r}>"


def credentials_from_env(user_var: str, password_var: str) -> tuple[str, str]:
    """Read ``(user, password)`` from the environment variables the user named.

    Credentials must never travel in process arguments, so the CLI takes variable names.
    Raises :class:`UsageError` naming the variable (never its value) when one is unset.
    """
    missing = [v for v in (user_var, password_var) if not os.environ.get(v)]
    if missing:
        raise UsageError(f"registry credentials: environment variable {', '.join(missing)} is not set")
    return os.environ[user_var], os.environ[password_var]


# --------------------------------------------------------------------------- auth challenge

_CHALLENGE_PARAM_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


def parse_challenge(header: str | None) -> tuple[str, dict[str, str]] | None:
    """``'Bearer realm="x",service="y"'`` -> ``("bearer", {"realm": "x", "service": "y"})``.

    RFC 7235 section 4.1; only the first challenge is used (registries send one).
    """
    if not header:
        return None
    scheme, _, params = header.strip().partition(" ")
    out = {}
    for m in _CHALLENGE_PARAM_RE.finditer(params):
        value = m.group(2) if m.group(2) is not None else m.group(3)
        out[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    return scheme.lower(), out


def _scope(repo: str, *actions: str) -> str:
    return f"repository:{repo}:{','.join(actions)}"


def _merge_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Merge scopes naming the same resource (``pull`` + ``pull,push``), sorted for caching."""
    merged: dict[str, list[str]] = {}
    for s in scopes:
        if s.count(":") < 2:
            merged.setdefault(s, [])
            continue
        resource, _, actions = s.rpartition(":")
        acts = merged.setdefault(resource, [])
        for a in actions.split(","):
            if a and a not in acts:
                acts.append(a)
    return tuple(sorted(f"{r}:{','.join(sorted(a))}" if a else r for r, a in merged.items()))


@dataclass
class _Token:
    value: str
    expires_at: float  # time.monotonic()


class _TransientStatus(Exception):
    def __init__(self, response: requests.Response):
        self.response = response


def _retry_after_seconds(response: requests.Response) -> float | None:
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


# --------------------------------------------------------------------------- blob stream


class BlobStream:
    """A blob being downloaded: iterate for chunks (``bytes``), or :meth:`read` it all.

    The sha256 is checked as bytes flow; :class:`DigestMismatch` is raised at the end of
    iteration if the content does not hash to ``digest``. ``size`` is the Content-Length
    (bytes) or None. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, response: requests.Response, digest: str, reference: str, registry: str,
                 chunk_size: int = 1024 * 1024):
        self._resp = response
        self.digest = digest
        self.reference = reference
        self._registry = registry
        self._chunk = chunk_size
        length = response.headers.get("Content-Length")
        self.size: int | None = int(length) if length and length.isdigit() else None
        self._consumed = False

    def __iter__(self) -> Iterator[bytes]:
        if self._consumed:
            raise RuntimeError("blob stream already consumed")
        self._consumed = True
        h = _hasher_for(self.digest, self.reference)
        n = 0
        try:
            for chunk in self._resp.iter_content(chunk_size=self._chunk):
                if chunk:
                    h.update(chunk)
                    n += len(chunk)
                    yield chunk
        finally:
            self._resp.close()
        got = f"{self.digest.split(':', 1)[0]}:{h.hexdigest()}"
        if got != self.digest or (self.size is not None and n != self.size):
            raise DigestMismatch(
                f"{self.reference}: downloaded blob hashes to {got} ({n} bytes), not the "
                f"digest asked for", reference=self.reference, registry=self._registry)

    def read(self) -> bytes:
        """All bytes, verified; loads the whole blob in memory."""
        return b"".join(self)

    def close(self) -> None:
        self._resp.close()

    def __enter__(self) -> "BlobStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- client


class RegistryClient:
    """Client for one registry (``host[:port]``; ``"docker.io"`` maps to Docker Hub's API).

    ``insecure=True`` speaks plain HTTP (never silently: TLS is verified by default, against
    ``ca`` (PEM file) when given, else the system bundle from ``REQUESTS_CA_BUNDLE`` /
    ``SSL_CERT_FILE`` or certifi). ``credentials`` is ``(user, password)``; when None they
    come from the Docker config (``docker_config``: a config.json path or a directory holding
    one; default ``$DOCKER_CONFIG`` or ``~/.docker/config.json``), read lazily at the first
    auth challenge. Thread-safe for concurrent requests.

    Like the Docker engine, TLS also trusts the CA files (``*.crt``) in
    ``certs_d/HOST:PORT/`` (default ``/etc/docker/certs.d``, Docker's "Verify repository
    client with certificates" layout) on top of the system bundle, unless ``ca`` is given.

    ``retries`` is the number of attempts for transient failures (connection errors, 429,
    502, 503, 504); ``timeout`` seconds per connect/read.
    """

    def __init__(self, registry_host: str, *, insecure: bool = False, ca: str | os.PathLike | None = None,
                 credentials: tuple[str, str] | None = None, docker_config: str | os.PathLike | None = None,
                 timeout: float = 30.0, retries: int = 5, max_retry_wait: float = 30.0,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, certs_d: str | os.PathLike | None = None):
        if not registry_host or "/" in registry_host or not _DOMAIN_RE.match(registry_host):
            raise UsageError(f"invalid registry host {registry_host!r} (want host[:port])")
        self.registry = DEFAULT_REGISTRY if registry_host == "index.docker.io" else registry_host
        refused = unattached_benchmark_address(self.registry.rsplit(":", 1)[0] if self.registry.count(":") == 1
                                               else self.registry)
        if refused:
            raise RegistryError(f"cannot reach registry {self.registry}: {refused}")
        api_host = _DOCKER_HUB_API if self.registry == DEFAULT_REGISTRY else self.registry
        self.insecure = insecure
        self.scheme = "http" if insecure else "https"
        self.base_url = f"{self.scheme}://{api_host}"
        system = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
                  or os.environ.get("CURL_CA_BUNDLE") or None)
        docker_ca = None if (ca is not None or insecure) else docker_certs_d_bundle(
            self.registry, system, certs_d)
        if ca is not None:
            self._verify: str | bool = str(ca)
        else:
            self._verify = docker_ca or system or True
        self._creds: _Secret | None = _Secret(*credentials) if credentials else None
        self._creds_resolved = credentials is not None
        self._docker_config = docker_config
        self.timeout = timeout
        self.retries = max(1, retries)
        self.max_retry_wait = max_retry_wait
        self.chunk_size = chunk_size
        self.counters = UploadCounters()
        self._lock = threading.Lock()
        self._challenge: tuple[str, dict[str, str]] | None = None
        self._tokens: dict[tuple, _Token] = {}
        self._session = requests.Session()
        # Environment CA variables would override verify= on the session (psf/requests#3829).
        self._session.trust_env = False
        self._session.headers["User-Agent"] = "fleet-registry-client"

    def __repr__(self) -> str:
        auth = self._challenge[0] if self._challenge else "unknown"
        return f"RegistryClient({self.registry!r}, scheme={self.scheme!r}, auth={auth!r})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------- credentials

    @property
    def username(self) -> str | None:
        creds = self._credentials()
        return creds.user if creds else None

    def _credentials(self) -> _Secret | None:
        with self._lock:
            if not self._creds_resolved:
                self._creds = self._from_docker_config()
                self._creds_resolved = True
            return self._creds

    def _from_docker_config(self) -> _Secret | None:
        import docker.auth
        import docker.errors

        path = self._docker_config
        if path is not None and Path(path).is_dir():
            path = Path(path) / "config.json"
        try:
            config = docker.auth.load_config(str(path) if path is not None else None)
            entry = config.resolve_authconfig(self.registry)
        except docker.errors.InvalidConfigFile as e:
            raise UsageError(f"docker config {path or '(default)'}: {e}") from None
        except docker.errors.DockerException as e:
            # The credential helper failed; its message names the helper, not secrets.
            raise AuthError(f"{self.registry}: reading credentials from the Docker config "
                            f"failed: {e}", registry=self.registry) from None
        if not entry:
            return None
        user = entry.get("username") or entry.get("Username")
        password = entry.get("password") or entry.get("Password")
        token = entry.get("IdentityToken")
        if not (user or password or token):
            return None
        return _Secret(user, password, token)

    # ------------------------------------------------------------- transport

    def _url(self, path: str) -> str:
        return urljoin(self.base_url + "/", path.lstrip("/")) if not path.startswith("http") else path

    def _send(self, method: str, url: str, **kw) -> requests.Response:
        """One HTTP exchange with retries (tenacity) on connection errors, 429 and
        502/503/504; never on other statuses. Returns the last response even if transient."""

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _TransientStatus):
                after = _retry_after_seconds(exc.response)
                if after is not None:
                    return min(after, self.max_retry_wait)
            return tenacity.wait_exponential_jitter(multiplier=0.2, max=self.max_retry_wait,
                                                    jitter=0.2)(state)

        def once() -> requests.Response:
            resp = self._session.request(method, url, timeout=self.timeout, verify=self._verify,
                                         allow_redirects=True, **kw)
            log.debug("%s %s -> %s", method, url.split("?", 1)[0], resp.status_code)
            if resp.status_code in (429, 502, 503, 504):
                resp.close()
                raise _TransientStatus(resp)
            return resp

        retryer = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries),
            wait=wait,
            retry=tenacity.retry_if_exception(
                lambda e: isinstance(e, _TransientStatus)
                or (isinstance(e, (requests.ConnectionError, requests.Timeout))
                    and not isinstance(e, requests.exceptions.SSLError))),
            reraise=True,
        )
        try:
            return retryer(once)
        except _TransientStatus as e:
            return e.response
        except requests.exceptions.SSLError as e:
            hint = ("; if it is a plain-HTTP registry, use an insecure (HTTP) connection"
                    if "WRONG_VERSION_NUMBER" in str(e).upper() or "wrong version number" in str(e)
                    else "; pass the registry's CA certificate" if "CERTIFICATE_VERIFY_FAILED" in str(e)
                    else "")
            raise RegistryError(f"{self.registry}: TLS connection failed ({_short(e)}){hint}",
                                registry=self.registry) from None
        except (requests.ConnectionError, requests.Timeout) as e:
            raise RegistryError(f"{self.registry}: cannot reach registry at {self.base_url} "
                                f"after {self.retries} attempts ({_short(e)})",
                                registry=self.registry) from None

    def _token(self, realm: str, service: str | None, scopes: tuple[str, ...], what: str) -> str:
        key = (realm, service, scopes)
        with self._lock:
            tok = self._tokens.get(key)
            if tok and tok.expires_at > time.monotonic():
                return tok.value
        creds = self._credentials()
        if creds and urlsplit(realm).scheme != "https" and not self.insecure:
            raise AuthError(f"{what}: refusing to send credentials to token service {realm} "
                            f"over plain HTTP", reference=what, registry=self.registry)
        if creds and creds.identity_token:
            # OAuth2 refresh-token grant (distribution docs/spec/auth/oauth.md).
            form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                    "client_id": "fleet", "scope": " ".join(scopes)}
            if service:
                form["service"] = service
            resp = self._send("POST", realm, data=form)
        else:
            params = [("service", service)] if service else []
            params += [("scope", s) for s in scopes]
            resp = self._send("GET", realm, params=params, auth=creds.pair() if creds else None)
        if resp.status_code in (401, 403):
            who = f"user {creds.user!r}" if creds and creds.user else "anonymous access"
            raise AuthError(f"{what}: token service {realm} refused {who} for registry "
                            f"{self.registry} (HTTP {resp.status_code})",
                            reference=what, registry=self.registry, status=resp.status_code)
        if resp.status_code != 200:
            raise RegistryError(f"{what}: token service {realm} answered HTTP {resp.status_code}",
                                reference=what, registry=self.registry, status=resp.status_code)
        try:
            body = resp.json()
            value = body.get("token") or body.get("access_token")
            expires_in = float(body.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            value = None
        if not value:
            raise AuthError(f"{what}: token service {realm} sent no token", reference=what,
                            registry=self.registry)
        # Renew a little early so a token does not expire between check and use.
        tok = _Token(value, time.monotonic() + max(1.0, expires_in - min(10.0, expires_in / 5)))
        with self._lock:
            self._tokens[key] = tok
        return tok.value

    def _authorization(self, scopes: tuple[str, ...], what: str) -> str | None:
        ch = self._challenge
        if ch is None:
            return None
        scheme, params = ch
        if scheme == "basic":
            creds = self._credentials()
            return creds.basic() if creds else None
        if scheme == "bearer":
            return "Bearer " + self._token(params["realm"], params.get("service"), scopes, what)
        return None

    def _request(self, method: str, path: str, *, scopes: Sequence[str], what: str,
                 headers: Mapping[str, str] | None = None, **kw) -> requests.Response:
        """Send with auth, answering one 401 challenge (Basic or Bearer). Bodies must be
        bytes (replayable). Raises AuthError when credentials are refused."""
        url = self._url(path)
        scopes_t = _merge_scopes(scopes)
        for attempt in range(3):
            h = dict(headers or {})
            sent_auth = self._authorization(scopes_t, what)
            if sent_auth:
                h["Authorization"] = sent_auth
            resp = self._send(method, url, headers=h, **kw)
            if resp.status_code != 401:
                return resp
            challenge = parse_challenge(resp.headers.get("WWW-Authenticate"))
            code, message = _registry_error(resp)
            if challenge is None or challenge[0] not in ("basic", "bearer"):
                break
            if challenge[0] == "bearer" and "realm" not in challenge[1]:
                break
            creds = self._credentials()
            if sent_auth and challenge[0] == "basic":
                break  # our Basic credentials were refused
            if challenge[0] == "basic" and creds is None:
                raise AuthError(f"{what}: registry {self.registry} requires authentication and "
                                f"no credentials were found for it (Docker config or environment)",
                                reference=what, registry=self.registry, status=401, code=code)
            if sent_auth and challenge[0] == "bearer":
                extra = challenge[1].get("scope", "")
                new = _merge_scopes([*scopes_t, *extra.split()])
                with self._lock:
                    self._tokens.pop((challenge[1]["realm"], challenge[1].get("service"), scopes_t), None)
                if attempt >= 1 and new == scopes_t:
                    break
                scopes_t = new
            self._challenge = challenge
        creds = self._credentials()
        who = f"user {creds.user!r}" if creds and creds.user else "anonymous access"
        code, message = _registry_error(resp)
        raise AuthError(f"{what}: registry {self.registry} refused {who} "
                        f"(HTTP 401{', ' + code if code else ''}{': ' + message if message else ''})",
                        reference=what, registry=self.registry, status=401, code=code)

    def _fail(self, resp: requests.Response, what: str, action: str, *, manifest: bool = False) -> RegistryError:
        code, message = _registry_error(resp)
        detail = f"{code}: {message}" if code else (message or resp.reason or "")
        text = f"{what}: {action} failed: {detail} (HTTP {resp.status_code} from {self.registry})"
        kw = dict(reference=what, registry=self.registry, status=resp.status_code, code=code)
        if (resp.status_code == 400 and self.insecure
                and "Docker-Distribution-Api-Version" not in resp.headers):
            # Go's TLS listener answers a plain-HTTP request with a bare 400.
            return RegistryError(f"{what}: {self.registry} answered a plain-HTTP request with "
                                 f"HTTP 400; it probably speaks TLS (connect without insecure)", **kw)
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

    def _what(self, repo: str, ref: str | None = None) -> str:
        if ref is None:
            return f"{self.registry}/{repo}"
        sep = "@" if ref.startswith(("sha256:", "sha512:")) else ":"
        return f"{self.registry}/{repo}{sep}{ref}"

    # ------------------------------------------------------------- API

    def ping(self) -> None:
        """``GET /v2/`` with auth; raises RegistryError/AuthError when unusable."""
        resp = self._request("GET", "/v2/", scopes=(), what=self.registry)
        if resp.status_code != 200:
            raise self._fail(resp, self.registry, "API version check")

    def head_manifest(self, repo: str, ref: str) -> Descriptor:
        """HEAD a manifest by tag or digest (full Accept list). Returns its Descriptor from
        Content-Type, Docker-Content-Digest and Content-Length. Raises NotFound (a HEAD
        carries no error body, so ``code`` is None), DigestMismatch if the registry reports
        another digest than the one asked for."""
        what = self._what(repo, ref)
        resp = self._request("HEAD", f"/v2/{repo}/manifests/{ref}", scopes=[_scope(repo, "pull")],
                             what=what, headers={"Accept": ", ".join(MANIFEST_ACCEPT)})
        if resp.status_code != 200:
            raise self._fail(resp, what, "manifest HEAD")
        digest = resp.headers.get("Docker-Content-Digest", "")
        if ref.startswith(("sha256:", "sha512:")) and digest and digest != ref:
            raise DigestMismatch(f"{what}: registry reports digest {digest}", reference=what,
                                 registry=self.registry)
        return Descriptor(_media_type(resp.headers.get("Content-Type")), digest or ref,
                          int(resp.headers.get("Content-Length") or 0))

    def manifest_exists(self, repo: str, ref: str) -> bool:
        try:
            self.head_manifest(repo, ref)
            return True
        except NotFound:
            return False

    def get_manifest(self, repo: str, ref: str) -> Manifest:
        """GET a manifest or index by tag or digest with the full Accept list.

        The digest is computed from the bytes received; raises DigestMismatch if it differs
        from the requested digest or from Docker-Content-Digest, NotFound (MANIFEST_UNKNOWN,
        NAME_UNKNOWN), ManifestInvalid if the body is not JSON.
        """
        what = self._what(repo, ref)
        resp = self._request("GET", f"/v2/{repo}/manifests/{ref}", scopes=[_scope(repo, "pull")],
                             what=what, headers={"Accept": ", ".join(MANIFEST_ACCEPT)})
        if resp.status_code != 200:
            raise self._fail(resp, what, "manifest GET")
        raw = resp.content
        header = resp.headers.get("Docker-Content-Digest")
        algo = ref.split(":", 1)[0] if ref.startswith(("sha256:", "sha512:")) else (
            header.split(":", 1)[0] if header and header.startswith("sha512:") else "sha256")
        digest = digest_of(raw, algo)
        if ref.startswith(("sha256:", "sha512:")) and digest != ref:
            raise DigestMismatch(f"{what}: manifest bytes hash to {digest}", reference=what,
                                 registry=self.registry)
        if header and header.split(":", 1)[0] == algo and header != digest:
            raise DigestMismatch(f"{what}: manifest bytes hash to {digest} but the registry "
                                 f"reports {header}", reference=what, registry=self.registry)
        try:
            doc = json.loads(raw)
        except ValueError:
            raise ManifestInvalid(f"{what}: manifest is not JSON", reference=what,
                                  registry=self.registry) from None
        media_type = _media_type(resp.headers.get("Content-Type"))
        if media_type not in MANIFEST_ACCEPT and isinstance(doc, dict) and doc.get("mediaType"):
            media_type = doc["mediaType"]
        return Manifest(media_type, digest, len(raw), raw, doc)

    def put_manifest(self, repo: str, ref: str, raw: bytes, media_type: str) -> str:
        """PUT the exact bytes ``raw`` with Content-Type ``media_type`` under tag or digest
        ``ref``. Returns the digest computed locally from the bytes; raises DigestMismatch
        if the registry's Docker-Content-Digest differs, ManifestInvalid on a refusal
        (MANIFEST_INVALID, MANIFEST_BLOB_UNKNOWN: children/blobs must already be in ``repo``).
        """
        what = self._what(repo, ref)
        digest = digest_of(raw)
        if ref.startswith(("sha256:", "sha512:")) and ref != digest:
            raise DigestMismatch(f"{what}: manifest bytes hash to {digest}", reference=what,
                                 registry=self.registry)
        resp = self._request("PUT", f"/v2/{repo}/manifests/{ref}",
                             scopes=[_scope(repo, "pull", "push")], what=what,
                             headers={"Content-Type": media_type}, data=bytes(raw))
        if resp.status_code not in (200, 201):
            raise self._fail(resp, what, "manifest PUT", manifest=True)
        header = resp.headers.get("Docker-Content-Digest")
        if header and header != digest:
            raise DigestMismatch(f"{what}: pushed bytes hash to {digest} but the registry "
                                 f"reports {header}", reference=what, registry=self.registry)
        with self._lock:
            self.counters.manifests_put += 1
        return digest

    def delete_manifest(self, repo: str, digest: str) -> None:
        what = self._what(repo, digest)
        resp = self._request("DELETE", f"/v2/{repo}/manifests/{digest}",
                             scopes=[_scope(repo, "delete")], what=what)
        if resp.status_code not in (200, 202):
            raise self._fail(resp, what, "manifest DELETE")

    # ---- blobs

    def blob_exists(self, repo: str, digest: str) -> bool:
        """HEAD the blob: True when present in ``repo``, False on 404."""
        what = self._what(repo, digest)
        resp = self._request("HEAD", f"/v2/{repo}/blobs/{digest}", scopes=[_scope(repo, "pull")],
                             what=what)
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            return False
        raise self._fail(resp, what, "blob HEAD")

    def get_blob(self, repo: str, digest: str, *, chunk_size: int = 1024 * 1024) -> BlobStream:
        """Start downloading a blob; returns a :class:`BlobStream` (iterate or ``.read()``),
        verified against ``digest``. Raises NotFound (BLOB_UNKNOWN)."""
        what = self._what(repo, digest)
        _hasher_for(digest, what)
        resp = self._request("GET", f"/v2/{repo}/blobs/{digest}", scopes=[_scope(repo, "pull")],
                             what=what, stream=True)
        if resp.status_code != 200:
            err = self._fail(resp, what, "blob GET")
            resp.close()
            raise err
        return BlobStream(resp, digest, what, self.registry, chunk_size)

    def read_blob(self, repo: str, digest: str) -> bytes:
        """The whole blob, digest verified."""
        with self.get_blob(repo, digest) as stream:
            return stream.read()

    def _start_upload(self, repo: str, what: str, *, digest: str | None = None,
                      src_repo: str | None = None) -> tuple[bool, str]:
        """POST an upload session, optionally asking to mount ``digest`` from ``src_repo``.
        Returns (mounted, location)."""
        scopes = [_scope(repo, "pull", "push")]
        params = None
        if src_repo is not None:
            scopes.append(_scope(src_repo, "pull"))
            params = {"mount": digest, "from": src_repo}
        resp = self._request("POST", f"/v2/{repo}/blobs/uploads/", scopes=scopes, what=what,
                             params=params, headers={"Content-Length": "0"})
        if resp.status_code == 201 and src_repo is not None:
            got = resp.headers.get("Docker-Content-Digest")
            if got and got != digest:
                raise DigestMismatch(f"{what}: mount created {got}", reference=what,
                                     registry=self.registry)
            return True, ""
        if resp.status_code != 202 or not resp.headers.get("Location"):
            raise self._fail(resp, what, "blob upload start")
        return False, urljoin(self.base_url + "/", resp.headers["Location"])

    def _cancel_upload(self, repo: str, location: str, what: str) -> None:
        try:
            self._request("DELETE", location, scopes=[_scope(repo, "pull", "push")], what=what)
        except RegistryError:
            pass  # an abandoned session is garbage-collected by the registry

    def mount_blob(self, dst_repo: str, digest: str, src_repo: str) -> bool:
        """Cross-repository mount (``POST ?mount=&from=``) on this registry. True when
        mounted (201); False when the registry opened an upload instead (202, e.g. the
        source lacks the blob or we may not pull it): the session is cancelled."""
        what = self._what(dst_repo, digest)
        _hasher_for(digest, what)
        mounted, location = self._start_upload(dst_repo, what, digest=digest, src_repo=src_repo)
        if mounted:
            with self._lock:
                self.counters.blob_mounts += 1
            return True
        self._cancel_upload(dst_repo, location, what)
        return False

    def upload_blob(self, repo: str, digest: str, data: bytes | Iterable[bytes] | Any,
                    size: int | None = None, *, _location: str | None = None) -> str:
        """Upload a blob; returns ``digest``.

        ``data`` is bytes (monolithic: POST, then PUT ``?digest=`` with the body), or an
        iterable of byte chunks / a binary file object (chunked: one PATCH per
        ``chunk_size`` bytes with Content-Range, then PUT ``?digest=``), so a stream is
        never held whole in memory. The content is hashed as it goes; DigestMismatch
        (upload cancelled) if it does not match ``digest`` or ``size``.
        """
        what = self._what(repo, digest)
        hasher = _hasher_for(digest, what)
        location = _location or self._start_upload(repo, what)[1]
        scopes = [_scope(repo, "pull", "push")]
        try:
            if isinstance(data, (bytes, bytearray, memoryview)):
                body = bytes(data)
                hasher.update(body)
                sent = len(body)
                self._check_content(hasher, digest, sent, size, what)
                resp = self._request("PUT", _add_query(location, digest=digest), scopes=scopes,
                                     what=what, data=body,
                                     headers={"Content-Type": "application/octet-stream"})
            else:
                sent = 0
                for chunk in _rechunk(data, self.chunk_size):
                    hasher.update(chunk)
                    resp = self._request(
                        "PATCH", location, scopes=scopes, what=what, data=chunk,
                        headers={"Content-Type": "application/octet-stream",
                                 "Content-Range": f"{sent}-{sent + len(chunk) - 1}"})
                    if resp.status_code != 202:
                        raise self._fail(resp, what, "blob chunk PATCH")
                    location = urljoin(self.base_url + "/", resp.headers.get("Location") or location)
                    sent += len(chunk)
                self._check_content(hasher, digest, sent, size, what)
                resp = self._request("PUT", _add_query(location, digest=digest), scopes=scopes,
                                     what=what, headers={"Content-Length": "0"})
        except BaseException:
            self._cancel_upload(repo, location, what)
            raise
        if resp.status_code not in (201, 204):
            raise self._fail(resp, what, "blob upload PUT")
        got = resp.headers.get("Docker-Content-Digest")
        if got and got != digest:
            raise DigestMismatch(f"{what}: registry stored {got}", reference=what,
                                 registry=self.registry)
        with self._lock:
            self.counters.blob_uploads += 1
            self.counters.bytes_uploaded += sent
        return digest

    @staticmethod
    def _check_content(hasher, digest: str, sent: int, size: int | None, what: str) -> None:
        got = f"{digest.split(':', 1)[0]}:{hasher.hexdigest()}"
        if got != digest or (size is not None and size != sent):
            raise DigestMismatch(f"{what}: content hashes to {got} ({sent} bytes"
                                 f"{'' if size is None else f', expected {size}'})",
                                 reference=what)

    def push_blob(self, repo: str, data: bytes) -> Descriptor:
        """Upload ``data`` unless ``repo`` already holds it. Returns its Descriptor
        (media_type ``application/octet-stream``; the caller sets the real one)."""
        digest = digest_of(data)
        if not self.blob_exists(repo, digest):
            self.upload_blob(repo, digest, data, len(data))
        return Descriptor("application/octet-stream", digest, len(data))

    def copy_blob(self, src_client: "RegistryClient", src_repo: str, dst_repo: str,
                  digest: str) -> str:
        """Make blob ``digest`` of ``src_client``/``src_repo`` present in ``dst_repo`` here.

        Returns ``"present"`` (already there), ``"mounted"`` (same registry, cross-repo
        mount) or ``"uploaded"`` (streamed: downloaded and PATCHed chunk by chunk, at most
        ``chunk_size`` bytes in memory).
        """
        if self.blob_exists(dst_repo, digest):
            return "present"
        location = None
        if src_client.base_url == self.base_url:
            mounted, location = self._start_upload(dst_repo, self._what(dst_repo, digest),
                                                   digest=digest, src_repo=src_repo)
            if mounted:
                with self._lock:
                    self.counters.blob_mounts += 1
                return "mounted"
        with src_client.get_blob(src_repo, digest,
                                 chunk_size=min(self.chunk_size, 1024 * 1024)) as stream:
            self.upload_blob(dst_repo, digest, stream, stream.size, _location=location)
        return "uploaded"


# --------------------------------------------------------------------------- helpers

#: Where the Docker engine looks for a registry's extra CA certificates.
DOCKER_CERTS_D = Path("/etc/docker/certs.d")
_bundle_lock = threading.Lock()
_bundles: dict[tuple, str] = {}


def docker_certs_d_bundle(registry: str, system_bundle: str | None = None,
                          certs_d: str | os.PathLike | None = None) -> str | None:
    """A PEM bundle trusting the system CAs plus ``certs_d/REGISTRY/*.crt``, or None when
    that folder has no ``.crt`` file.

    The Docker engine adds those files to the system pool per registry (docker docs
    "Verify repository client with certificates"; moby ``registry.ReadCertsDirectory``),
    so users expect a registry the engine trusts to be trusted here too. ``requests`` takes
    one bundle file, so the two are concatenated into a private temporary file (cached per
    process and per file set; contains only public certificates).
    """
    folder = Path(certs_d if certs_d is not None else DOCKER_CERTS_D) / registry
    try:
        crts = sorted(p for p in folder.iterdir() if p.suffix == ".crt" and p.is_file())
    except OSError:
        return None
    if not crts:
        return None
    if system_bundle is None:
        try:
            import certifi
            system_bundle = certifi.where()
        except ImportError:  # pragma: no cover - requests depends on certifi
            system_bundle = None
    parts = [Path(system_bundle)] if system_bundle and Path(system_bundle).is_file() else []
    parts += crts
    key = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in parts)
    with _bundle_lock:
        cached = _bundles.get(key)
        if cached and Path(cached).is_file():
            return cached
        import atexit
        import tempfile
        fd, name = tempfile.mkstemp(prefix="fleet-ca-", suffix=".pem")
        with os.fdopen(fd, "wb") as f:
            for p in parts:
                f.write(p.read_bytes().rstrip(b"\n") + b"\n")
        atexit.register(lambda n=name: Path(n).unlink(missing_ok=True))
        _bundles[key] = name
        return name


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip()


def _registry_error(resp: requests.Response) -> tuple[str | None, str]:
    """(first ``errors[].code``, its message) from a registry error body."""
    if resp.request is not None and resp.request.method == "HEAD":
        return None, ""
    try:
        body = resp.json()
        first = body["errors"][0]
        return str(first.get("code") or "") or None, str(first.get("message") or "")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        text = (resp.text or "").strip().splitlines()
        return None, text[0][:200] if text else ""


def _add_query(url: str, **params: str) -> str:
    sep = "&" if urlsplit(url).query else "?"
    return url + sep + urlencode(params, quote_via=quote, safe=":")


def _rechunk(data: Any, size: int) -> Iterator[bytes]:
    """Yield chunks of exactly ``size`` bytes (the last may be shorter) from an iterable of
    bytes or a binary file object, holding at most about ``size`` bytes."""
    if hasattr(data, "read") and not isinstance(data, BlobStream):
        while True:
            chunk = data.read(size)
            if not chunk:
                return
            yield bytes(chunk)
    buf = bytearray()
    for piece in data:
        buf += piece
        while len(buf) >= size:
            chunk = bytes(memoryview(buf)[:size])
            del buf[:size]
            yield chunk
    if buf:
        yield bytes(buf)


def _short(exc: BaseException) -> str:
    text = str(exc)
    m = re.search(r"\[SSL: [A-Z_]+\][^')\"(]*", text)
    if m:
        return m.group(0).strip()
    m = re.search(r"(Connection refused|Name or service not known|timed out|Connection reset)", text)
    return m.group(1) if m else type(exc).__name__
