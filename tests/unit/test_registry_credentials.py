"""The one credential resolver and the auth encodings (fleet.registry.credentials), from
real files: Docker config files written by the test, a ``docker-credential-*`` helper
script on PATH (the credential-helper protocol of docker/docker-credential-helpers)."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from fleet.errors import UsageError
from fleet.playbook import RegistrySettings
from fleet.registry import (
    DOCKER_HUB_AUTH_KEY,
    Credentials,
    credentials_from_docker_config,
    credentials_from_env,
    docker_config_json,
    engine_auth_config,
    resolve_credentials,
    x_registry_auth,
)

REG = "127.0.0.1:5443"
USER = "fleet-ci"
PASSWORD = "s3cr3t-unit-Pa55"


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def helper(tmp_path, monkeypatch) -> Path:
    """``docker-credential-fleettest`` on PATH: answers ``get`` for REG (and Docker Hub's
    key) with USER/PASSWORD, records each server asked, fails for ``broken.example``."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    asked = tmp_path / "asked.txt"
    script = bindir / "docker-credential-fleettest"
    script.write_text(
        "#!/bin/sh\n"
        '[ "$1" = get ] || exit 1\n'
        "read -r server\n"
        f'printf "%s\\n" "$server" >> {asked}\n'
        'case "$server" in\n'
        '  broken.example) echo "keychain locked" >&2; exit 1;;\n'
        '  token.example) printf \'{"ServerURL":"%s","Username":"<token>","Secret":"refresh-xyz"}\' "$server";;\n'
        f'  *) printf \'{{"ServerURL":"%s","Username":"{USER}","Secret":"{PASSWORD}"}}\' "$server";;\n'
        "esac\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return asked


@pytest.fixture(autouse=True)
def _no_user_docker_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)


def test_credentials_from_env(monkeypatch):
    monkeypatch.setenv("FLEET_T_USER", "alice")
    monkeypatch.setenv("FLEET_T_PASS", "pw-not-shown")
    creds = credentials_from_env("FLEET_T_USER", "FLEET_T_PASS")
    assert creds.pair() == ("alice", "pw-not-shown")
    assert "pw-not-shown" not in repr(creds) + str(creds) and "FLEET_T_PASS" in repr(creds)
    monkeypatch.delenv("FLEET_T_PASS")
    with pytest.raises(UsageError, match="FLEET_T_PASS"):
        credentials_from_env("FLEET_T_USER", "FLEET_T_PASS")


def test_playbook_env_names_win_over_the_docker_config(tmp_path, monkeypatch):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"auths": {REG: {"auth": _auth("from-file", "x")}}}))
    monkeypatch.setenv("R_USER", "from-env")
    monkeypatch.setenv("R_PASS", PASSWORD)
    settings = RegistrySettings(username_env="R_USER", password_env="R_PASS", docker_config=cfg)
    assert resolve_credentials(settings, REG) == Credentials("from-env", PASSWORD)
    assert resolve_credentials(RegistrySettings(docker_config=cfg), REG) == Credentials("from-file", "x")
    monkeypatch.delenv("R_USER")
    with pytest.raises(UsageError, match="R_USER") as exc:
        resolve_credentials(settings, REG)
    assert PASSWORD not in str(exc.value)


def test_docker_config_auths_entry_file_and_folder(tmp_path):
    folder = tmp_path / "docker"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"auths": {
        f"https://{REG}/v1/": {"auth": _auth(USER, PASSWORD)},  # legacy URL keys match the host
        "other.example": {"auth": _auth("someone", "else")}}}))
    for where in (folder, folder / "config.json"):
        creds = credentials_from_docker_config(REG, where)
        assert creds == Credentials(USER, PASSWORD) and creds.pair() == (USER, PASSWORD)
        assert str(folder) in creds.source
    assert credentials_from_docker_config("third.example", folder) is None


def test_docker_config_identity_token(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"auths": {REG: {"identitytoken": "refresh-abc"}}}))
    creds = credentials_from_docker_config(REG, cfg)
    assert creds.identity_token == "refresh-abc" and creds.username is None
    assert "refresh-abc" not in repr(creds) and "identity token" in repr(creds)


