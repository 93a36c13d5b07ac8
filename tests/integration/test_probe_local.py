"""fleet.facts: the probe script run for real under dash, bash and busybox ash (native and
an arm64 busybox under QEMU user emulation), against a real Docker engine and over a real
sshd. The parser on the captured transcripts is tests/unit/test_facts_parse.py."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from fleet.facts import (
    FACT_KEYS,
    HEADER,
    PROBE_SCRIPT,
    gather,
    new_boundary,
    parse_probe_output,
)
from tests.busybox_cache import fetch_busybox

DOCKER_CLI = "/usr/bin/docker"  # Debian's 20.10 client (/usr/local/bin/docker is a newer one)
NOBODY = 65534
ENGINE_KEYS = {"engine_arch", "engine_os", "engine_version", "engine_info_arch", "engine_error"}


def run_probe(shell: list[str], *, become: bool = False, env: dict | None = None,
              user: int | None = None) -> tuple[dict[str, str], subprocess.CompletedProcess]:
    """Run PROBE_SCRIPT exactly as the remote command does (``sh -c SCRIPT name B S``)."""
    boundary = new_boundary()
    cmd = [*shell, "-c", PROBE_SCRIPT, "fleet-probe", boundary, "1" if become else "0"]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    proc = subprocess.run(cmd, capture_output=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return parse_probe_output(proc.stdout, boundary), proc


def host_env(**extra: str) -> dict[str, str]:
    """A device-like environment: PATH without /usr/local/bin (whose newer docker client
    shadows Debian's) and no inherited DOCKER_HOST."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def head20(path: str | Path) -> str:
    with open(os.path.realpath(path), "rb") as f:
        return f.read(20).hex()


def strip1(text: str) -> str:
    return text[:-1] if text.endswith("\n") else text


def applet_dir(busybox: Path, dest: Path) -> Path:
    """A directory holding only ``busybox`` and a link per applet it lists (a minimal
    device root's /bin)."""
    dest.mkdir(parents=True, exist_ok=True)
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    for name in ["busybox", *applets]:
        link = dest / name
        if not link.exists():
            link.symlink_to(busybox)
    return dest


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def engine():
    """A real Docker engine (Debian's dockerd 20.10) on a private socket, data root and exec
    root, in a network namespace of its own: an engine started with --bridge=none in the
    host's namespace deletes the host engine's docker0 bridge (seen here; docs/lab.md). Yields its socket path; the socket's directory is traversable by
    everyone, the socket itself is root:docker 0660 as on a device."""
    workdir = Path(tempfile.mkdtemp(prefix="fleet-probe-engine-", dir="/tmp"))
    workdir.chmod(0o755)
    sock = workdir / "docker.sock"
    (workdir / "daemon.json").write_text("{}\n")  # never read the host's /etc/docker/daemon.json
    log = open(workdir / "dockerd.log", "wb")
    proc = subprocess.Popen(
        ["unshare", "--net", "--", "/usr/sbin/dockerd", "--host", f"unix://{sock}",
         "--config-file", str(workdir / "daemon.json"),
         "--data-root", str(workdir / "data"), "--exec-root", str(workdir / "exec"),
         "--pidfile", str(workdir / "docker.pid"), "--bridge=none", "--iptables=false",
         "--ip-masq=false"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            ping = subprocess.run([DOCKER_CLI, "-H", f"unix://{sock}", "version", "--format", "{{.Server.Version}}"],
                                  capture_output=True, text=True)
            if ping.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("dockerd did not start:\n" + (workdir / "dockerd.log").read_text()[-3000:])
            time.sleep(0.2)
        yield sock
    finally:
        # dockerd stops its own containerd on SIGTERM; the group kill catches leftovers
        # (only processes of this session: start_new_session above)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        log.close()
        subprocess.run(["umount", "-R", str(workdir / "data")], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


def ensure_binfmt(name: str) -> None:
    """Register QEMU's binfmt_misc entry ``name`` (e.g. qemu-aarch64) when it is absent,
    as the lab does (docs/lab.md): then a foreign static busybox runs directly and its
    applets re-exec it, so the probe's ``od`` reads the foreign binary. Left registered:
    the lab needs it anyway, and removing it could break a concurrent lab run."""
    base = Path("/proc/sys/fs/binfmt_misc")
    if not (base / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(base)], check=True, capture_output=True)
    if (base / name).exists():
        return
    line = next(l for l in Path(f"/usr/lib/binfmt.d/{name}.conf").read_text().splitlines()
                if l.startswith(":"))
    with contextlib.suppress(FileExistsError):  # a concurrent run registered it first
        (base / "register").write_text(line)


@pytest.fixture(scope="module")
def arm64_busybox() -> Path:
    path = fetch_busybox(("arm64",))["arm64"]
    ensure_binfmt("qemu-aarch64")
    return path


# --------------------------------------------------------- real runs, native


@pytest.mark.parametrize("shell", [["dash"], ["bash"], ["busybox", "sh"]], ids=["dash", "bash", "busybox-ash"])
def test_probe_matches_this_machine(shell):
    facts, proc = run_probe(shell, env=host_env(DOCKER_HOST="unix:///nonexistent/docker.sock"))
    u = os.uname()
    assert facts["uname_s"] == u.sysname == "Linux"
    assert facts["uname_r"] == u.release
    assert facts["uname_m"] == u.machine == platform.machine()
    long_bit = subprocess.run(["getconf", "LONG_BIT"], capture_output=True, text=True, check=True).stdout.strip()
    assert facts["getconf_long_bit"] == long_bit
    assert facts["page_size"] == str(os.sysconf("SC_PAGE_SIZE"))
    # the executable whose header is read is the shell's `od`: coreutils' for dash/bash,
    # busybox itself for busybox ash (Debian's busybox prefers its own applets)
    od = shutil.which("busybox") if shell[0] == "busybox" else shutil.which("od", path=host_env()["PATH"])
    assert facts["elf_header"] == head20(od)
    assert facts["cpuinfo"] == strip1(Path("/proc/cpuinfo").read_text())
    assert facts["os_release"] == strip1(Path("/etc/os-release").read_text())
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, env={"LC_ALL": "C", "PATH": "/usr/bin"}).stdout
    assert facts["lscpu"].splitlines()[0] == lscpu.splitlines()[0]
    if shell[0] == "busybox":
        # the dpkg applet answers `--print-architecture` with a usage text: treated as missing
        assert "dpkg_arch" not in facts
        assert "rpm_arch" not in facts  # busybox's rpm applet rejects --eval likewise
    else:
        dpkg = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True)
        assert facts["dpkg_arch"] == dpkg.stdout.strip()
        for tool, key in (("apk", "apk_arch"), ("opkg", "opkg_arch"), ("rpm", "rpm_arch")):
            assert (key in facts) == (shutil.which(tool, path=host_env()["PATH"]) is not None)
    # a docker CLI with no engine behind it: the CLI's own error, never "no engine"
    assert "Cannot connect to the Docker daemon at unix:///nonexistent/docker.sock" in facts["engine_error"]
    assert not (ENGINE_KEYS - {"engine_error"}) & facts.keys()
    assert set(facts) <= set(FACT_KEYS)
    assert proc.stdout.startswith(f"{HEADER} ".encode())


def test_probe_real_engine(engine):
    facts, _ = run_probe(["dash"], env=host_env(DOCKER_HOST=f"unix://{engine}"))
    version = subprocess.run([DOCKER_CLI, "-H", f"unix://{engine}", "version", "--format", "{{.Server.Version}}"],
                             capture_output=True, text=True, check=True).stdout.strip()
    goarch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}[platform.machine()]
    assert facts["engine_arch"] == goarch  # dockerd's GOARCH
    assert facts["engine_os"] == "linux"
    assert facts["engine_version"] == version
    assert facts["engine_info_arch"] == os.uname().machine  # docker info: the kernel's machine
    assert "engine_error" not in facts


