"""Planning a publish (fleet.plan): pure logic on the real-device cases, plus the
`fleet plan` CLI without devices (explicit --platform lists)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.detect import Detection, detect
from fleet.errors import InputFileError, UsageError
from fleet.publish.index import IndexRefused
from fleet.platform import Platform
from fleet.plan import canonical_order, engine_is_legacy, make_plan
from fleet.playbook import BuildSource, NativeSource, PickSource, Playbook, RegistrySettings, load_playbook
from fleet.publish import _norm, _resolve, _run_targets
from fleet.publish.sources import Child, build_args_for, classic_builder_hint, platform_tag, push_stream_errors
from tests.cases import load_cases

P = Platform.parse
INDEX_CASES = {c["id"]: c for c in load_cases("index-cases.yaml")}
FACT_CASES = {c["id"]: c for c in load_cases("arch-facts.yaml")}


def _playbook(tmp_path: Path, platforms="auto", source=None) -> Playbook:
    return Playbook(path=tmp_path / "p.yaml", name="t", image="127.0.0.1:5000/t/app:1.0",
                    source=source or BuildSource(tmp_path), platforms=platforms,
                    registry=RegistrySettings(), document=None)


def _det(platform: str | None, engine: str | None = None, error: str | None = None) -> Detection:
    p = P(platform) if platform else None
    return Detection(platform=p, engine_platform=P(engine) if engine else p, error=error)


# ------------------------------------------------------------------ index cases

# Cases about which entry a device receives (the others are publish refusals, below).
PLAN_CASES = ["AC-01", "AC-11", "AC-25", "AC-27", "AC-30", "AC-31"]


@pytest.mark.parametrize("case_id", PLAN_CASES)
def test_index_case_device_gets_expected_entry(tmp_path, case_id):
    case = INDEX_CASES[case_id]
    written = [e["platform"] for e in case["index"]]
    # The index as a plan sees it: attestation entries are never planned for a device.
    planned = [P(w) for w in written if not w.startswith("unknown/")]
    device = case["device_platform"]
    plan = make_plan(_playbook(tmp_path, tuple(planned)), {"dev": _det(device)})
    (dp,) = plan.devices
    expected = case["expected"]["entry"]
    if expected is None:
        assert dp.entry_platform is None
        assert dp.error and f"no entry a {P(device)} device can run" in dp.error
        assert plan.errors == [f"dev: {dp.error}"]
    else:
        assert dp.error is None and plan.errors == []
        assert dp.entry_platform == P(written[expected])
    # Where the same report has device facts, detecting them gives the case's device.
    if case_id in FACT_CASES and FACT_CASES[case_id]["expected"]["platform"]:
        assert detect(FACT_CASES[case_id]["facts"]).platform == P(device)


def test_ac30_bare_arm_is_v7_and_serves_v7_devices(tmp_path):
    plan = make_plan(_playbook(tmp_path, (P("linux/amd64"), P("linux/arm"))), {"v7": _det("linux/arm/v7")})
    assert plan.devices[0].entry_platform == P("linux/arm/v7")


@pytest.mark.parametrize("case_id,bad", [("AC-22", "linux/arm64/armv8"), ("AC-40", "linux/arm/v7l"),
                                        ("AC-40", "linux/arm/v6l")])
def test_malformed_variants_are_refused_in_playbook_and_cli(tmp_path, case_id, bad):
    assert bad in [e["platform"] for e in INDEX_CASES[case_id]["index"]]
    pb = tmp_path / "p.yaml"
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\n")
    pb.write_text(f"name: t\nimage: 127.0.0.1:5000/t/a:1\nsource:\n  build: {{context: ctx}}\n"
                  f"platforms:\n  - linux/amd64\n  - {bad}\n")
    with pytest.raises(InputFileError) as e:
        load_playbook(pb)
    assert e.value.line == 7 and bad in str(e.value)
    pb.write_text("name: t\nimage: 127.0.0.1:5000/t/a:1\nsource:\n  build: {context: ctx}\n")
    cp = _fleet("plan", str(pb), "--platform", bad)
    assert cp.returncode == 2 and bad in cp.stderr and "Traceback" not in cp.stderr


def test_ac05_duplicate_platform_is_refused(tmp_path):
    case = INDEX_CASES["AC-05"]
    dup = case["index"][0]["platform"]
    pb = tmp_path / "p.yaml"
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\n")
    pb.write_text(f"name: t\nimage: 127.0.0.1:5000/t/a:1\nsource:\n  build: {{context: ctx}}\n"
                  f"platforms: [{dup}, {dup}]\n")
    with pytest.raises(InputFileError, match="duplicate platform"):
        load_playbook(pb)
    pb.write_text("name: t\nimage: 127.0.0.1:5000/t/a:1\nsource:\n  build: {context: ctx}\n")
    cp = _fleet("plan", str(pb), "--platform", dup, "--platform", "linux/arm/v6")
    assert cp.returncode == 2 and "duplicate platform linux/arm/v6" in cp.stderr
    # and at assembly time, whatever the source (before any registry request)
    from fleet.publish import assemble
    from fleet.registry import Reference
    d = "sha256:" + "a" * 64
    kids = [Child(P(dup), d, "application/vnd.docker.distribution.manifest.v2+json", 500, "x")] * 2
    with pytest.raises(IndexRefused) as e:
        assemble(None, Reference.parse("127.0.0.1:1/a/b:1"), kids)  # type: ignore[arg-type]
    assert e.value.kinds == {"duplicate-platform"}


# ------------------------------------------------------------------ auto / explicit


def _lab_like() -> dict[str, Detection]:
    """The lab fleet's decisions, from the real device cases' facts where they exist."""
    return {
        "pi-zero": _det("linux/arm/v6"),
        "pi3-32": _det("linux/arm/v7"),
        "pi4-64": _det("linux/arm64"),
        "pi4-32on64": _det("linux/arm/v7", engine="linux/arm/v8"),
        "x86": _det("linux/amd64"),
    }


def test_auto_gives_every_device_its_own_platform_in_a_fixed_order(tmp_path):
    dets = _lab_like()
    plan = make_plan(_playbook(tmp_path), dets, engine_versions={h: "20.10.24+dfsg1" for h in dets})
    assert plan.platforms == tuple(map(P, ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6"]))
    assert plan.errors == []
    for d in plan.devices:
        assert d.entry_platform == d.platform
    # arm/v7 before arm/v6: the 20.10 engine of a 32-bit Pi 4 (asks arm/v8) takes the first
    # arm entry, which is then its own arm/v7 build: no --platform needed.
    pi4 = next(d for d in plan.devices if d.host == "pi4-32on64")
    assert pi4.engine_entry == P("linux/arm/v7") and pi4.explicit_platform is False
    # inventory order does not change the index order (same index digest)
    items = list(dets.items())
    random.Random(7).shuffle(items)
    assert make_plan(_playbook(tmp_path), dict(items)).platforms == plan.platforms


def test_explicit_list_v6_before_v7_makes_legacy_engine_pull_with_platform(tmp_path):
    dets = _lab_like()
    plats = (P("linux/arm/v6"), P("linux/arm/v7"), P("linux/arm64"), P("linux/amd64"))
    plan = make_plan(_playbook(tmp_path, plats), dets, engine_versions={h: "20.10.24" for h in dets})
    pi4 = next(d for d in plan.devices if d.host == "pi4-32on64")
    assert pi4.entry_platform == P("linux/arm/v7")
    assert pi4.engine_entry == P("linux/arm/v6")  # engine 20.10 takes the FIRST arm entry
    assert pi4.explicit_platform is True and "--platform linux/arm/v7" in pi4.note
    # a containerd-matching engine (Docker 23+) would pick v7 itself
    plan2 = make_plan(_playbook(tmp_path, plats), dets, engine_versions={h: "24.0.7" for h in dets})
    assert next(d for d in plan2.devices if d.host == "pi4-32on64").explicit_platform is False
    # engine version unknown: both matchers considered, disagreement -> explicit
    plan3 = make_plan(_playbook(tmp_path, plats), dets)
    assert next(d for d in plan3.devices if d.host == "pi4-32on64").explicit_platform is True
    assert all(not d.explicit_platform for d in plan3.devices if d.host != "pi4-32on64")


def test_explicit_list_without_v7_serves_v7_devices_the_v6_entry(tmp_path):
    plats = (P("linux/amd64"), P("linux/arm64"), P("linux/arm/v6"))
    plan = make_plan(_playbook(tmp_path, plats), _lab_like(), engine_versions={"pi3-32": "20.10.24"})
    by = {d.host: d for d in plan.devices}
    assert plan.errors == []
    assert by["pi3-32"].entry_platform == P("linux/arm/v6") and "no linux/arm/v7 entry" in by["pi3-32"].note
    # a 20.10 engine asking arm/v7 finds no exact entry and takes the first arm one: the same
    assert by["pi3-32"].explicit_platform is False
    # --platform replaces the playbook's list
    plan2 = make_plan(_playbook(tmp_path, plats), _lab_like(), explicit_platforms=[P("linux/arm/v7")])
    assert plan2.platforms == (P("linux/arm/v7"),)
    # an arm64 device falls back to arm/v7 (containerd); a v6 Pi Zero and x86 cannot
    assert {d.host for d in plan2.devices if d.error} == {"pi-zero", "x86"}
    assert next(d for d in plan2.devices if d.host == "pi4-64").entry_platform == P("linux/arm/v7")


def test_undecided_unprobed_and_incompatible_devices_are_errors(tmp_path):
    dets = {"ok": _det("linux/arm64"), "undecided": _det(None, error="only kernel facts: aarch64"),
            "down": None}
    plan = make_plan(_playbook(tmp_path), dets, probe_errors={"down": "unreachable"})
    assert plan.platforms == (P("linux/arm64"),)
    errs = plan.errors
    assert errs[0] == "undecided: undecided platform: only kernel facts: aarch64"
    assert errs[1] == "down: not probed: unreachable"
    plan = make_plan(_playbook(tmp_path, (P("linux/amd64"), P("linux/arm64"))), {"zero": _det("linux/arm/v6")})
    assert plan.errors == ["zero: no entry a linux/arm/v6 device can run (it accepts linux/arm/v6, "
                           "linux/arm/v5); the index would hold linux/amd64, linux/arm64"]
    assert make_plan(_playbook(tmp_path), {}).errors[-1].startswith("no platform to publish")


def test_sources_are_described_and_missing_ones_are_errors(tmp_path):
    native = NativeSource(tmp_path, {P("linux/arm/v6"): "pi-zero"})
    plan = make_plan(_playbook(tmp_path, source=native), _lab_like())
    assert plan.sources[P("linux/arm/v6")] == "build natively on device pi-zero"
    assert any(e.startswith("linux/amd64: the native source names no builder") for e in plan.errors)
    pick = PickSource(refs={P("linux/arm64"): "r/app:1-arm64"})
    plan = make_plan(_playbook(tmp_path, (P("linux/arm64"),), source=pick), {})
    assert plan.errors == [] and plan.sources[P("linux/arm64")] == "pick r/app:1-arm64"
    plan = make_plan(_playbook(tmp_path, (P("linux/arm64"),), source=PickSource(index="r/app:1")), {})
    assert plan.sources[P("linux/arm64")] == "pick the linux/arm64 entry of r/app:1"
    assert json.loads(json.dumps(plan.to_dict()))["platforms"] == ["linux/arm64"]


def test_canonical_order_and_engine_versions():
    got = canonical_order(list(map(P, ["linux/s390x", "linux/arm/v6", "linux/386", "linux/arm/v7",
                                       "linux/arm64", "linux/amd64", "linux/arm/v6"])))
    assert [str(p) for p in got] == ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6",
                                     "linux/386", "linux/s390x"]
    assert engine_is_legacy("20.10.24+dfsg1") is True
    assert engine_is_legacy("18.09.2") is True
    assert engine_is_legacy("29.0.1") is False
    assert engine_is_legacy("") is None and engine_is_legacy("dev") is None


# ------------------------------------------------------------------ source helpers


def test_platform_tags_and_build_args():
    assert platform_tag("1.0", P("linux/arm/v6")) == "1.0-linux-arm-v6"
    assert platform_tag("1.0", P("linux/arm64/v8")) == "1.0-linux-arm64"
    with pytest.raises(UsageError):
        platform_tag("x" * 120, P("linux/arm/v6"))
    args = build_args_for(P("linux/arm/v6"), P("linux/amd64"))
    assert args == {"TARGETPLATFORM": "linux/arm/v6", "TARGETOS": "linux", "TARGETARCH": "arm",
                    "TARGETVARIANT": "v6", "BUILDPLATFORM": "linux/amd64", "BUILDOS": "linux",
                    "BUILDARCH": "amd64", "BUILDVARIANT": ""}


def test_classic_builder_trap_hint_and_push_stream_errors():
    # the engine's message, as Debian's engine 20.10.24 printed it for a foreign --platform
    msg = ('failed to get destination image "sha256:458b": image with reference sha256:458b was '
           'found but does not match the specified platform: wanted linux/arm64, actual: linux/amd64')
    assert "first instruction must add content (COPY/ADD)" in classic_builder_hint(msg)
    assert classic_builder_hint("COPY failed: file not found") == ""
    # the push stream's shape (engine 20.10): errors arrive in the stream, not as HTTP errors
    stream = [{"status": "The push refers to repository [r/a]"},
              {"status": "Preparing", "id": "62ef"}, {"status": "Pushed", "id": "62ef"},
              {"status": "Layer already exists", "id": "5ce5"},
              {"errorDetail": {"message": "unauthorized: authentication required"},
               "error": "unauthorized: authentication required"}]
    assert push_stream_errors(stream) == (None, 1, ["unauthorized: authentication required"])
    ok = [{"status": "Pushed"}, {"aux": {"Tag": "t", "Digest": "sha256:" + "b" * 64, "Size": 735}}]
    assert push_stream_errors(ok) == ("sha256:" + "b" * 64, 1, [])


def test_entrypoint_resolution():
    cfg = {"config": {"Entrypoint": ["/bin/busybox", "sh", "/hello.sh"]}}
    assert _run_targets(cfg) == ["/bin/busybox"]
    cfg = {"config": {"Cmd": ["app"], "Env": ["PATH=/opt/bin:/bin"]}}
    assert _run_targets(cfg) == ["/opt/bin/app", "/bin/app"]
    assert _run_targets({"config": {}}) == []
    links = {"/bin/sh": "busybox", "/usr/bin": "/bin", "/lib": "usr/lib"}
    assert _resolve("/bin/sh", links) == "/bin/busybox"
    assert _resolve("/usr/bin/sh", links) == "/bin/busybox"
    assert _norm("./bin/busybox") == "/bin/busybox" and _norm(".") == "/"


# ------------------------------------------------------------------ CLI without devices

FLEET = [str(Path(sys.executable).with_name("fleet"))]


def _fleet(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400"}  # rich wraps stderr at 80 columns otherwise
    return subprocess.run([*FLEET, *args], capture_output=True, text=True, timeout=120, env=env)


def test_cli_plan_with_platforms_json_and_auto_without_inventory(tmp_path):
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\n")
    pb = tmp_path / "p.yaml"
    pb.write_text("name: t\nimage: 127.0.0.1:5000/t/a:1\nsource:\n  build: {context: ctx}\nplatforms: auto\n")
    cp = _fleet("plan", str(pb))
    assert cp.returncode == 2 and "platforms: auto needs devices" in cp.stderr
    cp = _fleet("plan", str(pb), "--platform", "linux/arm64/v8", "--platform", "arm/v7", "--json")
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    assert doc["platforms"] == ["linux/arm64", "linux/arm/v7"] and doc["errors"] == []
    assert doc["reference"] == "127.0.0.1:5000/t/a:1"
    # publish with a plan error never reaches the registry (127.0.0.1:5000 is not listening)
    cp = _fleet("publish", str(pb))
    assert cp.returncode == 2
