"""End-to-end publishing on the lab: the real host engine (classic builder, binfmt_misc),
the lab registry (TLS + htpasswd on 198.18.0.1:5443), real device engines over SSH, and a
second real registry (127.0.0.x) for copies across registries.

Each platform of the sample app is built once per session (``published`` fixture) into a
repository of its own; the other tests reuse those images.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from fleet.publish.index import DOCKER_MANIFEST_LIST, OCI_INDEX, IndexEntry, IndexRefused, build_index
from fleet.lab.hello import prepare_context
from fleet.lab.state import LabPaths
from fleet.platform import Platform
from fleet.playbook import RegistrySettings, load_playbook
from fleet.plan import make_plan
from fleet.publish import assemble, publish, read_published, registry_client
from fleet.registry import NotFound, Reference
from fleet.publish.sources import Child, build_local
from tests.labfixture import Lab
from tests.registry_fixtures import REGISTRY_PASSWORD, REGISTRY_USER
from fleet.plan import choose_entry

def _choose(device, entries, legacy=False):
    """The entry fleet's one chooser gives a device of ``device`` from parsed index entries."""
    return choose_entry(device, [e.candidate for e in entries], legacy=legacy, labels=[e.label for e in entries])


pytestmark = pytest.mark.lab

P = Platform.parse
REGISTRY = "198.18.0.1:5443"
PLATFORMS = ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6"]
FLEET = [str(Path(sys.executable).with_name("fleet"))]


