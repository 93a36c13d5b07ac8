"""fleet.executor's pure parts: work items, the signed job/result documents, errors carried
as data, the handler registry, deadlines, LocalExecutor's outcomes, the signing identity's
checks. (Redis, workers and devices: tests/integration/test_celery_*.py.)"""

from __future__ import annotations

import datetime
import json
import time

import pytest

from fleet.errors import FleetError, UsageError
from fleet.executor import (DeadlineReached, DeviceWork, JobRefused, LocalExecutor, RemoteError, RemoteSSHError,
                            WorkFormatError, WorkOutcome, handler_for, kinds, register)
from fleet.executor.errors import error_from_dict, error_to_dict
from fleet.executor.handlers import WorkerContext, call_handler, one_host_connections
from fleet.executor.jobs import make_envelope, make_result, open_envelope, read_result
from fleet.facts import ProbeError
from fleet.results import Result, classify
from fleet.ssh import SSHSettings
from fleet.ssh.errors import AuthenticationFailed, Unreachable

W = DeviceWork("probe", "pi-k1", "kitchen", {"ansible_host": "10.0.0.7", "ansible_port": 2222}, {"timeout": 5}, 30)


# ------------------------------------------------------------------ work items


def test_work_round_trips_through_json_and_is_validated():
    d = json.loads(json.dumps(W.to_dict()))
    assert d == {"kind": "probe", "host": "pi-k1", "site": "kitchen",
                 "connection": {"ansible_host": "10.0.0.7", "ansible_port": 2222}, "payload": {"timeout": 5},
                 "deadline": 30.0}
    assert DeviceWork.from_dict(d) == W and DeviceWork.from_dict(d).connection == W.connection
    for bad, msg in [({**d, "deadline": 0}, "deadline 0"), ({**d, "deadline": float("inf")}, "deadline inf"),
                     ({**d, "deadline": True}, "deadline True"), ({**d, "site": "a/b"}, "not a site name"),
                     ({**d, "kind": "Probe!"}, "not a kind name"), ({**d, "host": ""}, "not an inventory host"),
                     ({**d, "extra": 1}, "unknown fields: extra"), ({"kind": "probe"}, "lacks deadline, host"),
                     ({**d, "payload": {"x": float("nan")}}, "not a finite number"),
                     ({**d, "payload": {"x": object()}}, "object is not JSON data")]:
        with pytest.raises(WorkFormatError, match=msg):
            DeviceWork.from_dict(bad)
    with pytest.raises(WorkFormatError, match="larger than 256 KiB"):
        DeviceWork("probe", "h", payload={"blob": "x" * 300_000})


# ------------------------------------------------------------------ job documents


def test_open_envelope_accepts_a_fresh_job_for_its_site():
    env = make_envelope("j1", W, now=1000.0)
    job = open_envelope(env, "j1", "kitchen", now=1010.0)
    assert (job.job, job.work, job.issued_at, job.expires_at) == ("j1", W, 1000.0, 1030.0)


@pytest.mark.parametrize("mutate,task_id,site,now,why", [
    (lambda e: e, "j2", "kitchen", 1001.0, "signed job id 'j1' is not the message's task id"),
    (lambda e: e, "j1", "garage", 1001.0, "job is for site kitchen, this worker serves site garage"),
    (lambda e: e, "j1", "kitchen", 1041.0, "job expired 11 s ago"),
    (lambda e: e, "j1", "kitchen", 980.0, "issued 20 s in the future"),
    (lambda e: {**e, "v": 2}, "j1", "kitchen", 1001.0, "not a fleet job of version 1"),
    (lambda e: {**e, "issued_at": "now"}, "j1", "kitchen", 1001.0, "issued_at is not a time"),
    (lambda e: {**e, "work": {**e["work"], "connection": {"ansible_password": "x"}}}, "j1", "kitchen", 1001.0,
     "malformed work item"),
    (lambda e: {**e, "work": {**e["work"], "deadline": 7200}}, "j1", "kitchen", 1001.0,
     "deadline 7200 s is above this worker's --max-deadline 3600 s"),
])
def test_open_envelope_refuses(mutate, task_id, site, now, why):
    env = mutate(make_envelope("j1", W, now=1000.0))
    with pytest.raises(JobRefused, match=why):
        open_envelope(env, task_id, site, now=now, skew=10.0)


