"""The device-side transaction scripts (fleet.deploy.devicetxn) run for real with the
device's tools (POSIX sh, the docker CLI) against the host's Docker engine, as a device
runs them: commit, rollback, the lock (a live holder refuses, a dead one is stale and taken
over), outcomes collected only when the controller says so, and a transaction that keeps
going when whoever started it is killed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from fleet.deploy.devicetxn import COLLECT, LAUNCH, LOCK, RECOVER, UNLOCK, Outcome, parse_app_records, \
    transaction_script
from fleet.facts import PROBE_SCRIPT, new_boundary, parse_probe_output
from fleet.playbook import HealthSpec
from tests.busybox_cache import fetch_busybox

HEALTH = HealthSpec(running=2, timeout=15, interval=1)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    """A tiny image on the host engine: static busybox, `sleep` by default."""
    ctx = tmp_path_factory.mktemp("txnimg")
    shutil.copy(fetch_busybox(("amd64",))["amd64"], ctx / "busybox")
    (ctx / "Dockerfile").write_text('FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT ["/bin/busybox"]\n'
                                    'CMD ["sleep", "3600"]\n')
    tag = f"fleet-test-txn:{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "build", "-q", "-t", tag, str(ctx)], check=True, capture_output=True,
                   env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    yield tag
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


class Device:
    """This machine as a device: the scripts run with sh as root against the host engine,
    the app folder under a temporary state folder."""

    def __init__(self, root: Path, name: str):
        self.root, self.name = root, name
        self.folder = root / "apps" / name

    def script(self, script: str, deployment: str, extra: str = "", stdin: bytes | None = None) -> list[str]:
        cp = subprocess.run(["sh", "-c", script, "fleet-txn", str(self.folder), deployment, "0", extra],
                            input=stdin, capture_output=True, timeout=300)
        assert cp.returncode == 0, cp.stderr
        return cp.stdout.decode().splitlines()

    def create(self, deployment: str, image: str, *cmd: str) -> None:
        subprocess.run(["docker", "create", "--name", f"{self.name}.new", "--label",
                        f"io.fleet.deployment={deployment}", image, *cmd], check=True, capture_output=True)

    def running(self) -> dict[str, tuple[bool, str]]:
        out = subprocess.run(["docker", "ps", "-a", "--filter", f"name=^{self.name}", "--format",
                              '{{.Names}} {{.State}} {{.Label "io.fleet.deployment"}}'],
                             capture_output=True, text=True).stdout
        return {n: (state == "running", dep) for n, state, dep in (ln.split(" ", 2) for ln in out.splitlines())}

    def clean(self) -> None:
        for suffix in ("", ".new", ".previous", ".failed"):
            subprocess.run(["docker", "rm", "-f", self.name + suffix], capture_output=True)


@pytest.fixture
def device(tmp_path):
    d = Device(tmp_path, f"fleet-txn-{uuid.uuid4().hex[:6]}")
    yield d
    d.clean()


def _launch(device: Device, deployment: str, health: HealthSpec = HEALTH, collect: bool = True) -> Outcome:
    """Lock, start and follow a transaction as the controller does (and, with
    ``collect``, mark its outcome read as the controller does once it has it)."""
    assert device.script(LOCK, deployment, "60")[0] == "OK"
    lines = device.script(LAUNCH, deployment, "120", transaction_script(device.name, deployment, health, 2).encode())
    assert lines[0].startswith("STARTED ")
    out = [ln for ln in lines if ln.startswith("OUTCOME ")]
    assert out, lines
    if collect:
        device.script(RECOVER, deployment)
    return Outcome.parse(out[0].removeprefix("OUTCOME "))


def test_commit_then_a_failing_release_rolls_back_and_every_step_is_recorded(device, image):
    device.create("D1", image)
    o = _launch(device, "D1")
    assert (o.outcome, o.previous) == ("committed", "-") and o.docker_calls > 0
    assert device.running() == {device.name: (True, "D1")}
    device.create("D2", image, "sh", "-c", "sleep 1; exit 3")
    o = _launch(device, "D2")
    assert (o.outcome, o.previous) == ("rolled-back", "D1") and "exit code 3" in o.detail
    assert device.running() == {device.name: (True, "D1"), f"{device.name}.failed": (False, "D2")}
    audit = (device.folder / "audit.log").read_text().splitlines()
    assert [ln.split(" outcome=")[1].split()[0] for ln in audit] == ["committed", "rolled-back"]
    assert not (device.folder / "lock").exists()


def test_outcome_is_collected_only_when_the_controller_says_so(device, image):
    device.create("D1", image)
    _launch(device, "D1", collect=False)
    # the launcher printed the outcome, but only the controller's RECOVER marks it read:
    # a launcher that outlives a controller cut off from it must not mark it
    assert not (device.folder / "collected").exists()
    assert device.script(COLLECT, "D1", "5")[0].startswith("OUTCOME deployment=D1 outcome=committed")
    assert not (device.folder / "collected").exists()
    device.script(RECOVER, "D1")
    assert (device.folder / "collected").read_text().strip() == "D1"


def test_the_transaction_finishes_when_its_starter_is_killed(device, image):
    device.create("D1", image)
    assert device.script(LOCK, "D1", "60") == ["OK"]
    p = subprocess.Popen(["sh", "-c", LAUNCH, "fleet-txn", str(device.folder), "D1", "0", "120"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
    p.stdin.write(transaction_script(device.name, "D1", HealthSpec(running=4, timeout=15, interval=1), 2).encode())
    p.stdin.close()
    time.sleep(2)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    lines = device.script(COLLECT, "D1", "60")
    assert lines[0].startswith("OUTCOME deployment=D1 outcome=committed"), lines
    assert device.running() == {device.name: (True, "D1")}


def test_lock_refuses_a_live_holder_and_recovers_a_dead_one(device, image):
    assert device.script(LOCK, "A", "60") == ["OK"]
    # a fresh lock of a controller that has not handed it to a transaction yet: refused
    refused = device.script(LOCK, "B", "60")
    assert refused[0].startswith("LOCKED A ")
    # ... until the grace is over (here 0 s): then it is stale and taken over
    assert device.script(LOCK, "B", "0")[0].startswith("STALE A ")
    assert (device.folder / "lock" / "info").read_text().startswith("deployment=B\n")
    device.script(UNLOCK, "B")
    assert not (device.folder / "lock").exists()
    # a transaction's lock names its pid: alive -> refused whatever its age; dead -> stale
    assert device.script(LOCK, "D", "60") == ["OK"]
    sleeper = subprocess.Popen(["sleep", "30"])
    info = (device.folder / "lock" / "info").read_text().replace("pid=-", f"pid={sleeper.pid}")
    (device.folder / "lock" / "info").write_text(info)
    assert device.script(LOCK, "E", "0")[0].startswith("LOCKED D ")
    sleeper.kill()
    sleeper.wait()
    assert device.script(LOCK, "E", "0")[0].startswith("STALE D ")


def test_probe_reads_the_transaction_records_without_a_process(device, image):
    device.create("D1", image)
    _launch(device, "D1", collect=False)
    b = new_boundary()
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/tmp", "FLEET_STATE_DIR": str(device.root),
           "DOCKER_HOST": "unix:///nonexistent.sock"}
    out = subprocess.run(["dash", "-c", PROBE_SCRIPT, "fleet-probe", b, "0"], capture_output=True, env=env).stdout
    record = parse_app_records(parse_probe_output(out, b)["fleet_apps"])[device.name]
    assert (record.lock, record.last, record.outcome, record.collected) == (None, "D1", "committed", None)
    assert record.uncollected
    device.script(RECOVER, "D1")
    out = subprocess.run(["dash", "-c", PROBE_SCRIPT, "fleet-probe", b, "0"], capture_output=True, env=env).stdout
    assert not parse_app_records(parse_probe_output(out, b)["fleet_apps"])[device.name].uncollected
