"""End to end on the lab's five devices (pi-zero, pi3-32, pi4-64, pi4-32on64, x86): publish
the sample app, deploy it, verify every device got its own platform's child, redeploy,
upgrade, roll back, refuse. Real sshd, real device engines (20.10 under QEMU), real
registry (TLS + htpasswd), started by ``fleet lab up`` (session fixture ``lab``).

To keep the QEMU engines' work small the tests share one module-scoped state (published
versions, what runs where), but each test first brings the devices to the state it needs
(:meth:`State.ensure`), so any one of them runs alone (``-k``) as well as in file order:
v1 deploy -> v1 again (unchanged) -> data root too small (pi-zero) -> v2 with a moved tag
(old container kept until healthy) -> v3 that fails its health check (rolled back) ->
an index lacking the arm platforms (refused before touching devices) -> a wrong child
pushed around fleet's checks (caught). The module's containers are removed at the end.

Own container name and port (``fleet-e2e``, 18181) and repository (``fleet-e2e/hello``), so
other users of the lab (the sample playbook's ``hello`` on 8080) are not disturbed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap

from pathlib import Path

import pytest

from fleet import pipeline
from fleet.cli.options import selection
from fleet.deploy import DeployHooks, DeployOptions
from fleet.deploy.container import LABEL
from fleet.lab.hello import EXAMPLE_DIR, prepare_context
from fleet.lab.state import LabPaths
from fleet.platform import Platform
from fleet.playbook import load_playbook
from tests import reportschema
from tests.lab.apps import on_each
from tests.labfixture import FLEET, Lab

pytestmark = pytest.mark.lab

DEVICES = ["pi-zero", "pi3-32", "pi4-64", "pi4-32on64", "x86"]
NAME = "fleet-e2e"
PORT = 18181
REPO = "fleet-e2e/hello"
# arm/v6 listed BEFORE arm/v7: engine 20.10 on the 32-bit Pi 4 asks for arm/v8 and would
# take the first arm entry (v6) by itself; fleet must pull v7 for it with --platform.
PLATFORMS = ["linux/arm/v6", "linux/arm/v7", "linux/arm64", "linux/amd64"]
OWN = {"pi-zero": "linux/arm/v6", "pi3-32": "linux/arm/v7", "pi4-64": "linux/arm64",
       "pi4-32on64": "linux/arm/v7", "x86": "linux/amd64"}


class State:
    """What earlier tests left for later ones."""

    def __init__(self, lab: Lab, root: Path):
        self.lab = lab
        self.root = root
        self.registry = lab.status["registry"]["address"]
        self.published: dict[str, dict] = {}  # version -> publish result dict

    def docker(self, device: str, command: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run ``command`` on ``device`` over the system ssh client; text output."""
        cp = self.lab.ssh(device, command, timeout=timeout)
        return subprocess.CompletedProcess(cp.args, cp.returncode, cp.stdout.decode(errors="replace"),
                                           cp.stderr.decode(errors="replace"))

    def container(self, device: str, name: str = NAME) -> dict | None:
        cp = self.docker(device, f"docker container inspect {name}")
        return json.loads(cp.stdout)[0] if cp.returncode == 0 else None

    def ensure(self, version: str) -> dict:
        """Make every device run ``version`` (published and deployed once if needed);
        returns its publish result."""
        index = self.published.get(version, {}).get("index_digest")
        if index and all((self.container(d) or {}).get("Config", {}).get("Labels", {}).get(LABEL["index"]) == index
                         and self.container(d)["State"]["Running"] for d in DEVICES):
            return self.published[version]
        doc = deploy(load_playbook(_playbook(self, version)), _sel(self))
        assert doc["ok"], json.dumps(doc["devices"], indent=1)
        self.published[version] = doc["publish"]
        return doc["publish"]


def _context(root: Path, lab: Lab, version: str, broken: bool = False) -> Path:
    ctx = root / f"ctx-{version}"
    if ctx.exists():
        return ctx
    prepare_context(LabPaths(lab.dir), ctx)
    # every version is a different image: its own VERSION file (and v3 a start script that
    # exits at once, so its health check fails)
    dockerfile = (EXAMPLE_DIR / "Dockerfile").read_text().replace(
        "COPY hello.sh /hello.sh", "COPY hello.sh /hello.sh\nCOPY VERSION /VERSION")
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "VERSION").write_text(version + "\n")
    if broken:
        (ctx / "hello.sh").write_text('echo "v3 cannot start: missing configuration" >&2\nexit 3\n')
    return ctx


