"""The lab split over two sites (``fleet lab sites up --sites 2``): the controller runs in
its own namespace, which reaches only the broker and the registry, and every device's
work is done by the worker of the device's site (issue 13).

The module brings the sites up (idempotent) and down at its end; the lab itself (the
``lab`` fixture) stays up. Everything the controller does here runs inside
``fleetlab-ctl`` with the controller settings the lab wrote (broker URL, signing identity).
Faults stay on the native x86 board plus one emulated board, one per site.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleet.lab.profiles import PROFILES
from fleet.lab.util import wait_for
from tests.lab.apps import Apps
from tests.labfixture import FLEET, Lab, fleet as lab_fleet

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
CTL = "fleetlab-ctl"
#: One device per site for the fault tests: x86 (native) and pi4-64 (emulated); the lab
#: splits devices in address order, so with five or seven boards they land on two sites.
PAIR = ["x86", "pi4-64"]
#: The sample app under this module's own names (the shared `hello` listens on 8080).
NAME, PORT, REPO = "sites-hello", 18380, "sites/hello"


@dataclass
class Sites:
    lab: Lab
    doc: dict
    root: Path

    @property
    def inventory(self) -> str:
        return self.doc["inventory"]

    def site_of(self, device: str) -> dict:
        return next(s for s in self.doc["sites"] if device in {d["name"] for d in s["devices"]})

    def site_address(self, device: str) -> str:
        return next(d["address"] for d in self.site_of(device)["devices"] if d["name"] == device)

    def worker_log(self, device: str) -> Path:
        return Path(self.site_of(device)["worker"]["log"])

    def env(self) -> dict[str, str]:
        """This process's environment plus the controller's settings (broker URL, signing
        identity) and a private history and report folder."""
        env = dict(os.environ, FLEET_HISTORY=str(self.root / "history.sqlite"),
                   FLEET_REPORT_DIR=str(self.root / "reports"), COLUMNS="250")
        for line in Path(self.doc["controller_env"]).read_text().splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.partition("=")
                env[k] = v
        return env

    def ctl(self, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """``argv`` run in the controller's namespace (text output captured)."""
        return subprocess.run(["ip", "netns", "exec", CTL, *argv], capture_output=True, text=True,
                              timeout=timeout, env=self.env(), cwd=ROOT)

    def up(self, *args: str) -> dict:
        """``fleet lab sites up --sites 2 ARGS``; the new status document is kept."""
        cp = lab_fleet("lab", "sites", "up", "--sites", "2", "--json", *args, timeout=600)
        assert cp.returncode == 0, f"fleet lab sites up {' '.join(args)} -> {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
        self.doc = json.loads(cp.stdout)
        assert self.doc["ok"], json.dumps(self.doc, indent=1)
        return self.doc

    def deploy_args(self, playbook: Path, *devices: str) -> list[str]:
        return [*FLEET, "deploy", str(playbook), "-i", self.inventory, "--executor", "celery", "--json",
                "--limit", ",".join(devices)]

    def deploy(self, playbook: Path, *devices: str) -> dict[str, dict]:
        """``fleet deploy --executor celery`` from the controller's namespace: rows by host."""
        cp = self.ctl(*self.deploy_args(playbook, *devices), timeout=900)
        assert cp.stdout.strip(), cp.stderr
        return {r["host"]: r for r in json.loads(cp.stdout)}

    def start(self, argv: list[str]) -> subprocess.Popen:
        """``argv`` in the controller's namespace in the background; stdout/stderr to files
        (``p.log`` + ``.out``/``.err``)."""
        log = self.root / f"run-{time.monotonic_ns()}"
        p = subprocess.Popen(["ip", "netns", "exec", CTL, *argv], stdout=open(f"{log}.out", "w"),
                             stderr=open(f"{log}.err", "w"), env=self.env(), cwd=ROOT, start_new_session=True)
        p.log = log  # type: ignore[attr-defined]
        return p

    def probe(self, inventory: str | None = None) -> list[dict]:
        cp = self.ctl(sys.executable, "-m", "tests.lab.sitectl", "probe", inventory or self.inventory)
        assert cp.returncode == 0 and cp.stdout.strip(), cp.stderr
        return json.loads(cp.stdout)


@pytest.fixture(scope="module")
def sites(lab: Lab, tmp_path_factory) -> Sites:
    s = Sites(lab, {}, tmp_path_factory.mktemp("sites"))
    s.up()
    yield s
    down = lab_fleet("lab", "sites", "down", timeout=300)
    assert down.returncode == 0, down.stderr
    assert not json.loads(lab_fleet("lab", "status", "--json").stdout)["sites"]["configured"]


