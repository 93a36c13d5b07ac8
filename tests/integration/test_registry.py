"""fleet.registry against real distribution 2.8 registries started by the tests
(tests/registry_fixtures.py): TLS + htpasswd, token auth with our own token server, a
credential helper through a temporary DOCKER_CONFIG, plain HTTP. The pure parts (reference
grammar, challenges, credential files, error classes) are in tests/unit/test_registry_*.py."""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import logging
import os
import stat
import time
import tracemalloc
import uuid

import pytest

from fleet.errors import UsageError
from fleet.publish.index import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    IndexEntry,
    build_index,
    check_config,
    parse_index,
)
from fleet.platform import Platform
from fleet.registry import (
    AuthError,
    DigestMismatch,
    ManifestInvalid,
    NotFound,
    RegistryClient,
    RegistryError,
    digest_of,
)

from tests.registry_fixtures import REGISTRY_PASSWORD, REGISTRY_USER, FlakyServer
from fleet.plan import NoMatchingEntry, choose_entry

def _choose(device, entries, legacy=False):
    """The entry fleet's one chooser gives a device of ``device`` from parsed index entries."""
    return choose_entry(device, [e.candidate for e in entries], legacy=legacy, labels=[e.label for e in entries])


PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7")


@contextlib.contextmanager
def fleet_log(caplog, level: int):
    """Capture the ``fleet`` loggers at ``level`` whatever an earlier in-process CLI run
    did to them (``fleet.log.configure`` turns propagation off), so a "no secret in the
    log" assertion cannot pass on an empty log."""
    root = logging.getLogger("fleet")
    old = root.level
    root.addHandler(caplog.handler)
    caplog.handler.setLevel(level)
    root.setLevel(level)
    try:
        yield caplog
    finally:
        root.removeHandler(caplog.handler)
        root.setLevel(old)


def _client(server, **kw) -> RegistryClient:
    kw.setdefault("credentials", (REGISTRY_USER, REGISTRY_PASSWORD))
    if server.tls:
        kw.setdefault("ca", server.ca_file)
    return RegistryClient(server.host, insecure=not server.tls, **kw)


def _repo() -> str:
    return f"fleet/test-{uuid.uuid4().hex[:8]}"


def push_image(client: RegistryClient, repo: str, platform: str, *, oci: bool = True,
               seed: str = "") -> IndexEntry:
    """Push one fake single-platform image (gzip layer + config + manifest) by digest;
    returns its index entry. Same (platform, seed) -> same bytes."""
    p = Platform.parse(platform)
    layer = gzip.compress(f"layer for {platform} {seed}".encode() * 50, mtime=0)
    config_doc = {"architecture": p.architecture, "os": p.os,
                  "rootfs": {"type": "layers", "diff_ids": [digest_of(gzip.decompress(layer))]},
                  "config": {"Cmd": ["/bin/true"]}}
    if p.variant:
        config_doc["variant"] = p.variant
    config = json.dumps(config_doc, sort_keys=True).encode()
    layer_d = client.push_blob(repo, layer)
    config_d = client.push_blob(repo, config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
        "config": {"mediaType": OCI_CONFIG if oci else DOCKER_CONFIG,
                   "digest": config_d.digest, "size": config_d.size},
        "layers": [{"mediaType": OCI_LAYER_GZIP if oci else DOCKER_LAYER_GZIP,
                    "digest": layer_d.digest, "size": layer_d.size}],
    }, sort_keys=True).encode()
    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    digest = client.put_manifest(repo, digest_of(manifest), manifest, media_type)
    return IndexEntry(p, digest, len(manifest), media_type)


def publish(client: RegistryClient, repo: str, tag: str, *, oci: bool = True) -> tuple[str, str]:
    entries = [push_image(client, repo, p, oci=oci) for p in PLATFORMS]
    raw, media_type = build_index(entries)
    return client.put_manifest(repo, tag, raw, media_type), media_type


# --------------------------------------------------------------------------- (a) TLS + htpasswd


