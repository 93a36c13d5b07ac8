"""Engine-output parsing and verification logic, on captured and constructed engine JSON
(tests/data/engine/README.md says which is which). No lab, no network."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from fleet.deploy.container import LABEL, spec_digest
from fleet.deploy.decide import PULL_EXPANSION, space_needed
from fleet.engine import EngineError, PullAuth, parse_container, parse_df, parse_image, parse_info, parse_version
from fleet.engine.cli import create_args, env_file
from fleet.platform import Platform
from fleet.playbook import ContainerSpec
from fleet.verify import Expected, check_container, check_image, crash_reason, verdict

DATA = Path(__file__).resolve().parents[1] / "data" / "engine"
DEVICES = ["pi-zero", "pi3-32", "pi4-64", "pi4-32on64", "x86"]


def load(name: str):
    return json.loads((DATA / name).read_text())


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("device, arch", [("pi-zero", "arm"), ("pi3-32", "arm"), ("pi4-64", "arm64"),
                                          ("pi4-32on64", "arm"), ("x86", "amd64")])
def test_parse_version_captured(device, arch):
    v = parse_version((DATA / f"version-20.10-{device}.json").read_bytes())
    assert v.server_version == "20.10.24+dfsg1"
    assert v.api_version == "1.41" and v.min_api_version == "1.12"
    assert (v.os, v.arch) == ("linux", arch)
    assert v.major == 20
    assert not v.api_at_least("1.48") and v.api_at_least("1.41")


def test_parse_version_containerd_store_engine():
    v = parse_version(load("c8d-29.0-version.json"))
    assert (v.server_version, v.api_version, v.min_api_version) == ("29.0.0", "1.52", "1.44")
    assert v.arch == "arm64" and v.major == 29
    assert v.api_at_least("1.49") and v.api_at_least("1.52") and not v.api_at_least("1.53")


def test_parse_version_without_server_is_an_error():
    doc = load("version-20.10-x86.json")
    del doc["Server"]
    with pytest.raises(ValueError, match="engine did not answer"):
        parse_version(doc)


@pytest.mark.parametrize("device, machine", [("pi-zero", "armv6l"), ("pi3-32", "armv7l"), ("pi4-64", "aarch64"),
                                             ("pi4-32on64", "armv7l"), ("x86", "x86_64")])
def test_parse_info_captured_classic_store(device, machine):
    info = parse_info((DATA / f"info-20.10-{device}.json").read_text())
    assert info.architecture == machine
    assert info.docker_root_dir == f"/var/lib/fleet-lab/devices/{device}/engine/data"
    assert info.driver == "overlay2"
    assert info.containerd_store is False and info.store == "classic"


def test_parse_info_containerd_store():
    info = parse_info(load("c8d-29.0-info.json"))
    assert info.containerd_store is True and info.store == "containerd"
    assert info.driver == "overlayfs" and info.docker_root_dir == "/var/lib/docker"
    assert info.architecture == "aarch64" and info.server_version == "29.0.0"


def test_parse_image_classic_captured():
    img = parse_image((DATA / "image-20.10-classic-armv6.json").read_bytes())
    assert img.id == "sha256:8a0291fd1219afcc8d8a01429238c6f2538c2254fbc78caccf6687270c52293a"
    assert img.platform == Platform.parse("linux/arm/v6")
    assert len(img.diff_ids) == 2 and all(d.startswith("sha256:") for d in img.diff_ids)
    assert img.descriptor is None and img.manifests == ()


def test_parse_image_containerd_store():
    exp = load("c8d-29.0-expected.json")
    img = parse_image(load("c8d-29.0-image-inspect-armv7.json"))
    assert img.id == exp["index"]  # the index digest, not the config digest
    assert img.descriptor["digest"] == exp["index"]
    assert img.platform == Platform.parse("linux/arm/v7")
    assert list(img.diff_ids) == exp["diff_ids"]
    withm = parse_image(load("c8d-29.0-image-inspect-manifests.json"))
    assert [m["ID"] for m in withm.manifests] == [exp["manifest_armv6"], exp["manifest_armv7"]]


def test_parse_image_rejects_lists_of_several():
    doc = load("image-20.10-classic-armv6.json")
    with pytest.raises(ValueError):
        parse_image(doc + doc)


def test_parse_container_crashes_captured():
    ill = parse_container(load("container-20.10-sigill.json"))
    assert (ill.running, ill.status, ill.exit_code) == (False, "exited", 132)
    segv = parse_container(load("container-20.10-sigsegv.json"))
    assert segv.exit_code == 139
    bad = parse_container(load("container-20.10-exec-format-error.json"))
    assert bad.exit_code == 1 and bad.name == "fleet-cap-exec"
    assert bad.image_id.startswith("sha256:") and bad.manifest_digest is None


def test_parse_container_containerd_store():
    exp = load("c8d-29.0-expected.json")
    c = parse_container(load("c8d-29.0-container-inspect.json"))
    assert c.name == "hello" and c.running and c.network_mode == "host"
    assert c.image_id == exp["index"] and c.manifest_digest == exp["manifest_armv7"]
    assert c.labels[LABEL["index"]] == exp["index"]


def test_parse_df_busybox_and_gnu():
    bb = parse_df((DATA / "df-busybox-lab-device.txt").read_text(), "/")
    assert (bb.filesystem, bb.total_kib, bb.available_kib, bb.mount) == ("/dev/vda", 264212084, 81195200, "/var/run")
    assert bb.available_bytes == 81195200 * 1024
    gnu = parse_df((DATA / "df-gnu-coreutils.txt").read_text())
    assert gnu.filesystem == "/dev/vda" and gnu.mount == "/" and gnu.available_kib > 0
    spaced = parse_df("Filesystem 1024-blocks Used Available Capacity Mounted on\n"
                      "my disk 1000 10 990 1% /mnt/sd card\n")
    # POSIX -P: six columns; a mount point with a space keeps the tail after the 5th field
    assert (spaced.filesystem, spaced.available_kib, spaced.mount) == ("my disk", 990, "/mnt/sd card")
    with pytest.raises(ValueError):
        parse_df("df: /var/lib/docker: can't find mount point\n")


def test_pull_auth_docker_config_shape_never_plain_password_in_key():
    from fleet.registry import Credentials

    auth = PullAuth("198.18.0.1:5443", Credentials("fleet", "s3cret"))
    assert "s3cret" not in repr(auth)
    raw = auth.docker_config_json()
    doc = json.loads(raw)
    assert list(doc["auths"]) == ["198.18.0.1:5443"]
    import base64
    assert base64.b64decode(doc["auths"]["198.18.0.1:5443"]["auth"]) == b"fleet:s3cret"
    assert b"s3cret" not in raw


def test_engine_error_names_device_and_command():
    e = EngineError("pi-zero", "docker pull r/a@sha256:x", 1, "line1\nError response from daemon: denied\n")
    assert str(e) == "pi-zero: `docker pull r/a@sha256:x` failed: line1 | Error response from daemon: denied"


# --------------------------------------------------------------------------- verification


@pytest.fixture()
def classic_v6():
    img = parse_image(load("image-20.10-classic-armv6.json"))
    exp = Expected("198.18.0.1:5443/fleet/hello", "sha256:" + "1" * 64, Platform.parse("linux/arm/v6"),
                   "sha256:" + "2" * 64, img.id, img.diff_ids)
    return img, exp


def test_classic_image_verifies_on_config_digest_platform_and_layers(classic_v6):
    img, exp = classic_v6
    checks = check_image(exp, img, "classic")
    assert [c.name for c in checks] == ["config digest", "platform", "layers"]
    assert all(c.ok for c in checks)
    assert verdict(checks) == ("verified", "")


def test_classic_image_of_another_platform_is_drift(classic_v6):
    img, exp = classic_v6
    planned_v7 = replace(exp, platform=Platform.parse("linux/arm/v7"), config_digest="sha256:" + "3" * 64,
                         diff_ids=("sha256:" + "4" * 64,))
    status, reason = verdict(check_image(planned_v7, img, "classic"))
    assert status == "drifted"
    assert "config digest" in reason and "planned sha256:333333333333" in reason
    assert "platform: linux/arm/v6, planned linux/arm/v7" in reason and "layers" in reason


def test_wrong_child_with_matching_digests_is_caught_by_platform(classic_v6):
    # An index entry annotated arm64 whose child is really another image: the digests
    # recorded from the registry match what the device pulled, the platform does not.
    img, exp = classic_v6
    lying = replace(exp, platform=Platform.parse("linux/arm64"))
    checks = check_image(lying, img, "classic")
    assert [c.name for c in checks if c.ok is False] == ["platform"]
    assert verdict(checks)[0] == "drifted"


def test_config_without_variant_is_compared_on_os_and_architecture(classic_v6):
    img, exp = classic_v6
    no_variant = replace(img, variant="")
    checks = {c.name: c for c in check_image(exp, no_variant, "classic")}
    assert checks["platform"].ok is True and "no variant" in checks["platform"].detail


def test_containerd_store_identifies_child_by_layers_and_manifest():
    e = load("c8d-29.0-expected.json")
    exp = Expected(e["repository"], e["index"], Platform.parse("linux/arm/v7"), e["manifest_armv7"],
                   e["config_armv7"], tuple(e["diff_ids"]))
    img = parse_image(load("c8d-29.0-image-inspect-armv7.json"))
    checks = {c.name: c for c in check_image(exp, img, "containerd")}
    assert checks["config digest"].ok is None and "index digest" in checks["config digest"].detail
    assert checks["platform"].ok and checks["layers"].ok
    withm = parse_image(load("c8d-29.0-image-inspect-manifests.json"))
    assert {c.name: c.ok for c in check_image(exp, withm, "containerd")}["manifest"] is True
    # planned v6 on that engine: v6 child not available, wrong platform and layers
    v6 = replace(exp, platform=Platform.parse("linux/arm/v6"), manifest_digest=e["manifest_armv6"],
                 diff_ids=("sha256:" + "5" * 64,))
    bad = {c.name: c.ok for c in check_image(v6, withm, "containerd")}
    assert bad == {"config digest": None, "manifest": False, "platform": False, "layers": False}
    c = parse_container(load("c8d-29.0-container-inspect.json"))
    cc = {x.name: x for x in check_container(exp, c, img, "containerd")}
    assert cc["container image"].ok and cc["deployment"].ok and cc["running"].ok
    assert not {x.name: x.ok for x in check_container(v6, c, img, "containerd")}["container image"]
    # classic rules applied to a containerd engine's answer would call it drift: the store matters
    assert verdict(check_image(exp, img, "classic"))[0] == "drifted"


@pytest.mark.parametrize("sample, log, needle", [
    ("container-20.10-sigill.json", "container-20.10-sigill.log", "SIGILL"),
    ("container-20.10-sigsegv.json", None, "SIGSEGV"),
    ("container-20.10-exec-format-error.json", "container-20.10-exec-format-error.log", "exec format error"),
])
def test_crash_reasons_from_captured_containers(sample, log, needle):
    c = parse_container(load(sample))
    logs = (DATA / log).read_text() if log else ""
    assert needle in crash_reason(c, logs)
    exp = Expected("r/x", "sha256:" + "1" * 64, Platform.parse("linux/amd64"), "sha256:" + "2" * 64, c.image_id, ())
    c = replace(c, labels={LABEL["index"]: exp.index_digest})
    status, reason = verdict(check_container(exp, c, None, "classic", logs))
    assert status == "crashed" and needle in reason


def test_exec_format_error_without_logs_is_a_plain_exit():
    c = parse_container(load("container-20.10-exec-format-error.json"))
    assert crash_reason(c, "") is None  # exit 1 alone says nothing about the CPU
    assert crash_reason(None, "exec format error") is None


def test_missing_container_and_foreign_labels():
    img = parse_image(load("image-20.10-classic-armv6.json"))
    exp = Expected("r/x", "sha256:" + "1" * 64, Platform.parse("linux/arm/v6"), "sha256:" + "2" * 64, img.id,
                   img.diff_ids)
    assert verdict(check_container(exp, None, None))[0] == "missing"
    running = replace(parse_container(load("c8d-29.0-container-inspect.json")), image_id=img.id)
    status, reason = verdict(check_container(exp, running, img, "classic"))
    assert status == "drifted" and reason.startswith("deployment: ")


# --------------------------------------------------------------------------- deploy helpers


def test_create_args_quote_nothing_and_carry_every_setting():
    spec = ContainerSpec(name="hello", command=("--port", "8080"), entrypoint=("/bin/busybox", "sh"),
                         env={"A": "1"}, ports=("8080:8080",), volumes=("/srv:/data:ro",),
                         devices=("/dev/gpiomem",), restart="unless-stopped", privileged=True,
                         network_mode="host", labels={"team": "iot"})
    args = create_args(spec, "sha256:" + "a" * 64, "hello.new", {LABEL["index"]: "sha256:" + "1" * 64},
                       env_from_stdin=True)
    assert args[:2] == ["--name", "hello.new"]
    assert ["--env-file", "/proc/self/fd/0"] == args[2:4]
    assert "A=1" not in args  # values travel on stdin
    for flag, value in [("-p", "8080:8080"), ("-v", "/srv:/data:ro"), ("--device", "/dev/gpiomem"),
                        ("--restart", "unless-stopped"), ("--network", "host"), ("--entrypoint", "/bin/busybox"),
                        ("--label", "team=iot"), ("--label", f"{LABEL['index']}=sha256:{'1' * 64}")]:
        i = args.index(value)
        assert args[i - 1] == flag
    assert "--privileged" in args
    assert args[-4:] == ["sha256:" + "a" * 64, "sh", "--port", "8080"]
    assert env_file(spec.env) == b"A=1\n"


def test_spec_digest_changes_with_settings():
    a = ContainerSpec(name="hello", network_mode="host")
    assert spec_digest(a) == spec_digest(ContainerSpec(name="hello", network_mode="host"))
    assert spec_digest(a) != spec_digest(replace(a, env={"X": "1"}))


def test_space_needed():
    assert space_needed(10 * 1048576, 32 * 1048576) == PULL_EXPANSION * 10 * 1048576 + 32 * 1048576
    assert space_needed(-1, 0) == 0


@pytest.mark.parametrize("device, platform", [("pi-zero", "linux/arm/v6"), ("pi4-32on64", "linux/arm/v7")])
def test_captured_deployment_verifies_against_its_labels(device, platform):
    """Real `fleet deploy` result on lab devices (engine 20.10): the labels fleet wrote are the
    expectation; the image and container the engine reports must match them."""
    c = parse_container(load(f"container-20.10-deployed-{device}.json"))
    img = parse_image(load(f"image-20.10-deployed-{device}.json"))
    lab = c.labels
    exp = Expected(lab[LABEL["repository"]], lab[LABEL["index"]], Platform.parse(lab[LABEL["platform"]]),
                   lab[LABEL["manifest"]], lab[LABEL["config"]], img.diff_ids)
    assert str(exp.platform) == platform and img.platform == exp.platform
    assert f"{exp.repository}@{exp.index_digest}" in img.repo_digests  # pulled by index digest
    checks = check_image(exp, img, "classic") + check_container(exp, c, img, "classic")
    assert verdict(checks) == ("verified", ""), checks
    # the same device judged against the other arm variant's entry is drift
    other = replace(exp, platform=Platform.parse("linux/arm/v7" if platform.endswith("v6") else "linux/arm/v6"),
                    config_digest="sha256:" + "9" * 64)
    assert verdict(check_image(other, img, "classic") + check_container(other, c, img, "classic"))[0] == "drifted"
