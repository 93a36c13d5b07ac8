"""The Engine API path's pure parts on JSON and byte streams captured from a real engine
(Docker 20.10.24, API 1.41; tests/data/engine/README.md, "Captured from the Engine API"):
the ``parse_*`` functions read the API's JSON as they read ``docker inspect``'s, the create
body matches what the docker CLI makes of the same flags, and the progress/stream readers
find what the engine sent. No engine, no network."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import docker.auth
import pytest

from fleet.registry import Credentials
from fleet.engine import PullAuth, parse_container, parse_image, parse_info, parse_version
from fleet.engine.cli import create_args
from fleet.engine.api import _template
from fleet.engine.transport import EngineCounters, dial_stdio_command, socket_path_from_docker_host
from fleet.engine.wire import (
    demux,
    demux_tail,
    create_body,
    negotiate_api_version,
    parse_api_version,
    parse_pull_progress,
    port_bindings,
    registry_auth,
    scrub,
    split_lines,
)
from fleet.facts import parse_probe_output, probe_command
from fleet.playbook import ContainerSpec

DATA = Path(__file__).resolve().parent.parent / "data" / "engine"

# The container both twins were created from (README: api-20.10-container-inspect.json is
# fleet's API mapping of it, cli-20.10-container-inspect-twin.json is `docker create` with
# fleet.engine.cli.create_args of it).
TWIN_SPEC = ContainerSpec(
    name="fleet-capture",
    command=("/bin/sh", "-c", 'echo "started $GREETING"; echo to-stderr >&2; trap "exit 0" TERM; '
             'while :; do sleep 1; done'),
    env={"GREETING": "hi there"},
    ports=("127.0.0.1::8080", "18090-18091:8080-8081/udp", "18095:9000", "[::1]:18096:9001"),
    volumes=("/tmp:/data:ro", "fleet-capture-vol:/cache"),
    devices=("/dev/null:/dev/fleet-null:r", "/dev/zero"),
    restart="on-failure:2",
    labels={"app": "hello"},
)


def load(name: str):
    return json.loads((DATA / name).read_text())


# --------------------------------------------------------------------------- parse_*


def test_api_version_is_the_cli_server_half():
    api = parse_api_version((DATA / "api-20.10-version.json").read_bytes())
    cli = parse_version((DATA / "version-20.10-x86.json").read_bytes())  # docker version on an x86 device
    assert (api.server_version, api.api_version, api.min_api_version, api.os, api.arch) == \
        (cli.server_version, cli.api_version, cli.min_api_version, cli.os, cli.arch) == \
        ("20.10.24+dfsg1", "1.41", "1.12", "linux", "amd64")
    assert api.client_version == "" and api.major == 20
    with pytest.raises(ValueError):
        parse_api_version(b"[]")


def test_api_info():
    info = parse_info(load("api-20.10-info.json"))
    assert (info.architecture, info.os_type, info.driver, info.docker_root_dir) == \
        ("x86_64", "linux", "overlay2", "/var/lib/docker")
    assert info.store == "classic" and info.server_version == "20.10.24+dfsg1"


def test_api_image_inspect_is_one_object():
    doc = load("api-20.10-image-inspect.json")
    assert isinstance(doc, dict)  # the API returns the object, the CLI a one-element list
    img = parse_image(doc)
    assert parse_image([doc]) == img
    assert img.id.startswith("sha256:") and img.platform_text == "linux/amd64"
    assert len(img.diff_ids) == 1 and img.diff_ids[0] == doc["RootFS"]["Layers"][0]
    (digest,) = img.repo_digests
    assert "/fleet-test/capture@sha256:" in digest
    assert img.descriptor is None and img.manifests == ()  # API 1.41, classic store


def test_api_container_inspect():
    c = parse_container(load("api-20.10-container-inspect.json"))
    assert (c.name, c.status, c.running, c.exit_code) == ("fleet-capture", "running", True, 0)
    assert c.labels == {"app": "hello", "io.fleet.test": "1"}
    assert c.image_ref.endswith("/fleet-test/capture:1") and c.image_id.startswith("sha256:")
    assert c.network_mode == "default" and c.manifest_digest is None


# --------------------------------------------------------------------------- create body


def test_create_mapping_matches_the_docker_cli_twin():
    """fleet's API mapping and the docker CLI's own parsing of create_args give the same
    container: compared on the engine's record of each."""
    api = load("api-20.10-container-inspect.json")
    cli = load("cli-20.10-container-inspect-twin.json")[0]
    for doc in (api, cli):
        hc = doc["HostConfig"]
        exposed, bindings = port_bindings(TWIN_SPEC.ports)
        assert hc["PortBindings"] == bindings
        assert doc["Config"]["ExposedPorts"] == {f"{p}/{proto}": {} for p, proto in exposed}
        assert sorted(hc["Binds"]) == sorted(TWIN_SPEC.volumes)
        assert hc["RestartPolicy"] == create_body(TWIN_SPEC, "img", {})["HostConfig"]["RestartPolicy"]
        assert hc["Devices"] == [
            {"PathOnHost": "/dev/null", "PathInContainer": "/dev/fleet-null", "CgroupPermissions": "r"},
            {"PathOnHost": "/dev/zero", "PathInContainer": "/dev/zero", "CgroupPermissions": "rwm"}]
        assert "GREETING=hi there" in doc["Config"]["Env"]
        assert doc["Config"]["Cmd"] == list(TWIN_SPEC.command) and doc["Config"]["Entrypoint"] is None
    assert create_args(TWIN_SPEC, "img", "n", {}, env_from_stdin=False).count("-p") == len(TWIN_SPEC.ports)


