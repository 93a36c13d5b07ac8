"""Device profiles of the simulated lab and the Debian architectures behind them.

A profile names one simulated board: the Debian architecture of its userland and of its
Docker engine (run under qemu-user through binfmt_misc when foreign), the
``/proc/cpuinfo`` text of the real board (``fleet/lab/data/cpuinfo``), its
``/etc/os-release`` and what a probe must conclude from it (``expected_*``, used by the
lab's own tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fleet.errors import UsageError


@dataclass(frozen=True)
class DebArch:
    """One Debian architecture as the lab uses it.

    ``triplet``: multiarch folder (``/lib/<triplet>``); ``loader``: the ELF interpreter
    path its dynamic binaries ask for; ``binfmt``: the qemu-user-static binfmt_misc entry
    that runs it on an x86-64 host (None when the host runs it natively);
    ``hello_dir``: the build-context folder of examples/hello for this architecture
    (``rootfs-${TARGETARCH}${TARGETVARIANT}``); ``platform``: OCI platform its binaries
    are built for (Debian armhf is ARMv7, armel ARMv5TE, run by the v6 Pi Zero).

    ``runtime_packages``: for an architecture the host runs natively (i386 on x86-64),
    the Debian packages of its own ``containerd`` and ``runc``: its engine then runs the
    board's whole container stack, as a real 32-bit userland does. Emulated engines keep
    the host's runc (qemu-user cannot run runc's namespace set-up); their containers'
    system calls are the host's, made by qemu. With the host's 64-bit runc, an i386
    engine's containers die of SIGSYS at their first system call (docs/lab.md).
    ``netlink_fix``: run the engine under the lab's copy of qemu-user with its netlink
    byte-order fix (fleet/lab/qemufix.py): big-endian guests only.
    """

    name: str
    triplet: str
    loader: str
    binfmt: str | None
    hello_dir: str
    platform: str
    runtime_packages: tuple[str, ...] = ()
    netlink_fix: bool = False


DEB_ARCHES: dict[str, DebArch] = {
    a.name: a
    for a in (
        DebArch("amd64", "x86_64-linux-gnu", "/lib64/ld-linux-x86-64.so.2", None, "rootfs-amd64", "linux/amd64"),
        DebArch("arm64", "aarch64-linux-gnu", "/lib/ld-linux-aarch64.so.1", "qemu-aarch64", "rootfs-arm64", "linux/arm64"),
        DebArch("armhf", "arm-linux-gnueabihf", "/lib/ld-linux-armhf.so.3", "qemu-arm", "rootfs-armv7", "linux/arm/v7"),
        DebArch("armel", "arm-linux-gnueabi", "/lib/ld-linux.so.3", "qemu-arm", "rootfs-armv6", "linux/arm/v6"),
        DebArch("s390x", "s390x-linux-gnu", "/lib/ld64.so.1", "qemu-s390x", "rootfs-s390x", "linux/s390x",
                netlink_fix=True),
        DebArch("i386", "i386-linux-gnu", "/lib/ld-linux.so.2", None, "rootfs-386", "linux/386",
                runtime_packages=("containerd", "runc", "libseccomp2")),
    )
}

#: Host architecture of the machine kind the lab runs on.
HOST_ARCH = "amd64"


@dataclass(frozen=True)
class Profile:
    """A simulated board.

    ``octet``: last byte of its address on the lab bridge (fixed, so addresses and
    known_hosts lines stay the same whatever subset runs); ``qemu_cpu``: QEMU_CPU for
    its engine and login (``arm1176`` makes qemu-arm report ``armv6l``);
    ``uname_from``: Debian architecture whose static busybox serves ``uname`` in the
    rootfs (the one synthesized fact, see data/README.md); ``group``: inventory group of
    its architecture family. ``expected_*``: what the real board shows. ``streamlocal``:
    False makes its sshd refuse ``direct-streamlocal@openssh.com`` channels
    (``AllowStreamLocalForwarding no``, as a hardened device may), so fleet reaches that
    engine through ``docker system dial-stdio``.
    """

    name: str
    arch: str
    octet: int
    cpuinfo: str | None
    os_release: str
    group: str
    expected_uname: str
    expected_engine_arch: str
    expected_platform: str
    expected_elf: tuple[int, str, str]  # (bits, "little"|"big", e_machine name)
    qemu_cpu: str | None = None
    uname_from: str | None = None
    default: bool = True
    description: str = ""
    streamlocal: bool = True

    @property
    def deb(self) -> DebArch:
        return DEB_ARCHES[self.arch]

    def cpuinfo_path(self) -> Path | None:
        """Path of the board's /proc/cpuinfo text, or None to leave the kernel's."""
        if self.cpuinfo is None:
            return None
        return Path(str(resources.files("fleet.lab") / "data" / "cpuinfo" / self.cpuinfo))

    def os_release_text(self) -> str:
        return (resources.files("fleet.lab") / "data" / "os-release" / self.os_release).read_text()


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("pi-zero", "armel", 11, "pi-zero.txt", "raspbian-12.txt", "arm32",
                "armv6l", "arm", "linux/arm/v6", (32, "little", "EM_ARM"), qemu_cpu="arm1176",
                description="Raspberry Pi Zero (ARM1176, ARMv6), Raspbian 32-bit, armel engine"),
        Profile("pi3-32", "armhf", 12, "pi3-32.txt", "raspbian-12.txt", "arm32",
                "armv7l", "arm", "linux/arm/v7", (32, "little", "EM_ARM"),
                description="Raspberry Pi 3 (Cortex-A53) on a 32-bit kernel, Raspbian 32-bit, armhf engine",
                streamlocal=False),
        Profile("pi4-64", "arm64", 13, "pi4-64.txt", "raspios64-11.txt", "arm64",
                "aarch64", "arm64", "linux/arm64", (64, "little", "EM_AARCH64"),
                description="Raspberry Pi 4 / CM4 (Cortex-A72), Raspberry Pi OS 64-bit, arm64 engine"),
        Profile("pi4-32on64", "armhf", 14, "pi4-32on64.txt", "raspbian-12.txt", "arm32",
                "aarch64", "arm", "linux/arm/v7", (32, "little", "EM_ARM"), uname_from="arm64",
                description="Raspberry Pi 4 with a 64-bit kernel and a 32-bit Raspbian userland, armhf engine"),
        Profile("x86", "amd64", 15, None, "ubuntu-22.04.txt", "x86_64",
                "x86_64", "amd64", "linux/amd64", (64, "little", "EM_X86_64"),
                description="x86-64 gateway, Ubuntu 22.04 userland, native engine"),
        Profile("s390x", "s390x", 16, None, "debian-12.txt", "s390",
                "s390x", "s390x", "linux/s390x", (64, "big", "EM_S390"), default=False,
                description="IBM Z (big-endian) under qemu-s390x"),
        Profile("i386", "i386", 17, None, "debian-12.txt", "x86_32",
                "x86_64", "386", "linux/386", (32, "little", "EM_386"), default=False,
                description="32-bit x86 userland and engine on the 64-bit kernel"),
    )
}

DEFAULT_PROFILES: tuple[str, ...] = tuple(p.name for p in PROFILES.values() if p.default)


def parse_profiles(spec: str | None) -> list[Profile]:
    """``"pi-zero,x86"`` -> profiles in the given order; None/"" -> the default five.

    Raises UsageError naming an unknown profile.
    """
    if not spec:
        return [PROFILES[n] for n in DEFAULT_PROFILES]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if names == ["all"]:
        return list(PROFILES.values())
    unknown = [n for n in names if n not in PROFILES]
    if unknown:
        raise UsageError(
            f"unknown lab profile(s): {', '.join(unknown)} (known: {', '.join(PROFILES)})"
        )
    seen: dict[str, Profile] = {}
    for n in names:
        seen.setdefault(n, PROFILES[n])
    return list(seen.values())


def arches_for(profiles: list[Profile]) -> list[str]:
    """Debian architectures the given profiles need files of (userland, engine, uname)."""
    out: list[str] = []
    for p in profiles:
        for a in (p.arch, p.uname_from):
            if a and a not in out:
                out.append(a)
    return out
