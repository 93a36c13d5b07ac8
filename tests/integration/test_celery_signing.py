"""Signed jobs: whoever can write to the broker cannot make a site worker touch a device.

Messages are injected straight into the real Redis broker with kombu (as an attacker with
write access to the broker would) and consumed by a real ``fleet worker``: an unsigned
job, one signed by a key whose certificate the worker does not trust, one signed by a key
impersonating the controller's certificate, a genuinely signed job replayed under another
task id, an expired one, one for another site. The worker refuses each and says so in its
log (``refused job ID ...: why``); the device's sshd (LogLevel INFO) sees no login. A
result forged in the result backend is not believed by the controller either."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from cryptography import x509

from fleet.executor import CeleryExecutor, RemoteError, work_for
from fleet.executor.app import TASK_NAME
from fleet.executor.jobs import make_envelope
from tests.celery_fixtures import (controller_signing, make_identity, redis_server, selection_of, signers,  # noqa: F401
                                   start_devices, worker)


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    d = start_devices(tmp_path_factory.mktemp("signing-devices"), {"a1": "a", "b1": "b", "z1": "z"},
                      log_level="INFO")
    yield d
    d.stop()


@pytest.fixture(scope="module")
def site_a(tmp_path_factory, redis_server, signers, devices):
    w = worker(tmp_path_factory.mktemp("signing-worker"), "a", redis_server.url, signers,
               known_hosts=devices.known_hosts).start()
    yield w
    w.stop()


@pytest.fixture(scope="module")
def executor(redis_server, signers):
    ex = CeleryExecutor(redis_server.url, signing=controller_signing(signers), grace=0.5)
    ex.app  # registers the controller's signing identity in this process
    return ex


def _logins(devices, host: str) -> int:
    return devices.servers[host].log().count("Accepted publickey")


def _work(devices, host: str, deadline: float = 30.0):
    sel = selection_of(devices, limit=host)
    return work_for(sel.hosts()[0], "probe", deadline=deadline)


def _publish(url: str, queue: str, job: str, body, *, content_type: str | None = None) -> None:
    """Put one Celery protocol-2 task message on ``queue`` with kombu, as anyone with write
    access to the broker can: ``body`` is serialized as JSON unless ``content_type`` is
    given (then it is sent as the raw bytes it is)."""
    from kombu import Connection, Exchange, Producer, Queue

    headers = {"lang": "py", "task": TASK_NAME, "id": job, "root_id": job, "parent_id": None, "group": None,
               "retries": 0, "eta": None, "expires": None, "timelimit": [None, None], "argsrepr": "",
               "kwargsrepr": "", "origin": "intruder@broker", "ignore_result": False}
    q = Queue(queue, Exchange(queue), routing_key=queue)
    with Connection(url) as conn:
        producer = Producer(conn)
        if content_type is None:
            producer.publish(body, exchange=q.exchange, routing_key=queue, serializer="json", headers=headers,
                             declare=[q])
        else:
            producer.publish(body, exchange=q.exchange, routing_key=queue, content_type=content_type,
                             content_encoding="utf-8", headers=headers, declare=[q])


def _task_body(envelope: dict) -> list:
    return [[envelope], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]


def _signed_by(identity, body) -> bytes:
    """``body`` signed with ``identity``'s key (Celery's own SecureSerializer), as a
    message body on the wire."""
    from celery.security.certificate import Certificate
    from celery.security.key import PrivateKey
    from celery.security.serialization import SecureSerializer

    s = SecureSerializer(PrivateKey(identity.key.read_text()), Certificate(identity.cert.read_text()), None)
    return s.serialize(body)


def _refused(worker_, job: str, why: str, timeout: float = 20.0) -> str:
    log = worker_.wait_for(f"refused job {job}", timeout)
    line = next(ln for ln in log.splitlines() if f"refused job {job}" in ln)
    assert why in line, line
    assert f"job {job} probe" not in log  # never ran
    return line


def test_unsigned_job_is_refused_and_said_so(devices, site_a, redis_server, executor):
    before = _logins(devices, "a1")
    job = str(uuid.uuid4())
    _publish(redis_server.url, "fleet.site.a", job, _task_body(make_envelope(job, _work(devices, "a1"))))
    line = _refused(site_a, job, "unsigned (content type application/json; only messages signed with the auth "
                                 "serializer are accepted)")
    assert "ERROR/fleet.worker" in line and "queue fleet.site.a" in line
    assert _logins(devices, "a1") == before
    assert redis_server.client().get(f"celery-task-meta-{job}") is None


def test_job_signed_by_an_untrusted_key_is_refused(devices, site_a, redis_server, executor, tmp_path):
    rogue = make_identity(tmp_path, "fleet-intruder")
    before = _logins(devices, "a1")
    job = str(uuid.uuid4())
    _publish(redis_server.url, "fleet.site.a", job,
             _signed_by(rogue, _task_body(make_envelope(job, _work(devices, "a1")))), content_type="application/data")
    _refused(site_a, job, "signed by a certificate that is not in this worker's cert store")
    assert _logins(devices, "a1") == before


def test_job_signed_by_a_key_impersonating_the_controller_is_refused(devices, site_a, redis_server, executor,
                                                                     signers, tmp_path):
    real = x509.load_pem_x509_certificate(signers.controller.cert.read_bytes())
    # same subject/issuer and serial: Celery finds the controller's certificate by that id
    rogue = make_identity(tmp_path, "fleet-controller", serial=real.serial_number)
    before = _logins(devices, "a1")
    job = str(uuid.uuid4())
    _publish(redis_server.url, "fleet.site.a", job,
             _signed_by(rogue, _task_body(make_envelope(job, _work(devices, "a1")))), content_type="application/data")
    _refused(site_a, job, "bad signature")
    assert _logins(devices, "a1") == before


def test_signed_job_replayed_under_another_id_expired_or_for_another_site_is_refused(devices, site_a, redis_server,
                                                                                   executor, signers):
    from kombu.serialization import dumps

    before = _logins(devices, "a1")
    cases = []
    # a genuine job body, replayed under a new task id (headers are not signed)
    old = str(uuid.uuid4())
    cases.append((str(uuid.uuid4()), make_envelope(old, _work(devices, "a1")),
                  f"the signed job id '{old}' is not the message's task id"))
    # a genuine job that waited out its deadline (and the allowed clock skew)
    job = str(uuid.uuid4())
    cases.append((job, make_envelope(job, _work(devices, "a1", deadline=5.0), now=time.time() - 60),
                  "a1: job expired"))
    # a genuine job of site b dropped into site a's queue
    job = str(uuid.uuid4())
    cases.append((job, make_envelope(job, _work(devices, "b1")), "b1: job is for site b, this worker serves site a"))
    for job, env, why in cases:
        ctype, enc, payload = dumps(_task_body(env), serializer="auth")  # signed by the controller
        assert ctype == "application/data"
        _publish(redis_server.url, "fleet.site.a", job, payload, content_type=ctype)
        _refused(site_a, job, why)
    assert _logins(devices, "a1") == before


def test_unsigned_remote_control_is_refused(devices, site_a, redis_server, executor, signers):
    """Celery's remote control (shutdown, add_consumer...) goes through the broker too: an
    unsigned ``shutdown`` broadcast is refused and the worker goes on serving its site."""
    from kombu import Connection
    from kombu.pidbox import Mailbox

    with Connection(redis_server.url) as conn:
        Mailbox("celery", type="fanout", serializer="json")(conn)._broadcast("shutdown", {})
        Mailbox("celery", type="fanout", serializer="json")(conn)._broadcast(
            "add_consumer", {"queue": "fleet.site.b"})
    site_a.wait_for("refused message (not a job, from celery.pidbox): unsigned", count=2)
    time.sleep(1.0)
    assert site_a.proc.poll() is None
    out = executor.map([_work(devices, "a1")])
    assert out[0].ok and out[0].worker == "fleet-a@test"


def test_forged_results_are_not_believed(devices, redis_server, executor, signers, tmp_path):
    """Site z has no worker; while the controller waits, results are forged for its jobs:
    one unsigned, one signed by an untrusted key. Neither is used."""
    r = redis_server.client()
    rogue = make_identity(tmp_path, "fleet-site-z-forger")
    works = [_work(devices, "z1", deadline=20.0), _work(devices, "z1", deadline=20.0)]
    out: list = []
    t = threading.Thread(target=lambda: out.extend(executor.map(works)))
    t.start()
    ids: list[str] = []
    deadline = time.monotonic() + 10
    while len(ids) < 2 and time.monotonic() < deadline:
        ids = [json.loads(m)["headers"]["id"] for m in r.lrange("fleet.site.z", 0, -1)]
        time.sleep(0.1)
    assert len(ids) == 2
    fake = {"v": 1, "host": "z1", "kind": "probe", "site": "z", "worker": "fleet-z@forger", "pid": 1, "ok": True,
            "value": {"facts": {"uname_m": "forged"}, "engine_via": "cli", "cost": {}, "error": None},
            "error": None, "seconds": 0.1, "redelivered": False}
    meta = {"status": "SUCCESS", "traceback": None, "children": [], "date_done": None}
    r.set(f"celery-task-meta-{ids[0]}", json.dumps({**meta, "task_id": ids[0], "result": {**fake, "job": ids[0]}}))
    r.set(f"celery-task-meta-{ids[1]}",
          _signed_by(rogue, {**meta, "task_id": ids[1], "result": {**fake, "job": ids[1]}}))
    t.join(30)
    assert not t.is_alive() and len(out) == 2
    for o in out:
        assert isinstance(o.error, RemoteError) and o.value is None, o
        assert "failed signature verification" in str(o.error) and "not used" in str(o.error)
    r.delete("fleet.site.z")
