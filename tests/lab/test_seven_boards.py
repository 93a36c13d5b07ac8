"""The sample app (examples/hello) deployed end to end to all seven lab boards, the
big-endian s390x and the 32-bit i386 one included, and verified on each board's own child.

One ``fleet deploy`` of a playbook like playbooks/hello.yaml (own repository, container
name and port, so it does not disturb the quick start's ``hello``), then ``fleet verify``.
What this proves per board: the engine pulled the index entry of the board's own platform
(six platforms for seven boards: pi3-32 and pi4-32on64 share linux/arm/v7), that entry's
binaries are of that platform (publish checks the ELF class, byte order and machine), the
container runs (health: HTTP answered on the board) and verify finds it running that child.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from fleet.lab.hello import prepare_context
from fleet.lab.profiles import PROFILES
from fleet.lab.state import LabPaths
from tests import reportschema
from tests.labfixture import Lab, fleet

pytestmark = pytest.mark.lab

PORT = 18087
NAME = "fleet-seven-hello"


@pytest.fixture(scope="module")
def seven(lab: Lab, tmp_path_factory) -> dict:
    """Deploy once for the module: {"playbook", "deploy" (report), "seconds"}."""
    missing = set(PROFILES) - {d["name"] for d in lab.refresh()["devices"] if d["state"] == "running"}
    assert not missing, f"lab boards not running: {sorted(missing)}"
    work = tmp_path_factory.mktemp("seven")
    ctx = work / "hello"
    made = prepare_context(LabPaths(lab.dir), ctx)
    assert {p.expected_platform for p in PROFILES.values()} <= set(made)
    playbook = work / "seven.yaml"
    playbook.write_text(yaml.safe_dump({
        "name": NAME,
        "image": f"{lab.status['registry']['address']}/lab-test/seven-hello:1.0",
        "source": {"build": {"context": str(ctx)}},
        "platforms": "auto",
        "container": {"name": NAME, "env": {"PORT": str(PORT)}, "restart": "unless-stopped",
                      "network_mode": "host"},
        "health": {"running": 3, "http": f"http://127.0.0.1:{PORT}/", "timeout": 120, "interval": 1},
    }, sort_keys=False))
    reports = work / "reports"
    t0 = time.monotonic()
    cp = fleet("deploy", str(playbook), "-i", lab.inventory_all, "--report-dir", str(reports), timeout=900)
    seconds = time.monotonic() - t0
    assert cp.returncode == 0, f"deploy failed ({cp.returncode}):\n{cp.stdout}\n{cp.stderr}"
    print(f"seven-board deploy: {seconds:.1f} s")
    report = reportschema.load_saved(next(reports.glob("deploy-*.json")))
    yield {"playbook": playbook, "deploy": report, "seconds": seconds, "reports": reports}
    for name in PROFILES:
        lab.ssh(name, f"docker rm -f {NAME} {NAME}.previous {NAME}.failed >/dev/null 2>&1; true", timeout=300)


def test_deploy_puts_each_board_on_its_own_child(seven: dict) -> None:
    report = seven["deploy"]
    entries = {e["platform"]: e for e in report["publish"]["entries"]}
    assert set(entries) == {p.expected_platform for p in PROFILES.values()}
    devices = {d["host"]: d for d in report["devices"]}
    assert set(devices) == set(PROFILES)
    for name, prof in PROFILES.items():
        d = devices[name]
        want = entries[prof.expected_platform]
        assert d["result"] == "verified", (name, d["reason"])
        assert d["platform"] == d["entry_platform"] == prof.expected_platform, name
        assert d["pulled"] == want["manifest_digest"], name
        assert d["config_digest"] == want["config_digest"], name
    # the publish check read each child's binaries: s390x's are 64-bit big-endian, i386's 32-bit
    assert "ELF64 big-endian" in entries["linux/s390x"]["checked"]
    assert "ELF32 little-endian" in entries["linux/386"]["checked"]
    assert len({e["manifest_digest"] for e in entries.values()}) == len(entries)


def test_app_answers_on_every_board(lab: Lab, seven: dict) -> None:
    # uname -m in the container: the kernel's (x86_64 for i386), binfmt's qemu CPU for ARM
    want = {"pi-zero": "armv7l", "pi3-32": "armv7l", "pi4-32on64": "armv7l", "pi4-64": "aarch64",
            "x86": "x86_64", "i386": "x86_64", "s390x": "s390x"}
    for name in PROFILES:
        url = f"http://{lab.device(name)['address']}:{PORT}/"
        body = urllib.request.urlopen(url, timeout=10).read().decode()
        assert body.strip() == f"hello from {want[name]}", name


def test_verify_finds_every_board_on_its_child(lab: Lab, seven: dict) -> None:
    cp = fleet("verify", str(seven["playbook"]), "-i", lab.inventory_all, "--report-dir", str(seven["reports"]),
               timeout=600)
    assert cp.returncode == 0, f"verify failed ({cp.returncode}):\n{cp.stdout}\n{cp.stderr}"
    report = reportschema.load_saved(next(Path(seven["reports"]).glob("verify-*.json")))
    entries = {e["platform"]: e for e in seven["deploy"]["publish"]["entries"]}
    got = {d["host"]: d for d in report["devices"]}
    assert set(got) == set(PROFILES)
    for name, prof in PROFILES.items():
        d = got[name]
        assert d["result"] == "verified", (name, d["reason"], d["checks"])
        assert d["platform"] == prof.expected_platform
        assert d["config_digest"] == entries[prof.expected_platform]["config_digest"], name
        assert all(c["ok"] is not False for c in d["checks"]), (name, d["checks"])
