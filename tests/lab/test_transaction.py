"""The swap a device finishes by itself, under real faults on the lab: the controller
SIGKILLed at several moments (also while a broken release fails its health check), the
device's link cut mid-transaction, two deploys at once, the device's engine killed and
restarted mid-transaction, Ctrl-C during a five-device deploy.

Fault matrix on the native x86 board plus one emulated board (pi4-64), the five-device
Ctrl-C run aside; each test brings the devices to the release it needs first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fleet.deploy.devicetxn import settle_seconds
from fleet.lab.net import veth_name
from fleet.lab.profiles import PROFILES
from fleet.playbook import HealthSpec
from tests import reportschema
from tests.lab.apps import Apps
from tests.labfixture import Lab, fleet as lab_fleet

pytestmark = pytest.mark.lab

NAME, PORT, REPO = "fleet-txn", 18282, "fleet-txn/hello"
PAIR = ["x86", "pi4-64"]
FIVE = ["pi-zero", "pi3-32", "pi4-64", "pi4-32on64", "x86"]
#: The bound the issue sets: the health timeout plus a bounded margin.
BOUND = settle_seconds(HealthSpec(timeout=20), 10)


@pytest.fixture(scope="module")
def apps(lab: Lab, tmp_path_factory) -> Apps:
    a = Apps(lab, tmp_path_factory.mktemp("txn"), NAME, PORT, REPO)
    a.clean(FIVE)
    yield a
    a.clean(FIVE)


def _on(apps: Apps, version: str, devices) -> None:
    """Every device of ``devices`` runs ``version`` (deployed when it does not)."""
    if all(apps.serves(d).startswith(f"hello {version} ") for d in devices):
        return
    rows = apps.deploy(apps.playbook(version), *devices)
    assert all(r["result"] in ("verified", "unchanged") for r in rows), json.dumps(rows, indent=1)


def _outcome(apps: Apps, device: str) -> str | None:
    lines = apps.audit(device)
    if not lines:
        return None
    last = lines[-1]
    return last.split(" outcome=")[1].split()[0] if " outcome=" in last else None


def _deployment_of(apps: Apps, device: str) -> str:
    c = apps.container(device)
    return c["Config"]["Labels"]["io.fleet.deployment"] if c else ""


def test_controller_killed_while_a_broken_release_fails_its_health_check(apps: Apps):
    _on(apps, "1", PAIR)
    before = {d: _deployment_of(apps, d) for d in PAIR}
    p = apps.start("deploy", str(apps.playbook("2", mode="wrong-port", timeout=20)), "-i", apps.lab.inventory,
                   "--limit", ",".join(PAIR))
    apps.wait(lambda: all(apps.status(d) == "health" for d in PAIR), 300, "both devices in their health check")
    apps.kill(p)  # SIGKILL: nothing of the controller is left to roll back
    t0 = time.monotonic()
    for d in PAIR:
        apps.wait(lambda: _outcome(apps, d) == "rolled-back", BOUND, f"{d} rolling back by itself", device=d)
        assert apps.serves(d).startswith("hello 1 "), d
        assert _deployment_of(apps, d) == before[d]
        assert apps.container(d, f"{NAME}.previous") is None and apps.container(d, f"{NAME}.new") is None
    assert time.monotonic() - t0 < BOUND


def test_controller_killed_during_a_good_release_the_device_commits_and_the_next_deploy_says_so(apps: Apps):
    _on(apps, "1", ["x86"])
    playbook = apps.playbook("4", running=8)
    p = apps.start("deploy", str(playbook), "-i", apps.lab.inventory, "--limit", "x86")
    apps.wait(lambda: apps.status("x86") == "health", 300, "x86 in its health check")
    apps.kill(p)
    apps.wait(lambda: _outcome(apps, "x86") == "committed", BOUND, "x86 committing by itself", device="x86")
    assert apps.serves("x86").startswith("hello 4 ")
    rows = apps.deploy(playbook, "x86")
    assert rows[0]["result"] == "unchanged", rows
    assert any("ended committed while no controller followed it" in a for a in rows[0]["actions"]), rows[0]


def test_link_cut_mid_transaction(apps: Apps):
    """The device's link goes down while its new release runs its health check, and the
    controller goes away too: the device commits on its own; when the link is back the
    next deploy reports what it did."""
    _on(apps, "1", ["x86"])
    veth = veth_name(PROFILES["x86"].octet)
    playbook = apps.playbook("5", running=8)
    p = apps.start("deploy", str(playbook), "-i", apps.lab.inventory, "--limit", "x86")
    apps.wait(lambda: apps.status("x86") == "health", 300, "x86 in its health check")
    subprocess.run(["ip", "link", "set", veth, "down"], check=True)
    try:
        apps.kill(p)
        time.sleep(15)  # the health check (8 s) ends while the device is cut off
    finally:
        subprocess.run(["ip", "link", "set", veth, "up"], check=True)
    apps.wait(lambda: _outcome(apps, "x86") == "committed", BOUND, "x86's outcome once reachable again",
              device="x86")
    assert apps.serves("x86").startswith("hello 5 ")
    rows = apps.deploy(playbook, "x86")
    assert rows[0]["result"] == "unchanged"
    assert any("ended committed while no controller followed it" in a for a in rows[0]["actions"]), rows[0]


def test_two_deploys_at_once_one_is_refused_neither_corrupts_the_other(apps: Apps):
    _on(apps, "1", ["x86"])
    first = apps.start("deploy", str(apps.playbook("6", running=10)), "-i", apps.lab.inventory, "--limit", "x86",
                       "--json")
    apps.wait(lambda: apps.status("x86") == "health", 300, "the first deploy's health check")
    rows = apps.deploy(apps.playbook("7"), "x86")
    assert rows[0]["result"] == "refused", rows
    assert "its transaction is alive" in rows[0]["reason"] and "holds fleet-txn" in rows[0]["reason"]
    first.wait(300)
    assert first.returncode == 0, Path(f"{first.log}.err").read_text()
    assert reportschema.loads(Path(f"{first.log}.out").read_text(), "deploy-json")[0]["result"] == "verified"
    assert apps.serves("x86").startswith("hello 6 ")


def _kill_engine(device: str) -> None:
    """A reboot-like end of the device's engine: dockerd, its containerd, the shims and
    the containers' processes all SIGKILLed (the device's sshd and shell stay)."""
    ns = f"fleetlab-{device}"
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        if comm in ("dockerd", "containerd") or comm.startswith("containerd-shim") or "docker" in cgroup:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_engine_restarted_mid_transaction_the_device_comes_back_with_a_running_app(apps: Apps):
    _on(apps, "1", ["x86"])
    p = apps.start("deploy", str(apps.playbook("8", running=15)), "-i", apps.lab.inventory, "--limit", "x86")
    apps.wait(lambda: apps.status("x86") == "health", 300, "x86 in its health check")
    _kill_engine("x86")
    time.sleep(3)
    up = lab_fleet("lab", "up", timeout=300)  # starts the board's engine again
    assert up.returncode == 0, up.stderr
    p.wait(BOUND + 60)
    outcome = apps.wait(lambda: _outcome(apps, "x86"), BOUND, "x86's outcome")
    assert outcome in ("committed", "rolled-back")
    served = apps.wait(lambda: apps.serves("x86"), 60, "the app answering again")
    assert served.startswith("hello 8 " if outcome == "committed" else "hello 1 "), (outcome, served)


def test_ctrl_c_during_a_five_device_deploy(apps: Apps, tmp_path: Path):
    _on(apps, "1", FIVE)
    reports = tmp_path / "reports"
    p = apps.start("deploy", str(apps.playbook("9")), "-i", apps.lab.inventory, "--forks", "2", "--json",
                   reports=reports)
    apps.wait(lambda: any(apps.status(d) == "health" for d in FIVE[:2]), 300, "a device in its transaction")
    t0 = time.monotonic()
    os.killpg(p.pid, signal.SIGINT)
    p.wait(BOUND)
    assert p.returncode == 130, Path(f"{p.log}.err").read_text()
    assert time.monotonic() - t0 < BOUND
    rows = {r["host"]: r for r in reportschema.loads(Path(f"{p.log}.out").read_text(), "deploy-json")}
    saved = reportschema.load_saved(next(reports.glob("deploy-*.json")))
    assert {d["host"]: d["result"] for d in saved["devices"]} == {h: r["result"] for h, r in rows.items()}
    # each device's real outcome: the ones at work finished (verified, on the new release);
    # the others were not started
    done = [h for h, r in rows.items() if r["result"] == "verified"]
    assert done and all(apps.serves(h).startswith("hello 9 ") for h in done)
    assert all(r["result"] == "interrupted" for h, r in rows.items() if h not in done), rows
    assert all(apps.serves(h).startswith("hello 1 ") for h in rows if h not in done)
    # a second Ctrl-C stops waiting at once; the device finishes by itself
    p = apps.start("deploy", str(apps.playbook("10", running=10)), "-i", apps.lab.inventory, "--limit", "x86")
    apps.wait(lambda: apps.status("x86") == "health", 300, "x86 in its health check")
    t0 = time.monotonic()
    os.killpg(p.pid, signal.SIGINT)
    time.sleep(1)
    os.killpg(p.pid, signal.SIGINT)
    p.wait(30)
    assert p.returncode == 130 and time.monotonic() - t0 < 15
    apps.wait(lambda: _outcome(apps, "x86") == "committed", BOUND, "x86 finishing by itself", device="x86")
    assert apps.serves("x86").startswith("hello 10 ")