def _playbook(st: State, version: str, *, platforms: list[str] = PLATFORMS, broken: bool = False,
              tag: str | None = None) -> Path:
    ctx = _context(st.root, st.lab, version, broken)
    path = st.root / f"hello-{version}-{tag or version}.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: fleet-e2e
        image: {st.registry}/{REPO}:{tag or version}
        source:
          build:
            context: {ctx}
        platforms: [{", ".join(platforms)}]
        container:
          name: {NAME}
          env: {{PORT: "{PORT}"}}
          restart: unless-stopped
          network_mode: host
          labels: {{com.example.test: deploy}}
        health:
          running: 2
          http: http://127.0.0.1:{PORT}/
          timeout: 90
          interval: 1
        """))
    return path


def _sel(st: State, limit: str | None = None):
    return selection([st.lab.inventory], limit, forks=5)


def deploy(playbook, sel, **kw) -> dict:
    """:func:`fleet.pipeline.deploy` over a run of ``sel``; the saved report's dict."""
    with pipeline.Run(sel) as run:
        return pipeline.deploy(run, playbook, **kw).to_dict()


def _rows(doc) -> dict[str, dict]:
    return {d["host"]: d for d in (doc["devices"] if isinstance(doc, dict) else doc)}


def _config_of(st: State, version: str, platform: str) -> str:
    e = next(e for e in st.published[version]["entries"] if e["platform"] == platform)
    return e["config_digest"]


def _clean(state: State) -> None:
    repo = f"{state.registry}/{REPO}"
    on_each(DEVICES, lambda d: state.docker(
        d, f"docker rm -f {NAME} {NAME}.previous {NAME}.new {NAME}.failed >/dev/null 2>&1; "
           f"ids=$(docker images -q {repo}); [ -z \"$ids\" ] || docker rmi -f $ids >/dev/null; true"))


@pytest.fixture(scope="module")
def st(lab: Lab, tmp_path_factory) -> State:
    state = State(lab, tmp_path_factory.mktemp("deploy"))
    # a clean slate on every device before and after: no container of this module, no image
    # of its repository
    _clean(state)
    yield state
    _clean(state)


def _fleet(*args: str, report_dir: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, FLEET_REPORT_DIR=str(report_dir))
    return subprocess.run([*FLEET, *args], capture_output=True, text=True, timeout=timeout, env=env)


# --------------------------------------------------------------------------- tests


def test_deploy_v1_every_device_gets_its_own_child(st: State):
    reports = st.root / "reports"
    cp = _fleet("deploy", str(_playbook(st, "1")), "-i", st.lab.inventory, "--json", report_dir=reports)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    rows = _rows(reportschema.loads(cp.stdout, "deploy-json"))
    saved = list(reports.glob("deploy-*.json"))
    assert len(saved) == 1
    doc = reportschema.load_saved(saved[0])
    st.published["1"] = doc["publish"]
    index = doc["index_digest"]
    assert set(rows) == set(DEVICES)
    for d in DEVICES:
        r = rows[d]
        assert r["result"] == "verified", (d, r)
        assert r["entry_platform"] == OWN[d]
        assert r["config_digest"] == _config_of(st, "1", OWN[d]), d
        c = st.container(d)
        assert c["Image"] == r["config_digest"] and c["State"]["Running"]
        labels = c["Config"]["Labels"]
        assert labels[LABEL["index"]] == index and labels[LABEL["platform"]] == OWN[d]
        assert labels["com.example.test"] == "deploy"
        assert any(a.startswith(f"pull {st.registry}/{REPO}@{index}") for a in r["actions"]), r["actions"]
    # the 32-bit Pi 4: its engine (asks arm/v8) would take arm/v6, the first arm entry
    assert rows["pi4-32on64"]["engine_platform"] == "linux/arm/v8"
    assert rows["pi4-32on64"]["explicit_platform"] is True
    assert "--platform linux/arm/v7" in " ".join(rows["pi4-32on64"]["actions"])
    assert rows["pi-zero"]["explicit_platform"] is False
    # the credentials went through a temporary DOCKER_CONFIG: none left on the device
    for d in ("pi-zero", "x86"):
        assert st.docker(d, "ls /tmp | grep -c fleet-pull || true").stdout.strip() == "0"
    # standalone verify agrees, and shows the table
    cp = _fleet("verify", str(_playbook(st, "1")), "-i", st.lab.inventory, "--json", report_dir=reports)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert {r["host"]: r["result"] for r in reportschema.loads(cp.stdout, "verify-json")} == {d: "verified" for d in DEVICES}


