"""Challenge parsing and scopes (fleet.registry.auth): pure, on headers captured from
distribution 2.8 (htpasswd and token auth) and the examples of the specs."""

from __future__ import annotations

import pytest

from fleet.registry import merge_scopes, parse_challenge, scope


@pytest.mark.parametrize("header,expected", [
    # distribution 2.8.2 with htpasswd auth (tests/registry_fixtures.py tls_registry)
    ('Basic realm="fleet-test"', ("basic", {"realm": "fleet-test"})),
    # distribution 2.8.2 with token auth, insufficient scope on a HEAD of a blob
    ('Bearer realm="https://127.0.0.163:36165/token",service="fleet-test-registry",'
     'scope="repository:fleet/test-c787893e:pull"',
     ("bearer", {"realm": "https://127.0.0.163:36165/token", "service": "fleet-test-registry",
                 "scope": "repository:fleet/test-c787893e:pull"})),
    # the example of distribution docs/spec/auth/token.md (Docker Hub's token service)
    ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
     'scope="repository:samalba/my-app:pull,push"',
     ("bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                 "scope": "repository:samalba/my-app:pull,push"})),
    # RFC 6750 section 3: error parameters after ", " separators
    ('Bearer realm="example", error="invalid_token", error_description="The access token expired"',
     ("bearer", {"realm": "example", "error": "invalid_token",
                 "error_description": "The access token expired"})),
    # token68-less parameters unquoted, odd spacing and an escaped quote (RFC 7235 quoted-string)
    ('bearer  realm=https://r/t , service = "a \\"b\\""', ("bearer", {"realm": "https://r/t", "service": 'a "b"'})),
    (None, None),
    ("", None),
])
def test_parse_challenge(header, expected):
    assert parse_challenge(header) == expected


def test_scopes_merge_per_resource_and_sort():
    assert scope("fleet/app", "pull", "push") == "repository:fleet/app:pull,push"
    assert merge_scopes([scope("b", "push"), scope("a", "pull"), scope("b", "pull")]) == (
        "repository:a:pull", "repository:b:pull,push")
    assert merge_scopes([scope("a", "pull"), "repository:a:pull,push"]) == ("repository:a:pull,push",)
    assert merge_scopes([]) == ()
    assert merge_scopes(["registry:catalog:*", "odd"]) == ("odd", "registry:catalog:*")
