"""A two-service Compose stack on the lab (issue: real apps as Compose stacks).

The stack is the repository's example (examples/stack: a worker counting into the named
volume ``data``, a web service serving what it wrote), renamed for this module (project
``cstack``, port 8083, repository ``fleet/cstack``) and deployed to the native x86 device
(group ``north``) and the emulated pi4-64 (group ``south``), each group giving its devices
their own ``SITE``. One module-scoped story: release 1, release 2 (the volume's count goes
on), a rollback (it still goes on), a release whose web health check fails (both services
back on the previous release, the same containers).
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from fleet.lab.hello import prepare_context
from fleet.lab.state import LabPaths
from tests.labfixture import FLEET
from tests.lab.apps import Apps, on_each

pytestmark = pytest.mark.lab

REPO_ROOT = Path(__file__).resolve().parents[2]
DEVICES = {"x86": ("north", "x86_64", "linux/amd64"), "pi4-64": ("south", "aarch64", "linux/arm64")}
PORT = 8083
PROJECT = "cstack"
PAGE = re.compile(r"^site (\w+) release (\d+) on (\S+) count (\d+)$")


@pytest.fixture(scope="module")
def stack(lab, tmp_path_factory):
    root = tmp_path_factory.mktemp("cstack")
    apps = Apps(lab, root, PROJECT, PORT, "fleet/cstack")
    ctx = root / "ctx"
    prepare_context(LabPaths(lab.dir), ctx)
    compose = (REPO_ROOT / "examples/stack/docker-compose.yml").read_text()
    compose = (compose.replace("name: stack", f"name: {PROJECT}").replace("8081", str(PORT))
               .replace("/fleet/stack:", "/fleet/cstack:").replace("context: ../hello", f"context: {ctx}"))
    # the engine's health checks every second and unhealthy after 4 failures (the example
    # says 2 s and 10): the same transitions, the broken release found in 4 s, not 20
    compose = compose.replace("interval: 2s", "interval: 1s").replace("retries: 10", "retries: 4")
    assert f"/fleet/cstack:" in compose and str(ctx) in compose and "interval: 2s" not in compose
    (root / "docker-compose.yml").write_text(compose)
    playbook = root / "cstack.yaml"
    playbook.write_text(textwrap.dedent(f"""\
        name: {PROJECT}
        compose: docker-compose.yml
        platforms: auto
        health: {{running: 3, timeout: 150, interval: 1}}
        """))
    sites = root / "sites.yaml"
    sites.write_text(textwrap.dedent("""\
        all:
          children:
            north: {hosts: {x86: }, vars: {SITE: north}}
            south: {hosts: {pi4-64: }, vars: {SITE: south}}
        """))
    _clean(apps)
    yield apps, playbook, sites
    _clean(apps)


def _clean(apps: Apps) -> None:
    on_each(DEVICES, lambda d: apps.sh(
        d, f"docker rm -f {PROJECT}-web {PROJECT}-worker >/dev/null 2>&1; "
           f"docker ps -aq --filter label=io.fleet.app={PROJECT} | xargs -r docker rm -f >/dev/null 2>&1; "
           f"docker volume rm -f {PROJECT}_data >/dev/null 2>&1; "
           f"ids=$(docker images -q {apps.registry}/fleet/cstack); [ -z \"$ids\" ] || "
           f"docker rmi -f $ids >/dev/null 2>&1; rm -rf \"$HOME/.fleet/apps/{PROJECT}\"; true"))


def _fleet(apps: Apps, *args: str, env: dict[str, str] | None = None, timeout: float = 900):
    return subprocess.run([*FLEET, *args], capture_output=True, text=True, timeout=timeout,
                          env={**apps.env(apps.root / "reports"), **(env or {})})


def _deploy(apps: Apps, playbook: Path, sites: Path, command: str = "deploy", *limit: str,
            env: dict[str, str] | None = None) -> tuple[int, dict[str, dict]]:
    cp = _fleet(apps, command, str(playbook), "-i", apps.lab.inventory, "-i", str(sites), "--json",
                "--limit", ",".join(limit or DEVICES), env=env)
    assert cp.stdout.strip(), cp.stderr
    return cp.returncode, {r["host"]: r for r in json.loads(cp.stdout)}


def _page(apps: Apps, device: str) -> tuple[str, int, str, int]:
    """(site, release, machine, count) the web service serves on ``device``."""
    text = apps.wait(lambda: apps.sh(device, f"wget -q -O- http://127.0.0.1:{PORT}/ 2>/dev/null || true",
                                     timeout=30).strip(), 60, f"the page on {device}")
    m = PAGE.match(text)
    assert m, text
    return m.group(1), int(m.group(2)), m.group(3), int(m.group(4))


def _containers(apps: Apps, device: str) -> dict[str, dict]:
    return {svc: apps.container(device, f"{PROJECT}-{svc}") for svc in ("web", "worker")}


def test_a_missing_value_for_a_device_is_a_usage_error_before_anything_is_touched(stack):
    apps, playbook, _ = stack
    cp = _fleet(apps, "deploy", str(playbook), "-i", apps.lab.inventory, "--limit", "x86", "--json")
    assert cp.returncode == 2, cp.stdout + cp.stderr
    doc = json.loads(cp.stdout)
    assert "device x86: required variable SITE is missing a value" in doc["error"]
    assert "docker-compose.yml:" in doc["error"]
    assert apps.container("x86", f"{PROJECT}-web") is None
    assert not apps.sh("x86", f"docker images -q {apps.registry}/fleet/cstack").strip()


def test_releases_rollback_and_a_failing_service_keep_the_volume(stack):
    apps, playbook, sites = stack
    # release 1: both services on each device's own child, with its own SITE
    code, rows = _deploy(apps, playbook, sites)
    assert code == 0 and all(r["result"] == "verified" for r in rows.values()), rows
    first: dict[str, dict[str, dict]] = {}
    for device, (site, machine, platform) in DEVICES.items():
        r = rows[device]
        assert {s["service"] for s in r["services"]} == {"web", "worker"}
        for s in r["services"]:
            assert s["entry_platform"] == platform and s["result"] == "verified", s
        first[device] = _containers(apps, device)
        for svc, c in first[device].items():
            assert c["State"]["Running"], (device, svc)
            assert c["Image"] == next(s["config_digest"] for s in r["services"] if s["service"] == svc)
        worker_env = first[device]["worker"]["Config"]["Env"]
        assert f"SITE={site}" in worker_env
        assert first[device]["web"]["HostConfig"]["LogConfig"]["Type"] == "local"  # the SD card default
        vol = json.loads(apps.sh(device, f"docker volume inspect {PROJECT}_data"))[0]
        assert vol["Labels"]["io.fleet.app"] == PROJECT
        assert _page(apps, device)[:3] == (site, 1, machine)

    # release 2: new containers, the volume's count goes on
    before = {d: _page(apps, d)[3] for d in DEVICES}
    code, rows = _deploy(apps, playbook, sites, env={"STACK_RELEASE": "2"})
    assert code == 0 and all(r["result"] == "verified" for r in rows.values()), rows
    second = {d: _containers(apps, d) for d in DEVICES}
    for device, (site, machine, _) in DEVICES.items():
        assert second[device]["web"]["Id"] != first[device]["web"]["Id"]
        site_, release, machine_, count = _page(apps, device)
        assert (site_, release, machine_) == (site, 2, machine)
        assert count > before[device], (device, count, before[device])

    # rollback: release 1's images again (already on the device), the count still goes on
    before = {d: _page(apps, d)[3] for d in DEVICES}
    code, rows = _deploy(apps, playbook, sites, "rollback", env={"STACK_RELEASE": "2"})
    assert code == 0 and all(r["result"] == "verified" for r in rows.values()), rows
    for device in DEVICES:
        now = _containers(apps, device)
        for svc in ("web", "worker"):
            assert now[svc]["Image"] == first[device][svc]["Image"], (device, svc)
        assert _page(apps, device)[3] > before[device]

    # a release whose web health check fails: both services back, the same containers
    kept = _containers(apps, "x86")
    before_count = _page(apps, "x86")[3]
    code, rows = _deploy(apps, playbook, sites, "deploy", "x86", env={"STACK_RELEASE": "3", "BREAK": "yes"})
    r = rows["x86"]
    assert code == 1 and r["result"] == "rolled-back", r
    assert f"{PROJECT}-web" in r["reason"] and "healthcheck" in r["reason"]
    assert {s["service"]: s["result"] for s in r["services"]} == {"web": "rolled-back", "worker": "rolled-back"}
    now = _containers(apps, "x86")
    for svc in ("web", "worker"):
        assert now[svc]["Id"] == kept[svc]["Id"] and now[svc]["State"]["Running"], svc
    assert _page(apps, "x86")[3] > before_count

    # verify reads both services back per device
    cp = _fleet(apps, "verify", str(playbook), "-i", apps.lab.inventory, "-i", str(sites), "--json",
                "--limit", ",".join(DEVICES), env={"STACK_RELEASE": "1"})
    rows = {r["host"]: r for r in json.loads(cp.stdout)}
    assert cp.returncode == 0, cp.stdout + cp.stderr
    for device in DEVICES:
        assert {s["service"]: s["result"] for s in rows[device]["services"]} == {"web": "verified",
                                                                                 "worker": "verified"}
