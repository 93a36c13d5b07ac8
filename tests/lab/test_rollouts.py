"""Rollouts on the lab's five default boards, with real faults: batches with a canary, a
failure threshold crossed by a device whose sshd stops mid-rollout, the retry file,
``fleet rollback`` from the images still on the devices, pruning over three releases,
``fleet history`` (also with two fleet processes writing it at once) and ``fleet status``.

The module's fleet is the lab's five default boards with the native x86 board first, so
it is the canary of ``batches: [1, "50%", "100%"]``: batch 1 = x86, batch 2 = pi4-64 and
pi3-32, batch 3 = pi-zero and pi4-32on64 (Ansible ``serial``: 50% of 5 is 2, the last
batch takes the rest). Release 1 goes on all five once (module fixture); each test then
builds on what the earlier ones left (checked, and brought about when a test runs alone):

  1 everywhere -> 2 fails its health check on the canary (nothing else touched) ->
  3 stopped in batch 2 by pi3-32's sshd going away (batch 3 skipped), then finished with
  ``--limit @retry file`` -> 4 on x86 and pi4-64 (three releases in a row: 1 pruned,
  3 kept) -> rollback of all five to their previous release (no pull) -> status -> history.

Own app name, container, port and repository (``roll-hello``, 18390, ``roll/hello``), its
own history file and report folder, so other users of the lab are not disturbed.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from fleet.lab.state import LabPaths, load_state
from fleet.results import Result
from fleet.rollout import FAILED_RESULTS
from tests.lab.apps import Apps
from tests.labfixture import Lab, fleet as lab_fleet

pytestmark = pytest.mark.lab

NAME, PORT, REPO = "roll-hello", 18390, "roll/hello"
#: Inventory order of the module's fleet: the native board first (the canary).
FIVE = ["x86", "pi4-64", "pi3-32", "pi-zero", "pi4-32on64"]
BATCH1, BATCH2, BATCH3 = FIVE[:1], FIVE[1:3], FIVE[3:]
PAIR = ["x86", "pi4-64"]
CUT = "pi3-32"  # the batch 2 device whose sshd goes away
BATCHES = 'rollout:\n  batches: [1, "50%", "100%"]\n'
#: The app of tests/lab/apps.py, but its shell stays PID 1 and ends on SIGTERM (busybox
#: httpd as PID 1 ignores it, and each swap would wait the 10 s stop timeout).
SERVE = """bb=/bin/busybox
$bb mkdir -p /www
echo "hello $($bb cat /VERSION) from $($bb uname -m)" > /www/index.html
$bb httpd -f -p "{port}" -h /www &
trap '$bb kill $!; exit 0' TERM
wait
"""
CONFIG = "io.fleet.config-digest"
PREVIOUS_CONFIG = "io.fleet.previous-config-digest"


class Fleet(Apps):
    """:class:`Apps` on the module's inventory, with its report folder, and a log of the
    deployments and rollbacks the tests ran (for the history test)."""

    def __init__(self, lab: Lab, root: Path, inventory: str):
        super().__init__(lab, root, NAME, PORT, REPO)
        self.inventory = inventory
        self.reports = root / "reports"
        self.ran: dict[str, dict[str, str]] = {}  # deployment id -> {host: result}

    def context(self, version: str, mode: str = "ok") -> Path:
        ctx = super().context(version, mode)
        if mode != "exit":
            (ctx / "hello.sh").write_text(SERVE.format(port=self.port + (mode == "wrong-port")))
        return ctx

    def run(self, command: str, playbook: Path, *args: str, timeout: float = 900) -> tuple[int, list[dict], str]:
        """``fleet COMMAND PLAYBOOK -i INVENTORY --json ARGS``: (exit status, rows, stderr)."""
        cp = self.fleet(command, str(playbook), "-i", self.inventory, "--json", *args, timeout=timeout)
        assert cp.stdout.strip(), f"fleet {command}: no JSON on stdout\n{cp.stderr}"
        rows = json.loads(cp.stdout)
        if command in ("deploy", "rollback") and rows and "--check" not in args:
            self.ran[rows[0]["deployment"]] = {r["host"]: r["result"] for r in rows}
        return cp.returncode, rows, cp.stderr

    def saved(self, deployment: str, kind: str = "deploy") -> dict:
        return json.loads((self.reports / f"{kind}-{deployment}.json").read_text())

    def label(self, device: str, key: str) -> str:
        c = self.container(device)
        return (c or {}).get("Config", {}).get("Labels", {}).get(key, "")

    def on(self, version: str, devices) -> None:
        """Every device of ``devices`` runs ``version`` (deployed where it does not)."""
        todo = [d for d in devices if not self.serves(d).startswith(f"hello {version} ")]
        if todo:
            rc, rows, err = self.run("deploy", self.playbook(version), "--limit", ",".join(todo))
            assert rc == 0, json.dumps(rows, indent=1) + err

    def touched(self, device: str) -> tuple[str, str, str]:
        """What a deploy changes on a device: the app container's id, start time, image."""
        c = self.container(device) or {}
        return c.get("Id", ""), c.get("State", {}).get("StartedAt", ""), c.get("Image", "")

    def images(self, device: str) -> set[str]:
        """Image IDs of the app's repository on the device's engine."""
        out = self.sh(device, f"docker images --no-trunc -q {self.registry}/{REPO}")
        return set(out.split())


