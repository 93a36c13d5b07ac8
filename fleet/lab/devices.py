"""One simulated board: its root filesystem, namespaces, engine and sshd.

Layout of ``LABDIR/devices/NAME/`` (all root-owned, 0755, as sshd's ChrootDirectory needs):

- ``rootfs/``: the login's whole world: static busybox of the board's architecture with its
  applet links, that architecture's Debian ``docker`` CLI with its libc and loader,
  ``/etc/os-release`` of the simulated OS, ``/etc/passwd``/``group`` with the login user,
  device nodes, and (mounted only inside the device's mount namespace) ``/proc`` with the
  board's cpuinfo over ``/proc/cpuinfo`` and the engine's run folder (``docker.sock``) on
  ``/var/run``.
- ``cpuinfo``: the board's /proc/cpuinfo text (from fleet/lab/data/cpuinfo).
- ``engine/{data,exec,run}``, ``engine/daemon.json``, ``engine/docker.pid``,
  ``engine/dockerd.log``: the board's own Docker engine.
- ``sshd_config``, ``ssh_host_ed25519_key{,.pub}``, ``authorized_keys``, ``sshd.log``.

Namespaces: network namespace ``fleetlab-NAME`` (see net.py) and a persistent mount
namespace bound at ``LABDIR/ns/NAME.mnt`` (``unshare --mount=FILE --propagation
private``), made once; the engine and sshd are both started in it with
``nsenter --net=/var/run/netns/fleetlab-NAME --mount=LABDIR/ns/NAME.mnt`` (never
``ip netns exec``, which remounts /sys and hides the cgroups from the engine). The
engine is started without ``--containerd`` so it runs its own containerd inside the same
namespaces (a host containerd would run the device's containers outside its namespaces),
and /run/containerd is masked there so it never attaches to a system containerd.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

from elftools.elf.elffile import ELFFile

from fleet.lab import net
from fleet.lab.mounts import is_mount_point
from fleet.lab.profiles import DEB_ARCHES, Profile
from fleet.lab.qemufix import ensure_fixed
from fleet.lab.setup import LOGIN_USER, arch_file, busybox
from fleet.lab.state import LabPaths, ProcRecord, _is_nsfs, find_processes, terminate
from fleet.lab.util import LabError, engine_answers, progress, run, ssh_answers
from fleet.output import warn

#: Bump when the rootfs layout changes, so `up` rebuilds old ones.
ROOTFS_VERSION = "4"
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Device:
    """Paths and operations of one device of ``profile`` in lab ``paths``."""

    def __init__(self, paths: LabPaths, profile: Profile):
        self.paths, self.profile, self.name = paths, profile, profile.name
        self.dir = paths.device_dir(profile.name)
        self.rootfs = self.dir / "rootfs"
        self.engine_dir = self.dir / "engine"
        self.run_dir = self.engine_dir / "run"
        self.socket = self.run_dir / "docker.sock"
        self.mntns = paths.mntns(profile.name)
        self.sshd_config = self.dir / "sshd_config"
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.address = net.device_address(profile.octet)

    # -- files ---------------------------------------------------------------------------------

    def host_key_line(self) -> str:
        """known_hosts line: ``ADDRESS ssh-ed25519 AAAA...``."""
        kind, blob = (self.host_key.with_suffix(".pub").read_text().split() + ["", ""])[:2]
        return f"{self.address} {kind} {blob}"

    def prepare(self, uid: int, gid: int, user_pubkey: str) -> None:
        """Directories, rootfs, host key, authorized_keys, cpuinfo, configs (idempotent)."""
        for d in (self.dir, self.engine_dir, self.run_dir, self.engine_dir / "data", self.engine_dir / "exec"):
            d.mkdir(parents=True, exist_ok=True, mode=0o755)
            os.chmod(d, 0o755 if d != self.engine_dir / "data" else 0o710)
        self._build_rootfs(uid, gid)
        if not self.host_key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"fleet-lab {self.name}", "-f", self.host_key])
        ak = self.dir / "authorized_keys"
        if not ak.exists() or ak.read_text() != user_pubkey:
            ak.write_text(user_pubkey)
        os.chmod(ak, 0o644)
        cpu = self.profile.cpuinfo_path()
        if cpu is not None:
            (self.dir / "cpuinfo").write_bytes(cpu.read_bytes())
        (self.engine_dir / "daemon.json").write_text("{}\n")
        env = f"SetEnv QEMU_CPU={self.profile.qemu_cpu}\n" if self.profile.qemu_cpu else ""
        self.sshd_config.write_text(
            f"# fleet lab device {self.name} ({self.profile.description})\n"
            # every address of the device, as a real board's sshd: its lab address and,
            # with `fleet lab sites up`, its site address (eth1, added later)
            "ListenAddress 0.0.0.0:22\n"
            f"HostKey {self.host_key}\n"
            f"PidFile {self.dir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {ak}\n"
            f"AllowUsers {LOGIN_USER}\n"
            f"ChrootDirectory {self.rootfs}\n"
            "PermitRootLogin no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nUsePAM no\nStrictModes no\nX11Forwarding no\n"
            # fleet opens the engine's socket over a direct-streamlocal channel; OpenSSH
            # refuses those too under "AllowTcpForwarding no" (channels.c: local forwarding
            # disabled as a whole), so local forwarding stays on
            "AllowTcpForwarding local\n"
            f"AllowStreamLocalForwarding {'yes' if self.profile.streamlocal else 'no'}\n"
            "PrintMotd no\nPrintLastLog no\nMaxStartups 64:30:128\n"
            "LogLevel ERROR\nSubsystem sftp internal-sftp\n"
            f"{env}"
        )

    def _rootfs_stamp(self, uid: int, gid: int) -> str:
        return f"{ROOTFS_VERSION} {self.profile.arch} {self.profile.uname_from} {uid}:{gid}\n"

    def rootfs_current(self, uid: int, gid: int) -> bool:
        """True if the root filesystem exists and matches this code's layout and user."""
        stamp = self.dir / ".rootfs-version"
        return self.rootfs.is_dir() and stamp.exists() and stamp.read_text() == self._rootfs_stamp(uid, gid)

    def _build_rootfs(self, uid: int, gid: int) -> None:
        if self.rootfs_current(uid, gid):
            return
        stamp = self.dir / ".rootfs-version"
        want = self._rootfs_stamp(uid, gid)
        progress(f"{self.name}: building its {self.profile.arch} root filesystem")
        arch = self.profile.arch
        a = DEB_ARCHES[arch]
        new = self.dir / "rootfs.new"
        if new.exists():
            shutil.rmtree(new)
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", f"lib/{a.triplet}", "etc", "home", "root", "proc",
                  "dev", "var/run", "var/tmp", "tmp"):
            (new / d).mkdir(parents=True, exist_ok=True, mode=0o755)
        os.chmod(new / "tmp", 0o1777)
        os.chmod(new / "root", 0o700)
        # busybox and its applet links (the foreign busybox lists them itself, via binfmt).
        shutil.copy2(busybox(self.paths, arch), new / "bin" / "busybox")
        listing = run([new / "bin" / "busybox", "--list-full"], what=f"{arch} busybox --list-full").stdout
        for rel in listing.decode().split():
            link = new / rel
            if rel == "bin/busybox" or link.exists():
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink("/bin/busybox", link)
        if self.profile.uname_from:
            # The lab's only synthesized fact (data/README.md): a 64-bit `uname` for a
            # 32-bit userland on a 64-bit kernel, which qemu-arm cannot report.
            (new / "bin" / "uname").unlink(missing_ok=True)
            shutil.copy2(busybox(self.paths, self.profile.uname_from), new / "bin" / "uname")
        # the board's docker CLI and dash as /bin/sh (Raspbian's and Debian's /bin/sh;
        # busybox's sh would run its own applets before PATH), with the libraries their
        # ELF files ask for (DT_NEEDED) and the loader.
        cli = arch_file(self.paths, arch, "usr/bin/docker")
        shutil.copy2(cli, new / "usr/bin/docker")
        dash = arch_file(self.paths, arch, "bin/dash")
        shutil.copy2(dash, new / "bin/dash")
        (new / "bin/sh").unlink(missing_ok=True)
        os.symlink("dash", new / "bin/sh")
        libdirs = [arch_file(self.paths, arch, f"lib/{a.triplet}"), arch_file(self.paths, arch, f"usr/lib/{a.triplet}")]
        needed: list[str] = []
        for exe in (cli, dash):
            with open(exe, "rb") as fh:
                dyn = ELFFile(fh).get_section_by_name(".dynamic")
                needed += [t.needed for t in dyn.iter_tags() if t.entry.d_tag == "DT_NEEDED"] if dyn else []
        for lib in dict.fromkeys(needed):
            src = next((d / lib for d in libdirs if (d / lib).exists()), None)
            if src is None:
                raise LabError(f"{self.name}: {lib} ({arch}) needed by docker/dash not found in {libdirs}")
            shutil.copy2(src.resolve(), new / "lib" / a.triplet / lib)
        loader_src = arch_file(self.paths, arch, a.loader.lstrip("/"))
        (new / a.loader.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(loader_src.resolve(), new / a.loader.lstrip("/"))
        # identity of the simulated OS and the login user
        osr = self.profile.os_release_text()
        (new / "etc/os-release").write_text(osr)
        (new / "etc/hostname").write_text(self.name + "\n")
        (new / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n{self.address}\t{self.name}\n")
        (new / "etc/passwd").write_text(
            "root:x:0:0:root:/root:/bin/sh\n"
            f"{LOGIN_USER}:x:{uid}:{gid}:fleet lab:/home/{LOGIN_USER}:/bin/sh\n")
        (new / "etc/group").write_text(f"root:x:0:\n{LOGIN_USER}:x:{gid}:{LOGIN_USER}\n")
        home = new / "home" / LOGIN_USER
        home.mkdir(mode=0o755)
        os.chown(home, uid, gid)
        for name, major, minor in (("null", 1, 3), ("zero", 1, 5), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)):
            try:
                os.mknod(new / "dev" / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
                os.chmod(new / "dev" / name, 0o666)
            except OSError:
                pass
        if self.rootfs.exists():
            shutil.rmtree(self.rootfs)
        os.replace(new, self.rootfs)
        stamp.write_text(want)

    # -- namespaces ----------------------------------------------------------------------------

    def ns_ready(self) -> bool:
        return _is_nsfs(self.mntns) and net.netns_exists(self.name)

    def ensure_namespaces(self) -> None:
        """Network namespace + persistent mount namespace with the device's mounts."""
        net.ensure_device_net(self.name, self.profile.octet)
        if _is_nsfs(self.mntns):
            return
        ns_dir = self.paths.ns_dir
        ns_dir.mkdir(exist_ok=True, mode=0o755)
        if not is_mount_point(ns_dir):
            # A namespace file can only be bound on a private mount (unshare(1)).
            run(["mount", "--bind", ns_dir, ns_dir])
            run(["mount", "--make-private", ns_dir])
        self.mntns.touch()
        run(["unshare", f"--mount={self.mntns}", "--propagation", "private", "true"], what="unshare --mount")
        Path("/run/containerd").mkdir(parents=True, exist_ok=True)
        cpu = self.dir / "cpuinfo"
        steps: list[list[str | os.PathLike]] = [
            # never let this engine find a system containerd (its containers would run outside the device's namespaces): its own runs here
            ["mount", "-t", "tmpfs", "-o", "mode=0711", "tmpfs", "/run/containerd"],
            ["mount", "-t", "proc", "proc", self.rootfs / "proc"],
            ["mount", "--bind", self.run_dir, self.rootfs / "var/run"],
        ]
        if self.profile.cpuinfo:
            steps += [["mount", "--bind", cpu, "/proc/cpuinfo"],
                      ["mount", "--bind", cpu, self.rootfs / "proc/cpuinfo"]]
        for argv in steps:
            run(["nsenter", f"--mount={self.mntns}", "--", *argv], what=f"{self.name}: {argv[0]} {argv[-1]}")

    def _nsenter(self) -> list[str]:
        return ["nsenter", f"--net={net.netns_path(self.name)}", f"--mount={self.mntns}", "--"]

    # -- processes -----------------------------------------------------------------------------

    def start_engine(self) -> ProcRecord:
        """Start the board's dockerd (own socket, data root, exec root, pid file, its own
        containerd, no bridge/iptables); returns at once (see ``engine_up``)."""
        e = self.engine_dir
        # leftovers of a crashed engine: its containerd and shims, and pid files that
        # dockerd would trust (a recycled containerd pid would be adopted and signalled).
        leftovers = find_processes(markers=[str(e / "exec") + "/", str(e / "data") + "/"])
        if leftovers:
            terminate(leftovers, 10)
        for f in (e / "docker.pid", e / "exec/containerd/containerd.pid"):
            f.unlink(missing_ok=True)
        deb = self.profile.deb
        dockerd = arch_file(self.paths, self.profile.arch, "usr/sbin/dockerd")
        interpreter: list[str] = []
        if deb.netlink_fix and deb.binfmt:
            # qemu-user leaves the last netlink attribute in host byte order; a
            # big-endian engine then cannot start any container (qemufix.py).
            fixed = ensure_fixed(self.paths, deb.binfmt)
            if fixed is None:
                warn(f"{self.name}: no netlink-fixed {deb.binfmt} for this qemu-user-static build "
                     "(fleet/lab/qemufix.py): its containers will not start")
            else:
                interpreter = [str(fixed)]
        argv = self._nsenter() + interpreter + [
            str(dockerd), "--host", f"unix://{self.socket}", "--data-root", str(e / "data"),
            "--exec-root", str(e / "exec"), "--pidfile", str(e / "docker.pid"),
            "--config-file", str(e / "daemon.json"), "--bridge=none", "--iptables=false", "--ip-masq=false",
            "--userland-proxy=false", "--group", LOGIN_USER, "--log-level", "warn",
        ]
        path = PATH_ENV
        if deb.runtime_packages:
            # The board's own containerd and runc (i386): the seccomp filter runc builds
            # then covers the containers' own system call ABI, as on a real board
            # (docs/lab.md, "i386: SIGSYS").
            root = self.paths.arch_root(self.profile.arch)
            path = f"{root / 'usr/bin'}:{root / 'usr/sbin'}:{PATH_ENV}"
        env = {"PATH": path, "HOME": "/root"}
        if self.profile.qemu_cpu:
            env["QEMU_CPU"] = self.profile.qemu_cpu
        with open(e / "dockerd.log", "ab") as log:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 env=env, start_new_session=True, close_fds=True)
        return ProcRecord.of(p.pid, str(e / "data"))

    def start_sshd(self) -> ProcRecord:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        argv = self._nsenter() + ["/usr/sbin/sshd", "-D", "-f", str(self.sshd_config), "-E", str(self.dir / "sshd.log")]
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={"PATH": PATH_ENV}, start_new_session=True, close_fds=True)
        return ProcRecord.of(p.pid, str(self.sshd_config))

    def engine_up(self) -> bool:
        return engine_answers(self.socket)

    def sshd_up(self) -> bool:
        return ssh_answers(self.address)

    def processes(self) -> list[int]:
        """Every process of this device: in its namespaces or naming its folder, plus
        descendants (containers, login sessions)."""
        return find_processes(markers=[str(self.dir) + "/"], ns_files=[self.mntns, net.netns_path(self.name)])

    def stop(self, records: list[ProcRecord | None]) -> None:
        """Stop the device's processes (recorded ones first, gracefully), then undo its
        mount namespace and network namespace."""
        first = [r.pid for r in records if r and r.alive()]
        if first:
            terminate(first, 20)
        rest = self.processes()
        if rest:
            terminate(rest, 5)
        self.release_namespaces()

    def release_namespaces(self) -> None:
        if is_mount_point(self.mntns):
            run(["umount", self.mntns], check=False)
            if is_mount_point(self.mntns):
                run(["umount", "-l", self.mntns], check=False)
        self.mntns.unlink(missing_ok=True)
        net.delete_device_net(self.name, self.profile.octet)


def state_of(dev: Device, entry: dict | None) -> dict:
    """Health of one device from its state entry: sshd/engine = running|down."""
    sshd = ProcRecord.load((entry or {}).get("sshd"))
    engine = ProcRecord.load((entry or {}).get("engine"))
    sshd_ok = bool(sshd and sshd.alive() and dev.sshd_up())
    engine_ok = bool(engine and engine.alive() and dev.engine_up())
    return {
        "name": dev.name, "address": dev.address, "profile": dev.profile.name, "arch": dev.profile.arch,
        "sshd": "running" if sshd_ok else "down", "engine": "answering" if engine_ok else "down",
        "state": "running" if (sshd_ok and engine_ok) else ("down" if not (sshd_ok or engine_ok) else "degraded"),
        "engine_socket": str(dev.socket),
    }


def known_hosts_text(devices: list[Device]) -> str:
    return "".join(d.host_key_line() + "\n" for d in devices)


def write_json(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n")