def _route(ns: str, addr: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, "ip", "route", "get", addr], capture_output=True, text=True)


def _counters(device: str) -> dict:
    """Packet counters of ``device``'s site link (eth1)."""
    cp = subprocess.run(["ip", "-n", f"fleetlab-{device}", "-j", "-s", "link", "show", "eth1"], capture_output=True,
                        text=True, check=True)
    stats = json.loads(cp.stdout)[0]["stats64"]
    return {"rx": stats["rx"]["packets"], "tx": stats["tx"]["packets"]}


def _wait_log(path: Path, offset: int, text: str, timeout: float) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = path.read_text(errors="replace")[offset:]
        if text in got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"no {text!r} in {path} within {timeout:g} s:\n{path.read_text(errors='replace')[offset:][-3000:]}")


def test_the_controller_reaches_no_device_while_a_probe_through_the_sites_answers_for_every_device(sites: Sites):
    devices = [d["name"] for d in sites.lab.status["devices"]]
    assert sorted(devices) == sorted(d["name"] for s in sites.doc["sites"] for d in s["devices"])
    for name in devices:
        for addr in (sites.lab.device(name)["address"], sites.site_address(name)):
            cp = _route(CTL, addr)
            assert cp.returncode != 0 and "unreachable" in cp.stderr, (name, addr, cp.stdout)
    # the same check sees the two routes the controller does have
    for addr in ("198.18.0.1", "198.18.9.1"):
        assert _route(CTL, addr).returncode == 0, addr
    # a site reaches its own devices only, by their site addresses
    for s in sites.doc["sites"]:
        own = {d["name"] for d in s["devices"]}
        for name in devices:
            assert (_route(s["namespace"], sites.site_address(name)).returncode == 0) == (name in own), (s["name"], name)
            assert _route(s["namespace"], sites.lab.device(name)["address"]).returncode != 0

    t0 = time.monotonic()
    rows = {r["host"]: r for r in sites.probe()}
    took = time.monotonic() - t0
    assert sorted(rows) == sorted(devices)
    for name, r in rows.items():
        site = sites.site_of(name)
        assert r["error"] is None, r
        assert (r["site"], r["worker"]) == (site["name"], site["worker"]["node"]), r
        assert r["platform"] == PROFILES[name].expected_platform, r
    print(f"\nprobe of {len(rows)} devices through two site workers: {took:.1f} s")


def test_an_unsigned_job_injected_into_the_lab_broker_is_refused_and_the_device_sees_no_connection(sites: Sites):
    device = "x86"
    log = sites.worker_log(device)
    offset = len(log.read_text(errors="replace"))
    before = _counters(device)
    job = str(uuid.uuid4())
    cp = sites.ctl(sys.executable, "-m", "tests.lab.sitectl", "inject", sites.inventory, device, job)
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout)["queue"] == f"fleet.site.{sites.site_of(device)['name']}"
    got = _wait_log(log, offset, f"refused job {job}", 60)
    line = next(ln for ln in got.splitlines() if f"refused job {job}" in ln)
    assert "ERROR/fleet.worker" in line and "unsigned" in line, line
    time.sleep(3)  # a worker that ran it would have connected by now
    assert f"job {job} probe" not in log.read_text(errors="replace")[offset:]
    assert _counters(device) == before  # not one packet to or from the device's site link
    # the worker goes on serving, and a signed job does reach the device (the counters move)
    rows = sites.probe()
    assert next(r for r in rows if r["host"] == device)["error"] is None
    after = _counters(device)
    assert after["rx"] > before["rx"] and after["tx"] > before["tx"]


# -- deploy through the sites ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def apps(sites: Sites, tmp_path_factory) -> Apps:
    a = Apps(sites.lab, tmp_path_factory.mktemp("sites-hello"), NAME, PORT, REPO)
    a.clean(PAIR)
    yield a
    a.clean(PAIR)


def _ran_at_its_site(sites: Sites, row: dict) -> None:
    site = sites.site_of(row["host"])
    assert (row["site"], row["worker"]) == (site["name"], site["worker"]["node"]), row


def _running(apps: Apps, device: str) -> str:
    """What the app serves on ``device``, after checking its container runs."""
    c = apps.container(device)
    assert c is not None and c["State"]["Running"], (device, c and c["State"])
    return apps.serves(device)


