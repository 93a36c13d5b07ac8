"""Rollout decisions (fleet.rollout): batches as ansible-core's ``serial`` makes them (its
recorded answers, tests/data/rollout/), failure thresholds, the playbook's ``rollout:`` key,
the history database and prune's choice of images."""

from __future__ import annotations

import json
import multiprocessing
import os
import textwrap
from pathlib import Path

import pytest

from fleet.deploy.prune import images_to_prune
from fleet.engine import ImageSummary, parse_image_list
from fleet.errors import InputFileError, UsageError
from fleet.history import History
from fleet.playbook import load_playbook
from fleet.results import DeviceReport, Result
from fleet.rollout import RolloutSpec, batches, parse_batch, parse_batches, threshold_crossed

DATA = Path(__file__).resolve().parents[1] / "data"
SERIAL = json.loads((DATA / "rollout" / "ansible-serial.json").read_text())


@pytest.mark.parametrize("case", SERIAL["cases"], ids=lambda c: f"{c['hosts']}-{c['serial']}")
def test_batches_match_ansible_serial(case):
    hosts = [f"h{i}" for i in range(case["hosts"])]
    sizes = tuple(parse_batch(x, "serial") for x in case["serial"])
    assert batches(hosts, sizes) == case["batches"]


def test_no_batches_is_one_batch_and_nothing_is_nothing():
    assert batches(["a", "b"], ()) == [["a", "b"]]
    assert batches([], parse_batches("1,50%")) == []


@pytest.mark.parametrize("text", ["", "0", "-1", "150%", "0%", "x", "1,,2", "1.5", "nan%", "10 %x"])
def test_bad_batch_sizes_are_usage_errors(text):
    with pytest.raises(UsageError):
        parse_batches(text)


def test_thresholds():
    ok, bad, gone = Result.VERIFIED, Result.ROLLED_BACK, Result.UNREACHABLE
    # default (Ansible): only a batch where every device failed stops the rollout
    assert threshold_crossed([bad], RolloutSpec()) == "all 1 device of the batch failed"
    assert threshold_crossed([bad, ok], RolloutSpec()) is None
    # max_fail: more than N
    assert threshold_crossed([gone, ok], RolloutSpec(max_fail=0)).startswith("1 of 2 devices failed")
    assert threshold_crossed([gone, ok], RolloutSpec(max_fail=1)) is None
    # max_fail_percentage: must be exceeded, not equalled (Ansible)
    assert threshold_crossed([bad, ok], RolloutSpec(max_fail_percentage=50)) is None
    assert "more than max_fail_percentage 49%" in threshold_crossed([bad, ok], RolloutSpec(max_fail_percentage=49))
    # unreachable devices count as failed (unlike Ansible's serial); unchanged ones are fine
    assert threshold_crossed([gone, Result.UNCHANGED], RolloutSpec(max_fail=0)) is not None
    assert threshold_crossed([Result.UNCHANGED, ok], RolloutSpec(max_fail=0)) is None


def _playbook(tmp_path: Path, rollout: str) -> Path:
    ctx = tmp_path / "app"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY x /x\n")
    p = tmp_path / "p.yaml"
    p.write_text("name: hello\nimage: 127.0.0.1:5000/hello:1\nsource: {build: {context: app}}\n"
                 + textwrap.dedent(rollout))
    return p


def test_playbook_rollout_key(tmp_path):
    pb = load_playbook(_playbook(tmp_path, """
        rollout:
          batches: [1, "10%", "100%"]
          pause: 30
          max_fail_percentage: 10
          on_failure: rollback
          keep_images: 3
        """))
    r = pb.rollout
    assert [str(b) for b in r.batches] == ["1", "10%", "100%"] and r.pause == 30
    assert (r.max_fail_percentage, r.max_fail, r.on_failure, r.keep_images) == (10, None, "rollback", 3)
    assert load_playbook(_playbook(tmp_path, "")).rollout == RolloutSpec()


@pytest.mark.parametrize("body, key", [
    ("rollout: {batches: []}", "rollout.batches"),
    ("rollout: {batches: [0]}", "rollout.batches"),
    ("rollout: {batches: [\"200%\"]}", "rollout.batches"),
    ("rollout: {pause: .inf}", "rollout.pause"),
    ("rollout: {max_fail_percentage: 101}", "rollout.max_fail_percentage"),
    ("rollout: {max_fail: 1.5}", "rollout.max_fail"),
    ("rollout: {on_failure: retry}", "rollout.on_failure"),
    ("rollout: {keep_images: 0}", "rollout.keep_images"),
    ("rollout: {serial: 3}", "rollout.serial"),
])
def test_bad_rollout_keys_name_file_line_and_key(tmp_path, body, key):
    with pytest.raises(InputFileError) as ei:
        load_playbook(_playbook(tmp_path, body + "\n"))
    assert f"p.yaml:4: key '{key}'" in str(ei.value), str(ei.value)


# --------------------------------------------------------------------------- history


