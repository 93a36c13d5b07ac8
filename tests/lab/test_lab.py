"""End-to-end tests of the simulated lab (`fleet lab`): real sshd, real foreign engines under
qemu-user, real registry. Destructive tests (down/up, crash) run last in this module."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import requests
import yaml

from fleet.lab.hello import build_args, prepare_context
from fleet.lab.profiles import PROFILES
from fleet.lab.state import LabPaths, load_state
from tests import reportschema
from tests.labfixture import LAB_PROFILES, Lab, fleet

pytestmark = pytest.mark.lab

DOCKER = "/usr/bin/docker"  # the Debian 20.10 client (a newer one may shadow it on PATH)
ELF_MACHINES = {0x28: "EM_ARM", 0xB7: "EM_AARCH64", 0x3E: "EM_X86_64", 0x03: "EM_386", 0x16: "EM_S390"}

FACTS = (
    'echo "uname=$(uname -m)"; '
    'echo "elf=$(head -c 20 /proc/self/exe | od -An -tx1 | tr -d " \\n")"; '
    'echo "engine=$(docker version --format "{{.Server.Arch}}")"; '
    'echo "dpkg=$(dpkg --print-architecture 2>/dev/null)"; '
    'echo "cpuarch=$(grep -m1 "^CPU architecture" /proc/cpuinfo | cut -d: -f2 | tr -d " ")"; '
    'echo "python=$(ls /usr/bin/python3 2>/dev/null)"; '
    'cat /etc/os-release'
)


def _facts(lab: Lab, name: str) -> tuple[dict[str, str], str]:
    cp = lab.ssh(name, FACTS)
    assert cp.returncode == 0, cp.stderr.decode()
    text = cp.stdout.decode()
    facts = dict(line.split("=", 1) for line in text.splitlines()[:6])
    return facts, "\n".join(text.splitlines()[6:]) + "\n"


@pytest.mark.parametrize("name", PROFILES)
def test_device_looks_like_its_board(lab: Lab, name: str) -> None:
    prof = PROFILES[name]
    facts, os_release = _facts(lab, name)
    assert facts["uname"] == prof.expected_uname
    elf = bytes.fromhex(facts["elf"])
    assert elf[:4] == b"\x7fELF"
    bits, endian, machine = prof.expected_elf
    assert elf[4] == (1 if bits == 32 else 2)
    assert elf[5] == (1 if endian == "little" else 2)
    assert ELF_MACHINES[int.from_bytes(elf[18:20], endian)] == machine
    assert facts["engine"] == prof.expected_engine_arch
    # no host fact: no amd64 dpkg, no host python, the simulated OS's os-release
    assert facts["dpkg"] in ("", None) and "amd64" not in facts["dpkg"]
    assert facts["python"] == ""
    assert os_release == prof.os_release_text()
    if prof.os_release_text() != Path("/etc/os-release").read_text():  # s390x/i386 run Debian 12, as the host may
        assert os_release != Path("/etc/os-release").read_text()
    if prof.cpuinfo:
        want = next(ln for ln in prof.cpuinfo_path().read_text().splitlines() if ln.startswith("CPU architecture"))
        assert facts["cpuarch"] == want.split(":")[1].strip()


def test_engine_sees_board_cpuinfo(lab: Lab) -> None:
    """The device's engine runs with the board's /proc/cpuinfo: the Pi Zero's armel
    engine reports the ARMv6 machine it emulates."""
    cp = lab.ssh("pi-zero", "docker info --format '{{.Architecture}} {{.OSType}}'")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.decode().split() == ["armv6l", "linux"]


def test_status_inventory_and_files(lab: Lab) -> None:
    st = lab.status
    assert st["ok"] is True
    assert {d["name"] for d in st["devices"]} >= set(PROFILES)
    for d in st["devices"]:
        assert d["state"] == "running" and d["sshd"] == "running" and d["engine"] == "answering"
    assert os.stat(st["ssh_key"]).st_mode & 0o777 == 0o600
    assert os.stat(st["registry"]["credentials"]).st_mode & 0o777 == 0o600
    kh = Path(st["known_hosts"]).read_text().splitlines()
    assert {ln.split()[0] for ln in kh} == {d["address"] for d in st["devices"]}
    inv = yaml.safe_load(Path(st["inventory"]).read_text())
    children = inv["all"]["children"]
    hosts = children["lab"]["hosts"]
    for name in PROFILES:
        h = hosts[name]
        assert h["ansible_host"] == lab.device(name)["address"] and h["ansible_port"] == 22
        assert h["ansible_ssh_private_key_file"] == st["ssh_key"]
        assert f"UserKnownHostsFile={st['known_hosts']}" in h["ansible_ssh_common_args"]
        assert "StrictHostKeyChecking=yes" in h["ansible_ssh_common_args"]
        assert name in children[PROFILES[name].group]["hosts"]
        assert PROFILES[name].group not in hosts  # a group never shares a host's name
    table = fleet("lab", "status")
    assert table.returncode == 0 and "pi4-32on64" in table.stdout


def test_second_up_reuses_running_processes(lab: Lab) -> None:
    paths = LabPaths(lab.dir)
    before = load_state(paths)["devices"]
    fleet("lab", "up", check=True)
    after = load_state(paths)["devices"]
    for name in PROFILES:
        assert after[name]["engine"]["pid"] == before[name]["engine"]["pid"]
        assert after[name]["sshd"]["pid"] == before[name]["sshd"]["pid"]


def test_fleet_probe_decides_each_device(lab: Lab) -> None:
    cp = fleet("probe", "-i", lab.inventory_all, "--json", timeout=300)
    assert cp.returncode == 0, cp.stderr
    got = {d["host"]: d["detection"]["platform"] for d in reportschema.loads(cp.stdout, "probe-json")}
    for name in PROFILES:
        assert got[name] == PROFILES[name].expected_platform, name


def _creds(lab: Lab) -> dict:
    return json.loads(Path(lab.status["registry"]["credentials"]).read_text())


def test_registry_tls_and_auth(lab: Lab) -> None:
    reg = lab.status["registry"]
    url = f"https://{reg['address']}/v2/"
    assert requests.get(url, verify=reg["ca"], timeout=10).status_code == 401
    c = _creds(lab)
    assert requests.get(url, verify=reg["ca"], auth=(c["username"], c["password"]), timeout=10).status_code == 200
    assert Path(reg["docker_ca"]).read_bytes() == Path(reg["ca"]).read_bytes()
    cfg = json.loads((Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json").read_text())
    auth = base64.b64decode(cfg["auths"][reg["address"]]["auth"]).decode()
    assert auth == f"{c['username']}:{c['password']}"
    # the password is in no process's arguments
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                assert c["password"].encode() not in (p / "cmdline").read_bytes()
            except OSError:
                pass


def _host_docker(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, DOCKER_HOST="unix:///var/run/docker.sock", **(env or {}))
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, env=e)


@pytest.fixture(scope="module")
def hello_images(lab: Lab, tmp_path_factory) -> dict[str, str]:
    """examples/hello built with the host engine (classic builder) for every lab platform
    and pushed to the lab registry; {platform: reference}."""
    ctx = tmp_path_factory.mktemp("hello")
    made = prepare_context(LabPaths(lab.dir), ctx)
    refs = {}
    for platform in ("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6"):
        assert platform in made
        ba = build_args(platform)
        tag = f"{lab.status['registry']['address']}/lab-test/hello:{ba['TARGETARCH']}{ba['TARGETVARIANT']}"
        cp = _host_docker("build", "-q", "--no-cache", "--platform", platform, "--build-arg", f"TARGETARCH={ba['TARGETARCH']}",
                          "--build-arg", f"TARGETVARIANT={ba['TARGETVARIANT']}", "-t", tag, str(ctx),
                          env={"DOCKER_BUILDKIT": "0"})
        assert cp.returncode == 0, cp.stderr
        insp = json.loads(_host_docker("image", "inspect", tag).stdout)[0]
        assert f"{insp['Os']}/{insp['Architecture']}" + (f"/{insp['Variant']}" if insp.get("Variant") else "") == platform
        push = _host_docker("push", tag)
        assert push.returncode == 0, push.stderr
        refs[platform] = tag
    return refs


@pytest.mark.parametrize("name", ["pi-zero", "pi4-64", "pi4-32on64", "x86"])
def test_hello_runs_on_device(lab: Lab, hello_images: dict[str, str], name: str) -> None:
    prof = PROFILES[name]
    ref = hello_images[prof.expected_platform]
    c = _creds(lab)
    login = lab.ssh(name, f"docker login -u {c['username']} --password-stdin {lab.status['registry']['address']}",
                    stdin=c["password"].encode())
    assert login.returncode == 0, login.stderr
    # own name and port: other users of the lab (deploy tests) run their own "hello"
    port, cname = 18080, "fleet-lab-test-hello"
    cp = lab.ssh(name, f"docker rm -f {cname} >/dev/null 2>&1; docker pull -q {ref} >/dev/null && "
                       f"docker run -d --name {cname} --network host -e PORT={port} {ref}", timeout=300)
    assert cp.returncode == 0, cp.stderr
    try:
        url = f"http://{lab.device(name)['address']}:{port}/"
        deadline, body = time.monotonic() + 60, ""
        while time.monotonic() < deadline:
            try:
                body = urllib.request.urlopen(url, timeout=5).read().decode()
                break
            except OSError:
                time.sleep(0.5)
        # containers get binfmt's one qemu-arm CPU (docs/lab.md, "Limits of the simulation"): armv7l even on the Pi Zero
        want = {"pi-zero": "armv7l", "pi4-32on64": "armv7l"}.get(name, prof.expected_uname)
        assert body.strip() == f"hello from {want}"
    finally:
        lab.ssh(name, f"docker rm -f {cname} >/dev/null", timeout=300)


def test_up_refuses_without_setup_or_with_unsafe_dir(tmp_path) -> None:
    unsafe = fleet("lab", "up", "--lab-dir", str(tmp_path / "lab"))
    assert unsafe.returncode == 2
    empty = Path("/var/lib/fleet-lab-test-empty")
    try:
        cp = fleet("lab", "up", "--lab-dir", str(empty))
        assert cp.returncode == 2
        assert "missing" in cp.stderr and "no foreign engine file" in cp.stderr and "fleet lab setup" in cp.stderr
        assert "Traceback" not in cp.stderr
    finally:
        subprocess.run(["rm", "-rf", str(empty)], check=False)


# -- destructive: down/up cycle and crash recovery -----------------------------------------

def _host_engine_view(cid: str) -> dict:
    """What the lab must not change on the host engine: docker0 (same interface), the
    engine's networks, and our container (still running, same start)."""
    link = subprocess.run(["ip", "-j", "link", "show", "docker0"], capture_output=True, text=True)
    nets = _host_docker("network", "ls", "-q", "--no-trunc").stdout.split()
    started = _host_docker("inspect", "--format", "{{.State.Running}} {{.State.StartedAt}}", cid).stdout.strip()
    return {"docker0": json.loads(link.stdout)[0]["ifindex"] if link.returncode == 0 else None,
            "networks": set(nets), "container": started}