def test_second_deploy_of_same_version_changes_nothing(st: State):
    st.ensure("1")
    before = {d: st.container(d)["Id"] for d in DEVICES}
    doc = deploy(load_playbook(_playbook(st, "1")), _sel(st))
    assert doc["ok"], doc["summary"]
    assert doc["index_digest"] == st.published["1"]["index_digest"]  # same bytes, same digest
    assert {h: r["result"] for h, r in _rows(doc).items()} == {d: "unchanged" for d in DEVICES}
    assert {d: st.container(d)["Id"] for d in DEVICES} == before


def test_data_root_too_small_is_refused_before_pulling(st: State):
    # A real 1 MiB filesystem where pi-zero's login looks for its engine's data root
    # (`docker info` DockerRootDir): the lab's logins are chrooted, so the path is made and
    # mounted inside the device's root filesystem, in the device's mount namespace.
    st.ensure("1")
    device = "pi-zero"
    info = json.loads(st.docker(device, "docker info --format '{{json .}}'").stdout)
    root = info["DockerRootDir"]
    rootfs = Path(st.lab.dir) / "devices" / device / "rootfs"
    mnt = rootfs / root.lstrip("/")
    mntns = Path(st.lab.dir) / "ns" / f"{device}.mnt"
    created = [p for p in [mnt, *mnt.parents] if str(p).startswith(str(rootfs) + "/") and not p.exists()]
    mnt.mkdir(parents=True, exist_ok=True)
    subprocess.run(["nsenter", f"--mount={mntns}", "--", "mount", "-t", "tmpfs", "-o", "size=1m", "fleet-e2e-small",
                    str(mnt)], check=True)
    try:
        df = st.docker(device, f"df -Pk {root}")
        assert "fleet-e2e-small" in df.stdout
        doc = deploy(load_playbook(_playbook(st, "2")), _sel(st, device))
        r = _rows(doc)[device]
        assert not doc["ok"] and r["result"] == "refused", r
        assert "not enough space" in r["reason"] and root in r["reason"] and "nothing pulled" in r["reason"]
        assert r["free_bytes"] < r["needed_bytes"]
        st.published["2"] = doc["publish"]
    finally:
        subprocess.run(["nsenter", f"--mount={mntns}", "--", "umount", str(mnt)], check=False)
        for p in created:
            shutil.rmtree(p, ignore_errors=True)
    # nothing pulled, nothing replaced
    index2 = st.published["2"]["index_digest"]
    assert st.docker(device, f"docker image inspect {st.registry}/{REPO}@{index2}").returncode != 0
    assert st.container(device)["Config"]["Labels"][LABEL["index"]] == st.published["1"]["index_digest"]


def test_new_version_keeps_old_container_until_healthy_and_ignores_a_moved_tag(st: State):
    from fleet.registry import Reference
    from fleet.publish import registry_client

    st.ensure("1")
    pb = load_playbook(_playbook(st, "2"))
    seen: dict[str, dict] = {}
    moved: dict[str, str] = {}

    def move_tag(result) -> None:
        # right after publish, point the tag somewhere else (v1's index): devices must still
        # get what THIS publish produced, because they pull by digest
        ref = Reference.parse(result.reference)
        with registry_client(pb.registry, ref.registry) as client:
            old = client.get_manifest(ref.repository, st.published["1"]["index_digest"])
            client.put_manifest(ref.repository, ref.tag, old.raw, old.media_type)
            moved["to"] = client.head_manifest(ref.repository, ref.tag).digest

    def before_health(host: str, engine) -> None:
        prev = engine.container(f"{NAME}.previous")
        seen[host] = {"previous": prev is not None and not prev.running,
                      "previous_index": prev.labels.get(LABEL["index"]) if prev else None}

    doc = deploy(pb, _sel(st), options=DeployOptions(forks=5, hooks=DeployHooks(after_publish=move_tag,
                                                                                  before_health=before_health)))
    assert doc["ok"], json.dumps(doc["devices"], indent=1)
    index2 = doc["index_digest"]
    st.published["2"] = doc["publish"]
    assert moved["to"] == st.published["1"]["index_digest"] != index2
    for d in DEVICES:
        r = _rows(doc)[d]
        assert r["result"] == "verified", (d, r)
        assert seen[d] == {"previous": True, "previous_index": st.published["1"]["index_digest"]}
        labels = st.container(d)["Config"]["Labels"]
        assert labels[LABEL["index"]] == index2
        assert labels[LABEL["config"]] == _config_of(st, "2", OWN[d])
        assert labels[LABEL["previous_index"]] == st.published["1"]["index_digest"]
        assert st.container(d, f"{NAME}.previous") is None  # removed once the new one was healthy


