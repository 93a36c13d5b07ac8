"""The shared credential encoders against the real host Docker engine and CLI, with a real
htpasswd registry on 127.0.0.x (plain HTTP: the engine treats 127.0.0.0/8 as an insecure
registry by default, moby ``registry.ServiceOptions``):

* :func:`fleet.registry.engine_auth_config` is what ``fleet.publish.sources.build_local`` hands to
  docker-py's ``push(auth_config=...)`` (the Engine API ``X-Registry-Auth`` header);
* :func:`fleet.registry.docker_config_json` is the ``config.json`` a device's throw-away
  ``DOCKER_CONFIG`` holds for ``docker pull`` (``fleet.deploy.auth_for_devices``).

Every image tag the tests create in the host engine is removed at the end.
"""

from __future__ import annotations

import subprocess
import uuid

import pytest

from fleet.platform import Platform
from fleet.registry import Credentials, Reference, RegistryClient, docker_config_json
from fleet.publish.sources import SourceError, build_local
from tests.registry_fixtures import start_registry

USER = "fleet-engine"


@pytest.fixture(scope="module")
def htpasswd_registry(tmp_path_factory):
    server = start_registry(tmp_path_factory.mktemp("registry-engine"),
                            users={USER: "pw-" + uuid.uuid4().hex[:12]})
    yield server
    server.stop()


@pytest.fixture
def engine_tags():
    """Image references the test adds to the host engine; removed afterwards."""
    made: list[str] = []
    yield made
    for ref in made:
        subprocess.run(["docker", "rmi", "-f", ref], capture_output=True, timeout=60)


def _context(tmp_path):
    ctx = tmp_path / f"ctx-{uuid.uuid4().hex[:6]}"
    ctx.mkdir()
    (ctx / "hello.txt").write_text(f"hello {uuid.uuid4().hex}\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /hello.txt\n")
    return ctx


def test_engine_push_with_engine_auth_config(htpasswd_registry, tmp_path, engine_tags):
    password = htpasswd_registry.users[USER]
    creds = Credentials(USER, password)
    repo = f"fleet/engine-{uuid.uuid4().hex[:8]}"
    amd64 = Platform.parse("linux/amd64")
    with RegistryClient(htpasswd_registry.host, insecure=True, credentials=creds) as client:
        target = Reference(htpasswd_registry.host, repo, "1.0")
        engine_tags.append(f"{target.name}:1.0-linux-amd64")
        child = build_local(_context(tmp_path), "Dockerfile", {}, amd64, target, client, creds,
                            use_buildx=False)
        assert client.head_manifest(repo, "1.0-linux-amd64").digest == child.digest

        wrong = Reference(htpasswd_registry.host, repo, "2.0")
        engine_tags.append(f"{wrong.name}:2.0-linux-amd64")
        with pytest.raises(SourceError) as exc:
            build_local(_context(tmp_path), "Dockerfile", {}, amd64, wrong, client,
                        Credentials(USER, "not-" + password), use_buildx=False)
        assert "unauthorized" in str(exc.value) and password not in str(exc.value)


def test_docker_cli_pulls_with_docker_config_json(htpasswd_registry, tmp_path, engine_tags):
    password = htpasswd_registry.users[USER]
    creds = Credentials(USER, password)
    repo = f"fleet/pull-{uuid.uuid4().hex[:8]}"
    with RegistryClient(htpasswd_registry.host, insecure=True, credentials=creds) as client:
        target = Reference(htpasswd_registry.host, repo, "1.0")
        engine_tags.append(f"{target.name}:1.0-linux-amd64")
        child = build_local(_context(tmp_path), "Dockerfile", {}, Platform.parse("linux/amd64"),
                            target, client, creds, use_buildx=False)
    ref = f"{target.name}@{child.digest}"
    engine_tags.append(ref)
    subprocess.run(["docker", "rmi", "-f", f"{target.name}:1.0-linux-amd64"], capture_output=True, timeout=60)

    def pull_with(c: Credentials) -> subprocess.CompletedProcess:
        config = tmp_path / f"config-{uuid.uuid4().hex[:6]}"
        config.mkdir(mode=0o700)
        (config / "config.json").write_bytes(docker_config_json(c, htpasswd_registry.host))
        return subprocess.run(["docker", "--config", str(config), "pull", ref],
                              capture_output=True, text=True, timeout=300)

    denied = pull_with(Credentials(USER, "not-" + password))
    assert denied.returncode != 0 and "unauthorized" in (denied.stderr + denied.stdout).lower()
    pulled = pull_with(creds)
    assert pulled.returncode == 0, pulled.stderr
    assert child.digest in pulled.stdout