def run_fleet(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    e = {**os.environ, "COLUMNS": "400", **(env or {})}
    return subprocess.run([*FLEET, *args], capture_output=True, text=True, timeout=timeout, env=e)


def write_playbook(path: Path, image: str, source: str, platforms: str = "auto", registry: str = "") -> Path:
    path.write_text(f"name: hello\nimage: {image}\nsource:\n{source}\nplatforms: {platforms}\n{registry}")
    return path


def _require_lab_up(lab: Lab) -> None:
    # 198.18.0.1 is only ours while the lab's bridge exists: never talk to it otherwise
    assert lab.refresh()["ok"], "the lab is not up (another session ran `fleet lab down`?)"


@pytest.fixture(autouse=True)
def _lab_still_up(lab):
    _require_lab_up(lab)


@pytest.fixture(scope="session")
def hello_context(lab: Lab, tmp_path_factory) -> Path:
    ctx = tmp_path_factory.mktemp("hello-context")
    made = prepare_context(LabPaths(lab.dir), ctx)
    assert set(PLATFORMS) <= set(made), made
    return ctx


@pytest.fixture(scope="session")
def published(lab, hello_context: Path, tmp_path_factory):
    """`fleet publish --platform x4 --json` of the sample app into a fresh repository."""
    _require_lab_up(lab)
    repo = f"{REGISTRY}/fleet-test/hello-{uuid.uuid4().hex[:8]}"
    pb = write_playbook(tmp_path_factory.mktemp("pb") / "hello.yaml", f"{repo}:1.0",
                        f"  build:\n    context: {hello_context}")
    args = [a for p in PLATFORMS for a in ("--platform", p)]
    cp = run_fleet("publish", str(pb), *args, "--json")
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    yield {"doc": doc, "playbook": pb, "repo": repo, "ref": f"{repo}:1.0"}
    # drop the session's per-platform tags from the host engine (the registry keeps them)
    import docker
    client = docker.DockerClient(base_url="unix:///var/run/docker.sock")
    for image in client.images.list(name=repo):
        for tag in image.tags:
            client.images.remove(tag)
    client.close()


def _skopeo_raw(ref: str) -> bytes:
    # test only: the lab's Docker config as --authfile (never a password in argv)
    cp = subprocess.run(["skopeo", "inspect", "--raw", "--authfile", str(Path.home() / ".docker/config.json"),
                         "--cert-dir", f"/etc/docker/certs.d/{REGISTRY}", f"docker://{ref}"],
                        capture_output=True, timeout=120)
    assert cp.returncode == 0, cp.stderr.decode()
    return cp.stdout


def test_publish_builds_every_platform_and_reads_back(published):
    doc = published["doc"]
    assert doc["reference"] == published["ref"]
    assert doc["media_type"] == DOCKER_MANIFEST_LIST  # engine 20.10 pushes Docker v2 schema2
    assert [e["platform"] for e in doc["entries"]] == PLATFORMS
    for e in doc["entries"]:
        assert e["checked"].startswith("entrypoint /bin/busybox: ELF"), e["checked"]
    arm6 = doc["entries"][3]["checked"]
    assert "ELF32 little-endian ARM (Tag_CPU_arch v5TE)" in arm6  # Debian armel busybox
    back = read_published(published["ref"], RegistrySettings(), content=True)
    assert back.index_digest == doc["index_digest"]
    assert [(str(e.platform), e.manifest_digest, e.config_digest) for e in back.entries] == \
        [(e["platform"], e["manifest_digest"], e["config_digest"]) for e in doc["entries"]]
    raw = _skopeo_raw(published["ref"])
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == doc["index_digest"]
    index = json.loads(raw)
    assert index["mediaType"] == DOCKER_MANIFEST_LIST
    assert [m["platform"] for m in index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
        {"architecture": "arm", "os": "linux", "variant": "v7"},
        {"architecture": "arm", "os": "linux", "variant": "v6"}]
    # each child's config says its platform (read by skopeo too)
    child = json.loads(_skopeo_raw(f"{published['repo']}@{index['manifests'][3]['digest']}"))
    assert child["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"


def test_republish_uploads_nothing_and_gives_the_same_index(published):
    pb = load_playbook(published["playbook"])
    plan = make_plan(pb, {}, [P(p) for p in PLATFORMS])
    again = publish(pb, plan)
    assert again.index_digest == published["doc"]["index_digest"]
    assert again.uploads == 0


def test_pick_per_platform_tags_and_index_subset_into_other_repositories(published, tmp_path):
    repo = published["repo"]
    refs = "\n".join(f"    {p}: {repo}:1.0-{p.replace('/', '-')}" for p in PLATFORMS)
    pb = write_playbook(tmp_path / "a.yaml", f"{repo}-picked:2.0", f"  pick:\n{refs}",
                        "[" + ", ".join(PLATFORMS) + "]")
    cp = run_fleet("publish", str(pb), "--json")
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    assert doc["uploads"] == 0  # same registry: every blob mounted, none uploaded
    assert [e["manifest_digest"] for e in doc["entries"]] == \
        [e["manifest_digest"] for e in published["doc"]["entries"]]
    assert doc["index_digest"] == published["doc"]["index_digest"]  # same children, same bytes
    # the needed subset of an existing index, into another repository
    pb = write_playbook(tmp_path / "b.yaml", f"{repo}-subset:1.0", f"  pick:\n    index: {published['ref']}",
                        "[linux/arm/v7, linux/arm64]")
    cp = run_fleet("publish", str(pb), "--json", "--media-type", OCI_INDEX)
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    assert [e["platform"] for e in doc["entries"]] == ["linux/arm/v7", "linux/arm64"]
    assert doc["media_type"] == OCI_INDEX  # --media-type overrides the children's family
    back = read_published(f"{repo}-subset:1.0")
    assert [str(e.platform) for e in back.entries] == ["linux/arm/v7", "linux/arm64"]


def test_pick_across_registries_streams_the_blobs(published, tls_registry, tmp_path, monkeypatch):
    monkeypatch.setenv("T_REG_USER", REGISTRY_USER)
    monkeypatch.setenv("T_REG_PASS", REGISTRY_PASSWORD)
    reg = (f"registry:\n  username_env: T_REG_USER\n  password_env: T_REG_PASS\n"
           f"  ca: {tls_registry.ca_file}\n")
    pb = write_playbook(tmp_path / "c.yaml", f"{tls_registry.host}/copied/hello:1.0",
                        f"  pick:\n    index: {published['ref']}", "[linux/arm/v6, linux/amd64]", reg)
    playbook = load_playbook(pb)
    result = publish(playbook, make_plan(playbook, {}))
    assert result.uploads >= 4  # config + layers of two images, streamed across
    assert [str(e.platform) for e in result.entries] == ["linux/arm/v6", "linux/amd64"]
    back = read_published(f"{tls_registry.host}/copied/hello:1.0", playbook.registry, content=True)
    assert back.index_digest == result.index_digest


def _amd64(published) -> dict:
    return next(e for e in published["doc"]["entries"] if e["platform"] == "linux/amd64")


def test_refuses_an_amd64_image_labelled_arm64(published):
    repo = Reference.parse(published["ref"])
    amd = _amd64(published)
    kid = Child(P("linux/arm64"), amd["manifest_digest"], amd["manifest_media_type"], amd["manifest_size"], "test")
    with registry_client(RegistrySettings(), REGISTRY) as client:
        target = Reference(repo.registry, repo.repository, "mislabelled")
        with pytest.raises(IndexRefused) as e:
            assemble(client, target, [kid])
        assert e.value.kinds == {"config-mismatch"}
        assert "descriptor platform linux/arm64 but the image config declares linux/amd64" in str(e.value)
        with pytest.raises(NotFound):
            client.head_manifest(repo.repository, "mislabelled")  # nothing was tagged
        # pushed around fleet's checks with the registry client: verification refuses it
        raw, mt = build_index([IndexEntry(P("linux/arm64"), kid.digest, kid.size, kid.media_type)])
        client.put_manifest(repo.repository, "sneaky", raw, mt)
    with pytest.raises(IndexRefused) as e:
        read_published(f"{repo.name}:sneaky")
    assert e.value.kinds == {"config-mismatch"}


def test_refuses_an_armhf_binary_labelled_arm_v6(published, hello_context):
    repo = Reference.parse(published["ref"])
    target = Reference(repo.registry, repo.repository, "armhf-as-v6")
    with registry_client(RegistrySettings(), REGISTRY) as client:
        # config says linux/arm/v6 (--platform), the content is Debian armhf's ARMv7 busybox
        kid = build_local(hello_context, "Dockerfile", {"TARGETVARIANT": "v7"}, P("linux/arm/v6"),
                          target, client, None)
        with pytest.raises(IndexRefused) as e:
            assemble(client, target, [kid])
    assert e.value.kinds == {"elf-mismatch"}
    text = str(e.value)
    assert "/bin/busybox" in text and "needs arm/v7" in text and "arm/v6 device would fault" in text


def test_duplicate_platforms_are_refused_before_anything_is_pushed(published, tmp_path):
    cp = run_fleet("publish", str(published["playbook"]), "--platform", "linux/arm/v7", "--platform", "arm/v7")
    assert cp.returncode == 2 and "duplicate platform linux/arm/v7" in cp.stderr


def test_device_without_compatible_entry_fails_before_any_push(lab, tmp_path, hello_context):
    ref = f"{REGISTRY}/fleet-test/never-{uuid.uuid4().hex[:8]}:1.0"
    pb = write_playbook(tmp_path / "d.yaml", ref, f"  build:\n    context: {hello_context}")
    cp = run_fleet("publish", str(pb), "-i", lab.inventory, "--limit", "pi-zero",
                   "--platform", "linux/amd64", "--platform", "linux/arm64", "--json")
    assert cp.returncode == 1, cp.stderr
    doc = json.loads(cp.stdout)
    assert doc["index_digest"] is None
    assert doc["errors"] == ["pi-zero: no entry a linux/arm/v6 device can run (it accepts linux/arm/v6, "
                             "linux/arm/v5); the index would hold linux/amd64, linux/arm64"]
    with registry_client(RegistrySettings(), REGISTRY) as client:
        assert not client.manifest_exists(Reference.parse(ref).repository, "1.0-linux-amd64")


def test_wrong_credentials_give_a_clear_error(tmp_path, hello_context):
    pb = write_playbook(tmp_path / "e.yaml", f"{REGISTRY}/fleet-test/denied:1.0",
                        f"  build:\n    context: {hello_context}", "[linux/amd64]",
                        "registry:\n  username_env: T_USER\n  password_env: T_PASS\n")
    secret = "wrong-" + uuid.uuid4().hex
    cp = run_fleet("publish", str(pb), env={"T_USER": "fleet", "T_PASS": secret})
    assert cp.returncode == 1
    assert f"registry {REGISTRY} refused user 'fleet'" in cp.stderr
    assert secret not in cp.stderr + cp.stdout


def test_plan_on_the_lab_fleet(lab):
    cp = run_fleet("plan", "playbooks/hello.yaml", "-i", lab.inventory, "--json")
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    assert doc["platforms"] == PLATFORMS
    by = {d["host"]: d for d in doc["devices"]}
    assert by["pi4-32on64"]["engine_platform"] == "linux/arm/v8"
    for d in doc["devices"]:
        assert d["entry_platform"] == d["platform"] and d["explicit_platform"] is False, d


def test_native_build_on_a_lab_device(lab, hello_context, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for name in ("Dockerfile", "hello.sh"):
        shutil.copy(hello_context / name, ctx / name)
    shutil.copytree(hello_context / "rootfs-arm64", ctx / "rootfs-arm64")
    ref = f"{REGISTRY}/fleet-test/native-{uuid.uuid4().hex[:8]}:1.0"
    before = lab.ssh("pi4-64", "ls -d /tmp/tmp.* 2>/dev/null").stdout.decode().split()
    pb = write_playbook(tmp_path / "n.yaml", ref,
                        f"  native:\n    context: {ctx}\n    builders:\n      linux/arm64: pi4-64")
    cp = run_fleet("publish", str(pb), "-i", lab.inventory, "--limit", "pi4-64", "--json")
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    (entry,) = doc["entries"]
    assert entry["platform"] == "linux/arm64" and entry["source"] == "built on pi4-64"
    assert entry["checked"].startswith("entrypoint /bin/busybox: ELF64 little-endian AArch64")
    # the temporary Docker config the build used is gone from the device
    after = lab.ssh("pi4-64", "ls -d /tmp/tmp.* 2>/dev/null").stdout.decode().split()
    assert not set(after) - set(before)
    back = read_published(ref, content=True)
    assert back.entries[0].platform == P("linux/arm64")


def test_pick_keeps_attestation_entries_and_never_plans_them(published):
    """A BuildKit-style index (docker/buildx#1509): an attestation manifest (unknown/unknown,
    annotated with the digest it describes) next to each image. Picking a subset keeps the
    attestations of the picked images, drops the others, and no device is planned onto one."""
    src = Reference.parse(published["ref"])
    repo = src.repository + "-att"
    amd, arm = (next(e for e in published["doc"]["entries"] if e["platform"] == p)
                for p in ("linux/amd64", "linux/arm64"))
    with registry_client(RegistrySettings(), REGISTRY) as client:
        entries = []
        for e in (amd, arm):
            client.copy_blob(client, src.repository, repo, e["config_digest"])
            m = client.get_manifest(src.repository, e["manifest_digest"])
            for layer in m.json["layers"]:
                client.copy_blob(client, src.repository, repo, layer["digest"])
            client.put_manifest(repo, m.digest, m.raw, m.media_type)
            # the attestation manifest: an in-toto statement as its only layer
            cfg = client.push_blob(repo, b'{"architecture":"unknown","os":"unknown"}')
            stmt = client.push_blob(repo, json.dumps({"_type": "https://in-toto.io/Statement/v0.1",
                                                      "subject": [{"digest": {"sha256": m.digest[7:]}}]}).encode())
            att = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                              "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                         "digest": cfg.digest, "size": cfg.size},
                              "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": stmt.digest,
                                          "size": stmt.size}]}, separators=(",", ":")).encode()
            att_digest = client.put_manifest(repo, "sha256:" + hashlib.sha256(att).hexdigest(), att,
                                             "application/vnd.oci.image.manifest.v1+json")
            entries.append(IndexEntry(P(e["platform"]), m.digest, m.size, m.media_type))
            entries.append(IndexEntry.from_spec("unknown/unknown", att_digest, len(att),
                                                "application/vnd.oci.image.manifest.v1+json",
                                                {"vnd.docker.reference.type": "attestation-manifest",
                                                 "vnd.docker.reference.digest": m.digest}))
        raw, mt = build_index(entries, OCI_INDEX)
        client.put_manifest(repo, "buildx", raw, mt)
    pb_dir = Path(published["playbook"]).parent
    pb = write_playbook(pb_dir / "att.yaml", f"{REGISTRY}/{repo}-picked:1.0",
                        f"  pick:\n    index: {REGISTRY}/{repo}:buildx", "[linux/arm64]")
    playbook = load_playbook(pb)
    plan = make_plan(playbook, {})
    result = publish(playbook, plan)
    assert result.media_type == OCI_INDEX and result.attestations == 1
    back = read_published(f"{REGISTRY}/{repo}-picked:1.0")
    assert [str(e.platform) for e in back.entries] == ["linux/arm64"] and back.attestations == 1
    index = json.loads(_skopeo_raw(f"{REGISTRY}/{repo}-picked:1.0"))
    assert index["manifests"][1]["annotations"]["vnd.docker.reference.digest"] == arm["manifest_digest"]
    assert index["manifests"][1]["platform"] == {"architecture": "unknown", "os": "unknown"}
    # an arm64 device is planned onto the image, never onto the attestation
    from fleet.detect import Detection
    from fleet.publish.index import parse_index
    assert _choose(P("linux/arm64"), parse_index(json.dumps(index))) == 0
    assert make_plan(playbook, {"d": Detection(platform=P("linux/arm64"))}).devices[0].entry_platform == P("linux/arm64")
