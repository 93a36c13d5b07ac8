"""A device's job and report as JSON and back (what crosses the broker to a site worker):
every type round-trips to an equal value through real JSON text, malformed data is refused
naming the field, and nothing of the controller's secrets is in the data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from fleet.compose.model import (BuildSpec, Dependency, Healthcheck, Logging, Mount, NetworkAttachment, NetworkSpec,
                                 ServiceSpec, Ulimit, VolumeSpec)
from fleet.compose.stack import DeviceValues, ResolvedStack, VariableValue
from fleet.deploy.devicetxn import AppRecord
from fleet.deploy.jobs import (App, AuthRef, DeployHooks, DeployOptions, DeviceJob, JobFormatError, Unit,
                               deploy_deadline, deploy_hooks, hooks_for, verify_deadline)
from fleet.executor import DeviceWork
from fleet.executor.handlers_deploy import deploy_payload
from fleet.plain import PlainFormatError
from fleet.plan import DevicePlan
from fleet.platform import Platform
from fleet.playbook import HealthSpec
from fleet.results import DeviceReport, Result
from fleet.verify import Expected


def through_json(data):
    return json.loads(json.dumps(data))


def full_spec(name: str = "web") -> ServiceSpec:
    """A ServiceSpec with every field set to something other than its default."""
    return ServiceSpec(
        name=name, image="reg.example:5000/app/web:1.2",
        build=BuildSpec(Path("/src/web"), "Dockerfile.arm", {"VERSION": "1.2"}, "runtime"),
        command=("serve", "--port", "8080"), entrypoint=("/bin/tini", "--"),
        env={"MODE": "prod", "EMPTY": "", "DB_PASSWORD": "s3cret"}, ports=("127.0.0.1:8080:8080/tcp", "9000"),
        expose=("7000/udp",),
        mounts=(Mount("bind", "/srv/web", "/data", True, ("z",)), Mount("volume", "app_cache", "/cache")),
        tmpfs={"/run": "size=64m", "/tmp": ""}, devices=("/dev/gpiomem", "/dev/ttyUSB0:/dev/ttyS0:rw"),
        cap_add=("NET_ADMIN",), cap_drop=("MKNOD",), group_add=("dialout",), privileged=True, user="1000:1000",
        working_dir="/app", read_only=True, mem_limit=256 * 2**20, mem_reservation=128 * 2**20,
        memswap_limit=-1, cpus=1.5, shm_size=64 * 2**20, pids_limit=100,
        logging=Logging("local", {"max-size": "10m", "max-file": "3"}), restart="unless-stopped",
        healthcheck=Healthcheck(("CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/"), 5.0, 2, 10.0, 0.5, 3),
        network_mode="bridge", networks=(NetworkAttachment("app_front", ("web", "www")), NetworkAttachment("app_back")),
        depends_on=(Dependency("db", "service_healthy", False, True),), labels={"com.example.token": "x", "team": "iot"},
        sysctls={"net.core.somaxconn": "1024"}, extra_hosts=("db.local:10.0.0.2",), hostname="web1", init=True,
        stop_grace_period=12.5, stop_signal="SIGTERM", ulimits=(Ulimit("nofile", 1024, 2048),),
        security_opt=("no-new-privileges:true",), dns=("9.9.9.9",))


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def test_full_service_spec_round_trips_and_keeps_its_digest():
    spec = full_spec()
    for f in dataclasses.fields(ServiceSpec):  # the test covers every field
        assert getattr(spec, f.name) != _default(f), f.name
    back = ServiceSpec.from_dict(through_json(spec.to_dict()))
    assert back == spec
    assert back.digest() == spec.digest()
    assert isinstance(back.command, tuple) and isinstance(back.mounts[0].options, tuple)
    assert isinstance(back.build.context, Path)
    # the default spec too
    plain = ServiceSpec(name="x")
    assert ServiceSpec.from_dict(through_json(plain.to_dict())) == plain


def test_mapping_keys_travel_as_data_not_keys():
    """A container variable named like a secret is data of the job, never a key a
    secret-name check would read as a field (the job says which secrets it holds instead)."""
    d = full_spec().to_dict()
    assert ["DB_PASSWORD", "s3cret"] in d["env"]
    assert "DB_PASSWORD" not in json.dumps(list(_keys(d)))


def _keys(value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from _keys(v)


@pytest.mark.parametrize("mutate, where", [
    (lambda d: d.update(colour="red"), "unknown field(s) colour"),
    (lambda d: d.update(privileged="yes"), "spec.privileged: expected bool"),
    (lambda d: d["mounts"][0].update(read_only=1), "spec.mounts[0].read_only"),
    (lambda d: d.update(env={"A": "b"}), "spec.env: expected a list of [key, value] pairs"),
    (lambda d: d.update(mem_limit=1.5), "spec.mem_limit: expected an integer"),
    (lambda d: d.update(cpus=True), "spec.cpus: expected a number"),
    (lambda d: d.pop("name"), "missing field name"),
])
def test_malformed_spec_is_refused_naming_the_field(mutate, where):
    d = through_json(full_spec().to_dict())
    mutate(d)
    with pytest.raises(PlainFormatError, match=where.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        ServiceSpec.from_dict(d)


def test_network_volume_health_expected_plan_record_round_trip():
    net = NetworkSpec("front", "app_front", "bridge", {"com.docker.network.bridge.name": "br-app"}, {"a": "b"},
                      False, True)
    vol = VolumeSpec("secrets", "app_secrets", "local", {"type": "tmpfs"}, {"a": "b"}, True)
    health = HealthSpec(3, ("/bin/true",), "http://127.0.0.1:8080/", 90, 1)
    exp = Expected("reg.example:5000/app/web", "sha256:" + "1" * 64, Platform.parse("linux/arm/v7"),
                   "sha256:" + "2" * 64, "sha256:" + "3" * 64, ("sha256:" + "4" * 64, "sha256:" + "5" * 64))
    plan = DevicePlan("pi3", Platform.parse("linux/arm/v7"), Platform.parse("linux/arm64"),
                      Platform.parse("linux/arm/v7"), True, None, Platform.parse("linux/arm/v6"), "note", 2)
    record = AppRecord("web", None, "D1", "committed", "D0")
    for value in (net, vol, health, exp, plan, record):
        assert type(value).from_dict(through_json(value.to_dict())) == value
    undecided = DevicePlan("x", None, error="no platform decided")
    assert DevicePlan.from_dict(through_json(undecided.to_dict())) == undecided
    with pytest.raises(ValueError, match="armv9000"):
        Expected.from_dict({**exp.to_dict(), "platform": "linux/armv9000"})
    with pytest.raises(ValueError, match="unknown field"):
        DevicePlan.from_dict({**plan.to_dict(), "extra": 1})


def job(with_stack: bool = True) -> DeviceJob:
    exp = Expected("reg.example:5000/app/web", "sha256:" + "1" * 64, Platform.parse("linux/amd64"),
                   "sha256:" + "2" * 64, "sha256:" + "3" * 64, ("sha256:" + "4" * 64,))
    plan = DevicePlan("dev1", Platform.parse("linux/amd64"), Platform.parse("linux/amd64"),
                      Platform.parse("linux/amd64"), entry_index=0)
    web = Unit("web", "app-web", full_spec("web"), exp, plan, 1234,
               AuthRef("reg.example:5000", "REG_USER", "REG_PASSWORD", "/etc/fleet/docker.json"))
    db = Unit("db", "app-db", ServiceSpec(name="db", env={"POSTGRES_DB": "app"}), exp, plan, 99, None)
    stack = None
    if with_stack:
        stack = ResolvedStack("dev1", "app", {"db": db.spec, "web": web.spec},
                              {"front": NetworkSpec("front", "app_front")},
                              {"secrets": VolumeSpec("secrets", "app_secrets")},
                              DeviceValues("dev1", (VariableValue("DB_PASSWORD", "s3cret", "environment", True),
                                                    VariableValue("SITE", "kitchen", "inventory", False))),
                              ("db", "web"), {"web": ("db",)})
    return DeviceJob("dev1", (db, web), "app", AppRecord("app", None, "D0", "committed", "D0"),
                     {"app-web": ("app-db",)}, stack)


def test_device_job_round_trip_without_the_stack_values():
    j = job()
    d = through_json(j.to_dict())
    back = DeviceJob.from_dict(d)
    assert back.to_dict() == d
    assert (back.host, back.units, back.app, back.record, back.healthy_before) == \
        (j.host, j.units, j.app, j.record, j.healthy_before)
    assert back.units[1].auth == AuthRef("reg.example:5000", "REG_USER", "REG_PASSWORD", "/etc/fleet/docker.json")
    s = back.stack
    assert (s.project, s.networks, s.volumes, s.order, s.healthy_before) == \
        ("app", j.stack.networks, j.stack.volumes, ("db", "web"), {"web": ("db",)})
    assert s.services == {"db": j.units[0].spec, "web": j.units[1].spec}
    # the values (what fleet plan shows, secrets included) never travel
    assert s.values == DeviceValues("dev1") and "kitchen" not in json.dumps(d)
    single = job(with_stack=False)
    assert DeviceJob.from_dict(through_json(single.to_dict())).to_dict() == single.to_dict()


def test_secret_names_of_a_job():
    assert job().secret_names() == ["DB_PASSWORD", "web: DB_PASSWORD"]
    assert job(with_stack=False).secret_names() == ["web: DB_PASSWORD"]
    quiet = DeviceJob("dev1", (Unit("c", "c", ServiceSpec(name="c", env={"API_TOKEN": ""}), job().units[0].expected,
                                    job().units[0].plan),), "c")
    assert quiet.secret_names() == []


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.update(extra=1), "malformed job"),
    (lambda d: d["units"][0].update(size="big"), "malformed unit"),
    (lambda d: d["units"][1]["spec"].update(user=7), r"unit app-web: spec.user: expected str"),
    (lambda d: d["units"][1]["auth"].update(password="x"), "auth: not a credentials reference"),
    (lambda d: d["units"][0]["plan"].update(platform="linux/nope"), "unit app-db"),
    (lambda d: d.update(units=[]), "host, app or units"),
])
def test_malformed_job_is_refused(mutate, match):
    d = through_json(job().to_dict())
    mutate(d)
    with pytest.raises(JobFormatError, match=match):
        DeviceJob.from_dict(d)


def test_app_and_options_round_trip_hooks_stay_in_this_process():
    app = App("reg.example:5000/app/web:1.2", "app", HealthSpec(3, None, "http://127.0.0.1:8080/", 90, 1))
    assert App.from_dict(through_json(app.to_dict())) == app
    called = []
    opts = DeployOptions(forks=7, min_free=5, log_tail=3, pull_timeout=600.5, pull_attempts=2, stop_timeout=4,
                         keep_images=None, deployment="20250101T000000Z-abcdef",
                         hooks=DeployHooks(before_health=lambda h, e: called.append(h)))
    d = through_json(opts.to_dict())
    assert "hooks" not in d
    back = DeployOptions.from_dict(d)
    assert dataclasses.replace(back, hooks=opts.hooks) == opts and back.hooks.before_health is None
    with deploy_hooks(opts.deployment, opts.hooks):
        assert hooks_for(opts.deployment) is opts.hooks
        assert DeployOptions.from_dict(d).hooks is opts.hooks
    assert hooks_for(opts.deployment) is None
    with pytest.raises(JobFormatError):
        DeployOptions.from_dict({**d, "forks": "7"})


def test_device_report_round_trip_with_every_field():
    rep = DeviceReport("dev1", "linux/arm/v7", "linux/arm64", "linux/arm/v7", True, "sha256:" + "a" * 64,
                       "sha256:" + "b" * 64, Result.ROLLED_BACK, "new version unhealthy", 12.3,
                       ["pull x", "create app.new"], [{"name": "platform", "ok": True, "detail": "linux/arm/v7"}],
                       "log line", {"deployment": "D0", "index_digest": "sha256:" + "c" * 64}, 10**9, 10**8,
                       {"channels_opened": 3}, [{"service": "web", "result": "rolled-back"}], "fleet-a@box", "a",
                       "sha256:" + "d" * 64)
    for f in dataclasses.fields(DeviceReport):
        assert getattr(rep, f.name) != _default(f), f.name
    d = through_json(rep.to_dict())
    assert d["ok"] is False and d["worker"] == "fleet-a@box" and d["site"] == "a"
    assert DeviceReport.from_dict(d) == rep
    assert DeviceReport.from_dict(through_json(DeviceReport("h").to_dict())) == DeviceReport("h")
    with pytest.raises(ValueError, match="unknown result"):
        DeviceReport.from_dict({**d, "result": "exploded"})
    with pytest.raises(ValueError, match="unknown field"):
        DeviceReport.from_dict({**d, "cpu": 1})


def test_deadlines_follow_what_the_work_may_take():
    j, app = job(with_stack=False), App("r", "p", HealthSpec(timeout=90))
    opts = DeployOptions(pull_timeout=1800, stop_timeout=10)
    # pull 1800 + settle (health 90 + 2 x (12.5 s grace rounded, x2 units) + 150) + lock grace 60 + 300
    assert deploy_deadline(j, app, opts, connect=40) == 40 + 1800 + (90 + 2 * 24 + 150) + 60 + 300
    assert deploy_deadline(j, app, opts, check_only=True, connect=40) == 340
    assert verify_deadline(j, connect=40) == 40 + 300 + 30
    # the default deploy fits the site workers' default --max-deadline (3600 s)
    assert deploy_deadline(j, App("r", "p", HealthSpec()), DeployOptions(), connect=130) < 3600


def test_a_deploy_work_item_carries_the_job_and_names_its_secrets():
    j = job()
    payload = deploy_payload(j, App("r", "p", HealthSpec()), DeployOptions(deployment="D1"))
    w = DeviceWork("deploy", "dev1", "a", {}, payload, 600.0, tuple(j.secret_names()))
    back = DeviceWork.from_dict(through_json(w.to_dict()))
    assert back.secrets == ()  # the names stay with the controller's decision, never sent
    assert DeviceJob.from_dict(back.payload["job"]).to_dict() == j.to_dict()
    assert w.secrets == ("DB_PASSWORD", "web: DB_PASSWORD")