def test_publish_index_read_back_and_republish(tls_registry, caplog):
    with fleet_log(caplog, logging.DEBUG):
        _publish_index_read_back_and_republish(tls_registry, caplog)
    assert "PUT https://" in caplog.text  # captured: the leak check in the body means something


def _publish_index_read_back_and_republish(tls_registry, caplog):
    repo = _repo()
    client = _client(tls_registry)
    index_digest, media_type = publish(client, repo, "v1")
    assert media_type == OCI_INDEX
    first = client.counters
    assert first.blob_uploads == 6 and first.bytes_uploaded > 0 and first.manifests_put == 4

    index = client.get_manifest(repo, "v1")
    assert index.media_type == OCI_INDEX and index.digest == index_digest
    assert index.size == len(index.raw) and digest_of(index.raw) == index_digest
    assert client.head_manifest(repo, "v1") == index.descriptor
    entries = parse_index(index.raw)
    assert [str(e.platform) for e in entries] == list(PLATFORMS)
    for e in entries:
        child = client.get_manifest(repo, e.digest)
        assert child.media_type == OCI_MANIFEST and child.digest == e.digest and child.size == e.size
        config = json.loads(client.read_blob(repo, child.json["config"]["digest"]))
        check_config(e.platform, config)  # each child's config declares its platform
    assert _choose(Platform.parse("linux/arm/v8"), entries) == 2

    # Re-publishing unchanged content: zero blob uploads, same index digest.
    again = _client(tls_registry)
    assert publish(again, repo, "v1") == (index_digest, OCI_INDEX)
    assert again.counters.blob_uploads == 0 and again.counters.bytes_uploaded == 0

    text = caplog.text + repr(client) + repr(again)
    assert REGISTRY_PASSWORD not in text and "Basic " not in text and "Authorization" not in text


def test_docker_manifest_list(tls_registry):
    repo = _repo()
    client = _client(tls_registry)
    digest, media_type = publish(client, repo, "v1", oci=False)
    assert media_type == DOCKER_MANIFEST_LIST
    got = client.get_manifest(repo, "v1")
    assert got.media_type == DOCKER_MANIFEST_LIST and got.digest == digest
    assert {e.media_type for e in parse_index(got.raw)} == {DOCKER_MANIFEST}
    head = client.head_manifest(repo, digest)
    assert head.media_type == DOCKER_MANIFEST_LIST and head.size == got.size


def test_index_with_child_missing_from_repo_is_refused(tls_registry):
    client = _client(tls_registry)
    src, dst = _repo(), _repo()
    entry = push_image(client, src, "linux/amd64")
    raw, media_type = build_index([entry])
    with pytest.raises(ManifestInvalid) as exc:
        client.put_manifest(dst, "v1", raw, media_type)
    assert exc.value.code == "MANIFEST_BLOB_UNKNOWN" and f"{dst}:v1" in str(exc.value)
    assert "MANIFEST_BLOB_UNKNOWN" in str(exc.value)


def test_cross_repo_mount(tls_registry):
    client = _client(tls_registry)
    src, dst = _repo(), _repo()
    blob = os.urandom(4096)
    d = client.push_blob(src, blob).digest
    uploads = client.counters.blob_uploads
    assert not client.blob_exists(dst, d)
    assert client.mount_blob(dst, d, src) is True
    assert client.blob_exists(dst, d) and client.read_blob(dst, d) == blob
    assert client.counters.blob_uploads == uploads and client.counters.blob_mounts == 1
    missing = digest_of(b"never pushed " + os.urandom(8))
    assert client.mount_blob(dst, missing, src) is False
    assert not client.blob_exists(dst, missing)


