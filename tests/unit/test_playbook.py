"""Playbook loading and validation: errors name the file, the line and the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fleet.errors import InputFileError
from fleet.platform import Platform
from fleet.playbook import BuildSource, NativeSource, PickSource, load_playbook


def write(tmp_path: Path, text: str, name: str = "play.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip())
    return p


@pytest.fixture()
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "app"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY x /x\n")
    return ctx


def test_build_playbook_with_env_expansion(tmp_path, context):
    p = write(tmp_path, """
        name: hello
        image: ${REG}/fleet/hello:${TAG:-1.0}
        source:
          build:
            context: app
            args: {GREETING: hi}
        platforms: [linux/arm/v6, linux/arm64/v8, linux/amd64]
        registry:
          username_env: REG_USER
          password_env: REG_PASSWORD
          ca: app/Dockerfile
        """)
    pb = load_playbook(p, environ={"REG": "198.18.0.1:5443"})
    assert pb.name == "hello"
    assert pb.image == "198.18.0.1:5443/fleet/hello:1.0"
    assert isinstance(pb.source, BuildSource)
    assert pb.source.context == context.resolve()
    assert pb.source.dockerfile == "Dockerfile"
    assert pb.source.args == {"GREETING": "hi"}
    # arm64/v8 normalizes to arm64, as containerd does.
    assert pb.platforms == (Platform.parse("linux/arm/v6"), Platform.parse("linux/arm64"), Platform.parse("linux/amd64"))
    assert pb.registry.username_env == "REG_USER" and pb.registry.insecure is False


def test_platforms_default_to_auto_and_pick_forms(tmp_path):
    p = write(tmp_path, """
        name: app
        image: reg.example:5000/app:2
        source:
          pick:
            linux/arm64: reg.example:5000/app:2-arm64
            linux/arm/v7: reg.example:5000/app:2-armhf
        """)
    pb = load_playbook(p, environ={})
    assert pb.platforms == "auto"
    assert isinstance(pb.source, PickSource)
    assert pb.source.refs[Platform.parse("linux/arm/v7")] == "reg.example:5000/app:2-armhf"
    p2 = write(tmp_path, """
        name: app
        image: reg.example:5000/app:2
        source: {pick: {index: "reg.example:5000/upstream:2"}}
        """, "p2.yaml")
    assert load_playbook(p2, environ={}).source.index == "reg.example:5000/upstream:2"


def test_native_builders(tmp_path, context):
    p = write(tmp_path, """
        name: app
        image: r:5000/app:1
        source:
          native:
            context: app
            builders: {linux/arm/v6: pi-zero, linux/arm64: pi4-64}
        """)
    src = load_playbook(p, environ={}).source
    assert isinstance(src, NativeSource)
    assert src.builders[Platform.parse("linux/arm/v6")] == "pi-zero"


@pytest.mark.parametrize(
    "body, line, needle",
    [
        ("name: a\nimage: r/a:1\nsource: {build: {context: app}}\ncolour: blue\n", 4, "key 'colour': unknown key"),
        ("name: a\nimage: r/a:1\nsource:\n  build:\n    context: app\n    dockerfile: Nope\n", 6, "key 'source.build.dockerfile'"),
        ("name: a\nimage: r/a:1\nsource:\n  build:\n    context: missing\n", 5, "does not exist"),
        ("name: a\nimage: r/a:1\nsource: {build: {context: app}, pick: {index: r/b:1}}\n", 3, "exactly one of"),
        ("name: a\nimage: r/a:1\nsource: {build: {context: app}}\nplatforms:\n  - linux/arm/v7\n  - linux/arm64/v7\n", 6, "platforms.1"),
        ("name: a\nimage: r/a:1\nsource: {build: {context: app}}\nplatforms: [linux/arm/v7, linux/arm/7]\n", 4, "duplicate platform linux/arm/v7"),
        ("name: a\nimage: ${NOPE}/a:1\nsource: {build: {context: app}}\n", 2, "NOPE is not set"),
        ("name: a\nimage: r/a:1\nsource: {build: {context: app}}\nregistry:\n  password: hunter2\n", 5, "inline secrets"),
        ("name: a\nimage: r/a:1\nsource: {build: {context: app}}\nregistry:\n  username_env: U\n", 4, "go together"),
        ("name: a\nimage: r/a:1\nsource: {build: {context: app}}\nregistry: {insecure: 'yes'}\n", 4, "true or false"),
        ("name: Bad Name\nimage: r/a:1\nsource: {build: {context: app}}\n", 1, "key 'name'"),
        ("name: a\nimage: r/a@sha256:" + "0" * 64 + "\nsource: {build: {context: app}}\n", 2, "not a digest"),
        ("name: a\nsource: {build: {context: app}}\n", 1, "missing required key 'image'"),
        ("name: a\nimage: r/a:1\nsource: {pick: {linux/arm/v7l: r/a:1-arm}}\n", 3, "arm/v7l"),
        ("name: a\nimage: [r/a:1\n", 3, "YAML error"),
        ("name: a\nname: b\n", 2, "duplicate key 'name'"),
        ("- just\n- a list\n", 1, "must be a mapping"),
    ],
)
def test_errors_name_file_line_and_key(tmp_path, context, body, line, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(body)
    with pytest.raises(InputFileError) as ei:
        load_playbook(p, environ={})
    msg = str(ei.value)
    assert msg.startswith(f"{p}:{line}: "), msg
    assert needle in msg, msg
    assert "hunter2" not in msg


# ======================================================= deploy keys: container, health ====
from fleet.playbook import ContainerSpec, HealthSpec  # noqa: E402


def test_container_and_health_keys(tmp_path, context):
    p = write(tmp_path, """
        name: hello
        image: r:5000/fleet/hello:1
        source: {build: {context: app}}
        container:
          name: hello-app
          command: "sh /hello.sh --greeting 'hi there'"
          entrypoint: [/bin/busybox]
          env: {PORT: "8080", SECRET_PASSWORD: "${PW}", EMPTY: ""}
          ports: ["8080:8080", "127.0.0.1:9000:9000/udp", "53/udp"]
          volumes: ["/srv/hello:/data:ro", "hello-data:/cache"]
          devices: [/dev/gpiomem, "/dev/ttyUSB0:/dev/ttyS0:rw"]
          restart: on-failure:3
          privileged: true
          network_mode: host
          labels: {com.example.team: iot}
        health:
          running: 3
          command: [/bin/busybox, wget, -q, -O-, "http://127.0.0.1:8080/"]
          http: http://127.0.0.1:8080/
          timeout: 30
          interval: 0.5
        """)
    pb = load_playbook(p, environ={"PW": "pw-value"})
    c = pb.container_spec
    assert c == ContainerSpec(
        name="hello-app",
        command=("sh", "/hello.sh", "--greeting", "hi there"),
        entrypoint=("/bin/busybox",),
        env={"PORT": "8080", "SECRET_PASSWORD": "pw-value", "EMPTY": ""},
        ports=("8080:8080", "127.0.0.1:9000:9000/udp", "53/udp"),
        volumes=("/srv/hello:/data:ro", "hello-data:/cache"),
        devices=("/dev/gpiomem", "/dev/ttyUSB0:/dev/ttyS0:rw"),
        restart="on-failure:3",
        privileged=True,
        network_mode="host",
        labels={"com.example.team": "iot"},
    )
    assert pb.health == HealthSpec(running=3, command=("/bin/busybox", "wget", "-q", "-O-", "http://127.0.0.1:8080/"),
                                   http="http://127.0.0.1:8080/", timeout=30, interval=0.5)


def test_container_and_health_defaults(tmp_path, context):
    p = write(tmp_path, "name: hello\nimage: r:5000/hello:1\nsource: {build: {context: app}}\n")
    pb = load_playbook(p, environ={})
    assert pb.container is None
    assert pb.container_spec == ContainerSpec(name="hello")
    assert pb.health == HealthSpec(running=5.0, command=None, http=None, timeout=60.0, interval=2.0)


_HEAD = "name: a\nimage: r/a:1\nsource: {build: {context: app}}\n"


@pytest.mark.parametrize(
    "body, line, needle",
    [
        (_HEAD + "container:\n  nmae: x\n", 5, "key 'container.nmae': unknown key"),
        (_HEAD + "container:\n  name: 'bad name'\n", 5, "key 'container.name'"),
        (_HEAD + "container:\n  name: app.previous\n", 5, "must not end in .previous"),
        (_HEAD + "container:\n  ports: ['80:eighty']\n", 5, "key 'container.ports.0'"),
        (_HEAD + "container:\n  ports: 8080\n", 5, "must be a list"),
        (_HEAD + "container:\n  volumes:\n    - /a:/b\n    - ./data:/data\n", 7, "absolute path on the device"),
        (_HEAD + "container:\n  volumes: ['/a:relative']\n", 5, "SOURCE:/container/path"),
        (_HEAD + "container:\n  volumes: ['/a:/b:rx']\n", 5, "unknown volume option"),
        (_HEAD + "container:\n  devices: [gpiomem]\n", 5, "/dev/HOST"),
        (_HEAD + "container:\n  devices: ['/dev/a:/dev/b:rwx']\n", 5, "key 'container.devices.0'"),
        (_HEAD + "container:\n  restart: sometimes\n", 5, "key 'container.restart'"),
        (_HEAD + "container:\n  privileged: 'yes'\n", 5, "true or false"),
        (_HEAD + "container:\n  network_mode: 'ho st'\n", 5, "key 'container.network_mode'"),
        (_HEAD + "container:\n  labels: {io.fleet.deployment: x}\n", 5, "reserved"),
        (_HEAD + "container:\n  env: {1BAD: x}\n", 5, "key 'container.env.1BAD'"),
        (_HEAD + "container:\n  env: [A=1]\n", 5, "must be a mapping"),
        (_HEAD + "container:\n  command: []\n", 5, "empty list"),
        (_HEAD + "container:\n  command: \"sh -c 'unterminated\"\n", 5, "cannot split"),
        (_HEAD + "container: [x]\n", 4, "key 'container': must be a mapping"),
        (_HEAD + "health:\n  timeout: 0\n", 5, "key 'health.timeout'"),
        (_HEAD + "health:\n  running: ten\n", 5, "key 'health.running'"),
        (_HEAD + "health:\n  running: 90\n", 5, "longer than health.timeout"),
        (_HEAD + "health:\n  http: 127.0.0.1:8080\n", 5, "not an http"),
        (_HEAD + "health:\n  retries: 3\n", 5, "key 'health.retries': unknown key"),
    ],
)
def test_deploy_key_errors_name_file_line_and_key(tmp_path, context, body, line, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(body)
    with pytest.raises(InputFileError) as ei:
        load_playbook(p, environ={})
    msg = str(ei.value)
    assert msg.startswith(f"{p}:{line}: "), msg
    assert needle in msg, msg
# ================================================= end deploy keys: container, health ====


def test_invalid_image_reference_is_refused_at_its_line(tmp_path, context):
    p = tmp_path / "bad-image.yaml"
    p.write_text("name: a\nimage: 'UPPER CASE::tag'\nsource: {build: {context: app}}\n")
    with pytest.raises(InputFileError) as ei:
        load_playbook(p, environ={})
    assert str(ei.value).startswith(f"{p}:2: key 'image': "), str(ei.value)