def test_results_carry_values_and_errors_back_classified_as_locally():
    ok = make_result("j1", W, site="kitchen", worker="fleet-kitchen@box", pid=7, value={"facts": {}}, error=None,
                     seconds=0.5, redelivered=True)
    value, error, seconds, about = read_result(json.loads(json.dumps(ok)), "j1", W)
    assert (value, error, seconds) == ({"facts": {}}, None, 0.5)
    assert about == {"site": "kitchen", "worker": "fleet-kitchen@box", "pid": 7, "redelivered": True}

    local_errors = [Unreachable("pi-k1", "cannot reach 10.0.0.7:2222: Connection refused (3 attempts)"),
                    AuthenticationFailed("pi-k1", "no key was accepted", tried=["/k"]),
                    ProbeError("probe output has no header"), ValueError("boom"),
                    DeadlineReached("pi-k1", 30.0)]
    for exc in local_errors:
        doc = make_result("j1", W, site="kitchen", worker="w", pid=1, value=None, error=error_to_dict(exc),
                          seconds=1, redelivered=False)
        _, rebuilt, _, _ = read_result(json.loads(json.dumps(doc)), "j1", W)
        assert classify(rebuilt) == classify(exc), exc
        assert isinstance(rebuilt, RemoteSSHError if classify(exc)[0] == Result.UNREACHABLE else RemoteError)
        assert isinstance(rebuilt, FleetError)
    assert str(error_from_dict({"family": "ssh", "reason": "host key changed"}, "pi-k1")) == "pi-k1: host key changed"

    # an answer to another job is never taken for this one
    _, error, _, _ = read_result({**ok, "job": "j9"}, "j1", W)
    assert isinstance(error, RemoteError) and "the result of another job" in str(error)
    _, error, _, _ = read_result({**ok, "host": "pi-g1"}, "j1", W)
    assert isinstance(error, RemoteError)
    _, error, _, _ = read_result("garbage", "j1", W)
    assert "malformed result" in str(error)


# ------------------------------------------------------------------ handlers


@register("test-echo")
def _echo(work, ctx):
    if work.payload.get("mode") == "wait":
        while not ctx.expired:
            time.sleep(0.01)
        raise ConnectionError("session closed")
    if work.payload.get("mode") == "not-a-dict":
        return ["x"]
    if work.payload.get("mode") == "fail":
        raise Unreachable(work.host, "no route")
    return {"host": work.host, "worker": ctx.worker, "left": ctx.remaining() > 0}


def test_registry():
    assert "probe" in kinds() and "test-echo" in kinds()
    assert handler_for("test-echo") is _echo
    with pytest.raises(UsageError, match="no handler for work kind 'deploy-x'"):
        handler_for("deploy-x")
    with pytest.raises(ValueError, match="already has a handler"):
        register("test-echo")(lambda w, c: {})
    register("test-echo")(_echo)  # the same function again is fine (re-import)


def _conns(work):
    return one_host_connections(work, SSHSettings())


def test_deadline_closes_the_device_and_says_so():
    w = DeviceWork("test-echo", "h1", None, {"ansible_host": "127.0.0.1"}, {"mode": "wait"}, 0.3)
    ctx = WorkerContext(w, _conns(w))
    t0 = time.monotonic()
    with pytest.raises(DeadlineReached, match=r"^h1: deadline of 0.3 s reached: internal error: ConnectionError"):
        call_handler(w, ctx)
    assert 0.25 < time.monotonic() - t0 < 3
    assert classify(DeadlineReached("h1", 0.3))[0] == Result.FAILED
    late = WorkerContext(w, _conns(w), deadline_at=time.monotonic() - 1)
    with pytest.raises(DeadlineReached, match="before the work started"):
        call_handler(w, late)


def test_worker_context_target_comes_from_the_work_and_the_workers_settings(tmp_path):
    kh = tmp_path / "known_hosts"
    w = DeviceWork("probe", "h1", "a", {"ansible_host": "192.0.2.9", "ansible_port": 2200, "ansible_user": "pi",
                                        "ansible_become": "yes"}, {}, 10)
    ctx = WorkerContext(w, one_host_connections(w, SSHSettings(known_hosts=(kh,))), worker="n", site="a")
    t = ctx.target()
    assert (t.hostname, t.port, t.user, t.become, t.known_hosts_files) == ("192.0.2.9", 2200, "pi", True, (kh,))