def _rows(rows: list[dict]) -> dict[str, dict]:
    return {r["host"]: r for r in rows}


@pytest.fixture(scope="module")
def fl(lab: Lab, tmp_path_factory) -> Fleet:
    """The module's fleet, release 1 on all five boards."""
    root = tmp_path_factory.mktemp("rollouts")
    root.chmod(0o700)
    doc = yaml.safe_load(Path(lab.inventory).read_text())
    hosts = doc["all"]["children"]["lab"]["hosts"]
    doc["all"]["children"]["lab"]["hosts"] = {h: hosts[h] for h in FIVE}
    inventory = root / "inventory.yaml"
    inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    f = Fleet(lab, root, str(inventory))
    f.clean(FIVE)
    try:
        rc, rows, err = f.run("deploy", f.playbook("1"))
        assert rc == 0 and {r["result"] for r in rows} == {"verified"}, json.dumps(rows, indent=1) + err
        yield f
    finally:
        f.clean(FIVE)


def test_a_release_failing_on_the_canary_stops_the_rollout_after_batch_1(fl: Fleet):
    fl.on("1", FIVE)
    before = {d: fl.touched(d) for d in FIVE[1:]}
    # the canary's health check can never pass (the app serves another port)
    cp = fl.fleet("deploy", str(fl.playbook("2", mode="wrong-port", timeout=15, rollout=BATCHES)),
                  "-i", fl.inventory)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert "stopped at batch 1 of 3: all 1 device of the batch failed" in cp.stdout, cp.stdout
    deployment = re.search(r"\(deployment (\S+)\)", cp.stdout).group(1)
    saved = fl.saved(deployment)
    fl.ran[deployment] = {d["host"]: d["result"] for d in saved["devices"]}
    assert saved["batches"] == [BATCH1, BATCH2, BATCH3]
    assert saved["stopped"] == "batch 1 of 3: all 1 device of the batch failed"
    rows = _rows(saved["devices"])
    assert rows["x86"]["result"] == "rolled-back", rows["x86"]
    assert "new version unhealthy" in rows["x86"]["reason"]
    for d in FIVE[1:]:
        assert rows[d]["result"] == "skipped", rows[d]
        assert rows[d]["reason"] == "not touched: the rollout stopped at batch 1 of 3: all 1 device of the batch failed"
    # the canary runs release 1 again; nobody else was touched
    assert fl.serves("x86").startswith("hello 1 ")
    assert {d: fl.touched(d) for d in FIVE[1:]} == before
    # a CI log (stderr is not a terminal) shows a line per device as it finishes
    assert re.search(r"^x86: rolled-back \(new version unhealthy", cp.stderr, re.M), cp.stderr
    retry = (fl.reports / f"{NAME}.retry").read_text().split()
    assert retry == FIVE


def _sshd_pid(lab: Lab, device: str) -> int:
    return load_state(LabPaths(lab.dir))["devices"][device]["sshd"]["pid"]


def _ss(netns: str | None, filt: str) -> list[tuple[str, str, list[int]]]:
    """Established TCP sockets: (local, peer, pids) per ``ss`` (in ``netns``)."""
    argv = (["ip", "netns", "exec", netns] if netns else []) + ["ss", "-tnpH", "state", "established", filt]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        f = line.split()
        rows.append((f[2], f[3], [int(p) for p in re.findall(r"pid=(\d+)", line)]))
    return rows