def test_copy_between_registries_is_streamed(tls_registry, tls_registry_2):
    src = _client(tls_registry)
    size = 8 * 1024 * 1024
    blob = os.urandom(size)
    src_repo, dst_repo = _repo(), _repo()
    d = src.push_blob(src_repo, blob).digest
    del blob
    dst = _client(tls_registry_2, chunk_size=512 * 1024)
    tracemalloc.start()
    try:
        assert dst.copy_blob(src, src_repo, dst_repo, d) == "uploaded"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, f"copy held {peak} bytes in memory"
    assert dst.counters.blob_uploads == 1 and dst.counters.bytes_uploaded == size
    with dst.get_blob(dst_repo, d) as stream:
        assert stream.size == size and sum(len(c) for c in stream) == size  # digest verified
    assert dst.copy_blob(src, src_repo, dst_repo, d) == "present"
    # Same registry: a cross-repo mount, no bytes moved.
    other = _repo()
    assert src.copy_blob(src, src_repo, other, d) == "mounted"
    assert src.counters.blob_uploads == 1


def test_upload_refuses_content_not_matching_digest(tls_registry):
    client = _client(tls_registry)
    repo = _repo()
    wrong = digest_of(b"something else")
    with pytest.raises(DigestMismatch):
        client.upload_blob(repo, wrong, b"actual content")
    with pytest.raises(DigestMismatch):
        client.upload_blob(repo, wrong, io.BytesIO(b"actual content"))
    assert not client.blob_exists(repo, wrong) and client.counters.blob_uploads == 0
    with pytest.raises(DigestMismatch):
        client.put_manifest(repo, wrong, b"{}", OCI_MANIFEST)


def test_wrong_credentials(tls_registry, caplog):
    bad_password = "wrong-" + uuid.uuid4().hex
    client = _client(tls_registry, credentials=(REGISTRY_USER, bad_password))
    with fleet_log(caplog, logging.DEBUG), pytest.raises(AuthError) as exc:
        client.get_manifest(_repo(), "v1")
    assert "-> 401" in caplog.text
    msg = str(exc.value)
    assert tls_registry.host in msg and REGISTRY_USER in msg and "refused" in msg
    assert bad_password not in msg and bad_password not in caplog.text and bad_password not in repr(client)
    with pytest.raises(AuthError, match="no credentials"):
        _client(tls_registry, credentials=None, docker_config=tls_registry.root / "nowhere").ping()


def test_not_found_carries_registry_code(tls_registry):
    client = _client(tls_registry)
    repo = _repo()
    push_image(client, repo, "linux/amd64")
    with pytest.raises(NotFound) as exc:
        client.get_manifest(repo, "no-such-tag")
    assert exc.value.code == "MANIFEST_UNKNOWN" and "MANIFEST_UNKNOWN" in str(exc.value)
    assert f"{tls_registry.host}/{repo}:no-such-tag" in str(exc.value)
    missing = digest_of(b"missing")
    with pytest.raises(NotFound) as exc:
        client.read_blob(repo, missing)
    assert exc.value.code == "BLOB_UNKNOWN" and missing in str(exc.value)
    with pytest.raises(NotFound):
        client.head_manifest(repo, "no-such-tag")
    assert client.manifest_exists(repo, "no-such-tag") is False
    assert client.blob_exists(repo, missing) is False


# --------------------------------------------------------------------------- (b) token auth


def test_token_auth_push_pull_and_mount(token_registry):
    token = token_registry.token_server
    token.requests.clear()
    client = _client(token_registry)
    repo = _repo()
    digest, _ = publish(client, repo, "v1")
    assert client.get_manifest(repo, "v1").digest == digest
    assert repr(client).endswith("auth='bearer')")
    ok = [r for r in token.requests if r.outcome == 200]
    assert ok and all(r.user == REGISTRY_USER and r.service == token.service for r in ok)
    assert any(r.scopes == [f"repository:{repo}:pull,push"] for r in ok)
    # Tokens are cached per scope set: a whole publish (6 blobs, 4 manifests) needs one
    # token for pull (existence checks) and one for pull,push.
    assert sorted(tuple(r.scopes) for r in token.requests) == [
        (f"repository:{repo}:pull",), (f"repository:{repo}:pull,push",)], token.requests
    client.get_manifest(repo, "v1")
    client.blob_exists(repo, digest_of(b"x"))
    assert len(token.requests) == 2

    # Cross-repo mount: one token request carrying both scopes.
    other = _repo()
    entry = client.get_manifest(repo, parse_index(client.get_manifest(repo, "v1").raw)[0].digest)
    layer = entry.json["layers"][0]["digest"]
    assert client.mount_blob(other, layer, repo) is True
    assert sorted(token.requests[-1].scopes) == sorted(
        [f"repository:{other}:pull,push", f"repository:{repo}:pull"])