@pytest.mark.parametrize("spec, key, binding", [
    ("80", "80/tcp", {"HostIp": "", "HostPort": ""}),
    ("8080:80", "80/tcp", {"HostIp": "", "HostPort": "8080"}),
    ("8000-8010:80", "80/tcp", {"HostIp": "", "HostPort": "8000-8010"}),  # the engine picks one
    ("10.1.2.3:53:53/udp", "53/udp", {"HostIp": "10.1.2.3", "HostPort": "53"}),
    ("[fe80::1]::5000/sctp", "5000/sctp", {"HostIp": "fe80::1", "HostPort": ""}),
])
def test_port_forms(spec, key, binding):
    exposed, bindings = port_bindings([spec])
    assert bindings == {key: [binding]}
    assert exposed == [(int(key.split("/")[0]), key.split("/")[1])]


@pytest.mark.parametrize("bad", ["", "a:80", "1:2:3:4", "80/icmp", "8000-8002:80-81", "90-80", "[::1]80"])
def test_port_forms_refused(bad):
    with pytest.raises(ValueError, match="port"):
        port_bindings([bad])


def test_create_body_defaults_and_settings():
    assert create_body(ContainerSpec(name="a"), "img", {}) == {
        "Image": "img", "HostConfig": {"Privileged": False, "NetworkMode": "default"}}
    body = create_body(ContainerSpec(name="a", restart="always", privileged=True, network_mode="host"), "img", {})
    assert body["HostConfig"] == {"Privileged": True, "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0},
                                  "NetworkMode": "host"}


# --------------------------------------------------------------------------- streams


def test_demux_captured_exec_and_logs():
    assert demux((DATA / "api-20.10-exec-stream.bin").read_bytes()) == b"out\nerr\n"
    assert load("api-20.10-exec-inspect.json")["ExitCode"] == 3
    # stdout and stderr frames in the order the engine got them (here stderr came first)
    assert sorted(demux((DATA / "api-20.10-logs.bin").read_bytes()).splitlines()) == [b"started hi there",
                                                                                     b"to-stderr"]
    assert demux(b"plain TTY output\n") is None  # not framed: shown as it is
    assert demux(b"") == b""
    assert demux((DATA / "api-20.10-logs.bin").read_bytes()[:-1]) is None  # truncated frame


def test_demux_tail_bounded_and_chunked():
    frames = (DATA / "api-20.10-exec-stream.bin").read_bytes()
    assert demux_tail([frames[i:i + 3] for i in range(0, len(frames), 3)], 1 << 20) == b"out\nerr\n"
    assert demux_tail([frames], 4) == b"err\n"  # the tail only
    big = b"".join(b"\x01\0\0\0" + (1000).to_bytes(4, "big") + bytes([65 + i % 26]) * 1000 for i in range(50))
    out = demux_tail([big[i:i + 777] for i in range(0, len(big), 777)], 2500)
    assert out == b"V" * 500 + b"W" * 1000 + b"X" * 1000  # frames 47-49, no header bytes
    assert demux_tail([b"raw TTY output, not framed"], 100) == b"raw TTY output, not framed"
    assert demux_tail([b"short"], 100) == b"short"


def test_pull_progress_success():
    raw = (DATA / "api-20.10-pull-progress.jsonl").read_bytes()
    kept, error = parse_pull_progress(split_lines([raw[i:i + 7] for i in range(0, len(raw), 7)]))
    assert error is None
    assert kept[-1].startswith("Status: Downloaded newer image for ") and kept[-1].endswith("/fleet-test/capture:1")
    assert kept[-2].startswith("Digest: sha256:")
    assert "227396b4f302: Pull complete" in kept or any(k.endswith(": Pull complete") for k in kept)
    kept3, _ = parse_pull_progress(split_lines([raw]), keep=3)
    assert kept3 == kept[-3:]


def test_pull_progress_error_object_inside_a_200_stream():
    kept, error = parse_pull_progress(split_lines([(DATA / "api-20.10-pull-blob-unknown.jsonl").read_bytes()]))
    assert error == {"errorDetail": {"message": "unknown blob"}, "error": "unknown blob"}
    assert kept[0] == "1: Pulling from fleet-test/capture-broken"


def test_pull_errors_before_the_stream_are_http_statuses():
    # what 20.10 answers for wrong credentials and a missing tag (the HTTP error path of
    # ApiEngine.pull): a status and {"message"}
    status, _, body = (DATA / "api-20.10-pull-unauthorized.txt").read_text().partition("\n")
    assert status == "HTTP 500" and json.loads(body) == {"message": "unauthorized: authentication required"}
    status, _, body = (DATA / "api-20.10-pull-manifest-unknown.txt").read_text().partition("\n")
    assert status == "HTTP 404" and "manifest unknown" in json.loads(body)["message"]