def _cut_sshd(lab: Lab, device: str, controller: int) -> None:
    """The device's sshd goes away for the controller: its listening sshd stops (new
    connections refused) and the sshd processes serving ``controller``'s sessions (the
    process group of a fleet run) are killed. Other users' sessions are left alone."""
    address = lab.device(device)["address"]
    subprocess.run(["kill", "-TERM", str(_sshd_pid(lab, device))], check=True)
    ours = {local.rsplit(":", 1)[1] for local, _, pids in _ss(None, f"( dst {address}:22 )")
            if any(_pgid(p) == controller for p in pids)}
    for _, peer, pids in _ss(f"fleetlab-{device}", "( sport = :22 )"):
        if peer.rsplit(":", 1)[1] in ours:
            for p in pids:
                subprocess.run(["kill", "-KILL", str(p)], check=False)


def _pgid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return -1


def test_sshd_stopped_during_batch_2_stops_the_rollout_and_the_retry_file_finishes_it(fl: Fleet, lab: Lab):
    fl.on("1", FIVE)
    before = {d: fl.touched(d) for d in BATCH3}
    playbook = fl.playbook("3", rollout=BATCHES + "  max_fail: 0\n  keep_images: 2\n")
    p = fl.start("deploy", str(playbook), "-i", fl.inventory, "--json", reports=fl.reports)
    err = Path(f"{p.log}.err")
    try:
        # batch 2 starts as soon as the canary's line is out
        fl.wait(lambda: p.poll() is not None or re.search(r"^x86: verified", err.read_text(), re.M), 300,
                "the canary verified")
        assert p.poll() is None, err.read_text()
        _cut_sshd(lab, CUT, p.pid)
        p.wait(600)
    finally:
        if p.poll() is None:
            fl.kill(p)
        up = lab_fleet("lab", "up", timeout=300)  # starts the device's sshd again
        assert up.returncode == 0, up.stderr
    assert p.returncode == 1, err.read_text()
    rows = json.loads(Path(f"{p.log}.out").read_text())
    fl.ran[rows[0]["deployment"]] = {r["host"]: r["result"] for r in rows}
    saved = fl.saved(rows[0]["deployment"])
    assert saved["batches"] == [BATCH1, BATCH2, BATCH3]
    assert saved["stopped"].startswith("batch 2 of 3: 1 of 2 devices failed, more than max_fail 0"), saved["stopped"]
    rows = _rows(rows)
    assert rows["x86"]["result"] == "verified" and rows["pi4-64"]["result"] == "verified", rows
    # its session dropped under it: unreachable (which counts as failed), not an engine fault
    assert rows[CUT]["result"] == "unreachable" and Result.UNREACHABLE in FAILED_RESULTS, rows[CUT]
    assert "connection lost" in rows[CUT]["reason"] or "refused" in rows[CUT]["reason"], rows[CUT]
    for d in BATCH3:
        assert rows[d]["result"] == "skipped" and "stopped at batch 2 of 3" in rows[d]["reason"], rows[d]
    assert {d: fl.touched(d) for d in BATCH3} == before
    retry = fl.reports / f"{NAME}.retry"
    assert retry.read_text().split() == [CUT, *BATCH3]
    assert f"--limit @{retry}" in err.read_text()
    # its sshd back, the retry file finishes the rollout (all at once: --batch 100%)
    rc, again, err2 = fl.run("deploy", playbook, "--limit", f"@{retry}", "--batch", "100%")
    assert rc == 0, json.dumps(again, indent=1) + err2
    assert sorted(r["host"] for r in again) == sorted([CUT, *BATCH3])
    assert all(r["result"] in ("verified", "unchanged") for r in again), again
    assert all(fl.serves(d).startswith("hello 3 ") for d in FIVE)
    assert retry.read_text() == ""


def test_three_releases_in_a_row_keep_two_images(fl: Fleet):
    """keep_images 2: after releases 1, 3, 4 on a device, the image of 1 is gone, 3's is
    still there (what a rollback needs), 4's runs."""
    fl.on("3", PAIR)  # after 1 (the module's first release)
    had = {d: fl.images(d) for d in PAIR}
    first = {d: fl.label(d, PREVIOUS_CONFIG) for d in PAIR}
    second = {d: fl.label(d, CONFIG) for d in PAIR}
    assert all(first[d] in had[d] and second[d] in had[d] for d in PAIR), (first, second, had)
    rc, rows, err = fl.run("deploy", fl.playbook("4", rollout="rollout:\n  keep_images: 2\n"), "--limit",
                           ",".join(PAIR))
    assert rc == 0, json.dumps(rows, indent=1) + err
    for d in PAIR:
        now = fl.images(d)
        third = fl.label(d, CONFIG)
        assert first[d] not in now, f"{d}: release 1's image still there"
        assert second[d] in now and third in now, d
        assert now == {second[d], third}, (d, now)
        assert any(a.startswith("pruned 1 older image") for a in _rows(rows)[d]["actions"]), _rows(rows)[d]


