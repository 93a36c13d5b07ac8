"""`fleet lab setup`: the host packages, the foreign engine files, binfmt_misc and a host engine.

What it does (each step idempotent; see docs in ``fleet lab setup --help``):

1. ``apt-get install`` the Debian packages the lab runs (``HOST_PACKAGES``).
2. ``dpkg --add-architecture`` for each foreign architecture, ``apt-get update``, then
   ``apt-get download`` of ``docker.io:ARCH``, ``busybox-static:ARCH`` and the libraries
   that Debian's foreign ``dockerd`` and ``docker`` need (``FOREIGN_PACKAGES``; for i386,
   which the host runs natively, also its own ``containerd``, ``runc`` and
   ``libseccomp2``: ``packages_for``), extracted
   with ``dpkg-deb -x`` into ``LABDIR/cache/root/ARCH``; the libraries and the ELF
   loader are also copied (never over an existing file) into the host's multiarch
   folders (``/lib/<triplet>``, ``/usr/lib/<triplet>``), which is where qemu-user finds
   them for the device engines (QEMU_LD_PREFIX would break dockerd's chrooted layer
   extraction, which runs without that prefix).
3. binfmt_misc: mounted if needed, then each ``/usr/lib/binfmt.d/qemu-*.conf`` entry the
   lab needs is registered only when absent; what the lab registered is recorded in
   ``LABDIR/binfmt-registered.json``. The conf files carry the F (fix-binary) flag, so the
   interpreter is opened at registration and works inside chroots and containers.
4. A host Docker engine: when nothing answers on /var/run/docker.sock, the native
   ``dockerd`` is started detached, logging to ``LABDIR/host-dockerd.log``.
5. The lab's login user ``fleetlab`` (host account, password field ``*``, shell /bin/sh).
6. For big-endian boards (s390x): the lab's copy of qemu-user with the netlink
   byte-order fix, ``LABDIR/cache/qemu/`` (fleet/lab/qemufix.py; ``up`` makes it too).
"""

from __future__ import annotations

import json
import os
import pwd
import grp
import shutil
import subprocess
from pathlib import Path

from fleet.errors import UsageError
from fleet.lab.profiles import DEB_ARCHES, HOST_ARCH, Profile, arches_for
from fleet.lab.qemufix import ensure_fixed
from fleet.lab.state import LabPaths
from fleet.lab.util import LabError, engine_answers, progress, run, wait_for
from fleet.output import warn

HOST_PACKAGES = (
    "docker.io", "containerd", "runc", "docker-registry", "openssh-server", "openssh-client",
    "qemu-user-static", "busybox-static", "skopeo", "binfmt-support", "iproute2", "openssl",
    "util-linux", "redis-server",  # the sites' broker (`fleet lab sites up`)
)
#: Per foreign architecture: the engine, the static busybox, dash (the login shell: busybox's
#: own sh runs its applets before PATH, which would hide the pi4-32on64 `uname`), and the
#: shared libraries of Debian's dockerd/docker (docs/lab.md, "Network and processes").
FOREIGN_PACKAGES = (
    "docker.io", "busybox-static", "dash", "libc6", "libsystemd0", "libdevmapper1.02.1", "libcap2",
    "libgcrypt20", "liblz4-1", "liblzma5", "libzstd1", "libgpg-error0", "libselinux1",
    "libpcre2-8-0", "libudev1", "libgcc-s1",
)


def packages_for(arch: str) -> tuple[str, ...]:
    """Foreign packages of ``arch``: FOREIGN_PACKAGES plus its own container runtime
    (``DebArch.runtime_packages``, i386 only)."""
    return FOREIGN_PACKAGES + DEB_ARCHES[arch].runtime_packages
HOST_SOCKET = Path("/var/run/docker.sock")
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_CONF = Path("/usr/lib/binfmt.d")
LOGIN_USER = "fleetlab"
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


def require_root() -> None:
    if os.geteuid() != 0:
        raise UsageError("the lab needs root (network namespaces, mounts, binfmt_misc): run it with sudo")


