"""A Compose service on a real engine, both ways: the host's Docker engine behind a real
OpenSSH sshd (tests/sshd.py), reached as the ``fleettest-dock`` login (member of the
``docker`` group) through :class:`ApiEngine` (Engine API on an SSH channel) and through
:class:`CliEngine` (the docker CLI over SSH).

The same :class:`ServiceSpec` (tests/data/compose/engine/docker-compose.yml, every key
fleet maps) is created once each way; the engine's own record of the two containers
(``GET /containers/{id}/json`` on the host's socket, what ``docker container inspect``
prints) must agree on every Config and HostConfig field fleet sets. Every container,
network, volume and image made here has a unique name and is removed by the test that
made it; nothing else on the host engine is touched.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from fleet.compose import ServiceSpec, ensure_stack_objects, load_compose, resolve
from fleet.engine import EngineError
from fleet.engine.api import ApiEngine
from fleet.engine.cli import CliEngine
from tests.busybox_cache import fetch_busybox
from tests.integration.test_engine_api import DOCK_USER, ENGINE_SOCKET, ensure_user, host_api, session
from tests.sshd import start_sshd

DATA = Path(__file__).resolve().parent.parent / "data" / "compose" / "engine"

pytestmark = pytest.mark.skipif(not Path(ENGINE_SOCKET).is_socket(), reason="no Docker engine on this host")


@pytest.fixture(scope="module")
def dock_sshd(tmp_path_factory):
    ensure_user(DOCK_USER, ("docker",))
    server = start_sshd(tmp_path_factory.mktemp("sshd"), extra_config=f"AllowUsers {DOCK_USER}\n")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def busybox_image():
    """An image of the host's static busybox (``/bin/sh``, ``sleep``, ``test``), imported
    into the host engine under a unique tag (``POST /images/create?fromSrc=-``)."""
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    busybox = fetch_busybox((arch,))[arch].read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "data", "tmp", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        f = tarfile.TarInfo("bin/busybox")
        f.size, f.mode = len(busybox), 0o755
        tar.addfile(f, io.BytesIO(busybox))
        for applet in ("sh", "sleep", "test", "echo", "cat"):
            ln = tarfile.TarInfo(f"bin/{applet}")
            ln.type, ln.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(ln)
    repo, tag = "fleet-composetest", uuid.uuid4().hex[:10]
    r = host_api("/v1.41/images/create", "POST", params={"fromSrc": "-", "repo": repo, "tag": tag},
                 data=buf.getvalue(), headers={"Content-Type": "application/x-tar"})
    assert r.status_code == 200, r.text
    yield f"{repo}:{tag}"
    host_api(f"/v1.41/images/{repo}:{tag}", "DELETE", params={"force": 1})


@pytest.fixture
def made():
    """Names of what a test made on the host engine: removed after it, whatever happened."""
    things: dict[str, list[str]] = {"containers": [], "networks": [], "volumes": []}
    yield things
    for c in things["containers"]:
        host_api(f"/v1.41/containers/{c}", "DELETE", params={"force": 1})
    for n in things["networks"]:
        host_api(f"/v1.41/networks/{n}", "DELETE")
    for v in things["volumes"]:  # only volumes this test created
        host_api(f"/v1.41/volumes/{v}", "DELETE")


def inspect(name: str) -> dict:
    r = host_api(f"/v1.41/containers/{name}/json")
    assert r.status_code == 200, r.text
    return r.json()


HOST_CONFIG_FIELDS = ("Binds", "PortBindings", "RestartPolicy", "Privileged", "NetworkMode", "Devices", "CapAdd",
                      "CapDrop", "GroupAdd", "ReadonlyRootfs", "Tmpfs", "Memory", "MemoryReservation", "MemorySwap",
                      "NanoCpus", "ShmSize", "PidsLimit", "LogConfig", "Sysctls", "ExtraHosts", "Init", "Ulimits",
                      "SecurityOpt", "Dns")
CONFIG_FIELDS = ("Labels", "ExposedPorts", "Hostname", "User", "WorkingDir", "StopSignal", "StopTimeout",
                 "Healthcheck", "Image")


def test_same_service_both_ways(dock_sshd, busybox_image, made):
    project = f"fct{uuid.uuid4().hex[:8]}"
    compose = load_compose(DATA / "docker-compose.yml", project, environ={"IMAGE": busybox_image})
    stack = resolve(compose, device="dev", lookup={"site": "kitchen"}.get)
    spec = stack.services["app"]
    assert [n.name for n in stack.networks.values()] == [f"{project}_front", f"{project}_back"]
    made["networks"] += [n.name for n in stack.networks.values()]
    made["volumes"] += [v.name for v in stack.volumes.values()]
    api_name, cli_name = f"{project}-api", f"{project}-cli"
    made["containers"] += [api_name, cli_name]
    labels = {"io.fleet.test": "1"}

    with session(dock_sshd, DOCK_USER) as s, ApiEngine(s, "dev") as api:
        cli = CliEngine(s, "dev")
        for net in stack.networks.values():
            assert api.network(net.name) is None and cli.network(net.name) is None
        for vol in stack.volumes.values():
            assert cli.volume(vol.name) is None
        created = ensure_stack_objects(api, stack)
        assert [(o.kind, o.key, o.action) for o in created] == [
            ("network", "front", "created"), ("network", "back", "created"), ("volume", "data", "created")]
        assert [o.action for o in ensure_stack_objects(cli, stack)] == ["exists"] * 3
        front = cli.network(f"{project}_front")
        assert front.labels == {"com.example.role": "front", "io.fleet.app": project, "io.fleet.network": "front"}
        assert api.network(f"{project}_back").internal is True
        assert api.volume(f"{project}_data").labels == {"com.example.keep": "yes", "io.fleet.app": project,
                                                        "io.fleet.volume": "data"}

        api_id = api.create_container(api_name, spec.image, spec, labels)
        cli_id = cli.create_container(cli_name, spec.image, spec, labels)
        assert api_id and cli_id and api_id != cli_id

        a, c = inspect(api_name), inspect(cli_name)
        for key in HOST_CONFIG_FIELDS:
            if key == "Binds":  # the engine mounts in destination order whatever the list order (sortMounts)
                assert sorted(a["HostConfig"][key]) == sorted(c["HostConfig"][key]), key
                continue
            assert a["HostConfig"][key] == c["HostConfig"][key], key
        for key in CONFIG_FIELDS:
            assert a["Config"][key] == c["Config"][key], key
        assert sorted(a["Config"]["Env"]) == sorted(c["Config"]["Env"])
        # the CLI's --entrypoint takes one word: the rest goes in front of the command
        assert a["Config"]["Entrypoint"] + a["Config"]["Cmd"] == c["Config"]["Entrypoint"] + c["Config"]["Cmd"]
        for doc in (a, c):
            nets = doc["NetworkSettings"]["Networks"]
            assert set(nets) == {f"{project}_front", f"{project}_back"}
            assert {"app", "web"} <= set(nets[f"{project}_front"]["Aliases"])
            assert "app" in nets[f"{project}_back"]["Aliases"]

        # and what the engine recorded is what the Compose file said
        hc, cfg = a["HostConfig"], a["Config"]
        assert {"SITE=kitchen", "EMPTY=", "FROM_FILE=1"} <= set(cfg["Env"])
        assert hc["Binds"] == [f"{project}_data:/data", "/tmp:/host-tmp:ro"]
        assert hc["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
                                      "9000/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
        assert set(cfg["ExposedPorts"]) == {"8080/tcp", "9000/udp", "7000/tcp", "7001/udp", "7002/udp"}
        assert hc["Tmpfs"] == {"/run": "size=64k", "/scratch": "size=1048576,mode=1777"}
        assert hc["Devices"] == [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/fleet-null",
                                  "CgroupPermissions": "r"},
                                 {"PathOnHost": "/dev/zero", "PathInContainer": "/dev/zero",
                                  "CgroupPermissions": "rwm"}]
        assert (hc["CapAdd"], hc["CapDrop"], hc["GroupAdd"]) == (["CAP_SYS_RAWIO"], ["CAP_NET_RAW"], ["997", "1234"])
        assert (hc["Memory"], hc["MemoryReservation"], hc["NanoCpus"], hc["ShmSize"], hc["PidsLimit"]) == (
            32 << 20, 16 << 20, 500_000_000, 8 << 20, 100)
        assert hc["LogConfig"] == {"Type": "local", "Config": {"max-size": "10m", "max-file": "3"}}
        assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
        assert hc["ReadonlyRootfs"] is True and hc["Init"] is True
        assert hc["Sysctls"] == {"net.core.somaxconn": "512"}
        assert hc["ExtraHosts"] == ["gateway.local:10.0.0.1", "v6.local:::1"]
        assert hc["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 2048},
                                 {"Name": "nproc", "Soft": 512, "Hard": 512}]
        assert hc["SecurityOpt"] == ["no-new-privileges:true"] and hc["Dns"] == ["127.0.0.53"]
        assert hc["NetworkMode"] == f"{project}_front"
        assert (cfg["Hostname"], cfg["User"], cfg["WorkingDir"], cfg["StopSignal"], cfg["StopTimeout"]) == (
            "sensor-kitchen", "0:0", "/data", "SIGINT", 90)
        assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "test -d /data"], "Interval": 1_000_000_000,
                                      "Timeout": 2_000_000_000, "StartPeriod": 500_000_000, "Retries": 2}
        assert cfg["Labels"] == {"com.example.site": "kitchen", "io.fleet.test": "1"}

        # both run, and become healthy by the Compose file's check
        for name in (api_name, cli_name):
            api.start(name)
        for name in (api_name, cli_name):
            deadline = time.monotonic() + 30
            while inspect(name)["State"].get("Health", {}).get("Status") != "healthy":
                assert time.monotonic() < deadline, inspect(name)["State"]
                time.sleep(0.2)
            assert "started kitchen" in api.logs(name)  # the local log driver is readable


def test_exec_form_health_check_differs_only_in_its_form(dock_sshd, busybox_image, made):
    """The CLI cannot set an exec-form (CMD) health check: it becomes CMD-SHELL with each
    argument quoted (docs/compose.md). Both pass on an image with /bin/sh."""
    from dataclasses import replace

    from fleet.compose import Healthcheck

    spec = ServiceSpec(name="hc", command=("/bin/sh", "-c", "sleep 60"),
                       healthcheck=Healthcheck(("CMD", "/bin/test", "-d", "/tmp dir"), interval=1.0, retries=1))
    spec = replace(spec, logging=None)
    names = [f"fleet-composetest-hc-{uuid.uuid4().hex[:6]}-{w}" for w in ("api", "cli")]
    made["containers"] += names
    with session(dock_sshd, DOCK_USER) as s, ApiEngine(s, "dev") as api:
        api.create_container(names[0], busybox_image, spec, {})
        CliEngine(s, "dev").create_container(names[1], busybox_image, spec, {})
    assert inspect(names[0])["Config"]["Healthcheck"]["Test"] == ["CMD", "/bin/test", "-d", "/tmp dir"]
    assert inspect(names[1])["Config"]["Healthcheck"]["Test"] == ["CMD-SHELL", "/bin/test -d '/tmp dir'"]
    assert inspect(names[0])["HostConfig"]["LogConfig"] == inspect(names[1])["HostConfig"]["LogConfig"]


def test_networks_and_volumes_both_ways(dock_sshd, busybox_image, made):
    tag = uuid.uuid4().hex[:8]
    with session(dock_sshd, DOCK_USER) as s, ApiEngine(s, "dev") as api:
        cli = CliEngine(s, "dev")
        for way, eng in (("api", api), ("cli", cli)):
            net, vol = f"fleet-composetest-{tag}-{way}", f"fleet-composetest-{tag}-{way}"
            made["networks"].append(net)
            made["volumes"].append(vol)
            assert eng.network(net) is None and eng.volume(vol) is None
            nid = eng.create_network(net, labels={"io.fleet.app": "t"}, internal=True)
            state = api.network(net)
            assert state == cli.network(net)
            assert (state.id, state.name, state.driver, state.labels, state.internal) == (
                nid, net, "bridge", {"io.fleet.app": "t"}, True)
            assert api.network(nid[:12]) is None  # an ID prefix is not a network's name
            with pytest.raises(EngineError):
                eng.create_network(net)  # a name is taken once
            assert eng.create_volume(vol, labels={"io.fleet.app": "t"}, options={"type": "tmpfs",
                                                                                "device": "tmpfs"}) == vol
            v = api.volume(vol)
            assert v == cli.volume(vol)
            assert (v.name, v.driver, v.labels, v.options) == (vol, "local", {"io.fleet.app": "t"},
                                                               {"type": "tmpfs", "device": "tmpfs"})
            ctr = f"fleet-composetest-{tag}-{way}-c"
            made["containers"].append(ctr)
            eng.create_container(ctr, busybox_image, ServiceSpec(name="c", command=("/bin/sleep", "60")), {})
            eng.connect_network(net, ctr, ("alias-a", "alias-b"))
            doc = inspect(ctr)
            assert {"alias-a", "alias-b"} <= set(doc["NetworkSettings"]["Networks"][net]["Aliases"])
            eng.start(ctr)  # the network lists the containers running on it
            assert api.network(net).containers == (doc["Id"],)
        # no way removes a volume: the Engine protocol has no such method
        assert not hasattr(api, "remove_volume") and not hasattr(cli, "remove_volume")