def test_local_executor_outcomes_in_order_with_where_they_ran():
    works = [DeviceWork("test-echo", f"h{i}", None, {}, {"mode": m}, 5)
             for i, m in enumerate(["ok", "fail", "not-a-dict", "ok"])]
    done = []
    outs = LocalExecutor(_conns(works[0])).map(works, forks=2, on_done=done.append)
    assert [o.item.host for o in outs] == ["h0", "h1", "h2", "h3"]
    assert all(isinstance(o, WorkOutcome) and o.worker == "local" and o.site is None for o in outs)
    assert outs[0].value == {"host": "h0", "worker": "local", "left": True}
    assert classify(outs[1].error) == (Result.UNREACHABLE, "no route")
    assert isinstance(outs[2].error, TypeError) and "not a dict" in str(outs[2].error)
    assert sorted(id(o) for o in done) == sorted(id(o) for o in outs)
    with pytest.raises(UsageError, match="no handler for work kind 'nope'"):
        LocalExecutor(_conns(works[0])).map([DeviceWork("nope", "h", None)])


# ------------------------------------------------------------------ Celery configuration (no broker)


def test_broker_and_backend_urls():
    from fleet.executor.app import check_broker_url, result_backend_for, safe_url, visibility_timeout

    assert result_backend_for("redis://h:6379/0") == "redis://h:6379/0"
    assert result_backend_for("amqp://h//", "redis://r/1") == "redis://r/1"
    with pytest.raises(UsageError, match="needs a Redis result backend"):
        result_backend_for("amqp://h//")
    with pytest.raises(UsageError, match="results come back through Redis"):
        result_backend_for("redis://h/0", "db+sqlite:///x")
    with pytest.raises(UsageError, match="not a broker URL"):
        check_broker_url("sqs://x")
    assert "pw" not in safe_url("redis://:pw@h:1/0") and "pw" not in safe_url("amqp://u:pw@h//")
    assert visibility_timeout(3600) == 3960 and visibility_timeout(6) == 11


def _identity(tmp_path, name, *, kind="rsa", days=2):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa" \
        else ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=3))
            .not_valid_after(now + datetime.timedelta(days=days)).sign(key, hashes.SHA256()))
    kp, cp = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    kp.chmod(0o600)
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return kp, cp


def test_signing_identity_checks(tmp_path):
    from fleet.executor import Signing, SigningError

    key, cert = _identity(tmp_path, "ctl")
    _, other = _identity(tmp_path, "site")
    store = tmp_path / "store"
    store.mkdir()
    (store / "site.pem").write_bytes(other.read_bytes())
    s = Signing.from_options(key, cert, store, environ={})
    assert s.store_files() == [store / "site.pem"]
    env = {"FLEET_CELERY_KEY": str(key), "FLEET_CELERY_CERT": str(cert), "FLEET_CELERY_CERT_STORE": str(store)}
    assert Signing.from_options(environ=env).key == key
    with pytest.raises(SigningError, match="give --cert PATH or set FLEET_CELERY_CERT"):
        Signing.from_options(key, None, store, environ={})
    with pytest.raises(SigningError, match="is not the certificate of --key"):
        Signing.from_options(key, other, store, environ={})
    key.chmod(0o644)
    with pytest.raises(SigningError, match="permissions 0644 are too open"):
        Signing.from_options(key, cert, store, environ={})
    key.chmod(0o600)
    ek, ec_ = _identity(tmp_path, "ec", kind="ec")
    with pytest.raises(SigningError, match="RSA keys only"):
        Signing.from_options(ek, ec_, store, environ={})
    (store / "junk.pem").write_text("not a certificate")
    with pytest.raises(SigningError, match="junk.pem: not a readable PEM certificate"):
        Signing.from_options(key, cert, store, environ={})
    (store / "junk.pem").unlink()
    _, old = _identity(tmp_path, "old", days=-1)
    (store / "old.pem").write_bytes(old.read_bytes())
    with pytest.raises(SigningError, match="old.pem: certificate expired"):
        Signing.from_options(key, cert, store, environ={})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SigningError, match="holds no certificate"):
        Signing.from_options(key, cert, empty, environ={})