# -- files of one architecture ------------------------------------------------------------

def arch_file(paths: LabPaths, arch: str, rel: str) -> Path:
    """Path of ``rel`` (e.g. "usr/sbin/dockerd") for ``arch``: the host's own file for the
    host architecture, else the extracted copy in the lab cache."""
    if arch == HOST_ARCH:
        return Path("/") / rel
    return paths.arch_root(arch) / rel


def busybox(paths: LabPaths, arch: str) -> Path:
    return arch_file(paths, arch, "bin/busybox")


# -- checks --------------------------------------------------------------------------------

def _pkg_installed(names: list[str]) -> set[str]:
    cp = run(["dpkg-query", "-W", "-f=${Package}:${Architecture} ${Status}\\n", *names], check=False)
    ok = set()
    for line in cp.stdout.decode().splitlines():
        name, _, status = line.partition(" ")
        if status.endswith("install ok installed"):
            ok.add(name.split(":")[0])
    return ok


def missing_for_up(paths: LabPaths, profiles: list[Profile]) -> list[str]:
    """What ``fleet lab up`` needs and does not find, one human line each."""
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append("not root (the lab needs root: namespaces, mounts, binfmt_misc)")
    for exe in ("/usr/sbin/sshd", "/usr/bin/docker-registry", "/usr/sbin/dockerd", "/usr/bin/containerd",
                "/usr/sbin/runc", "/usr/bin/ssh-keygen", "/usr/bin/openssl", "/usr/bin/nsenter",
                "/usr/bin/unshare", "/usr/bin/docker"):
        if not Path(exe).exists() and not Path("/usr" + exe).exists():
            missing.append(f"no {exe} (package not installed)")
    if "binfmt_misc" not in Path("/proc/filesystems").read_text():
        missing.append("no binfmt_misc support in this kernel")
    for arch in arches_for(profiles):
        a = DEB_ARCHES[arch]
        if a.binfmt and not Path(f"/usr/libexec/qemu-binfmt/{a.binfmt.removeprefix('qemu-')}-binfmt-P").exists():
            missing.append(f"no qemu-user-static interpreter for {arch} (package qemu-user-static)")
        if arch == HOST_ARCH:
            continue
        rels = ["usr/sbin/dockerd", "usr/bin/docker", "bin/busybox", "bin/dash"]
        if a.runtime_packages:
            rels += ["usr/bin/containerd", "usr/bin/containerd-shim-runc-v2", "usr/sbin/runc"]
        for rel in rels:
            if not arch_file(paths, arch, rel).exists():
                missing.append(f"no foreign engine file {arch_file(paths, arch, rel)} "
                               f"({', '.join(f'{p}:{arch}' for p in ('docker.io', 'busybox-static') + a.runtime_packages)})")
        if not Path(a.loader).exists():
            missing.append(f"no {arch} ELF loader {a.loader} (libc6:{arch} files in the host multiarch folders)")
        if not (Path("/usr/lib") / a.triplet / "libc.so.6").exists():
            missing.append(f"no {arch} libc in /usr/lib/{a.triplet}")
    try:
        pwd.getpwnam(LOGIN_USER)
    except KeyError:
        missing.append(f"no login user {LOGIN_USER!r}")
    return missing


# -- steps -----------------------------------------------------------------------------------

def apt_update() -> None:
    for attempt in range(3):
        cp = run(["apt-get", "update"], check=False, env=APT_ENV, what="apt-get update")
        text = (cp.stdout + cp.stderr).decode(errors="replace")
        if cp.returncode == 0 and "\nE: " not in text and not text.startswith("E: "):
            return
    # Partial failures (a mirror syncing one index) are common; downloads may still work.
    warn("apt-get update reported errors; continuing with the indexes it has")


def install_host_packages() -> None:
    need = [p for p in HOST_PACKAGES if p not in _pkg_installed(list(HOST_PACKAGES))]
    if not need:
        progress("host packages: all installed")
        return
    progress(f"installing {' '.join(need)}")
    apt_update()
    run(["apt-get", "install", "-y", "--no-install-recommends", *need], env=APT_ENV, timeout=1800,
        what="apt-get install")