def test_default_lookup_uses_DOCKER_CONFIG(tmp_path, monkeypatch):
    folder = tmp_path / "dc"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"auths": {REG: {"auth": _auth(USER, PASSWORD)}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    assert resolve_credentials(None, REG) == Credentials(USER, PASSWORD)
    assert resolve_credentials(RegistrySettings(), REG) == Credentials(USER, PASSWORD)


def test_a_named_config_that_is_missing_means_no_credentials_not_another_file(tmp_path, monkeypatch):
    folder = tmp_path / "dc"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"auths": {REG: {"auth": _auth(USER, PASSWORD)}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    assert credentials_from_docker_config(REG, tmp_path / "nowhere.json") is None


def test_credential_helpers(tmp_path, helper):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"credHelpers": {REG: "fleettest"}}))
    creds = credentials_from_docker_config(REG, cfg)
    assert creds == Credentials(USER, PASSWORD) and "docker-credential-fleettest" in creds.source
    assert helper.read_text().split() == [REG]  # asked once, for this registry only
    assert credentials_from_docker_config("other.example", cfg) is None  # no helper, no auths entry

    # credsStore for every registry; Docker Hub is asked under its index URL key
    cfg.write_text(json.dumps({"credsStore": "fleettest"}))
    assert credentials_from_docker_config("reg.example:5000", cfg) == Credentials(USER, PASSWORD)
    assert credentials_from_docker_config("docker.io", cfg) == Credentials(USER, PASSWORD)
    assert helper.read_text().split()[-2:] == ["reg.example:5000", DOCKER_HUB_AUTH_KEY]
    # a helper answering the "<token>" user gives an identity token
    assert credentials_from_docker_config("token.example", cfg).identity_token == "refresh-xyz"


def test_helper_failures_and_bad_files_are_usage_errors_naming_the_file(tmp_path, helper):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"credsStore": "fleettest"}))
    with pytest.raises(UsageError) as exc:
        credentials_from_docker_config("broken.example", cfg)
    assert "broken.example" in str(exc.value) and str(cfg) in str(exc.value)
    cfg.write_text(json.dumps({"credHelpers": {REG: "not-installed"}}))
    with pytest.raises(UsageError, match="not-installed"), pytest.warns(UserWarning, match="not installed"):
        credentials_from_docker_config(REG, cfg)
    cfg.write_text(json.dumps({"auths": {REG: "not a mapping"}}))
    with pytest.raises(UsageError, match=str(cfg)):
        credentials_from_docker_config(REG, cfg)


def test_resolution_logs_the_source_never_the_secret(tmp_path, helper, caplog):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"credHelpers": {REG: "fleettest"}}))
    root = logging.getLogger("fleet")
    root.addHandler(caplog.handler)
    old = root.level
    root.setLevel(logging.INFO)
    try:
        credentials_from_docker_config(REG, cfg)
    finally:
        root.removeHandler(caplog.handler)
        root.setLevel(old)
    assert f"registry {REG}: credentials (user '{USER}') from Docker config {cfg} (docker-credential-fleettest)" \
        in caplog.text
    assert PASSWORD not in caplog.text


def test_credentials_object_hides_its_secrets():
    creds = Credentials(USER, PASSWORD, source="test")
    assert PASSWORD not in repr(creds) + str(creds) + f"{creds}" + repr([creds])
    assert creds.pair() == (USER, PASSWORD)
    assert creds.basic_authorization() == "Basic " + _auth(USER, PASSWORD)
    with pytest.raises(TypeError):
        json.dumps({"credentials": creds})  # cannot slip into a JSON report
    assert Credentials.of((USER, PASSWORD)) == creds and Credentials.of(None) is None
    assert Credentials.of(creds) is creds


def test_docker_config_json_one_encoder():
    raw = docker_config_json(Credentials(USER, PASSWORD), REG)
    doc = json.loads(raw)
    assert doc == {"auths": {REG: {"auth": _auth(USER, PASSWORD)}}}
    assert PASSWORD.encode() not in raw
    hub = json.loads(docker_config_json(Credentials(USER, PASSWORD), "docker.io"))
    assert list(hub["auths"]) == [DOCKER_HUB_AUTH_KEY]  # where the docker CLI looks for Hub
    token_only = json.loads(docker_config_json(Credentials(None, None, "refresh-abc"), REG))
    assert token_only == {"auths": {REG: {"identitytoken": "refresh-abc"}}}


def test_engine_auth_config_and_x_registry_auth():
    creds = Credentials(USER, PASSWORD)
    assert engine_auth_config(creds, REG) == {"username": USER, "password": PASSWORD, "serveraddress": REG}
    assert engine_auth_config(None, REG) is None
    header = x_registry_auth(creds, REG)
    assert "+" not in header and "/" not in header  # base64url alphabet (RFC 4648 section 5)
    assert json.loads(base64.urlsafe_b64decode(header)) == {
        "username": USER, "password": PASSWORD, "serveraddress": REG}
    # what docker-py itself sends for the same auth_config
    from docker.auth import encode_header
    assert header.encode() == encode_header({"username": USER, "password": PASSWORD, "serveraddress": REG})
    tok = json.loads(base64.urlsafe_b64decode(x_registry_auth(Credentials(None, None, "rt"), "docker.io")))
    assert tok == {"identitytoken": "rt", "serveraddress": DOCKER_HUB_AUTH_KEY}


def test_resolver_takes_any_settings_shape():
    assert resolve_credentials(SimpleNamespace(username_env=None, password_env=None,
                                               docker_config=Path("/nonexistent/cfg.json")), REG) is None