def test_split_lines_is_bounded():
    lines = list(split_lines([b"a\n", b"x" * 100, b"x" * 100, b"\nb\n", b"tail"], limit=150))
    assert lines == [b"a", b"b", b"tail"]  # the 200-byte line was dropped, the rest kept
    assert list(parse_pull_progress([b"not json", b"[1]", b'{"status":"ok"}'])[0]) == ["ok"]


# --------------------------------------------------------------------------- credentials


def test_registry_auth_header():
    auth = PullAuth("reg.example:5000", Credentials("ci", "p:ss w0rd"))
    obj = registry_auth(auth)
    assert obj == {"serveraddress": "reg.example:5000", "username": "ci", "password": "p:ss w0rd"}
    header = docker.auth.encode_header(obj)  # what goes into X-Registry-Auth
    assert json.loads(base64.urlsafe_b64decode(header)) == obj
    assert "p:ss w0rd" not in repr(auth)
    assert scrub("bad password hunter22 for x", {"password": "hunter22"}) == "bad password <redacted> for x"
    assert scrub("short pw ab", {"password": "ab"}) == "short pw ab"  # too short to mask safely


# --------------------------------------------------------------------------- versions, counters


def test_negotiated_api_version():
    assert negotiate_api_version("1.41", "1.12") == "1.41"
    c8d = parse_version(load("c8d-29.0-version.json"))  # Docker 29 refuses below 1.44
    assert negotiate_api_version(c8d.api_version, c8d.min_api_version) == "1.52"
    with pytest.raises(ValueError, match="older than 1.41"):
        negotiate_api_version("1.40")


def test_counters_and_call_keys():
    c = EngineCounters()
    c.add(channels_opened=2, remote_processes=1, bytes_sent=10)
    c.call("GET /info")
    c.call("GET /info")
    d = c.to_dict()
    assert d["channels_opened"] == 2 and d["remote_processes"] == 1 and d["api_call_total"] == 2
    assert d["api_calls"] == {"GET /info": 2} and json.loads(json.dumps(d)) == d
    assert _template("/containers/{0}/json") == "/containers/{id}/json"
    assert _template("/images/{0}/json") == "/images/{name}/json"


def test_docker_host_and_dial_stdio_command():
    assert socket_path_from_docker_host("unix:///run/user/1000/docker.sock") == "/run/user/1000/docker.sock"
    assert socket_path_from_docker_host("tcp://10.0.0.1:2375") is None
    assert socket_path_from_docker_host(None) is None
    assert dial_stdio_command(False) == "docker system dial-stdio"
    assert dial_stdio_command(True, "/var/run/docker.sock") == "sudo -n docker system dial-stdio"
    assert dial_stdio_command(False, "/run/a b.sock") == "docker -H 'unix:///run/a b.sock' system dial-stdio"


# --------------------------------------------------------------------------- probe script


def test_probe_script_without_its_engine_section(tmp_path):
    """``engine_cli=False`` never starts the docker CLI (a logging stand-in on PATH here),
    and prints no engine fact; the default still runs it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "docker.log"
    (bin_dir / "docker").write_text(f'#!/bin/sh\necho "$*" >> {log}\necho "no engine here" >&2\nexit 1\n')
    (bin_dir / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    token = "0123456789abcdef0123456789abcdef"
    for engine_cli, runs in ((False, False), (True, True)):
        cmd = probe_command(False, token, engine_cli=engine_cli)
        out = subprocess.run(["sh", "-c", cmd], capture_output=True, env=env, timeout=60).stdout
        facts = parse_probe_output(out, token)
        assert facts["uname_s"] == "Linux"
        assert log.exists() == runs
        assert ("engine_error" in facts) == runs
    assert probe_command(False, token).endswith(f" {token} 0")  # unchanged without the flag
    assert probe_command(False, token, engine_cli=False).endswith(f" {token} 0 0")


# --------------------------------------------------------------------------- interface


def test_api_engine_has_the_engine_interface_of_the_cli_engine():
    """ApiEngine is a drop-in for CliEngine where the stages use fleet.engine.Engine: every
    member of the protocol, with the same parameters."""
    import inspect

    from fleet.engine import Engine
    from fleet.engine.api import ApiEngine
    from fleet.engine.cli import CliEngine

    members = [n for n in vars(Engine) if not n.startswith("_") and callable(getattr(Engine, n))]
    assert {"pull", "image", "create_container", "exec", "http_check"} <= set(members)
    for name in members:
        api, cli = inspect.signature(getattr(ApiEngine, name)), inspect.signature(getattr(CliEngine, name))
        assert [(p.name, p.kind, p.default) for p in api.parameters.values()] == \
            [(p.name, p.kind, p.default) for p in cli.parameters.values()], name
    assert (ApiEngine.way, CliEngine.way) == ("api", "cli")