def add_architectures(arches: list[str]) -> bool:
    """``dpkg --add-architecture`` for each missing foreign arch; True if one was added."""
    have = set(run(["dpkg", "--print-foreign-architectures"]).stdout.decode().split())
    added = False
    for a in arches:
        if a != HOST_ARCH and a not in have:
            run(["dpkg", "--add-architecture", a])
            added = True
    return added


def fetch_arch(paths: LabPaths, arch: str, *, updated: list[bool]) -> None:
    """Download and extract the foreign packages of ``arch`` into the lab cache, then copy
    its libraries and loader into the host multiarch folders (no overwrite)."""
    if arch == HOST_ARCH:
        return
    root = paths.arch_root(arch)
    done = root / ".fleet-lab-complete"
    if done.exists() and set(packages_for(arch)) - {ln.split("_")[0] for ln in done.read_text().split()}:
        done.unlink()  # the package list grew since this cache was made
    if not done.exists():
        debs = paths.debs(arch)
        debs.mkdir(parents=True, exist_ok=True)
        have = {p.name.split("_")[0] for p in debs.glob("*.deb")}
        need = [p for p in packages_for(arch) if p not in have]
        if need:
            progress(f"{arch}: apt-get download {len(need)} packages")
            cp = run(["apt-get", "download", *[f"{p}:{arch}" for p in need]], check=False,
                     env=APT_ENV, what=f"apt-get download ({arch})", cwd=debs)
            if cp.returncode != 0 and not updated[0]:
                apt_update()
                updated[0] = True
                run(["apt-get", "download", *[f"{p}:{arch}" for p in need]], env=APT_ENV,
                    what=f"apt-get download ({arch})", cwd=debs)
            elif cp.returncode != 0:
                raise LabError(f"apt-get download ({arch}) failed: {cp.stderr.decode(errors='replace')[-400:]}")
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        for deb in sorted(debs.glob("*.deb")):
            run(["dpkg-deb", "-x", deb, root], what=f"dpkg-deb -x {deb.name}")
        done.write_text("\n".join(sorted(p.name for p in debs.glob("*.deb"))) + "\n")
    install_host_libs(paths, arch)


def install_host_libs(paths: LabPaths, arch: str) -> None:
    a = DEB_ARCHES[arch]
    root = paths.arch_root(arch)
    for rel in (f"lib/{a.triplet}", f"usr/lib/{a.triplet}"):
        src = root / rel
        if src.is_dir():
            dst = Path("/usr/lib") / a.triplet  # /lib is /usr/lib on merged-/usr Debian 12
            if not Path("/lib").is_symlink():
                dst = Path("/") / rel
            dst.mkdir(parents=True, exist_ok=True)
            run(["cp", "-a", "-n", f"{src}/.", f"{dst}/"], what=f"copy {arch} libraries")
    loader = Path(a.loader)
    if not loader.exists() and not loader.is_symlink():
        src = root / a.loader.lstrip("/")
        loader.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), loader)
        elif src.exists():
            shutil.copy2(src, loader)
        else:
            raise LabError(f"{arch}: the libc6 package has no loader {a.loader}")


def binfmt_names(arches: list[str]) -> list[str]:
    names: list[str] = []
    for arch in arches:
        b = DEB_ARCHES[arch].binfmt
        if b and b not in names:
            names.append(b)
    return names


