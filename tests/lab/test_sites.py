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
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleet.lab.profiles import PROFILES
from tests.labfixture import Lab, fleet as lab_fleet

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
CTL = "fleetlab-ctl"
#: One device per site for the fault tests: x86 (native) and pi4-64 (emulated); the lab
#: splits devices in address order, so with five or seven boards they land on two sites.
PAIR = ["x86", "pi4-64"]


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

    def probe(self, inventory: str | None = None) -> list[dict]:
        cp = self.ctl(sys.executable, "-m", "tests.lab.sitectl", "probe", inventory or self.inventory)
        assert cp.returncode == 0 and cp.stdout.strip(), cp.stderr
        return json.loads(cp.stdout)


@pytest.fixture(scope="module")
def sites(lab: Lab, tmp_path_factory) -> Sites:
    cp = lab_fleet("lab", "sites", "up", "--sites", "2", "--json", timeout=600)
    assert cp.returncode == 0, f"fleet lab sites up -> {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    doc = json.loads(cp.stdout)
    assert doc["ok"], json.dumps(doc, indent=1)
    yield Sites(lab, doc, tmp_path_factory.mktemp("sites"))
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