def test_unhealthy_version_is_rolled_back_everywhere(st: State):
    st.ensure("2")
    doc = deploy(load_playbook(_playbook(st, "3", broken=True)), _sel(st))
    assert not doc["ok"]
    index2 = st.published["2"]["index_digest"]
    for d in DEVICES:
        r = _rows(doc)[d]
        assert r["result"] == "rolled-back", (d, r)
        assert "previous container running again" in r["reason"]
        assert "v3 cannot start" in r["log_tail"]
        c = st.container(d)
        assert c["State"]["Running"] and c["Config"]["Labels"][LABEL["index"]] == index2
        failed = st.container(d, f"{NAME}.failed")
        assert failed is not None and not failed["State"]["Running"]
        assert failed["Config"]["Labels"][LABEL["index"]] == doc["index_digest"]


def test_index_lacking_a_device_platform_fails_before_any_device_is_touched(st: State):
    st.ensure("2")
    before = {d: st.container(d)["Id"] for d in DEVICES}
    reports = st.root / "reports-missing"
    cp = _fleet("deploy", str(_playbook(st, "2", platforms=["linux/amd64", "linux/arm64"], tag="2-no-arm")),
                "-i", st.lab.inventory, report_dir=reports)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    for d in ("pi-zero", "pi3-32", "pi4-32on64"):
        assert f"{d}: no entry a linux/arm/" in cp.stderr
    assert "nothing published, no device touched" in cp.stderr
    assert {d: st.container(d)["Id"] for d in DEVICES} == before
    from fleet.publish import registry_client
    from fleet.playbook import RegistrySettings

    with registry_client(RegistrySettings(), st.registry) as client:
        assert not client.manifest_exists(REPO, "2-no-arm")


def test_wrong_child_pushed_around_fleets_checks_is_caught(st: State):
    """An index whose arm64 entry holds the amd64 image, pushed with fleet.registry directly
    (publish would refuse it): deploy refuses to start it, verify refuses the index."""
    from fleet.publish.index import IndexEntry, build_index
    from fleet.playbook import RegistrySettings
    from fleet.publish import PublishedEntry, PublishResult, registry_client

    v2 = st.ensure("2")
    amd = next(e for e in v2["entries"] if e["platform"] == "linux/amd64")
    with registry_client(RegistrySettings(), st.registry) as client:
        entries = [IndexEntry(Platform.parse("linux/arm64"), amd["manifest_digest"], amd["manifest_size"],
                              amd["manifest_media_type"])]
        raw, mt = build_index(entries)
        index = client.put_manifest(REPO, "wrong", raw, mt)
    wrong = PublishResult(f"{st.registry}/{REPO}:wrong", f"{st.registry}/{REPO}", index, mt,
                          [PublishedEntry(Platform.parse("linux/arm64"), amd["manifest_digest"],
                                          amd["manifest_media_type"], amd["manifest_size"], amd["config_digest"],
                                          tuple(amd["diff_ids"]), amd["size"])])
    before = st.container("pi4-64")["Id"]
    doc = deploy(load_playbook(_playbook(st, "2")), _sel(st, "pi4-64"), published=wrong)
    r = _rows(doc)["pi4-64"]
    assert r["result"] == "failed", r
    assert f"pulled image of {NAME} is not the planned linux/arm64 child" in r["reason"]
    assert "platform: linux/amd64, planned linux/arm64" in r["reason"] and "nothing replaced" in r["reason"]
    assert st.container("pi4-64")["Id"] == before
    cp = _fleet("verify", f"{st.registry}/{REPO}:wrong", "--name", NAME, "-i", st.lab.inventory, "-l", "pi4-64",
                report_dir=st.root / "reports")
    assert cp.returncode == 1 and "declares linux/amd64" in cp.stderr, cp.stdout + cp.stderr
    # and the device still runs v2, which verify confirms against the v2 index by digest
    cp = _fleet("verify", f"{st.registry}/{REPO}@{v2['index_digest']}", "--name", NAME, "-i", st.lab.inventory,
                "--json", report_dir=st.root / "reports")
    assert cp.returncode == 0, cp.stdout + cp.stderr