def ensure_binfmt(paths: LabPaths, arches: list[str]) -> list[str]:
    """Register the qemu binfmt_misc entries ``arches`` need; returns the ones this call
    registered. Never touches an entry the lab did not register."""
    if not (BINFMT_DIR / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", BINFMT_DIR], what="mount binfmt_misc")
    record = paths.root / "binfmt-registered.json"
    try:
        ours = set(json.loads(record.read_text()))
    except (OSError, ValueError):
        ours = set()
    now: list[str] = []
    for name in binfmt_names(arches):
        entry = BINFMT_DIR / name
        if entry.exists():
            text = entry.read_text()
            flags = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("flags:")), "")
            if "F" not in flags:
                warn(f"binfmt_misc entry {name} lacks the F flag (registered by someone else): "
                     "foreign binaries in device chroots and containers will not start")
            if not text.startswith("enabled"):
                warn(f"binfmt_misc entry {name} is disabled")
            continue
        conf = BINFMT_CONF / f"{name}.conf"
        if not conf.exists():
            raise LabError(f"no {conf} (package qemu-user-static)")
        line = next(ln for ln in conf.read_text().splitlines() if ln.startswith(":"))
        with open(BINFMT_DIR / "register", "w") as f:
            f.write(line)
        now.append(name)
        ours.add(name)
    if now:
        paths.root.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(sorted(ours)) + "\n")
        progress(f"binfmt_misc: registered {', '.join(now)}")
    return now


def ensure_host_engine(paths: LabPaths) -> str:
    """Start the native dockerd on /var/run/docker.sock when no engine answers there.

    Returns "running" (found one) or "started". Raises LabError if it does not answer
    within 60 s (its log is named)."""
    if engine_answers(HOST_SOCKET):
        return "running"
    progress(f"starting the host Docker engine (log {paths.host_engine_log})")
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.host_engine_log, "ab") as log:
        subprocess.Popen(["/usr/sbin/dockerd", "--host", f"unix://{HOST_SOCKET}"], stdin=subprocess.DEVNULL,
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    if not wait_for(lambda: engine_answers(HOST_SOCKET), 60, 0.5):
        raise LabError(f"the host Docker engine did not answer within 60 s; see {paths.host_engine_log}")
    return "started"


def ensure_login_user() -> tuple[int, int]:
    """The host account the devices' sshd log in (uid, gid); created if missing.

    Password field ``*`` (not ``!``): with UsePAM no, sshd refuses a locked account."""
    try:
        pw = pwd.getpwnam(LOGIN_USER)
    except KeyError:
        run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", f"/home/{LOGIN_USER}",
             "--shell", "/bin/sh", "--comment", "fleet lab device login", LOGIN_USER], what="useradd")
        pw = pwd.getpwnam(LOGIN_USER)
    locked = any(line.startswith(f"{LOGIN_USER}:!") for line in Path("/etc/shadow").read_text().splitlines())
    if locked:
        run(["usermod", "-p", "*", LOGIN_USER], what="usermod")
    return pw.pw_uid, grp.getgrnam(LOGIN_USER).gr_gid


def setup(paths: LabPaths, profiles: list[Profile], *, install: bool = True, host_engine: bool = True) -> dict:
    """Run every setup step for ``profiles``; returns a summary dict (what was done)."""
    require_root()
    paths.root.mkdir(parents=True, exist_ok=True, mode=0o755)
    summary: dict = {"lab_dir": str(paths.root)}
    if install:
        install_host_packages()
    arches = arches_for(profiles)
    updated = [False]
    if add_architectures(arches):
        progress(f"added dpkg architectures; apt-get update")
        apt_update()
        updated[0] = True
    failed: dict[str, str] = {}
    for arch in arches:
        try:
            fetch_arch(paths, arch, updated=updated)
        except LabError as exc:
            optional = all(not p.default for p in profiles if arch in (p.arch, p.uname_from))
            if not optional:
                raise
            warn(f"{arch}: {exc} (optional profiles using it will not start)")
            failed[arch] = str(exc)
    summary["arches"] = [a for a in arches if a not in failed]
    summary["binfmt_registered"] = ensure_binfmt(paths, [a for a in arches if a not in failed])
    for arch in arches:
        a = DEB_ARCHES[arch]
        if a.netlink_fix and a.binfmt and arch not in failed and ensure_fixed(paths, a.binfmt) is None:
            warn(f"{arch}: this qemu-user-static build is not one the lab knows how to fix "
                 "(fleet/lab/qemufix.py): containers on that board will fail with "
                 "'failed to create default sandbox: invalid argument'")
    ensure_login_user()
    if host_engine:
        summary["host_engine"] = ensure_host_engine(paths)
    return summary
