"""docker_certs_d_bundle on a temporary certs.d folder (files only, no network); the
bundle trusting a real TLS registry is tested in tests/integration/test_certs_d.py."""

from __future__ import annotations

import os

import trustme

from fleet.registry import docker_certs_d_bundle


def test_bundle_is_system_cas_plus_the_registry_folder(tmp_path):
    ca = trustme.CA()
    system = tmp_path / "system.pem"
    system.write_bytes(trustme.CA().cert_pem.bytes())
    certs_d = tmp_path / "certs.d"
    (certs_d / "reg.example:5000").mkdir(parents=True)
    (certs_d / "reg.example:5000" / "ca.crt").write_bytes(ca.cert_pem.bytes())
    (certs_d / "reg.example:5000" / "client.key").write_text("not a CA: ignored")
    bundle = docker_certs_d_bundle("reg.example:5000", str(system), certs_d)
    text = open(bundle).read()
    assert text.count("BEGIN CERTIFICATE") == 2 and "client.key" not in text
    assert ca.cert_pem.bytes().decode().strip() in text
    assert docker_certs_d_bundle("reg.example:5000", str(system), certs_d) == bundle  # cached
    os.utime(certs_d / "reg.example:5000" / "ca.crt", ns=(1, 1))  # changed file: new bundle
    assert docker_certs_d_bundle("reg.example:5000", str(system), certs_d) != bundle
    assert docker_certs_d_bundle("other.example", str(system), certs_d) is None
    (certs_d / "empty").mkdir()
    assert docker_certs_d_bundle("empty", str(system), certs_d) is None
