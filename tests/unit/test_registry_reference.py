"""The image reference grammar and digests (fleet.registry.reference): pure, no network."""

from __future__ import annotations

import pytest

from fleet.errors import UsageError
from fleet.registry import Reference, ReferenceError, digest_of, is_digest, new_hasher, valid_registry_host


@pytest.mark.parametrize("text,registry,repo,tag,digest", [
    ("busybox", "docker.io", "library/busybox", None, None),
    ("alpine:3.19", "docker.io", "library/alpine", "3.19", None),
    ("user/app", "docker.io", "user/app", None, None),
    ("localhost/app:1", "localhost", "app", "1", None),
    ("127.0.0.1:5443/fleet/app/sub:v1.2", "127.0.0.1:5443", "fleet/app/sub", "v1.2", None),
    ("ghcr.io/o/r@sha256:" + "a" * 64, "ghcr.io", "o/r", None, "sha256:" + "a" * 64),
    ("reg.example:5000/r:t@sha256:" + "b" * 64, "reg.example:5000", "r", "t", "sha256:" + "b" * 64),
])
def test_reference_parse(text, registry, repo, tag, digest):
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repo, tag, digest)
    assert ref.ref == (digest or tag or "latest")
    assert Reference.parse(str(ref)) == ref


@pytest.mark.parametrize("text", ["", "UpperCase:v1", "reg.io/Upper/x", "app:bad tag", "app@sha256:123",
                                  "https://reg/app", "reg:5000/app:v1:v2", "app:" + "x" * 129])
def test_reference_errors_name_the_reference(text):
    with pytest.raises(ReferenceError) as exc:
        Reference.parse(text)
    assert isinstance(exc.value, UsageError) and repr(text) in str(exc.value)


def test_index_docker_io_is_docker_hub():
    assert Reference.parse("index.docker.io/library/alpine:3").name == "docker.io/library/alpine"


def test_digests():
    d = digest_of(b"hello")
    assert d == "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert is_digest(d) and not is_digest("v1.0")
    h = new_hasher(d, "r")
    h.update(b"hello")
    assert "sha256:" + h.hexdigest() == d
    with pytest.raises(ReferenceError, match="reg/app@x: invalid digest 'sha256:abc'"):
        new_hasher("sha256:abc", "reg/app@x")


@pytest.mark.parametrize("host,ok", [("127.0.0.1:5443", True), ("reg.example", True), ("[::1]:5000", True),
                                     ("", False), ("reg/x", False), ("-bad-.example", False)])
def test_registry_host(host, ok):
    assert valid_registry_host(host) is ok
