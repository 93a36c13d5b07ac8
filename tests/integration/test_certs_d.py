"""The registry client trusts /etc/docker/certs.d/HOST:PORT/*.crt like the Docker engine
(here a temporary certs.d folder), on top of the system CAs, against a real TLS registry."""

from __future__ import annotations

import pytest

from fleet.registry import RegistryClient, RegistryError, docker_certs_d_bundle
from tests.registry_fixtures import REGISTRY_PASSWORD, REGISTRY_USER


def test_certs_d_ca_is_trusted(tls_registry, tmp_path):
    certs_d = tmp_path / "certs.d"
    creds = (REGISTRY_USER, REGISTRY_PASSWORD)
    # no CA anywhere: TLS verification fails with a hint
    with RegistryClient(tls_registry.host, credentials=creds, certs_d=certs_d, retries=1) as c:
        with pytest.raises(RegistryError, match="TLS connection failed.*CA certificate"):
            c.ping()
    (certs_d / tls_registry.host).mkdir(parents=True)
    (certs_d / tls_registry.host / "ca.crt").write_bytes(tls_registry.ca_file.read_bytes())
    with RegistryClient(tls_registry.host, credentials=creds, certs_d=certs_d, retries=1) as c:
        c.ping()
    bundle = docker_certs_d_bundle(tls_registry.host, None, certs_d)
    text = open(bundle).read()
    assert tls_registry.ca_file.read_text().strip() in text
    assert text.count("BEGIN CERTIFICATE") > 1  # the system CAs are kept too
    assert docker_certs_d_bundle("other.example:5000", None, certs_d) is None
