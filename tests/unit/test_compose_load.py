"""Reading a Compose file: YAML 1.2, the specification's schema, the keys fleet refuses,
per-device values (inventory variables, then the environment), masking, start order.
Every error is exit 2 naming the file and line (and the device or host and variable)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fleet.compose import DEFAULT_LOGGING, load_compose, resolve, resolve_fleet, start_order
from fleet.compose.schema import SUPPORTED, REFUSED_REASONS, compose_schema
from fleet.errors import InputFileError, UsageError
from fleet.inventory import Host
from fleet.playbook import load_playbook

IOT = Path(__file__).resolve().parent.parent / "data" / "compose" / "iot" / "docker-compose.yml"


def write(tmp_path: Path, text: str, name: str = "docker-compose.yml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def load(tmp_path, text, environ=None):
    return load_compose(write(tmp_path, text), "app", environ or {})


def error(tmp_path, text, environ=None) -> InputFileError:
    with pytest.raises(InputFileError) as err:
        load(tmp_path, text, environ)
    assert err.value.exit_code == 2
    return err.value


def host(name="pi-1", **vars) -> Host:
    return Host(name, vars, ("all",), "inventory.yml", {k: f"host_vars/{name}.yml" for k in vars})


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize("text, line, message", [
    ("services:\n  a:\n    image: x\n    servces: 1\n", 4, "key 'services.a.servces': unknown key: not a key of the "
                                                           "Compose Specification"),
    ("services:\n  a:\n    image: x\n    restart: [always]\n", 4, "key 'services.a.restart': [\"always\"] is not a string"),
    ("services:\n  a:\n    image: x\n    ports: {web: 80}\n", 4, "key 'services.a.ports': {\"web\": 80} is not an array"),
    ("services:\n  a:\n    image: x\n    depends_on:\n      b: {condition: sometime}\n  b:\n    image: y\n", 5,
     "key 'services.a.depends_on.b.condition': \"sometime\" is not one of service_started, service_healthy"),
    ("services:\n  a:\n    image: x\n    volumes:\n      - source: /x\n        target: /y\n", 5,
     "key 'services.a.volumes.0': 'type' is required here"),
    ("servics:\n  a: {image: x}\n", 1, "key 'servics': unknown key"),
])
def test_schema_errors_name_file_line_and_key(tmp_path, text, line, message):
    err = error(tmp_path, text)
    assert err.line == line and err.path.endswith("docker-compose.yml")
    assert message in err.reason


@pytest.mark.parametrize("key, snippet, reason", [
    ("container_name", "container_name: web", "fleet names each service's container"),
    ("deploy", "deploy: {replicas: 2}", "Swarm"),
    ("profiles", "profiles: [debug]", "every service"),
    ("platform", "platform: linux/arm64", "probed facts"),
    ("volumes_from", "volumes_from: [other]", "same named volume"),
    ("ipc", "ipc: host", ""),
])
def test_keys_fleet_does_not_implement_are_refused_by_name(tmp_path, key, snippet, reason):
    err = error(tmp_path, f"services:\n  a:\n    image: x\n    {snippet}\n")
    assert err.line == 4 and f"key 'services.a.{key}': fleet does not implement this Compose key" in err.reason
    assert reason in err.reason and "docs/compose.md" in err.reason


@pytest.mark.parametrize("text, where, line", [
    ("services:\n  a:\n    image: x\nsecrets:\n  s: {file: ./s}\n", "secrets", 4),
    ("services:\n  a:\n    image: x\n    build: {context: ., ssh: [default]}\n", "services.a.build.ssh", 4),
    ("services:\n  a:\n    image: x\n    networks:\n      n: {ipv4_address: 10.0.0.2}\nnetworks:\n  n:\n",
     "services.a.networks.n.ipv4_address", 5),
    ("services:\n  a:\n    image: x\nnetworks:\n  n: {ipam: {driver: default}}\n", "networks.n.ipam", 5),
    ("services:\n  a:\n    image: x\n    volumes:\n      - {type: volume, source: v, target: /v, volume: {subpath: a}}\n"
     "volumes:\n  v:\n", "services.a.volumes.0.volume.subpath", 5),
])
def test_nested_keys_are_refused_too(tmp_path, text, where, line):
    err = error(tmp_path, text)
    assert err.line == line and f"key '{where}': fleet does not implement" in err.reason


def test_every_key_fleet_names_is_a_key_of_the_vendored_schema():
    props = compose_schema()["definitions"]["service"]["properties"]
    assert SUPPORTED[("services", "*")] <= set(props)
    assert {k for k in REFUSED_REASONS if k not in ("secrets", "configs", "include", "models")} <= set(props)


def test_extensions_and_anchors_are_fine(tmp_path):
    c = load(tmp_path, """
        x-defaults: &defaults
          restart: unless-stopped
          x-note: anything
        services:
          a:
            <<: *defaults
            image: busybox
    """)
    s = resolve(c, device="d", lookup={}.get).services["a"]
    assert s.restart == "unless-stopped"


def test_yaml_1_2_as_docker_compose_reads_it(tmp_path):
    c = load(tmp_path, """
        services:
          a:
            image: busybox
            restart: no
            ports: [22:22, 8080:80]
            environment: {ANSWER: yes, WHEN: 2024-01-02, OFF: off}
            command: [echo, on]
    """)
    s = resolve(c, device="d", lookup={}.get).services["a"]
    assert s.restart == "no"                                  # PyYAML's YAML 1.1 says False
    assert s.ports == ("22:22", "8080:80")                    # not 1342, the base-60 reading
    assert s.env == {"ANSWER": "yes", "WHEN": "2024-01-02", "OFF": "off"}
    assert s.command == ("echo", "on")


# --------------------------------------------------------------------------- the stack


def test_iot_stack_for_a_device():
    c = load_compose(IOT, "iot", {})
    assert (c.project, c.built_services, c.picked_services) == ("sensors", ("reader", "uploader"), ("broker",))
    assert c.images["reader"] == "127.0.0.1:5000/sensors/reader:1.0"   # ${FLEET_REGISTRY:-...}
    assert c.variables == ("site", "sensor_interval", "api_token")     # FLEET_REGISTRY is the controller's
    h = host("pi-kitchen", site="kitchen", api_token="tok-123", sensor_interval=15)
    r = resolve(c, h, environ={"site": "not-this"})
    reader, uploader, broker = r.services["reader"], r.services["uploader"], r.services["broker"]
    assert reader.env == {"SITE": "kitchen", "SENSOR_INTERVAL": "15", "BROKER": "mqtt://broker:1883"}
    assert uploader.env["API_TOKEN"] == "tok-123" and uploader.env["SITE_NAME"] == "kitchen"
    assert uploader.env["UPLOAD_URL"] == "https://kitchen.example.net/ingest"
    assert uploader.env["RETRY"] == "5" and uploader.env["BATCH"] == "100"
    assert reader.logging == DEFAULT_LOGGING and uploader.logging.driver == "json-file"
    assert broker.mounts[0].source == "sensors_broker-data" and list(r.volumes) == ["broker-data"]
    assert [n.name for n in r.networks.values()] == ["sensors_default"]
    assert reader.networks[0].aliases == ("reader",)
    assert r.order == ("broker", "reader", "uploader") and r.healthy_before["reader"] == ("broker",)
    assert broker.healthcheck.test[:3] == ("CMD", "mosquitto_sub", "-t") and "$SYS/#" in broker.healthcheck.test
    shown = r.values.shown()
    assert shown == {"site": "kitchen", "sensor_interval": "15", "api_token": "<redacted>"}
    assert r.values.values[0].source == "inventory host_vars/pi-kitchen.yml"
    assert "tok-123" not in str(r.values.to_dict())


def test_required_value_missing_for_one_device_names_device_and_variable():
    c = load_compose(IOT, "iot", {})
    hosts = [host("pi-1", site="a", api_token="t1"), host("pi-2", site="b"), host("pi-3", site="c", api_token="t3")]
    with pytest.raises(UsageError) as err:
        resolve_fleet(c, hosts, environ={})
    text = str(err.value)
    assert err.value.exit_code == 2 and "pi-1" not in text and "pi-3" not in text
    assert f"{IOT}:52: key 'services.uploader.environment.1': device pi-2: required variable api_token is " \
           "missing a value: each site needs its API token" == text
    ok = resolve_fleet(c, [hosts[0], hosts[2]], environ={})
    assert ok["pi-3"].services["uploader"].env["API_TOKEN"] == "t3" and ok["pi-3"].device == "pi-3"


def test_devices_with_the_same_values_share_a_resolution_but_not_their_names():
    c = load_compose(IOT, "iot", {})
    out = resolve_fleet(c, [host("a", site="s", api_token="t"), host("b", site="s", api_token="t")], environ={})
    assert out["a"].services == out["b"].services
    assert (out["a"].values.device, out["b"].values.device) == ("a", "b")


def test_jinja_value_names_host_variable_and_file():
    c = load_compose(IOT, "iot", {})
    with pytest.raises(UsageError) as err:
        resolve(c, host("pi-9", site="{{ inventory_hostname }}", api_token="t"), environ={})
    assert err.value.exit_code == 2
    assert "host 'pi-9': variable site is a Jinja template (set in host_vars/pi-9.yml)" in str(err.value)


def test_a_list_variable_is_refused(tmp_path):
    c = load(tmp_path, "services:\n  a:\n    image: x\n    environment: {A: $site}\n")
    with pytest.raises(UsageError, match="host 'h': variable site is a list; a Compose value needs a string"):
        resolve(c, host("h", site=["a"]), environ={})


def test_unset_variable_is_blank_with_a_warning(tmp_path):
    c = load(tmp_path, "services:\n  a:\n    image: x\n    environment: {A: '${nope}x'}\n")
    r = resolve(c, host("h"), environ={})
    assert r.services["a"].env == {"A": "x"}
    assert r.values.warnings == (f"{tmp_path}/docker-compose.yml:4: key 'services.a.environment.A': variable nope "
                                 "is not set for device h; it is replaced by an empty string",)
    assert r.values.values[0].source == "unset"


def test_controller_environment_after_the_inventory(tmp_path):
    c = load(tmp_path, "services:\n  a:\n    image: x\n    environment: [A=$site, B=$other, C]\n")
    r = resolve(c, host("h", site="from-inventory", C="inv-c"), environ={"site": "env", "other": "env-other"})
    assert r.services["a"].env == {"A": "from-inventory", "B": "env-other", "C": "inv-c"}
    assert [v.source for v in r.values.values] == ["inventory host_vars/h.yml", "environment",
                                                   "inventory host_vars/h.yml"]


def test_values_checked_per_device_after_interpolation(tmp_path):
    c = load(tmp_path, """
        services:
          a:
            image: x
            mem_limit: ${mem}
            healthcheck: {test: "true", retries: "${retries}"}
            privileged: ${priv:-false}
    """)
    r = resolve(c, device="ok", lookup={"mem": "128m", "retries": "3", "priv": "yes"}.get)
    s = r.services["a"]
    assert (s.mem_limit, s.healthcheck.retries, s.privileged) == (128 << 20, 3, True)
    with pytest.raises(InputFileError) as err:
        resolve(c, device="pi-bad", lookup={"mem": "lots", "retries": "3"}.get)
    assert err.value.line == 5 and "key 'services.a.mem_limit': device pi-bad: 'lots' is not a size" in err.value.reason
    with pytest.raises(InputFileError, match=r":6: key 'services.a.healthcheck.retries': device d: 'x' is not a whole"):
        resolve(c, device="d", lookup={"mem": "1m", "retries": "x"}.get)


def test_static_mistakes_are_found_before_any_device(tmp_path):
    err = error(tmp_path, "services:\n  a:\n    image: x\n    mem_limit: lots\n    environment: {A: $v}\n")
    assert err.line == 4 and "'lots' is not a size" in err.reason and "device" not in err.reason
    err = error(tmp_path, "services:\n  a:\n    image: x\n    volumes: [data:/data]\n")
    assert err.line == 4 and "volume 'data' is not defined under the top-level volumes:" in err.reason
    err = error(tmp_path, "services:\n  a:\n    image: x\n    volumes: [/data]\n")
    assert "anonymous volume" in err.reason
    err = error(tmp_path, "services:\n  a:\n    image: x\n    volumes: ['./here:/data']\n")
    assert "absolute path on the device" in err.reason
    err = error(tmp_path, "services:\n  a:\n    build: .\n")
    assert err.line == 2 and "needs image:" in err.reason
    err = error(tmp_path, "services:\n  a:\n    image: x\n    labels: {io.fleet.deployment: x}\n")
    assert "reserved" in err.reason
    err = error(tmp_path, "services:\n  a:\n    image: ${REG}/a:1\n")
    assert err.line == 3 and "variable REG is not set in the controller's environment" in err.reason
    err = error(tmp_path, "services:\n  a:\n    image: x\n    command: echo ${oops\n")
    assert err.line == 4 and "invalid interpolation format" in err.reason


def test_depends_on_order_and_cycles(tmp_path):
    c = load(tmp_path, """
        services:
          web: {image: x, depends_on: [api]}
          api: {image: x, depends_on: {db: {condition: service_healthy}, cache: {condition: service_started}}}
          cache: {image: x}
          db: {image: x}
    """)
    assert start_order(c) == ["cache", "db", "api", "web"]
    err = error(tmp_path, """
        services:
          a: {image: x, depends_on: [b]}
          b: {image: x, depends_on: [c]}
          c: {image: x, depends_on: [a]}
          d: {image: x}
    """)
    assert "depends_on makes a cycle: a -> b -> c -> a" in err.reason and err.line == 3
    err = error(tmp_path, "services:\n  a: {image: x, depends_on: [ghost]}\n")
    assert "service 'ghost' is not a service of this Compose file" in err.reason


def test_secret_masking(tmp_path):
    c = load(tmp_path, """
        services:
          a:
            image: x
            environment:
              DB_PASSWORD: ${pw}
              PLAIN: ${api_key}
              HOST: ${db_host}
    """)
    r = resolve(c, device="d", lookup={"pw": "hunter2", "api_key": "k", "db_host": "db"}.get)
    assert r.values.shown() == {"pw": "<redacted>", "api_key": "<redacted>", "db_host": "db"}
    assert r.services["a"].env["DB_PASSWORD"] == "hunter2"     # the container gets it


# --------------------------------------------------------------------------- playbooks


def test_playbook_compose_key(tmp_path):
    pb = write(tmp_path, f"name: sensors\ncompose: {IOT}\nplatforms: [linux/arm/v6]\n", "playbook.yml")
    p = load_playbook(pb, environ={})
    assert p.compose.built_services == ("reader", "uploader") and p.image is None and p.source is None
    for extra, line in (("container: {name: x}", 3), ("image: r/x:1", 3), ("health: {http: 'http://x/'}", 3)):
        pb.write_text(f"name: sensors\ncompose: {IOT}\n{extra}\n")
        with pytest.raises(InputFileError) as err:
            load_playbook(pb, environ={})
        assert err.value.line == line and "compose:" in err.value.reason
    pb.write_text("name: sensors\ncompose: missing.yml\n")
    with pytest.raises(InputFileError, match=r"playbook.yml:2: key 'compose': .*missing.yml is not a file"):
        load_playbook(pb, environ={})


def test_playbook_container_form_is_unchanged(tmp_path):
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\n")
    pb = write(tmp_path, "name: hello\nimage: r.example/x:1\nsource: {build: {context: ctx}}\n"
                         "container: {env: {A: '1'}, volumes: ['/srv:/data:ro']}\n", "playbook.yml")
    p = load_playbook(pb, environ={})
    assert p.compose is None and p.container.env == {"A": "1"}
    s = p.container.to_service()
    assert s.volumes == ("/srv:/data:ro",) and s.logging is None and s.env == {"A": "1"}


def test_docs_name_every_supported_and_refused_key():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "compose.md").read_text()
    supported, refused = docs.split("## Services: supported keys")[1].split("## Keys fleet refuses")
    props = set(compose_schema()["definitions"]["service"]["properties"])
    for key in SUPPORTED[("services", "*")]:
        assert f"| `{key}`" in supported or f"`{key}`" in supported.split("\n| key")[1], key
    for key in props - SUPPORTED[("services", "*")]:
        assert f"`{key}`" in refused, key


def test_stack_objects_created_once_and_externals_must_exist(tmp_path):
    """Pure decision on an in-memory engine: create what is missing, with fleet's labels;
    an external network or volume that is missing fails the device."""
    from fleet.compose import ensure_stack_objects
    from fleet.engine import EngineError

    class Engine:
        device = "d"

        def __init__(self):
            self.nets, self.vols = {"shared": {}}, {}

        def network(self, name):
            return self.nets.get(name)

        def create_network(self, name, **kw):
            self.nets[name] = kw

        def volume(self, name):
            return self.vols.get(name)

        def create_volume(self, name, **kw):
            self.vols[name] = kw

    c = load(tmp_path, """
        services:
          a: {image: x, networks: [own, shared], volumes: ['data:/d', 'old:/o']}
        networks:
          own: {driver: bridge}
          shared: {external: true}
        volumes:
          data:
          old: {external: true, name: legacy}
    """)
    stack = resolve(c, device="d", lookup={}.get)
    eng = Engine()
    with pytest.raises(EngineError, match="external volume 'legacy' \\(volumes.old\\) does not exist"):
        ensure_stack_objects(eng, stack)
    assert eng.nets == {"shared": {}} and eng.vols == {}     # nothing created on a device that lacks one
    eng.vols["legacy"] = {}
    done = ensure_stack_objects(eng, stack)
    assert [(o.name, o.action) for o in done] == [("app_own", "created"), ("shared", "exists"),
                                                   ("app_data", "created"), ("legacy", "exists")]
    assert eng.nets["app_own"]["labels"] == {"io.fleet.app": "app", "io.fleet.network": "own"}
    assert eng.nets["app_own"]["driver"] == "bridge"
    assert [o.action for o in ensure_stack_objects(eng, stack)] == ["exists"] * 4