def test_down_leaves_nothing_and_up_again(lab: Lab, hello_images: dict[str, str]) -> None:
    # a container on the host engine, from the locally built FROM scratch image
    run = _host_docker("run", "-d", "--network", "none", hello_images["linux/amd64"])
    assert run.returncode == 0, run.stderr
    cid = run.stdout.strip()
    try:
        view = _host_engine_view(cid)
        assert view["docker0"] is not None and view["container"].startswith("true ")
        down = fleet("lab", "down", timeout=300)
        assert down.returncode == 0, down.stderr
        assert not subprocess.run(["ip", "link", "show", "fleetlab0"], capture_output=True).returncode == 0
        assert "fleetlab-" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert str(lab.dir) not in Path("/proc/self/mountinfo").read_text()
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    assert f"{lab.dir}/devices/" not in (p / "cmdline").read_bytes().decode(errors="replace")
                except OSError:
                    pass
        assert fleet("lab", "status").returncode == 1
        t0 = time.monotonic()
        up = fleet("lab", "up", "--profiles", LAB_PROFILES, timeout=600)
        assert up.returncode == 0, up.stderr
        print(f"lab up --profiles {LAB_PROFILES} from down: {time.monotonic() - t0:.1f} s")
        assert lab.refresh()["ok"]
        assert lab.ssh("pi4-64", "uname -m").stdout.decode().strip() == "aarch64"
        after = _host_engine_view(cid)
        assert after["docker0"] == view["docker0"] and after["container"] == view["container"]
        assert after["networks"] >= view["networks"]  # other users of the engine may add some
    finally:
        _host_docker("rm", "-f", cid)


def test_up_recovers_after_crash(lab: Lab) -> None:
    state = load_state(LabPaths(lab.dir))
    pids = [state["registry"]["pid"]]
    for e in state["devices"].values():
        pids += [e["sshd"]["pid"], e["engine"]["pid"]]
    for p in Path("/proc").iterdir():  # the engines' own containerd
        if p.name.isdigit():
            try:
                cl = (p / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if cl.startswith("containerd\0") and f"{lab.dir}/devices/" in cl:
                pids.append(int(p.name))
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    assert fleet("lab", "status").returncode == 1
    up = fleet("lab", "up", timeout=600)
    assert up.returncode == 0, up.stderr
    assert lab.refresh()["ok"]
    for name in PROFILES:
        cp = lab.ssh(name, "uname -m; docker version --format '{{.Server.Arch}}'")
        assert cp.stdout.decode().split() == [PROFILES[name].expected_uname, PROFILES[name].expected_engine_arch]
