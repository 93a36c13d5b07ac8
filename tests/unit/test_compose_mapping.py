"""Compose key -> ServiceSpec -> docker CLI ``create`` arguments and Engine API create
body, key by key: each row is one Compose snippet, the CLI flags it must give and the API
fields it must set (tests/integration/test_compose_engine.py creates a service with all
of them both ways on a real engine and compares the engine's records)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fleet.compose import DEFAULT_LOGGING, ServiceSpec, load_compose, resolve, service_from_container
from fleet.compose.dotenv import parse_env_file
from fleet.compose.units import parse_duration, parse_size
from fleet.engine.cli import create_args, env_file
from fleet.engine.wire import create_body, go_duration
from fleet.errors import InputFileError
from fleet.playbook import ContainerSpec


def service(tmp_path: Path, snippet: str, extra: str = "", lookup=None) -> ServiceSpec:
    body = textwrap.indent(textwrap.dedent(snippet).strip(), "    ")
    (tmp_path / "docker-compose.yml").write_text(f"services:\n  s:\n    image: busybox\n{body}\n{extra}")
    c = load_compose(tmp_path / "docker-compose.yml", "proj", {})
    return resolve(c, device="d", lookup=(lookup or {}).get).services["s"]


def pairs(args: list[str]) -> list[tuple[str, str]]:
    return list(zip(args, args[1:]))


ROWS = [
    # snippet, CLI flag/value pairs (or lone flags), API body fragments {path: value}
    ("command: echo hi there", [], {"Cmd": ["echo", "hi", "there"]}),
    ("command: [echo, 'a b']", [], {"Cmd": ["echo", "a b"]}),
    ("entrypoint: [/bin/sh, -c]", [("--entrypoint", "/bin/sh")], {"Entrypoint": ["/bin/sh", "-c"]}),
    ("ports: ['127.0.0.1:8080:80/udp', 9000]", [("-p", "127.0.0.1:8080:80/udp"), ("-p", "9000")],
     {"HostConfig.PortBindings": {"80/udp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
                                  "9000/tcp": [{"HostIp": "", "HostPort": ""}]},
      "ExposedPorts": {"80/udp": {}, "9000/tcp": {}}}),
    ("ports: [{target: 80, published: '8080-8081', host_ip: '::1'}]", [("-p", "[::1]:8080-8081:80/tcp")],
     {"HostConfig.PortBindings": {"80/tcp": [{"HostIp": "::1", "HostPort": "8080-8081"}]}}),
    ("expose: ['7000-7001/udp']", [("--expose", "7000-7001/udp")], {"ExposedPorts": {"7000/udp": {}, "7001/udp": {}}}),
    ("volumes: ['/srv/data:/data:ro,z', 'cache:/cache:nocopy']", [("-v", "/srv/data:/data:ro,z"),
                                                                  ("-v", "proj_cache:/cache:nocopy")],
     {"HostConfig.Binds": ["/srv/data:/data:ro,z", "proj_cache:/cache:nocopy"]}),
    ("volumes: [{type: bind, source: /dev/shm, target: /shm, bind: {propagation: rslave}}]",
     [("-v", "/dev/shm:/shm:rslave")], {"HostConfig.Binds": ["/dev/shm:/shm:rslave"]}),
    ("volumes: [{type: tmpfs, target: /t, tmpfs: {size: 64k}}]", [("--tmpfs", "/t:size=65536")],
     {"HostConfig.Tmpfs": {"/t": "size=65536"}}),
    ("tmpfs: /run", [("--tmpfs", "/run")], {"HostConfig.Tmpfs": {"/run": ""}}),
    ("devices: [/dev/gpiomem, '/dev/ttyUSB0:/dev/ttyS0:rw', {source: /dev/i2c-1, permissions: r}]",
     [("--device", "/dev/gpiomem"), ("--device", "/dev/ttyUSB0:/dev/ttyS0:rw"), ("--device", "/dev/i2c-1:/dev/i2c-1:r")],
     {"HostConfig.Devices": [{"PathOnHost": "/dev/gpiomem", "PathInContainer": "/dev/gpiomem", "CgroupPermissions": "rwm"},
                             {"PathOnHost": "/dev/ttyUSB0", "PathInContainer": "/dev/ttyS0", "CgroupPermissions": "rw"},
                             {"PathOnHost": "/dev/i2c-1", "PathInContainer": "/dev/i2c-1", "CgroupPermissions": "r"}]}),
    ("cap_add: [sys_rawio, CAP_NET_ADMIN]\ncap_drop: [ALL]", [("--cap-add", "CAP_SYS_RAWIO"),
                                                           ("--cap-add", "CAP_NET_ADMIN"), ("--cap-drop", "ALL")],
     {"HostConfig.CapAdd": ["CAP_SYS_RAWIO", "CAP_NET_ADMIN"], "HostConfig.CapDrop": ["ALL"]}),
    ("group_add: [gpio, dialout, 997]", [("--group-add", "gpio"), ("--group-add", "dialout"), ("--group-add", "997")],
     {"HostConfig.GroupAdd": ["gpio", "dialout", "997"]}),
    ("privileged: true", ["--privileged"], {"HostConfig.Privileged": True}),
    ("user: '1000:997'", [("--user", "1000:997")], {"User": "1000:997"}),
    ("working_dir: /app", [("--workdir", "/app")], {"WorkingDir": "/app"}),
    ("read_only: true", ["--read-only"], {"HostConfig.ReadonlyRootfs": True}),
    ("mem_limit: 256m\nmem_reservation: 128m\nmemswap_limit: -1", [("--memory", str(256 << 20)),
                                                                   ("--memory-reservation", str(128 << 20)),
                                                                   ("--memory-swap", "-1")],
     {"HostConfig.Memory": 256 << 20, "HostConfig.MemoryReservation": 128 << 20, "HostConfig.MemorySwap": -1}),
    ("cpus: 0.5", [("--cpus", "0.5")], {"HostConfig.NanoCpus": 500_000_000}),
    ("shm_size: 64m", [("--shm-size", str(64 << 20))], {"HostConfig.ShmSize": 64 << 20}),
    ("pids_limit: 50", [("--pids-limit", "50")], {"HostConfig.PidsLimit": 50}),
    ("logging: {driver: journald, options: {tag: sensor}}", [("--log-driver", "journald"), ("--log-opt", "tag=sensor")],
     {"HostConfig.LogConfig": {"Type": "journald", "Config": {"tag": "sensor"}}}),
    ("restart: on-failure:3", [("--restart", "on-failure:3")],
     {"HostConfig.RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3}}),
    ("healthcheck: {test: [CMD-SHELL, 'curl -f http://localhost'], interval: 1m30s, timeout: 10s, retries: 3, "
     "start_period: 40s, start_interval: 5s}",
     [("--health-cmd", "curl -f http://localhost"), ("--health-interval", "90s"), ("--health-timeout", "10s"),
      ("--health-start-period", "40s"), ("--health-start-interval", "5s"), ("--health-retries", "3")],
     {"Healthcheck": {"Test": ["CMD-SHELL", "curl -f http://localhost"], "Interval": 90 * 10**9,
                      "Timeout": 10 * 10**9, "StartPeriod": 40 * 10**9, "StartInterval": 5 * 10**9, "Retries": 3}}),
    ("healthcheck: {disable: true}", ["--no-healthcheck"], {"Healthcheck": {"Test": ["NONE"]}}),
    ("network_mode: host", [("--network", "host")], {"HostConfig.NetworkMode": "host"}),
    ("labels: [com.example.site=kitchen]", [("--label", "com.example.site=kitchen")],
     {"Labels": {"com.example.site": "kitchen"}}),
    ("sysctls: {net.ipv4.ip_forward: 1}", [("--sysctl", "net.ipv4.ip_forward=1")],
     {"HostConfig.Sysctls": {"net.ipv4.ip_forward": "1"}}),
    ("extra_hosts: {gw: [10.0.0.1, '::1']}", [("--add-host", "gw:10.0.0.1"), ("--add-host", "gw:::1")],
     {"HostConfig.ExtraHosts": ["gw:10.0.0.1", "gw:::1"]}),
    ("hostname: pi", [("--hostname", "pi")], {"Hostname": "pi"}),
    ("init: false", ["--init=false"], {"HostConfig.Init": False}),
    ("stop_grace_period: 1m30s\nstop_signal: SIGINT", [("--stop-timeout", "90"), ("--stop-signal", "SIGINT")],
     {"StopTimeout": 90, "StopSignal": "SIGINT"}),
    ("ulimits: {nofile: {soft: 1024, hard: 4096}, core: 0}", [("--ulimit", "nofile=1024:4096"), ("--ulimit", "core=0:0")],
     {"HostConfig.Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 4096}, {"Name": "core", "Soft": 0, "Hard": 0}]}),
    ("security_opt: [no-new-privileges:true]\ndns: [1.1.1.1]", [("--security-opt", "no-new-privileges:true"),
                                                              ("--dns", "1.1.1.1")],
     {"HostConfig.SecurityOpt": ["no-new-privileges:true"], "HostConfig.Dns": ["1.1.1.1"]}),
]


def dig(body: dict, path: str):
    for part in path.split(".", 1)[0:1] + (path.split(".", 1)[1:] if path.startswith("HostConfig.") else []):
        body = body[part]
    return body


@pytest.mark.parametrize("snippet, cli, api", ROWS, ids=[r[0].split(":")[0] for r in ROWS])
def test_key_maps_to_cli_flag_and_api_field(tmp_path, snippet, cli, api):
    s = service(tmp_path, snippet, "volumes:\n  cache:\n" if "cache:" in snippet else "")
    args = create_args(s, "busybox", "n", {}, env_from_stdin=True)
    for item in cli:
        if isinstance(item, tuple):
            assert item in pairs(args), (item, args)
        else:
            assert item in args
    body = create_body(s, "busybox", {})
    for path, value in api.items():
        assert dig(body, path) == value, path


def test_defaults_network_logging_and_environment(tmp_path):
    s = service(tmp_path, "environment: {SECRET_KEY: 's p a c e', EMPTY: ''}")
    assert s.logging == DEFAULT_LOGGING
    args = create_args(s, "img", "proj-s", {"io.fleet.x": "1"}, env_from_stdin=True)
    assert pairs(args)[:1] == [("--name", "proj-s")]
    for pair in [("--env-file", "/proc/self/fd/0"), ("--log-driver", "local"), ("--log-opt", "max-size=10m"),
                 ("--log-opt", "max-file=3"), ("--network", "proj_default"), ("--network-alias", "s"),
                 ("--label", "io.fleet.x=1")]:
        assert pair in pairs(args)
    assert not any("s p a c e" in a for a in args)          # values go on stdin, never in argv
    assert env_file(s.env) == b"SECRET_KEY=s p a c e\nEMPTY=\n"
    body = create_body(s, "img", {"io.fleet.x": "1"})
    assert body["HostConfig"]["NetworkMode"] == "proj_default"
    assert body["NetworkingConfig"] == {"EndpointsConfig": {"proj_default": {"Aliases": ["s"]}}}
    assert body["Env"] == ["SECRET_KEY=s p a c e", "EMPTY="]
    assert body["HostConfig"]["LogConfig"] == {"Type": "local", "Config": {"max-size": "10m", "max-file": "3"}}


def test_several_networks_first_at_create(tmp_path):
    s = service(tmp_path, "networks: {front: {aliases: [web]}, back: null}",
                "networks:\n  front:\n  back:\n    name: shared-back\n")
    assert [(n.network, n.aliases) for n in s.networks] == [("proj_front", ("s", "web")), ("shared-back", ("s",))]
    args = create_args(s, "img", "n", {}, env_from_stdin=False)
    assert ("--network", "proj_front") in pairs(args) and "shared-back" not in args
    assert create_body(s, "img", {})["NetworkingConfig"]["EndpointsConfig"] == {"proj_front": {"Aliases": ["s", "web"]}}


def test_exec_form_health_check_on_the_cli(tmp_path):
    s = service(tmp_path, "healthcheck: {test: [CMD, /bin/check, --url, 'http://x/a b']}")
    assert ("--health-cmd", "/bin/check --url 'http://x/a b'") in pairs(create_args(s, "i", "n", {}, env_from_stdin=False))
    assert create_body(s, "i", {})["Healthcheck"]["Test"] == ["CMD", "/bin/check", "--url", "http://x/a b"]


def test_container_spec_converts_to_the_same_create():
    spec = ContainerSpec(name="hello", command=("--port", "8080"), entrypoint=("/bin/busybox", "sh"),
                         env={"A": "1"}, ports=("8080:8080",), volumes=("/srv:/data:ro", "named:/cache:rw,z"),
                         devices=("/dev/gpiomem",), restart="unless-stopped", privileged=True,
                         network_mode="host", labels={"team": "iot"})
    s = service_from_container(spec)
    assert s.volumes == ("/srv:/data:ro", "named:/cache:z") and s.logging is None
    assert create_args(spec, "img", "n", {}, env_from_stdin=True) == create_args(s, "img", "n", {}, env_from_stdin=True)
    assert create_args(spec, "img", "n", {}, env_from_stdin=True) == [
        "--name", "n", "--env-file", "/proc/self/fd/0", "-p", "8080:8080", "-v", "/srv:/data:ro",
        "-v", "named:/cache:z", "--device", "/dev/gpiomem", "--restart", "unless-stopped", "--privileged",
        "--network", "host", "--label", "team=iot", "--entrypoint", "/bin/busybox", "img", "sh", "--port", "8080"]
    assert create_body(spec, "img", {}) == create_body(s, "img", {})


@pytest.mark.parametrize("snippet, message", [
    ("ports: ['70000:80']", "ports are 1-65535"),
    ("ports: ['a:b']", "is not [IP:][HOST:]CONTAINER"),
    ("devices: [ttyUSB0]", "is not /dev/HOST"),
    ("restart: sometimes", "is not no, always, unless-stopped or on-failure"),
    ("extra_hosts: ['gw:not-an-ip']", "is not an IP address"),
    ("cpus: lots", "is not a number of CPUs"),
    ("healthcheck: {test: [RUN, x]}", "a list starts with CMD, CMD-SHELL or NONE"),
    ("stop_grace_period: 10x", "is not a duration"),
    ("network_mode: 'service:db'", "service:NAME is not implemented"),
    ("command: []", "empty list"),
    ("volumes: [{type: npipe, source: x, target: /x}]", "mount type 'npipe' is not implemented"),
    ("environment: {'A B': x}", "not an environment variable name"),
    ("environment: {A: \"line\\nbreak\"}", "line break"),
    ("depends_on: {s2: {condition: service_completed_successfully}}", "service_completed_successfully is not"),
])
def test_bad_values_name_the_key(tmp_path, snippet, message):
    extra = "  s2:\n    image: x\n" if "s2" in snippet else ""
    body = textwrap.indent(snippet, "    ")
    (tmp_path / "docker-compose.yml").write_text(f"services:\n  s:\n    image: busybox\n{body}\n{extra}")
    with pytest.raises(InputFileError) as err:
        load_compose(tmp_path / "docker-compose.yml", "p", {})
    assert err.value.line == 4 and message in err.value.reason and "key 'services.s." in err.value.reason


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize("text, value", [("512m", 512 << 20), ("1g", 1 << 30), ("1.5g", int(1.5 * (1 << 30))),
                                         ("64k", 65536), ("100", 100), (1024, 1024), ("10mb", 10 << 20),
                                         ("2 GiB", 2 << 30)])
def test_sizes_as_go_units(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text, seconds", [("10s", 10), ("1m30s", 90), ("1.5h", 5400), ("500ms", 0.5),
                                           ("0", 0), ("1h2m3s4ms", 3723.004), ("10us", 1e-5)])
def test_durations_as_go(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["10", "s", "-1s", "1x", ""])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_go_duration_round_trip():
    for s in (90, 0.5, 10, 3600, 1e-6, 1.25):
        assert parse_duration(go_duration(s)) == pytest.approx(s)


# --------------------------------------------------------------------------- env files


def test_env_file_as_compose_reads_it(tmp_path):
    ef = parse_env_file(tmp_path / "a.env", textwrap.dedent("""\
        # comment
        PLAIN=value # trailing comment
        export EXPORTED=1
        SINGLE='literal ${X} \\n'
        DOUBLE="tab\\there ${X} \\"q\\" \\$X"
        COLON: yes
        EMPTY=
        REF=${PLAIN}-${X:-dflt}
        INHERITED
        """))
    assert ef.resolve({"X": "x", "INHERITED": "from-device"}.get) == {
        "PLAIN": "value", "EXPORTED": "1", "SINGLE": "literal ${X} \\n", "DOUBLE": 'tab\there x "q" $X',
        "COLON": "yes", "EMPTY": "", "REF": "value-x", "INHERITED": "from-device"}
    assert "INHERITED" not in ef.resolve({}.get) and ef.variables() == ["X", "INHERITED"]


@pytest.mark.parametrize("text, line, message", [
    ("A=1\nB C=2\n", 2, "key cannot contain a space"),
    ("A='open\n", 1, "unterminated quoted value"),
    ("A=1\nB$=2\n", 2, "unexpected character '$'"),
])
def test_env_file_errors_name_the_line(tmp_path, text, line, message):
    with pytest.raises(InputFileError) as err:
        parse_env_file(tmp_path / "bad.env", text)
    assert err.value.line == line and message in err.value.reason


def test_env_file_required_and_precedence(tmp_path):
    (tmp_path / "a.env").write_text("A=from-file\nB=file\n")
    s = service(tmp_path, "env_file: [a.env, {path: missing.env, required: false}]\nenvironment: {A: from-compose}")
    assert s.env == {"A": "from-compose", "B": "file"}
    (tmp_path / "docker-compose.yml").write_text("services:\n  s:\n    image: x\n    env_file: missing.env\n")
    with pytest.raises(InputFileError, match=r"docker-compose.yml:4: key 'services.s.env_file': .*missing.env"):
        load_compose(tmp_path / "docker-compose.yml", "p", {})
