"""``-v``/``-vv``/``-vvv`` of the real console script, against a real OpenSSH sshd and a real
TLS registry with a password: diagnostics on stderr only (``--json`` stdout stays exactly
one JSON document), each level adding what fleet.log promises, and no secret at any level
(a remote command's secret arguments masked, registry credentials never shown)."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.log import configure
from fleet.ssh import SSHSettings, connect, target_for
from fleet.inventory import Host
from tests.registry_fixtures import REGISTRY_PASSWORD, REGISTRY_USER
from tests.sshd import start_sshd

FLEET = Path(sys.executable).with_name("fleet")


def fleet(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [str(FLEET)] if FLEET.exists() else [sys.executable, "-c", "from fleet.cli import main; main()"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    base = tmp_path_factory.mktemp("verbose")
    s = start_sshd(base / "sshd")
    inv = base / "inventory.ini"
    inv.write_text(f"dev-a ansible_host={s.address} ansible_port={s.port} ansible_user={s.user} "
                   f"ansible_ssh_private_key_file={s.user_key_path}\n")
    kh = base / "known_hosts"
    kh.write_text(s.known_hosts_line + "\n")
    yield s, inv, kh
    s.stop()


@pytest.fixture
def env(tmp_path):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    e = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "DOCKER_HOST", "DOCKER_CONFIG")}
    e.update(HOME=str(home), COLUMNS="200")
    return e


def _probe(device, env, *flags):
    s, inv, kh = device
    r = fleet("probe", "-i", str(inv), "--known-hosts", str(kh), "--json", *flags, env=env)
    assert r.returncode == 0, r.stderr
    docs = json.loads(r.stdout)  # exactly one JSON document, whatever the verbosity
    assert [d["host"] for d in docs] == ["dev-a"]
    assert "fleet." not in r.stdout
    return r


def test_without_v_no_diagnostics(device, env):
    r = _probe(device, env)
    assert "fleet.ssh:" not in r.stderr and "fleet.engine:" not in r.stderr


def test_v_connections_and_host_key_decisions_on_stderr(device, env):
    s, inv, kh = device
    r = _probe(device, env, "-v")
    err = r.stderr
    assert f"fleet.ssh: dev-a: connecting to {s.address}:{s.port}" in err
    assert f"of [{s.address}]:{s.port} matches {kh}:1" in err
    assert f"fleet.ssh: dev-a: authenticated as {s.user}@{s.address}:{s.port} with {s.user_key_path}" in err
    assert "run: " not in err  # remote commands are -vv


def test_vv_remote_commands_and_vvv_the_wire(device, env):
    r = _probe(device, env, "-vv")
    assert "fleet.ssh: dev-a: run: sh -c " in r.stderr
    assert "fleet.ssh: dev-a: exit status 0, " in r.stderr
    assert "negotiated host key" not in r.stderr
    r3 = _probe(device, env, "-vvv")
    assert "fleet.ssh: dev-a: negotiated host key ssh-ed25519, cipher" in r3.stderr
    # -vvv also hands paramiko's own transport log to the same stderr handler
    assert "fleet.ssh: dev-a: run: sh -c " in r3.stderr


def test_long_option_and_count_spelled_apart(device, env):
    r = _probe(device, env, "--verbose", "-v")
    assert "fleet.ssh: dev-a: run: sh -c " in r.stderr


def test_vv_masks_a_commands_secret_arguments(device, tmp_path, monkeypatch):
    """A remote command carrying a secret (``secret_args``) is logged with it masked at -vv
    and -vvv, while the device really received it."""
    s, inv, kh = device
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    secret = "tok-" + os.urandom(6).hex()
    host = Host(name="dev-a", vars={"ansible_host": s.address, "ansible_port": s.port, "ansible_user": s.user,
                                    "ansible_ssh_private_key_file": str(s.user_key_path)})
    settings = SSHSettings(known_hosts=(kh,))
    for level in (2, 3):
        buf = io.StringIO()
        configure(level, buf)
        try:
            with connect(target_for(host, settings), settings) as session:
                result = session.run(f"printf %s {secret} | wc -c", secret_args=[secret])
        finally:
            configure(0)
        assert result.exit_status == 0 and result.stdout.strip() == str(len(secret)).encode()
        text = buf.getvalue()
        assert "dev-a: run: printf %s " in text
        assert secret not in text


def test_registry_requests_at_vv_vvv_without_credentials(tls_registry, tmp_path, env):
    """`fleet publish` of a picked image to a registry with a password: -vv lists each
    request and its status, -vvv the headers, never the password nor the Basic credential,
    on stderr or stdout; stdout stays one JSON document."""
    from fleet.registry import RegistryClient
    from tests.integration.test_registry import push_image

    client = RegistryClient(tls_registry.host, credentials=(REGISTRY_USER, REGISTRY_PASSWORD),
                            ca=tls_registry.ca_file)
    entry = push_image(client, "fleet/verbose-src", "linux/amd64", seed=os.urandom(4).hex())
    pb = tmp_path / "pick.yaml"
    pb.write_text(f"name: verbose\nimage: {tls_registry.host}/fleet/verbose:1\n"
                  f"source:\n  pick:\n    linux/amd64: {tls_registry.host}/fleet/verbose-src@{entry.digest}\n"
                  f"registry:\n  username_env: REG_USER\n  password_env: REG_PASSWORD\n  ca: {tls_registry.ca_file}\n")
    env.update(REG_USER=REGISTRY_USER, REG_PASSWORD=REGISTRY_PASSWORD)
    basic = base64.b64encode(f"{REGISTRY_USER}:{REGISTRY_PASSWORD}".encode()).decode()
    for flag in ("-vv", "-vvv"):
        r = fleet("publish", str(pb), "--platform", "linux/amd64", "--json", flag, env=env)
        json.loads(r.stdout)  # one document (the fake image may fail its content check)
        assert f"registry {tls_registry.host}: endpoint https://{tls_registry.host}" in r.stderr
        assert f"fleet.registry: GET https://{tls_registry.host}/v2/fleet/verbose-src/manifests/" in r.stderr
        for secret in (REGISTRY_PASSWORD, basic):
            assert secret not in r.stderr and secret not in r.stdout
        if flag == "-vvv":
            assert "Authorization: <redacted>" in r.stderr
