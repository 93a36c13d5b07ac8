"""Secrets stay at the sites: a job on the broker carries references, never secret material.

A host whose inventory holds a password (``ansible_password``, a become password, a
``fleet_*`` variable named like one) and a private key file, deployed with a registry whose
password is in the controller's environment: the job is sent through the real CeleryExecutor
to a real Redis, and the raw message read back from Redis (every layer: the message JSON,
the signed body's base64, the job JSON inside) holds none of those values - while it does
hold the references (the key file path, the names of the variables) a site resolves itself.
"""

from __future__ import annotations

import base64
import json

import pytest

from fleet.errors import UsageError
from fleet.executor import CeleryExecutor, DeviceWork, WorkFormatError, work_for
from tests.celery_fixtures import (controller_signing, redis_server, selection_of, signers,  # noqa: F401
                                   start_devices)

ANSIBLE_PW = "Pw-ansible-2b9f0c"
BECOME_PW = "Pw-become-77d1e4"
FLEET_PW = "Pw-fleetvar-a0c3d8"
REGISTRY_PW = "Pw-registry-5e6f11"


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    extra = {"s1": {"ansible_password": ANSIBLE_PW, "ansible_become_password": BECOME_PW,
                    "ansible_ssh_pass": ANSIBLE_PW, "fleet_registry_password": FLEET_PW, "ansible_become": True,
                    "fleet_probe_timeout": 30}}
    d = start_devices(tmp_path_factory.mktemp("secret-devices"), {"s1": "q"}, extra_vars=extra)
    yield d
    d.stop()


def _layers(raw: bytes) -> list[bytes]:
    """The raw message and every layer inside it: the kombu message JSON, the signed
    payload (base64: signer, signature, content type, encoding, body), the job body."""
    msg = json.loads(raw)
    assert msg["content-type"] == "application/data"  # the auth serializer's
    signed = base64.b64decode(msg["body"])             # kombu's body encoding
    fields = base64.b64decode(signed).split(b"\x00\x01", 4)  # celery.security.serialization._pack
    assert len(fields) == 5
    return [raw, signed, base64.b64decode(signed), fields[4]]