def test_deploy_across_two_sites_through_celery_every_device_verified_by_its_site(sites: Sites, apps: Apps):
    t0 = time.monotonic()
    rows = sites.deploy(apps.playbook("1"), *PAIR)
    took = time.monotonic() - t0
    assert sorted(rows) == sorted(PAIR)
    assert {sites.site_of(d)["name"] for d in PAIR} == {"site1", "site2"}
    for d, r in rows.items():
        assert r["result"] == "verified", json.dumps(r, indent=1)
        _ran_at_its_site(sites, r)
        assert _running(apps, d).startswith("hello 1 "), d
    cp = sites.ctl(*FLEET, "verify", str(apps.playbook("1")), "-i", sites.inventory, "--executor", "celery",
                   "--json", "--limit", ",".join(PAIR))
    assert cp.returncode == 0, cp.stdout + cp.stderr
    for r in json.loads(cp.stdout):
        _ran_at_its_site(sites, r)
    print(f"\ndeploy of {NAME} to {', '.join(PAIR)} through two site workers: {took:.1f} s")


def test_a_site_worker_killed_mid_rollout_its_job_is_delivered_again_and_no_device_is_left_without_its_app(
        sites: Sites, apps: Apps):
    """SIGKILL of x86's site worker while x86 runs the new release's health check. The
    sites run RabbitMQ here, which re-queues a dead worker's jobs at once (with Redis the
    job comes back only after the visibility timeout, past the job's deadline: the device
    would be reported after its deadline instead); the lab starts the worker again, as a
    site box's service manager would, and it runs the job again: the device-side
    transaction already running makes that harmless."""
    sites.up("--broker", "rabbitmq")
    for d in PAIR:
        if not apps.serves(d).startswith("hello 1 "):
            rows = sites.deploy(apps.playbook("1"), d)
            assert rows[d]["result"] == "verified", rows
    victim = "x86"
    site = sites.site_of(victim)
    log = sites.worker_log(victim)
    offset = len(log.read_text(errors="replace"))
    p = sites.start(sites.deploy_args(apps.playbook("2", running=10), *PAIR))
    try:
        apps.wait(lambda: apps.status(victim) == "health", 300, f"{victim} in its health check")
        os.kill(site["worker"]["pid"], signal.SIGKILL)
        killed = time.monotonic()
        sites.up("--broker", "rabbitmq")  # the site's worker comes back
        assert sites.site_of(victim)["worker"]["pid"] != site["worker"]["pid"]
        p.wait(600)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(30)
    out = Path(f"{p.log}.out").read_text()
    rows = {r["host"]: r for r in json.loads(out)}
    assert p.returncode == 0, Path(f"{p.log}.err").read_text()
    for d in PAIR:
        assert rows[d]["result"] == "verified", json.dumps(rows[d], indent=1)
        _ran_at_its_site(sites, rows[d])
        # no device without its app: running, on the new release here
        assert _running(apps, d).startswith("hello 2 "), d
    got = log.read_text(errors="replace")[offset:]
    assert f"deploy {victim}: ok in" in got and "(redelivered)" in got, got[-3000:]
    print(f"\nworker killed; {victim} verified through the redelivered job {time.monotonic() - killed:.1f} s later")


def test_lab_up_after_a_crash_brings_the_sites_back_as_they_were(sites: Sites):
    """A crash took every site worker and the broker (SIGKILL): ``fleet lab status``
    says so (exit 1), and ``fleet lab up``, which recovers the lab after a crash or a
    reboot, brings the sites back too (same split, same broker kind, a worker per site),
    and a probe through them answers for every device again."""
    before = sites.up()
    victims = [s["worker"]["pid"] for s in before["sites"]] + [before["broker"]["pid"]]
    assert all(victims), json.dumps(before, indent=1)
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: lab_fleet("lab", "status", "--json").returncode == 1, 30, 0.5)
    cp = lab_fleet("lab", "up", "--profiles", "all", "--json", timeout=600)
    assert cp.returncode == 0, cp.stderr
    after = json.loads(cp.stdout)["sites"]
    assert after["ok"] and after["count"] == before["count"] and after["broker"]["kind"] == before["broker"]["kind"]
    assert [s["devices"] for s in after["sites"]] == [s["devices"] for s in before["sites"]]
    assert not {s["worker"]["pid"] for s in after["sites"]} & set(victims)
    sites.doc = after
    rows = sites.probe()
    assert sorted(r["host"] for r in rows if r["platform"] and not r["error"]) == \
        sorted(d["name"] for s in after["sites"] for d in s["devices"]), rows