def test_token_auth_wrong_credentials(token_registry):
    bad = "bad-" + uuid.uuid4().hex
    client = _client(token_registry, credentials=(REGISTRY_USER, bad))
    with pytest.raises(AuthError) as exc:
        client.ping()
    msg = str(exc.value)
    assert token_registry.token_server.realm in msg and REGISTRY_USER in msg and bad not in msg
    # Anonymous clients get a token without access: the registry refuses them.
    anon = _client(token_registry, credentials=None, docker_config=token_registry.root / "none")
    with pytest.raises(AuthError, match="anonymous"):
        anon.get_manifest(_repo(), "v1")


def test_token_auth_with_identity_token(token_registry, tmp_path):
    (refresh, user), = token_registry.token_server.refresh_tokens.items()
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"auths": {token_registry.host: {"identitytoken": refresh}}}))
    client = RegistryClient(token_registry.host, ca=token_registry.ca_file, docker_config=cfg)
    repo = _repo()
    d = client.push_blob(repo, b"pushed with a refresh token").digest
    assert client.blob_exists(repo, d)
    last = token_registry.token_server.requests[-1]
    assert last.method == "POST" and last.user == user and refresh not in repr(client)


# --------------------------------------------------------------------------- (c) credential helper


def test_credentials_from_docker_credential_helper(tls_registry, tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    asked = tmp_path / "asked.txt"
    helper = bindir / "docker-credential-fleettest"
    helper.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = get ] || exit 1\n'
        f"read -r server\n"
        f'printf "%s\\n" "$server" >> {asked}\n'
        f'printf \'{{"ServerURL":"%s","Username":"{REGISTRY_USER}","Secret":"{REGISTRY_PASSWORD}"}}\' "$server"\n')
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    config_dir = tmp_path / "docker"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(json.dumps({"credHelpers": {tls_registry.host: "fleettest"}}))
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    client = RegistryClient(tls_registry.host, ca=tls_registry.ca_file)  # default config lookup
    repo = _repo()
    d = client.push_blob(repo, b"credentials from a helper").digest
    assert client.blob_exists(repo, d) and client.username == REGISTRY_USER
    assert asked.read_text().split() == [tls_registry.host]  # asked once, for this registry
    assert REGISTRY_PASSWORD not in repr(client)

    # credsStore + a plain `auths` entry, through an explicit docker_config path.
    (config_dir / "config.json").write_text(json.dumps({"credsStore": "fleettest"}))
    assert RegistryClient(tls_registry.host, ca=tls_registry.ca_file,
                          docker_config=config_dir).blob_exists(repo, d)
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"auths": {tls_registry.host: {
        "auth": base64.b64encode(f"{REGISTRY_USER}:{REGISTRY_PASSWORD}".encode()).decode()}}}))
    assert RegistryClient(tls_registry.host, ca=tls_registry.ca_file,
                          docker_config=plain).blob_exists(repo, d)


# --------------------------------------------------------------------------- (d) plain HTTP


def test_plain_http_only_when_insecure(plain_registry, tls_registry):
    client = RegistryClient(plain_registry.host, insecure=True)
    repo = _repo()
    digest, _ = publish(client, repo, "v1")
    assert client.get_manifest(repo, "v1").digest == digest
    with pytest.raises(RegistryError) as exc:
        RegistryClient(plain_registry.host, retries=1).ping()
    assert "TLS" in str(exc.value) and "plain-HTTP" in str(exc.value)
    # An insecure client against a TLS registry gets a clear message too.
    with pytest.raises(RegistryError, match="speaks TLS"):
        RegistryClient(tls_registry.host, insecure=True, retries=1).ping()
    # TLS without the test CA: the certificate is not trusted.
    with pytest.raises(RegistryError, match="CA"):
        RegistryClient(tls_registry.host, retries=1).ping()