def test_probe_engine_permission_denied(engine):
    """The login user is not in the engine socket's group: a real engine the user cannot
    reach. The fact is the CLI's error text; with become and no sudo, that reason too."""
    facts, _ = run_probe(["dash"], env=host_env(DOCKER_HOST=f"unix://{engine}"), user=NOBODY)
    assert "permission denied" in facts["engine_error"]
    assert str(engine) in facts["engine_error"]
    assert not (ENGINE_KEYS - {"engine_error"}) & facts.keys()
    facts, _ = run_probe(["dash"], env=host_env(DOCKER_HOST=f"unix://{engine}"), user=NOBODY, become=True)
    first, _, second = facts["engine_error"].partition("\n")
    assert "permission denied" in first
    if shutil.which("sudo", path=host_env()["PATH"]) is None:
        assert second == "become: sudo not found"
    else:  # nobody has no sudo rights: sudo -n fails without asking for a password
        assert second.startswith("sudo -n docker: ")


def test_probe_busybox_only_path(tmp_path):
    """A minimal device: PATH holds only busybox and its applet links. No getconf, lscpu,
    dpkg (the applet is rejected), docker: those facts are absent, the rest still come."""
    bb = Path(shutil.which("busybox"))
    bindir = applet_dir(bb, tmp_path / "bin")
    assert (bindir / "dpkg").exists() and (bindir / "rpm").exists()
    socket_before = Path("/var/run/docker.sock").is_socket()
    facts, proc = run_probe([str(bindir / "sh")], env={"PATH": str(bindir)})
    socket_after = Path("/var/run/docker.sock").is_socket()
    assert proc.stderr == b""
    assert facts["uname_m"] == os.uname().machine
    assert facts["elf_header"] == head20(bb)
    assert "cpuinfo" in facts and "os_release" in facts
    for key in ("getconf_long_bit", "page_size", "dpkg_arch", "apk_arch", "opkg_arch", "rpm_arch", "lscpu"):
        assert key not in facts, key
    if socket_before == socket_after:  # a host engine may come or go meanwhile (lab tests)
        if socket_after:
            assert facts["engine_error"].startswith("no docker CLI on PATH")
            assert not (ENGINE_KEYS - {"engine_error"}) & facts.keys()
        else:
            assert not ENGINE_KEYS & facts.keys()