def test_no_secret_value_in_the_message_on_the_broker(devices, redis_server, signers, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("FLEET_TEST_REG_USER", "deployer")
    monkeypatch.setenv("FLEET_TEST_REG_PASS", REGISTRY_PW)
    key_text = devices.key.read_text()
    key_body = "".join(key_text.strip().splitlines()[1:-1])  # the base64 of the private key
    assert len(key_body) > 40

    host = selection_of(devices).hosts()[0]
    payload = {"image": "registry.example:5000/app@sha256:" + "0" * 64,
               "registry": {"username_env": "FLEET_TEST_REG_USER", "password_env": "FLEET_TEST_REG_PASS"}}
    work = work_for(host, "probe", payload, deadline=1.0)
    assert "ansible_password" not in work.connection and "ansible_become_password" not in work.connection
    assert "fleet_registry_password" not in work.connection and "ansible_ssh_pass" not in work.connection

    ex = CeleryExecutor(redis_server.url, signing=controller_signing(signers), grace=0.2)
    out = ex.map([work])  # site q has no worker: the job stays in its queue, as sent
    assert out[0].error is not None
    raw_messages = redis_server.client().lrange("fleet.site.q", 0, -1)
    assert len(raw_messages) == 1
    layers = _layers(raw_messages[0])
    inner = json.loads(layers[-1])[0][0]  # [args, kwargs, embed] -> the envelope
    assert inner["work"]["host"] == "s1"

    for layer in layers:
        for secret in (ANSIBLE_PW, BECOME_PW, FLEET_PW, REGISTRY_PW, key_body, key_body[:40]):
            assert secret.encode() not in layer
    # ...but the references a site resolves are there (so this test looks at the right thing)
    body = layers[-1].decode()
    assert str(devices.key) in body and "FLEET_TEST_REG_PASS" in body and devices.servers["s1"].address in body
    redis_server.client().delete("fleet.site.q")


def test_work_items_refuse_secret_material():
    with pytest.raises(WorkFormatError, match="'ansible_password' is not a connection variable"):
        DeviceWork("probe", "h", "a", {"ansible_password": "x"})
    with pytest.raises(WorkFormatError, match="'fleet_api_token' is not a connection variable"):
        DeviceWork("probe", "h", "a", {"fleet_api_token": "x"})
    with pytest.raises(WorkFormatError, match=r"payload.registry.password: a work item carries no secret"):
        DeviceWork("deploy", "h", "a", {}, {"registry": {"password": "x"}})
    with pytest.raises(WorkFormatError, match="identity_token"):
        DeviceWork("deploy", "h", "a", {}, {"auth": [{"identity_token": "x"}]})
    # references are fine
    w = DeviceWork("deploy", "h", "a", {"ansible_ssh_private_key_file": "/k", "fleet_probe_timeout": 5},
                   {"registry": {"password_env": "P", "token_file": "/t", "docker_config": "/c"}})
    assert DeviceWork.from_dict(json.loads(json.dumps(w.to_dict()))) == w


def test_templated_connection_variable_is_a_usage_error(tmp_path):
    from fleet.inventory import Host

    h = Host("t1", {"ansible_host": "{{ lookup('env', 'X') }}", "fleet_site": "a"}, ("all",), "inv.yml",
             {"ansible_host": "inv.yml"})
    with pytest.raises(UsageError, match="t1.*ansible_host is a Jinja template"):
        work_for(h, "probe")
    with pytest.raises(UsageError, match="fleet_site: 'a b' is not a site name"):
        work_for(Host("t2", {"fleet_site": "a b"}), "probe")


def _deploy_job(tmp_path, env: dict[str, str] | None = None):
    """A one-unit DeviceJob for host s1 from a playbook that names its registry
    credentials (variables of the controller's environment), built as the pipeline does."""
    import yaml

    from fleet.deploy import DeviceJob, Unit
    from fleet.pipeline.apps import auth_for
    from fleet.plan import DevicePlan
    from fleet.platform import Platform
    from fleet.playbook import load_playbook
    from fleet.verify import Expected

    pb_path = tmp_path / "app.yaml"
    pb_path.write_text(yaml.safe_dump({
        "name": "app", "image": "registry.example:5000/team/app:1", "platforms": ["linux/amd64"],
        "source": {"pick": {"linux/amd64": "registry.example:5000/team/app:1-amd64"}},
        "registry": {"username_env": "FLEET_TEST_REG_USER", "password_env": "FLEET_TEST_REG_PASS"},
        "container": {"name": "app", "env": env or {"GREETING": "hi"}}}))
    pb = load_playbook(pb_path)
    amd64 = Platform.parse("linux/amd64")
    expected = Expected("registry.example:5000/team/app", "sha256:" + "1" * 64, amd64, "sha256:" + "2" * 64,
                        "sha256:" + "3" * 64, ("sha256:" + "4" * 64,))
    unit = Unit("app", "app", pb.container_spec.to_service(), expected,
                DevicePlan("s1", amd64, amd64, amd64, entry_index=0), 1000,
                auth_for(pb, "registry.example:5000/team/app"))
    return pb, DeviceJob("s1", (unit,), "app")


def test_no_registry_credential_in_a_deploy_job_on_the_broker(devices, redis_server, signers, monkeypatch, tmp_path):
    """A deploy job, built by the pipeline's own function, for a playbook whose registry
    credentials are in the controller's environment AND in its Docker config: the raw
    message on the broker holds neither, only where a site finds its own."""
    import dataclasses

    from fleet.deploy import App, DeployOptions
    from fleet.pipeline import Run
    from fleet.pipeline.rollouts import _deploy_work

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("FLEET_TEST_REG_USER", "deployer")
    monkeypatch.setenv("FLEET_TEST_REG_PASS", REGISTRY_PW)
    docker_auth = base64.b64encode(f"deployer:{REGISTRY_PW}-cfg".encode()).decode()
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text(json.dumps(
        {"auths": {"registry.example:5000": {"auth": docker_auth}}}))
    pb, job = _deploy_job(tmp_path)
    ex = CeleryExecutor(redis_server.url, signing=controller_signing(signers), grace=0.2)
    with Run(selection_of(devices), ex) as run:
        work = _deploy_work(run, job, App(pb.image, pb.name, pb.health), DeployOptions(deployment="D1"))
        assert work.kind == "deploy" and work.site == "q" and work.deadline > 1800 and work.secrets == ()
        out = ex.map([dataclasses.replace(work, deadline=1.0)])  # site q has no worker: the job stays queued
    assert out[0].error is not None
    raw = redis_server.client().lrange("fleet.site.q", 0, -1)
    assert len(raw) == 1
    layers = _layers(raw[0])
    body = json.loads(layers[-1])[0][0]["work"]
    assert body["kind"] == "deploy" and body["payload"]["job"]["units"][0]["auth"] == {
        "registry": "registry.example:5000", "username_env": "FLEET_TEST_REG_USER",
        "password_env": "FLEET_TEST_REG_PASS", "docker_config": None}
    for layer in layers:
        for secret in (REGISTRY_PW, docker_auth, "deployer"):
            assert secret.encode() not in layer, secret
    redis_server.client().delete("fleet.site.q")


def test_a_job_with_secret_values_is_not_sent(devices, redis_server, signers, monkeypatch, tmp_path):
    """The app's own secret values (a container variable named like a secret) would travel in
    the job, signed but not encrypted: the Celery executor refuses it before anything is
    sent, naming the device and the variable; the local executor runs such jobs."""
    from fleet.deploy import App, DeployOptions
    from fleet.executor import LocalExecutor
    from fleet.pipeline import Run
    from fleet.pipeline.rollouts import _deploy_work

    monkeypatch.setenv("HOME", str(tmp_path))
    pb, job = _deploy_job(tmp_path, env={"GREETING": "hi", "DB_PASSWORD": "hunter2-" + REGISTRY_PW})
    ex = CeleryExecutor(redis_server.url, signing=controller_signing(signers), grace=0.2)
    with Run(selection_of(devices), ex) as run:
        work = _deploy_work(run, job, App(pb.image, pb.name, pb.health), DeployOptions(deployment="D1"))
        assert work.secrets == ("DB_PASSWORD",)
        with pytest.raises(UsageError, match=r"s1: its deploy job would carry secret values \(DB_PASSWORD\) "
                                             r"through the broker"):
            ex.map([work])
        with pytest.raises(UsageError, match="DB_PASSWORD"):
            ex.preflight([work])
        LocalExecutor(run.connections).preflight([work])  # runs locally: the value never leaves this machine
    assert redis_server.client().llen("fleet.site.q") == 0