def _write_runs(path: str, worker: int, n: int) -> None:
    with History(Path(path)) as h:
        for i in range(n):
            run_id = f"w{worker}-{i}"
            h.start_run(run_id, "deploy", playbook="p.yaml", app="hello", reference="r/hello:1",
                        index_digest="sha256:" + "1" * 64, started=f"2026-12-02T00:00:{i:02d}+00:00")
            h.add_devices(run_id, [DeviceReport(f"d{j}", result=Result.VERIFIED) for j in range(3)], 1)
            h.update_run(run_id, finished="x", summary="3 devices: 3 verified", ok=1)


def test_history_two_writers_at_once_lose_nothing(tmp_path):
    path = tmp_path / "state" / "history.sqlite"
    History(path).close()
    procs = [multiprocessing.Process(target=_write_runs, args=(str(path), w, 25)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with History(path) as h:
        runs = h.runs(limit=1000)
        assert len(runs) == 50 and all(len(r["devices"]) == 3 and r["ok"] for r in runs)
        assert len(h.runs(device="d1", limit=1000)) == 50
        assert h.intended("hello", "d2")["index_digest"] == "sha256:" + "1" * 64
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"


def test_history_intended_index_of_a_rollback_is_each_devices_own(tmp_path):
    """A rollback has no one index (each device goes back to its own previous release):
    what status compares a device with is the index recorded for that device; a deploy's
    devices without one fall back to the run's."""
    one, two, three = ("sha256:" + c * 64 for c in "123")
    with History(tmp_path / "h" / "history.sqlite") as h:
        h.start_run("d1", "deploy", app="hello", index_digest=three, started="2026-12-02T00:00:01+00:00")
        h.add_devices("d1", [DeviceReport("a", result=Result.VERIFIED, index_digest=three),
                             DeviceReport("b", result=Result.UNREACHABLE)], 1)
        assert h.intended("hello", "b")["index_digest"] == three
        h.start_run("r1", "rollback", app="hello", started="2026-12-02T00:00:02+00:00")
        h.add_devices("r1", [DeviceReport("a", result=Result.VERIFIED, index_digest=one, config_digest="c1"),
                             DeviceReport("c", result=Result.VERIFIED, index_digest=two)], 1)
        assert h.intended("hello", "a")["index_digest"] == one and h.intended("hello", "a")["kind"] == "rollback"
        assert h.intended("hello", "c")["index_digest"] == two
        assert h.intended("hello", "b")["id"] == "d1"
        assert [d["index_digest"] for d in h.run("r1")["devices"]] == [one, two]


def test_a_stopped_rollout_records_every_device_in_the_history_skipped_ones_too(tmp_path):
    """The batch loop (fleet.pipeline.rollouts) with a device double: batch 2 crosses
    max_fail 0, batch 3 is not touched, and the history has a row for each of the five
    devices (the skipped ones with their batch and why), as the saved report has."""
    from types import SimpleNamespace

    from fleet.deploy import DeployOptions
    from fleet.executor.local import WorkOutcome
    from fleet.pipeline.rollouts import DeployRun, _Rollout

    hosts = ["x86", "pi4-64", "pi3-32", "pi-zero", "pi4-32on64"]
    touched = []

    def run_map(works, label, **kw):  # the executor's map: each work item's report, as a worker sends it
        out = []
        for w in works:
            touched.append(w.host)
            bad = w.host == "pi3-32"
            rep = DeviceReport(w.host, result=Result.UNREACHABLE if bad else Result.VERIFIED,
                               reason="connection lost" if bad else "")
            out.append(WorkOutcome(w, rep.to_dict(), None, 0.1))
        return out

    run = SimpleNamespace(connections=SimpleNamespace(abort=lambda: None, aborted=False),
                          executor=SimpleNamespace(preflight=lambda works: None), map=run_map)
    jobs = {h: SimpleNamespace(host=h, plan=None) for h in hosts}

    def work(job):
        return SimpleNamespace(host=job.host)

    spec = RolloutSpec(batches=parse_batches("1,50%,100%"), max_fail=0)
    with History(tmp_path / "h" / "history.sqlite") as h:
        out = DeployRun("d1", "p.yaml", "r/hello:1", False, "2026-12-02T00:00:00+00:00")
        h.start_run("d1", "deploy", app="hello")
        reports = _Rollout(run, out, spec, DeployOptions(forks=5), h, None, "deploying").go(hosts, jobs, {}, work)
        assert sorted(touched) == sorted(hosts[:3])
        assert out.batches == [["x86"], ["pi4-64", "pi3-32"], ["pi-zero", "pi4-32on64"]]
        assert out.stopped == "batch 2 of 3: 1 of 2 devices failed, more than max_fail 0"
        rows = {d["host"]: d for d in h.run("d1")["devices"]}
    assert {k: r.result for k, r in reports.items()} == {
        "x86": Result.VERIFIED, "pi4-64": Result.VERIFIED, "pi3-32": Result.UNREACHABLE,
        "pi-zero": Result.SKIPPED, "pi4-32on64": Result.SKIPPED}
    assert {k: (d["batch"], d["result"]) for k, d in rows.items()} == {
        "x86": (1, "verified"), "pi4-64": (2, "verified"), "pi3-32": (2, "unreachable"),
        "pi-zero": (3, "skipped"), "pi4-32on64": (3, "skipped")}
    assert rows["pi-zero"]["reason"] == f"not touched: the rollout stopped at {out.stopped}"


def test_history_refuses_a_shared_folder(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UsageError, match="writable by other users"):
        History(shared / "history.sqlite")


# --------------------------------------------------------------------------- prune


def test_prune_keeps_current_previous_and_other_repositories():
    # `docker image ls --no-trunc --digests --format '{{json .}}'` of a device after three
    # releases (one row per name; newest first, as the engine prints them)
    rows = [
        {"ID": "sha256:" + "3" * 64, "CreatedAt": "2026-12-03 10:00:00 +0000 UTC", "Repository": "reg/app",
         "Tag": "<none>", "Digest": "sha256:" + "c" * 64},
        {"ID": "sha256:" + "2" * 64, "CreatedAt": "2026-12-02 10:00:00 +0000 UTC", "Repository": "reg/app",
         "Tag": "<none>", "Digest": "sha256:" + "b" * 64},
        {"ID": "sha256:" + "9" * 64, "CreatedAt": "2026-12-02 09:00:00 +0000 UTC", "Repository": "reg/other",
         "Tag": "1", "Digest": "<none>"},
        {"ID": "sha256:" + "1" * 64, "CreatedAt": "2026-12-01 10:00:00 +0000 UTC", "Repository": "reg/app",
         "Tag": "<none>", "Digest": "sha256:" + "a" * 64},
        {"ID": "sha256:" + "1" * 64, "CreatedAt": "2026-12-01 10:00:00 +0000 UTC", "Repository": "reg/app",
         "Tag": "1.0", "Digest": "<none>"},
    ]
    images = parse_image_list("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    assert [i.id[-1] for i in images] == ["3", "2", "9", "1"]
    assert images[3].references == ("reg/app@sha256:" + "a" * 64, "reg/app:1.0")
    gone = images_to_prune(images, "reg/app", {"sha256:" + "3" * 64, "sha256:" + "2" * 64}, 2)
    assert [i.id[-1] for i in gone] == ["1"]
    # keep 3: nothing of the app goes; the previous release is kept even when it is older
    assert images_to_prune(images, "reg/app", {"sha256:" + "3" * 64}, 3) == []
    gone = images_to_prune(images, "reg/app", {"sha256:" + "3" * 64, "sha256:" + "1" * 64}, 2)
    assert [i.id[-1] for i in gone] == ["2"]
    assert not ImageSummary("x", "", ("reg/application:1",)).of("reg/app")


def test_history_written_by_an_older_fleet_gains_the_new_columns(tmp_path):
    """A history file from before ``publish``/``images`` existed opens, and a run lands."""
    import sqlite3
    path = tmp_path / "h" / "history.sqlite"
    path.parent.mkdir(mode=0o700)
    db = sqlite3.connect(path)
    db.executescript("""CREATE TABLE runs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, playbook TEXT, app TEXT,
        reference TEXT, index_digest TEXT, user TEXT, controller TEXT, started TEXT, finished TEXT, summary TEXT,
        ok INTEGER, stopped TEXT);
        INSERT INTO runs (id, kind, app) VALUES ('old', 'deploy', 'hello');""")
    db.commit()
    db.close()
    os.chmod(path, 0o600)
    with History(path) as h:
        cols = {row[1] for row in h.db.execute("PRAGMA table_info(runs)")}
        assert {"publish", "images"} <= cols
        assert "index_digest" in {row[1] for row in h.db.execute("PRAGMA table_info(devices)")}
        h.db.execute("UPDATE runs SET images=? WHERE id='old'", ('{"web": "x"}',))
        assert h.db.execute("SELECT images FROM runs WHERE id='old'").fetchone()[0] == '{"web": "x"}'


def test_a_run_that_raises_is_closed_in_the_history_as_aborted(tmp_path):
    """An error between a run's history start and end (a bug, the broker gone) leaves the
    row finished with ok 0 and why, not a run that reads as still going; the error goes on."""
    from fleet.pipeline.rollouts import DeployRun, _history_open

    with History(tmp_path / "h" / "history.sqlite") as h:
        out = DeployRun("d2", "p.yaml", "r/hello:1", False, "2026-12-02T00:00:00+00:00")
        h.start_run("d2", "deploy", app="hello")
        assert h.run("d2")["finished"] is None
        with pytest.raises(RuntimeError, match="boom"):
            with _history_open(h, out):
                raise RuntimeError("boom")
        row = h.run("d2")
    assert row["ok"] == 0 and row["finished"] and row["stopped"] == "aborted: RuntimeError: boom"
