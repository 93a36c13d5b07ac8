"""CeleryExecutor with real parts: a real Redis broker, real ``fleet worker`` processes (one
per site), real OpenSSH sshd devices on loopback (tests/celery_fixtures.py, tests/sshd.py).

The probe of devices split over two sites gives the same facts and detections through
the site workers as through the controller's own thread pool, and each result names the
worker and site that ran it; a site with no live worker fails only its own devices, after
their deadline, counted as unreachable; a device without ``fleet_site`` is a usage error
before anything is sent, or runs here with the local fallback; a broker that does not
answer is a clear error before anything is sent; Ctrl-C stops waiting."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from fleet.detect import detect
from fleet.errors import UsageError
from fleet.executor import (BrokerUnavailable, CeleryExecutor, LocalExecutor, NoWorkerAnswered, executor_from_options,
                            work_for)
from fleet.fanout import Interrupted
from fleet.pipeline import Run
from fleet.results import Result, classify
from tests.celery_fixtures import (FLEET, controller_signing, redis_server, selection_of, signers,  # noqa: F401
                                   start_devices, worker)

SITES = {"a1": "a", "a2": "a", "a3": "a", "b1": "b", "b2": "b", "b3": "b", "c1": "c", "n1": None}


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    d = start_devices(tmp_path_factory.mktemp("celery-devices"), SITES)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def workers(tmp_path_factory, redis_server, signers, devices):
    """Workers for sites a and b (none for c), each with its own HOME and known_hosts."""
    tmp = tmp_path_factory.mktemp("celery-workers")
    ws = [worker(tmp, s, redis_server.url, signers, known_hosts=devices.known_hosts) for s in ("a", "b")]
    try:
        for w in ws:
            w.start()
        yield {w.site: w for w in ws}
    finally:
        for w in ws:
            w.stop()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """The controller's own HOME: no ~/.ssh of the machine's user."""
    h = tmp_path / "home"
    (h / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return h


def _works(sel, deadline=60.0):
    return [work_for(h, "probe", deadline=deadline) for h in sel.hosts()]


def test_probe_over_two_sites_gives_what_the_local_probe_gives(devices, workers, redis_server, signers, home):
    sel = selection_of(devices, limit="a1:a2:a3:b1:b2:b3")
    works = _works(sel)
    assert sorted(w.site for w in works) == ["a", "a", "a", "b", "b", "b"]
    with Run(sel) as run:
        local = LocalExecutor(run.connections).map(works, forks=6)
    ex = CeleryExecutor(redis_server.url, signing=controller_signing(signers))
    remote = ex.map(works, forks=2)

    assert [o.item.host for o in remote] == [o.item.host for o in local] == [w.host for w in works]
    for lo, ro in zip(local, remote):
        assert lo.error is None and ro.error is None, (lo.error, ro.error)
        assert ro.value["facts"] == lo.value["facts"]
        assert ro.value["engine_via"] == lo.value["engine_via"]
        assert set(ro.value) == set(lo.value) == {"facts", "engine_via", "cost", "error"}
        assert detect(ro.value["facts"]).to_dict() == detect(lo.value["facts"]).to_dict()
        assert detect(ro.value["facts"]).platform is not None
        # each result names where it ran
        assert ro.site == ro.item.site and ro.worker == f"fleet-{ro.item.site}@test"
        assert lo.worker == "local" and lo.site is None
    for site, w in workers.items():
        log = w.log()
        for o in remote:
            if o.item.site == site:
                assert f"probe {o.item.host}: ok" in log
    # the run read its results and deleted them from the backend
    assert not redis_server.client().keys("celery-task-meta-*")


def test_site_without_live_worker_fails_its_devices_after_the_deadline(devices, workers, redis_server, signers,
                                                                      home):
    sel = selection_of(devices, limit="a1:b1:c1")
    works = _works(sel, deadline=3.0)
    ex = CeleryExecutor(redis_server.url, signing=controller_signing(signers), grace=0.5)
    t0 = time.monotonic()
    out = {o.item.host: o for o in ex.map(works)}
    took = time.monotonic() - t0
    assert 3.0 <= took < 15, took
    assert out["a1"].ok and out["b1"].ok
    err = out["c1"].error
    assert isinstance(err, NoWorkerAnswered)
    assert str(err) == "c1: no worker of site c answered within 3 s"
    assert classify(err) == (Result.UNREACHABLE, "no worker of site c answered within 3 s")
    # the job waits in site c's queue: a worker of c that comes later refuses it as expired
    assert redis_server.client().llen("fleet.site.c") >= 1


def test_device_without_site_is_a_usage_error_before_anything_is_sent(devices, workers, redis_server, signers,
                                                                      home):
    sel = selection_of(devices, limit="a2:n1")
    works = _works(sel)
    r = redis_server.client()
    before = workers["a"].log().count("received")
    ex = CeleryExecutor(redis_server.url, signing=controller_signing(signers))
    with pytest.raises(UsageError, match=r"^n1: no fleet_site in the inventory"):
        ex.map(works)
    time.sleep(1.0)
    assert r.llen("fleet.site.a") == 0 and workers["a"].log().count("received") == before


def test_local_fallback_runs_siteless_devices_here(devices, workers, redis_server, signers, home):
    sel = selection_of(devices, limit="a2:n1")
    works = _works(sel)
    with Run(sel) as run:
        ex = executor_from_options("celery", redis_server.url, True, connections=run.connections,
                                   key=str(signers.controller.key), cert=str(signers.controller.cert),
                                   cert_store=str(signers.controller_store))
        out = {o.item.host: o for o in ex.map(works)}
    assert out["a2"].ok and out["a2"].worker == "fleet-a@test" and out["a2"].site == "a"
    assert out["n1"].ok and out["n1"].worker == "local" and out["n1"].site is None
    assert out["a2"].value["facts"] == out["n1"].value["facts"]


def test_broker_down_is_a_clear_error_before_anything_is_sent(devices, signers, home, redis_server):
    from tests.celery_fixtures import _free_port

    port = _free_port("127.0.0.1")
    url = f"redis://:s3cret-broker-pw@127.0.0.1:{port}/0"
    sel = selection_of(devices, limit="a3")
    ex = CeleryExecutor(url, signing=controller_signing(signers))
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable) as e:
        ex.map(_works(sel))
    assert time.monotonic() - t0 < 15
    msg = str(e.value)
    assert msg.startswith(f"broker redis://:**@127.0.0.1:{port}/0 is not reachable") and "nothing was sent" in msg
    assert "s3cret" not in msg and e.value.exit_code == 1

    # the worker CLI: exit 1, the same one-line message, no traceback, password masked
    r = subprocess.run([FLEET, "worker", "--site", "a", "--key", str(signers.sites["a"].key),
                        "--cert", str(signers.sites["a"].cert), "--cert-store", str(signers.worker_store)],
                       env={**os.environ, "FLEET_BROKER_URL": url}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert f"broker redis://:**@127.0.0.1:{port}/0 is not reachable" in r.stderr
    assert "Traceback" not in r.stderr and "s3cret" not in r.stderr + r.stdout
    assert "ready" not in r.stderr


def test_worker_cli_usage_errors_exit_2(signers, redis_server, tmp_path):
    base = [FLEET, "worker", "--broker", redis_server.url]
    ids = ["--key", str(signers.sites["a"].key), "--cert", str(signers.sites["a"].cert),
           "--cert-store", str(signers.worker_store)]
    env = {**os.environ, "HOME": str(tmp_path)}
    for args, msg in [(["--site", "a b", *ids], "--site: 'a b' is not a site name"),
                      (["--site", "a", "--key", str(tmp_path / "nokey"), *ids[2:]], "nokey: No such file"),
                      (["--site", "a", "--key", str(signers.sites["a"].key), "--cert", str(signers.sites["b"].cert),
                        "--cert-store", str(signers.worker_store)], "is not the certificate of --key"),
                      (["--site", "a"], "give --key PATH or set FLEET_CELERY_KEY")]:
        r = subprocess.run([*base, *args], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and msg in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_executor_options_are_checked(devices, signers, home):
    with pytest.raises(UsageError, match="--executor 'ssh'"):
        executor_from_options("ssh", None, False)
    with pytest.raises(UsageError, match="--broker is for --executor celery"):
        executor_from_options("local", "redis://127.0.0.1:1/0", False)
    with pytest.raises(UsageError, match="needs --broker"):
        executor_from_options("celery", None, False, key="k")
    with pytest.raises(UsageError, match="needs a Redis result backend"):
        executor_from_options("celery", "amqp://127.0.0.1:1//", False)
    with pytest.raises(UsageError, match="--key PATH or set FLEET_CELERY_KEY"):
        executor_from_options("celery", "redis://127.0.0.1:1/0", False)


def test_ctrl_c_stops_waiting_for_the_sites(devices, workers, redis_server, signers, home):
    sel = selection_of(devices, limit="c1")
    ex = CeleryExecutor(redis_server.url, signing=controller_signing(signers), abort_wait=1.0)
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    t0 = time.monotonic()
    out = ex.map(_works(sel, deadline=60.0))
    assert time.monotonic() - t0 < 10
    assert isinstance(out[0].error, Interrupted) and out[0].interrupted


def test_worker_stops_cleanly_on_ctrl_c(tmp_path, redis_server, signers, devices):
    w = worker(tmp_path, "z", redis_server.url, signers, known_hosts=devices.known_hosts).start()
    t0 = time.monotonic()
    assert w.stop(signal.SIGINT) == 0
    assert time.monotonic() - t0 < 20
    assert "site z: worker fleet-z@test stopped (exit status 0)" in w.log()
