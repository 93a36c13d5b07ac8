"""A site worker killed (SIGKILL) in the middle of a job: nothing hangs.

The device is a real sshd whose first command hangs (a ForceCommand wrapper sleeps the first
time, then runs commands normally), so the worker is killed while its job is on the
device, then started again.

* Redis broker: the controller reports the device failed once its deadline passed ("the job
  started on worker W of site a but no result came within N s", counted unreachable); the
  job stays unacknowledged in Redis and comes back after the visibility timeout to the
  restarted worker, which refuses it as expired - the device is not touched again.
* RabbitMQ broker (Redis results): the broker re-queues the job as soon as the killed
  worker's connection drops; the restarted worker runs it again (``redelivered``) and the
  controller gets the device's facts within the deadline.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from fleet.executor import CeleryExecutor, JobLost, work_for
from fleet.results import Result, classify
from tests.celery_fixtures import (controller_signing, rabbitmq_available, redis_server, selection_of,  # noqa: F401
                                   signers, start_devices, start_rabbitmq, worker)


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    """Device ``slow1`` of site a whose first command hangs 20 s; ``runs`` counts commands."""
    d = Path(tempfile.mkdtemp(prefix="fleet-slow-", dir="/tmp"))
    d.chmod(0o777)
    script = d / "first-hangs.sh"
    script.write_text(f"""#!/bin/sh
echo run >> {d}/runs
if [ ! -e {d}/first ]; then : > {d}/first; sleep 20; exit 1; fi
exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"
""")
    script.chmod(0o755)
    devs = start_devices(tmp_path_factory.mktemp("slow-device"), {"slow1": "a"},
                         sshd_config={"slow1": f"ForceCommand {script}"})
    yield devs, d
    devs.stop()
    shutil.rmtree(d, ignore_errors=True)


def _reset(d: Path) -> None:
    for name in ("first", "runs"):
        (d / name).unlink(missing_ok=True)


def _runs(d: Path) -> int:
    try:
        return len((d / "runs").read_text().split())
    except FileNotFoundError:
        return 0


def _wait(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.05)


def _map_in_thread(ex, works):
    box: dict = {}

    def run():
        box["t0"] = time.monotonic()
        box["out"] = ex.map(works)
        box["took"] = time.monotonic() - box["t0"]

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def test_redis_worker_killed_mid_job_fails_the_device_after_its_deadline_and_never_reruns_it(
        slow, redis_server, signers, tmp_path, monkeypatch):
    devs, d = slow
    _reset(d)
    monkeypatch.setenv("HOME", str(tmp_path))
    # --max-deadline 6: the visibility timeout is 11 s; --clock-skew 1: expired 1 s after the deadline
    opts = ["--clock-skew", "1"]
    w1 = worker(tmp_path / "w1", "a", redis_server.url, signers, known_hosts=devs.known_hosts, max_deadline=6,
                extra=opts).start()
    w2 = worker(tmp_path / "w2", "a", redis_server.url, signers, known_hosts=devs.known_hosts, max_deadline=6,
                extra=opts)
    try:
        work = work_for(selection_of(devs).hosts()[0], "probe", deadline=6.0)
        ex = CeleryExecutor(redis_server.url, signing=controller_signing(signers), grace=0.5)
        t, box = _map_in_thread(ex, [work])
        _wait(lambda: (d / "first").exists(), 20, "job on the device")
        time.sleep(0.3)  # the worker's STARTED state is stored before the handler runs
        w1.kill()
        w2.start()
        t.join(30)
        assert not t.is_alive(), "the controller hangs"
        o = box["out"][0]
        assert 6.0 <= box["took"] < 20, box["took"]
        assert isinstance(o.error, JobLost), o.error
        assert str(o.error) == "slow1: the job started on worker fleet-a@test of site a but no result came within 6 s"
        assert classify(o.error)[0] == Result.UNREACHABLE
        # the job comes back from Redis after the visibility timeout: refused as expired
        line = w2.wait_for("slow1: job expired", timeout=40)
        assert "refused job" in line
        assert _runs(d) == 1  # the device ran the job once, the redelivered copy never reached it
    finally:
        for w in (w1, w2):
            w.stop()


@pytest.fixture(scope="module")
def rabbit():
    if not rabbitmq_available():
        pytest.skip("rabbitmq-server is not installed (.ci/run installs it)")
    r = start_rabbitmq()
    yield r
    r.stop()


def test_rabbitmq_job_of_a_killed_worker_is_redelivered_to_the_restarted_one(slow, rabbit, redis_server, signers,
                                                                              tmp_path, monkeypatch):
    devs, d = slow
    _reset(d)
    monkeypatch.setenv("HOME", str(tmp_path))
    opts = ["--result-backend", redis_server.url]
    w1 = worker(tmp_path / "w1", "a", rabbit.url, signers, known_hosts=devs.known_hosts, extra=opts).start()
    w2 = worker(tmp_path / "w2", "a", rabbit.url, signers, known_hosts=devs.known_hosts, extra=opts)
    try:
        work = work_for(selection_of(devs).hosts()[0], "probe", deadline=60.0)
        ex = CeleryExecutor(rabbit.url, result_backend=redis_server.url, signing=controller_signing(signers))
        t, box = _map_in_thread(ex, [work])
        _wait(lambda: (d / "first").exists(), 30, "job on the device")
        w1.kill()
        pid1 = w1.started[0]
        w2.start()
        t.join(60)
        assert not t.is_alive(), "the controller hangs"
        o = box["out"][0]
        assert o.error is None, o.error
        assert o.redelivered and o.worker == "fleet-a@test" and o.site == "a"
        assert o.value["facts"]["uname_m"]
        assert box["took"] < 60
        assert "probe slow1: ok" in w2.log() and "(redelivered)" in w2.log()
        assert w2.started[0] != pid1
        assert _runs(d) == 2
    finally:
        for w in (w1, w2):
            w.stop()
