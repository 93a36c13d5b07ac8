"""A thin client for the OCI distribution API (registry v2), over ``requests``.

It speaks the wire protocol and nothing else: manifests, blobs, cross-repository mounts,
with auth (:mod:`fleet.registry.auth`) and retries (:mod:`fleet.registry.transport`).
Publishing an image index and planning which child a device gets sit above it
(``fleet.publish.index``, the publish stage).

Endpoints, upload sessions, mounts and error codes: OCI distribution-spec v1.1
("Pulling", "Pushing", "Error codes") and distribution 2.8 ``docs/spec/api.md``.
Credentials and tokens never appear in log records, exception messages or ``repr``.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import quote, urlencode, urljoin, urlsplit

import requests

from fleet.errors import UsageError
from fleet.netguard import unattached_benchmark_address
from fleet.registry.auth import Authenticator, merge_scopes, scope
from fleet.registry.certs import docker_certs_d_bundle
from fleet.registry.content import BlobStream, Descriptor, Manifest, UploadCounters, rechunk
from fleet.registry.credentials import Credentials, credentials_from_docker_config
from fleet.registry.errors import DigestMismatch, ManifestInvalid, NotFound, RegistryError, error_from_response
from fleet.registry.keyedlock import KeyedLock
from fleet.registry.mediatypes import MANIFEST_ACCEPT, media_type_of
from fleet.registry.reference import (DEFAULT_REGISTRY, DOCKER_HUB_API, digest_of, is_digest, new_hasher,
                                      valid_registry_host)
from fleet.registry.transport import Transport

__all__ = ["RegistryClient", "DEFAULT_CHUNK_SIZE"]

DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024  # bytes held in memory per PATCH of a streamed upload


class RegistryClient:
    """Client for one registry (``host[:port]``; ``"docker.io"`` maps to Docker Hub's API).

    ``insecure=True`` speaks plain HTTP (never silently: TLS is verified by default, against
    ``ca`` (PEM file) when given, else the system bundle from ``REQUESTS_CA_BUNDLE`` /
    ``SSL_CERT_FILE`` or certifi). ``credentials`` is a :class:`Credentials` or a
    ``(user, password)`` pair; when None they come from the Docker config (``docker_config``:
    a config.json path or a directory holding one; default ``$DOCKER_CONFIG`` or
    ``~/.docker/config.json``), read lazily at the first auth challenge. Thread-safe for
    concurrent requests.

    Like the Docker engine, TLS also trusts the CA files (``*.crt``) in
    ``certs_d/HOST:PORT/`` (default ``/etc/docker/certs.d``, Docker's "Verify repository
    client with certificates" layout) on top of the system bundle, unless ``ca`` is given.

    ``retries`` is the number of attempts for transient failures (connection errors, 429,
    502, 503, 504); ``timeout`` seconds per connect/read. Every failure raises a
    :class:`RegistryError` whose ``transient`` says whether retrying later may help.

    Writes of one digest into one repository (blob upload, mount, copy, manifest PUT) are
    serialised per client, and :meth:`push_blob`/:meth:`copy_blob` check for the blob
    under that lock, so concurrent threads pushing the same content upload it once.
    Besides saving the bytes, this avoids a registry race: distribution 2.8's filesystem
    driver rewrites the repository's link file in place (truncate, then write) each time
    an upload of a digest completes, even when the blob is already linked, so a manifest
    PUT verifying that blob at the same moment reads an empty link and fails with
    ``DIGEST_INVALID``/``MANIFEST_BLOB_UNKNOWN`` (distribution/distribution#2077; the
    driver writes through a temporary file and a rename since distribution/distribution#4624,
    in v3). Clients in other processes can still meet it on such registries.
    """

    def __init__(self, registry_host: str, *, insecure: bool = False, ca: str | os.PathLike | None = None,
                 credentials: Credentials | tuple[str, str] | None = None,
                 docker_config: str | os.PathLike | None = None,
                 timeout: float = 30.0, retries: int = 5, max_retry_wait: float = 30.0,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, certs_d: str | os.PathLike | None = None):
        if not valid_registry_host(registry_host):
            raise UsageError(f"invalid registry host {registry_host!r} (want host[:port])")
        self.registry = DEFAULT_REGISTRY if registry_host == "index.docker.io" else registry_host
        refused = unattached_benchmark_address(self.registry.rsplit(":", 1)[0] if self.registry.count(":") == 1
                                               else self.registry)
        if refused:
            raise RegistryError(f"cannot reach registry {self.registry}: {refused}",
                                registry=self.registry)
        api_host = DOCKER_HUB_API if self.registry == DEFAULT_REGISTRY else self.registry
        self.insecure = insecure
        self.scheme = "http" if insecure else "https"
        self.base_url = f"{self.scheme}://{api_host}"
        system = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
                  or os.environ.get("CURL_CA_BUNDLE") or None)
        docker_ca = None if (ca is not None or insecure) else docker_certs_d_bundle(
            self.registry, system, certs_d)
        if insecure:
            verify: str | bool = True
            trust = "plain HTTP, no TLS"
        elif ca is not None:
            verify, trust = str(ca), f"TLS verified against CA file {ca}"
        elif docker_ca:
            verify, trust = docker_ca, "TLS verified against the system CAs and Docker's certs.d"
        else:
            verify = system or True
            trust = f"TLS verified against {system}" if system else "TLS verified against the system CAs"
        self._verify = verify
        self.timeout = timeout
        self.retries = max(1, retries)
        self.max_retry_wait = max_retry_wait
        self.chunk_size = chunk_size
        self.counters = UploadCounters()
        self._lock = threading.Lock()
        self._writing = KeyedLock()  # (repo, digest) being written by a thread of this client
        self._transport = Transport(self.registry, self.base_url, verify, timeout=timeout,
                                    retries=self.retries, max_retry_wait=max_retry_wait, trust=trust)
        docker_config_ = docker_config
        self._auth = Authenticator(
            self.registry, self._transport, Credentials.of(credentials),
            lambda: credentials_from_docker_config(self.registry, docker_config_), insecure)

    def __repr__(self) -> str:
        return f"RegistryClient({self.registry!r}, scheme={self.scheme!r}, auth={self._auth.scheme or 'unknown'!r})"

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def username(self) -> str | None:
        """The user the client authenticates as (resolving the Docker config if needed)."""
        creds = self._auth.credentials()
        return creds.username if creds else None

    # ------------------------------------------------------------- requests

    def _request(self, method: str, path: str, *, scopes: Sequence[str], what: str,
                 headers: Mapping[str, str] | None = None, **kw: Any) -> requests.Response:
        """Send with auth, answering 401 challenges (Basic or Bearer). Bodies must be
        bytes (replayable). Raises AuthError when credentials are refused."""
        url = self._transport.url(path)
        scopes_t = merge_scopes(scopes)
        for attempt in range(3):
            h = dict(headers or {})
            sent_auth = self._auth.authorization(scopes_t, what)
            if sent_auth:
                h["Authorization"] = sent_auth
            resp = self._transport.send(method, url, headers=h, **kw)
            if resp.status_code != 401:
                return resp
            retry_scopes = self._auth.challenged(resp, sent_auth, scopes_t, attempt, what)
            if retry_scopes is None:
                break
            scopes_t = retry_scopes
        raise self._auth.refused(resp, what)

    def _fail(self, resp: requests.Response, what: str, action: str, *, manifest: bool = False) -> RegistryError:
        return error_from_response(resp, what, action, self.registry, insecure=self.insecure,
                                   manifest=manifest)

    def _what(self, repo: str, ref: str | None = None) -> str:
        if ref is None:
            return f"{self.registry}/{repo}"
        sep = "@" if is_digest(ref) else ":"
        return f"{self.registry}/{repo}{sep}{ref}"

    # ------------------------------------------------------------- manifests

    def ping(self) -> None:
        """``GET /v2/`` with auth; raises RegistryError/AuthError when unusable."""
        resp = self._request("GET", "/v2/", scopes=(), what=self.registry)
        if resp.status_code != 200:
            raise self._fail(resp, self.registry, "API version check")

    def head_manifest(self, repo: str, ref: str, accept: Sequence[str] | None = None) -> Descriptor:
        """HEAD a manifest by tag or digest (``accept``: the media types asked for, default
        the full Accept list). Returns its Descriptor from Content-Type,
        Docker-Content-Digest and Content-Length. Raises NotFound (a HEAD carries no error
        body, so ``code`` is None), DigestMismatch if the registry reports another digest
        than the one asked for."""
        what = self._what(repo, ref)
        resp = self._request("HEAD", f"/v2/{repo}/manifests/{ref}", scopes=[scope(repo, "pull")],
                             what=what, headers={"Accept": ", ".join(accept or MANIFEST_ACCEPT)})
        if resp.status_code != 200:
            raise self._fail(resp, what, "manifest HEAD")
        digest = resp.headers.get("Docker-Content-Digest", "")
        if is_digest(ref) and digest and digest != ref:
            raise DigestMismatch(f"{what}: registry reports digest {digest}", reference=what,
                                 registry=self.registry)
        return Descriptor(media_type_of(resp.headers.get("Content-Type")), digest or ref,
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
        resp = self._request("GET", f"/v2/{repo}/manifests/{ref}", scopes=[scope(repo, "pull")],
                             what=what, headers={"Accept": ", ".join(MANIFEST_ACCEPT)})
        if resp.status_code != 200:
            raise self._fail(resp, what, "manifest GET")
        raw = resp.content
        header = resp.headers.get("Docker-Content-Digest")
        algo = ref.split(":", 1)[0] if is_digest(ref) else (
            header.split(":", 1)[0] if header and header.startswith("sha512:") else "sha256")
        digest = digest_of(raw, algo)
        if is_digest(ref) and digest != ref:
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
        media_type = media_type_of(resp.headers.get("Content-Type"))
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
        if is_digest(ref) and ref != digest:
            raise DigestMismatch(f"{what}: manifest bytes hash to {digest}", reference=what,
                                 registry=self.registry)
        with self._writing.hold((repo, digest)):
            resp = self._request("PUT", f"/v2/{repo}/manifests/{ref}",
                                 scopes=[scope(repo, "pull", "push")], what=what,
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
                             scopes=[scope(repo, "delete")], what=what)
        if resp.status_code not in (200, 202):
            raise self._fail(resp, what, "manifest DELETE")

    # ------------------------------------------------------------- blobs

    def blob_exists(self, repo: str, digest: str) -> bool:
        """HEAD the blob: True when present in ``repo``, False on 404."""
        what = self._what(repo, digest)
        resp = self._request("HEAD", f"/v2/{repo}/blobs/{digest}", scopes=[scope(repo, "pull")],
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
        new_hasher(digest, what)
        resp = self._request("GET", f"/v2/{repo}/blobs/{digest}", scopes=[scope(repo, "pull")],
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
        scopes = [scope(repo, "pull", "push")]
        params = None
        if src_repo is not None:
            scopes.append(scope(src_repo, "pull"))
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
            self._request("DELETE", location, scopes=[scope(repo, "pull", "push")], what=what)
        except RegistryError:
            pass  # an abandoned session is garbage-collected by the registry

    def mount_blob(self, dst_repo: str, digest: str, src_repo: str) -> bool:
        """Cross-repository mount (``POST ?mount=&from=``) on this registry. True when
        mounted (201); False when the registry opened an upload instead (202, e.g. the
        source lacks the blob or we may not pull it): the session is cancelled."""
        what = self._what(dst_repo, digest)
        new_hasher(digest, what)
        with self._writing.hold((dst_repo, digest)):
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
        (upload cancelled) if it does not match ``digest`` or ``size``. Uploads of one
        digest into one repository wait for each other (:meth:`push_blob` also skips it
        when the blob turned up meanwhile).
        """
        with self._writing.hold((repo, digest)):
            return self._upload_blob(repo, digest, data, size, _location)

    def _upload_blob(self, repo: str, digest: str, data: Any, size: int | None,
                     _location: str | None) -> str:
        what = self._what(repo, digest)
        hasher = new_hasher(digest, what)
        location = _location or self._start_upload(repo, what)[1]
        scopes = [scope(repo, "pull", "push")]
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
                for chunk in rechunk(data, self.chunk_size):
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
        with self._writing.hold((repo, digest)):
            if not self.blob_exists(repo, digest):
                self._upload_blob(repo, digest, data, len(data), None)
        return Descriptor("application/octet-stream", digest, len(data))

    def copy_blob(self, src_client: "RegistryClient", src_repo: str, dst_repo: str,
                  digest: str) -> str:
        """Make blob ``digest`` of ``src_client``/``src_repo`` present in ``dst_repo`` here.

        Returns ``"present"`` (already there), ``"mounted"`` (same registry, cross-repo
        mount) or ``"uploaded"`` (streamed: downloaded and PATCHed chunk by chunk, at most
        ``chunk_size`` bytes in memory).
        """
        with self._writing.hold((dst_repo, digest)):
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
                self._upload_blob(dst_repo, digest, stream, stream.size, location)
            return "uploaded"


def _add_query(url: str, **params: str) -> str:
    sep = "&" if urlsplit(url).query else "?"
    return url + sep + urlencode(params, quote_via=quote, safe=":")