def _pulls(fl: Fleet, device: str, since: int, until: int) -> list[str]:
    out = fl.sh(device, f"docker events --since {since} --until {until} --filter type=image "
                        f"--filter event=pull --format '{{{{.Actor.ID}}}}'")
    return out.split()


def test_rollback_returns_every_device_to_its_previous_release_without_pulling(fl: Fleet):
    fl.on("3", [d for d in FIVE if not fl.label(d, PREVIOUS_CONFIG)])  # only when run alone
    previous = {d: fl.label(d, PREVIOUS_CONFIG) for d in FIVE}
    images = {d: fl.images(d) for d in FIVE}
    assert all(previous[d] in images[d] for d in FIVE), (previous, images)
    t0 = int(time.time()) - 1
    playbook = fl.playbook("4")
    rc, rows, err = fl.run("rollback", playbook)
    t1 = int(time.time()) + 1
    assert rc == 0, json.dumps(rows, indent=1) + err
    rows = _rows(rows)
    for d in FIVE:
        assert rows[d]["result"] == "verified", rows[d]
        assert rows[d]["config_digest"] == previous[d], (d, rows[d])
        c = fl.container(d)
        assert c["Image"] == previous[d] and c["State"]["Running"], d
        assert not any(a.startswith("pull ") for a in rows[d]["actions"]), rows[d]["actions"]
        assert fl.images(d) == images[d], d  # nothing pulled, nothing pruned
        assert _pulls(fl, d, t0, t1) == [], d


def test_status_as_intended_then_missing_after_a_container_is_removed_by_hand(fl: Fleet):
    playbook = fl.playbook("4")
    cp = fl.fleet("status", str(playbook), "-i", fl.inventory, "--json")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert {r["host"]: r["state"] for r in json.loads(cp.stdout)} == {d: "as intended" for d in FIVE}
    fl.sh("x86", f"docker rm -f {NAME}")
    cp = fl.fleet("status", str(playbook), "-i", fl.inventory)
    assert cp.returncode == 1
    rows = {r["host"]: r for r in json.loads(fl.fleet("status", str(playbook), "-i", fl.inventory,
                                                         "--json").stdout)}
    assert rows["x86"]["state"] == "missing" and rows["x86"]["detail"] == f"no container {NAME}", rows["x86"]
    assert all(rows[d]["state"] == "as intended" for d in FIVE[1:]), rows
    assert re.search(r"^x86 +missing", cp.stdout, re.M) or "missing" in cp.stdout, cp.stdout
    # put it back: the next deploy to x86 brings the app back
    fl.on("4", ["x86"])


def test_history_lists_the_runs_and_two_writers_at_once_lose_nothing(fl: Fleet):
    cp = fl.fleet("history", "--json", "--last", "500")
    assert cp.returncode == 0, cp.stderr
    runs = {r["id"]: r for r in json.loads(cp.stdout)}
    assert fl.ran, "no deployment ran in this module"
    for deployment, results in fl.ran.items():
        assert deployment in runs, deployment
        assert {d["host"]: d["result"] for d in runs[deployment]["devices"]} == results, deployment
    kinds = {runs[d]["kind"] for d in fl.ran}
    assert kinds == {"deploy", "rollback"}
    # two fleet processes writing the same history at once
    playbook = fl.playbook("4")
    procs = [fl.start("verify", str(playbook), "-i", fl.inventory, "--limit", limit, "--json")
             for limit in ("x86,pi4-64", "x86")]
    for p in procs:
        p.wait(300)
    runs_after = json.loads(fl.fleet("history", "--json", "--last", "500").stdout)
    new = {tuple(sorted(d["host"] for d in r["devices"])): r for r in runs_after if r["id"] not in runs}
    assert len(runs_after) == len(runs) + 2 and len(new) == 2, new
    for p in procs:
        rows = json.loads(Path(f"{p.log}.out").read_text())
        run = new[tuple(sorted(r["host"] for r in rows))]
        assert run["kind"] == "verify" and run["finished"] and run["summary"], run
        assert {d["host"]: d["result"] for d in run["devices"]} == {r["host"]: r["result"] for r in rows}