def test_probe_foreign_busybox_under_qemu(tmp_path, arm64_busybox):
    """An arm64 device simulated with QEMU user emulation: the kernel machine and the ELF
    header are the foreign ones (the header is the arm64 busybox's own, e_machine 0xb7)."""
    bindir = applet_dir(arm64_busybox, tmp_path / "bin")
    facts, proc = run_probe([str(arm64_busybox), "sh"], env={"PATH": str(bindir)})
    assert proc.stderr == b""
    assert facts["uname_m"] == "aarch64"
    assert facts["elf_header"] == head20(arm64_busybox)
    header = bytes.fromhex(facts["elf_header"])
    assert header[:4] == b"\x7fELF" and header[4] == 2 and header[5] == 1  # ELF64, little-endian
    assert int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
    assert "dpkg_arch" not in facts and "getconf_long_bit" not in facts


def test_gather_over_ssh(sshd):
    """gather() through a real sshd: the login user's /bin/sh (dash) runs the command."""
    from fleet.inventory import Host
    from fleet.ssh import SSHSettings, connect, target_for

    kh = Path(tempfile.mkdtemp()) / "known_hosts"
    kh.write_text(sshd.known_hosts_line + "\n")
    host = Host(name="dev", vars={"ansible_host": sshd.address, "ansible_port": sshd.port,
                                  "ansible_user": sshd.user,
                                  "ansible_ssh_private_key_file": str(sshd.user_key_path)},
                groups=("all",), source="test")
    settings = SSHSettings(known_hosts=(kh,))
    with connect(target_for(host, settings), settings) as session:
        facts = gather(session, False)
    assert facts["uname_m"] == os.uname().machine
    assert facts["dpkg_arch"] == subprocess.run(["dpkg", "--print-architecture"], capture_output=True,
                                                text=True).stdout.strip()
    assert facts["elf_header"] == head20(shutil.which("od", path="/usr/bin:/bin"))
    shutil.rmtree(kh.parent)


def test_script_removes_the_boundary_from_engine_errors(tmp_path):
    """The one fact made of CLI error text (engine_error) could echo the boundary (docker
    names its socket path, templates, ...): the device replaces it. Real docker CLI whose
    DOCKER_HOST path contains the boundary."""
    b = new_boundary()
    proc = subprocess.run(
        ["dash", "-c", PROBE_SCRIPT, "fleet-probe", b, "0"], capture_output=True,
        env=host_env(DOCKER_HOST=f"unix://{tmp_path}/{b}.sock"),
    )
    facts = parse_probe_output(proc.stdout, b)
    assert "<boundary>" in facts["engine_error"]
    assert b not in facts["engine_error"]