# --------------------------------------------------------------------------- retries


def test_retries_transient_statuses_only():
    flaky = FlakyServer([(503, {}), (429, {"Retry-After": "1"}), (502, {})])
    try:
        client = RegistryClient(flaky.host, insecure=True, retries=5, max_retry_wait=2)
        t0 = time.monotonic()
        client.ping()
        assert flaky.hits == 4 and time.monotonic() - t0 >= 0.9  # Retry-After honoured
    finally:
        flaky.stop()
    never = FlakyServer([(404, {}), (404, {})])
    try:
        with pytest.raises(NotFound) as exc:
            RegistryClient(never.host, insecure=True, retries=5).ping()
        assert never.hits == 1 and exc.value.code == "NAME_UNKNOWN"
    finally:
        never.stop()
    gone = FlakyServer([(503, {})] * 10)
    try:
        with pytest.raises(RegistryError, match="UNAVAILABLE") as exc:
            RegistryClient(gone.host, insecure=True, retries=3, max_retry_wait=0.1).ping()
        assert gone.hits == 3 and exc.value.status == 503
    finally:
        gone.stop()


def test_unreachable_registry():
    from tests.registry_fixtures import free_port
    port = free_port("127.0.0.1")
    with pytest.raises(RegistryError, match="cannot reach"):
        RegistryClient(f"127.0.0.1:{port}", retries=2, max_retry_wait=0.1).ping()


def test_token_expiry_is_honoured(token_registry):
    token = token_registry.token_server
    token.expires_in = 2  # the registry enforces exp too
    try:
        client = _client(token_registry)
        repo = _repo()
        client.blob_exists(repo, digest_of(b"a"))
        n = len(token.requests)
        client.blob_exists(repo, digest_of(b"b"))
        assert len(token.requests) == n  # cached
        time.sleep(1.8)  # past expires_in minus the renewal margin
        client.blob_exists(repo, digest_of(b"c"))
        assert len(token.requests) == n + 1
    finally:
        token.expires_in = 300


def test_one_client_from_several_threads(token_registry):
    from concurrent.futures import ThreadPoolExecutor

    client = _client(token_registry)
    repo = _repo()
    with ThreadPoolExecutor(4) as pool:
        entries = list(pool.map(lambda p: push_image(client, repo, p, seed="threads"), PLATFORMS * 2))
    assert len({e.digest for e in entries}) == 3
    raw, media_type = build_index(entries[:3])
    digest = client.put_manifest(repo, "v1", raw, media_type)
    assert [e.digest for e in parse_index(client.get_manifest(repo, digest).raw)] == \
        [e.digest for e in entries[:3]]


def test_concurrent_pushes_of_one_content_upload_it_once(token_registry):
    """Threads pushing the same blob or the same image into one repository: each blob is
    uploaded once and each manifest PUT succeeds (the cause of the old flaky failure of
    test_one_client_from_several_threads: overlapping uploads of one digest made
    distribution 2.8 rewrite the blob's link file in place while another thread's
    manifest PUT read it, answering DIGEST_INVALID)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    client = _client(token_registry)
    repo = _repo()
    blob = os.urandom(64 * 1024)
    start = threading.Barrier(8)

    def push(_):
        start.wait()
        return client.push_blob(repo, blob)

    with ThreadPoolExecutor(8) as pool:
        descs = list(pool.map(push, range(8)))
    assert {d.digest for d in descs} == {digest_of(blob)}
    assert client.counters.blob_uploads == 1 and client.counters.bytes_uploaded == len(blob)

    # whole images, every platform pushed by four threads at once
    images = _client(token_registry)
    start = threading.Barrier(12)

    def push_image_together(p):
        start.wait()
        return push_image(images, repo, p, seed="together")

    with ThreadPoolExecutor(12) as pool:
        entries = list(pool.map(push_image_together, PLATFORMS * 4))
    assert len({e.digest for e in entries}) == 3
    assert images.counters.blob_uploads == 6  # a layer and a config per platform, once each
    assert images.counters.manifests_put == 12


# --------------------------------------------------------------------------- diagnostics


def test_trace_log_shows_requests_never_secrets(tls_registry, token_registry, tmp_path, caplog):
    """-vvv (TRACE): every request with its headers, and no password, Basic credential,
    bearer token or refresh token anywhere in the log."""
    from fleet.log import TRACE

    token = token_registry.token_server
    (refresh, _), = token.refresh_tokens.items()
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"auths": {token_registry.host: {"identitytoken": refresh}}}))
    issued_before = len(token.issued)
    with fleet_log(caplog, TRACE):
        basic = _client(tls_registry)
        repo = _repo()
        basic.push_blob(repo, b"traced with basic auth " + os.urandom(8))
        bearer = _client(token_registry)
        bearer.push_blob(repo, b"traced with a bearer token " + os.urandom(8))
        refreshed = RegistryClient(token_registry.host, ca=token_registry.ca_file, docker_config=cfg)
        refreshed.push_blob(repo, b"traced with a refresh token " + os.urandom(8))
    text = caplog.text
    basic_credential = base64.b64encode(f"{REGISTRY_USER}:{REGISTRY_PASSWORD}".encode()).decode()
    bearer_tokens = token.issued[issued_before:]
    assert len(bearer_tokens) >= 3  # pull and pull,push for `bearer`, one for `refreshed` at least
    for secret in (REGISTRY_PASSWORD, basic_credential, refresh, *bearer_tokens):
        assert secret not in text
    for secret in bearer_tokens:  # not even a prefix long enough to replay a JWT header+claims
        assert secret[:40] not in text

    levels = {r.levelname for r in caplog.records}
    assert {"INFO", "DEBUG", "TRACE"} <= levels
    # INFO: endpoints and auth schemes
    assert f"registry {tls_registry.host}: endpoint https://{tls_registry.host} (TLS verified" in text
    assert f"registry {tls_registry.host}: basic authentication (realm 'fleet-test'), as user '{REGISTRY_USER}'" in text
    assert f"bearer token from {token.realm} (service {token.service})" in text
    assert "refresh-token grant" in text
    # DEBUG: each request, status and bytes
    assert f"HEAD https://{tls_registry.host}/v2/{repo}/blobs/sha256:" in text and "-> 404" in text
    assert f"POST https://{tls_registry.host}/v2/{repo}/blobs/uploads/ -> 202" in text
    assert f"GET {token.realm}?service={token.service}&scope=repository:{repo}:pull" in text
    assert "-> 201 (sent " in text
    # TRACE: headers, credentials redacted; the upload session state too
    assert "Authorization: <redacted>" in text
    assert "Docker-Distribution-Api-Version: registry/2.0" in text
    assert "_state=<redacted>" in text and "_state=" not in text.replace("_state=<redacted>", "")


def test_errors_are_classified_transient_or_permanent(tls_registry, plain_registry):
    """``transient`` on real failures: what a rollout may retry later and what it must not."""
    import socket

    from tests.registry_fixtures import free_port, loopback_address

    def error_of(fn) -> RegistryError:
        with pytest.raises(RegistryError) as exc:
            fn()
        return exc.value

    # transient: refused, timed out (a listener that never answers the TLS handshake), 5xx, 429
    address = loopback_address()
    port = free_port(address)
    e = error_of(lambda: RegistryClient(f"{address}:{port}", retries=2, max_retry_wait=0.1).ping())
    assert e.transient and "cannot reach" in str(e) and "Connection refused" in str(e)
    with socket.socket() as silent:
        silent.bind((address, 0))
        silent.listen(8)
        host = f"{address}:{silent.getsockname()[1]}"
        e = error_of(lambda: RegistryClient(host, timeout=0.3, retries=2, max_retry_wait=0.1).ping())
    assert e.transient and "timed out" in str(e)
    for status, hits in ((503, 2), (429, 2), (500, 1)):  # 500 is not retried, yet transient
        server = FlakyServer([(status, {})] * 5)
        try:
            e = error_of(lambda: RegistryClient(server.host, insecure=True, retries=2,
                                                max_retry_wait=0.1).ping())
            assert e.transient and e.status == status and server.hits == hits, (status, e)
        finally:
            server.stop()

    # permanent: not found, refused credentials, untrusted certificate, protocol mix-up,
    # content not matching its digest
    client = _client(tls_registry)
    e = error_of(lambda: client.get_manifest(_repo(), "v1"))
    assert isinstance(e, NotFound) and not e.transient
    e = error_of(lambda: _client(tls_registry, credentials=(REGISTRY_USER, "nope")).ping())
    assert isinstance(e, AuthError) and not e.transient
    e = error_of(lambda: RegistryClient(tls_registry.host, retries=1).ping())
    assert not e.transient and "CA" in str(e)
    e = error_of(lambda: RegistryClient(plain_registry.host, retries=1).ping())
    assert not e.transient and "plain-HTTP" in str(e)
    e = error_of(lambda: RegistryClient(tls_registry.host, insecure=True, retries=1).ping())
    assert not e.transient and "speaks TLS" in str(e)
    e = error_of(lambda: client.upload_blob(_repo(), digest_of(b"other"), b"content"))
    assert isinstance(e, DigestMismatch) and not e.transient


# --------------------------------------------------------------------------- pull path


class _MirrorThatServesNoOCIIndex:
    """A pull-through mirror in front of a real registry with the defect of
    project-zot/zot#2836: it forwards everything, except that a manifest request whose
    Accept names only the OCI image index gets 404 MANIFEST_UNKNOWN."""

    def __init__(self, upstream: str):
        import http.server
        import threading

        import requests as rq

        from tests.registry_fixtures import free_port, loopback_address

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _forward(self):
                accept = self.headers.get("Accept", "")
                if "/manifests/" in self.path and accept.strip() == OCI_INDEX:
                    body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
                    self.send_response(404)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(body)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                r = rq.request(self.command, f"http://{upstream}{self.path}", headers=headers, data=data,
                               allow_redirects=False, timeout=30)
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "content-encoding"):
                        self.send_header(k, v.replace(f"http://{upstream}", f"http://{self.server.host}"))
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(r.content)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

        address = loopback_address()
        port = free_port(address)
        self.server = http.server.ThreadingHTTPServer((address, port), Handler)
        self.server.host = f"{address}:{port}"  # type: ignore[attr-defined]
        self.host = self.server.host  # type: ignore[attr-defined]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_published_index_is_asked_back_as_an_engine_would(plain_registry):
    """After the push, the index is asked for by digest accepting only its own type: the
    registry itself serves it; a mirror that does not serve OCI indexes is refused, with
    the Docker manifest list as the way out."""
    from fleet.publish import check_served
    from fleet.publish.index import IndexRefused

    client = RegistryClient(plain_registry.host, insecure=True)
    repo = _repo()
    digest, media_type = publish(client, repo, "v1")
    assert media_type == OCI_INDEX
    check_served(client, repo, digest, media_type)  # a registry that serves it: no error

    mirror = _MirrorThatServesNoOCIIndex(plain_registry.host)
    try:
        via = RegistryClient(mirror.host, insecure=True, retries=1)
        assert via.get_manifest(repo, digest).digest == digest  # the full Accept list still works
        with pytest.raises(IndexRefused) as exc:
            check_served(via, repo, digest, media_type)
        assert "does not serve application/vnd.oci.image.index.v1+json" in str(exc.value)
        assert "Docker manifest list" in str(exc.value)
        other = _repo()
        listed, list_type = publish(via, other, "v1", oci=False)
        assert list_type == DOCKER_MANIFEST_LIST
        check_served(via, other, listed, list_type)  # what the hint says to do works through it
    finally:
        mirror.stop()
