"""What the names a device prints say about its platform. Pure, no I/O.

Kernel machine strings (``uname -m``, ``docker info`` Architecture), package architectures
(dpkg, apk, opkg, rpm), the engine's Go architecture, ELF class/encoding/``e_machine`` and
ARM core names and levels, each mapped to the OCI platforms they allow
(:mod:`fleet.platform`). Deciding one device's platform from its facts is
:func:`fleet.detect.detect`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fleet.platform import Platform

__all__ = [
    "KernelArch",
    "UserlandArch",
    "kernel_arch",
    "package_arch",
    "elf_platform",
    "elf_signature",
    "arm_level_of_machine",
    "arm_core_level",
    "cpuinfo_arch_level",
]




@dataclass(frozen=True)
class KernelArch:
    """What a kernel machine string (``uname -m``, ``docker info`` Architecture) says.

    ``candidates``: the userland platforms such a kernel runs, most usual first (one
    candidate means the kernel alone decides). ``bits``/``endianness``: of the kernel, None
    when the string does not tell (``mips`` is printed by either byte order).
    ``arm_level``: the ARM architecture level the kernel reports for the CPU (5-8), else
    None. ``description``: human text for evidence and reasons.
    """

    candidates: tuple[Platform, ...]
    bits: int | None
    endianness: str | None
    arm_level: int | None
    description: str

    @property
    def decides(self) -> bool:
        return len(self.candidates) == 1


@dataclass(frozen=True)
class UserlandArch:
    """What a userland name (package architecture, ELF header, engine GOARCH) says.

    ``platform``: its OCI platform; for 32-bit ARM the variant is the userland's ceiling
    (``arm_cap``) and is lowered by :mod:`fleet.detect` to the CPU's level.
    ``arm_cap``: highest ARM level to give such a device (armel -> 6, armhf -> 7; a 32-bit
    ARM userland on ARMv8 is arm/v7 by convention). ``arm_baseline``: the lowest CPU level
    the userland is built for, used only when no CPU fact is known (None: unknown).
    """

    platform: Platform
    bits: int
    endianness: str
    arm_cap: int | None
    arm_baseline: int | None
    description: str


def _p(arch: str, variant: str = "") -> Platform:
    return Platform("linux", arch, variant)


def arm_level_of_machine(machine: str) -> int | None:
    """ARM level in a kernel machine string: ``armv6l`` -> 6, ``aarch64`` -> 8, else None.

    Same fallback as containerd cpuinfo_linux.go ``getCPUVariantFromArch``.
    """
    m = machine.strip().lower()
    if m in ("aarch64", "arm64", "aarch64_be"):
        return 8
    match = re.match(r"^armv([5-8])", m)
    return int(match.group(1)) if match else None


def kernel_arch(machine: str) -> KernelArch | None:
    """Interpret a kernel machine string (``uname -m``); None if unknown.

    64-bit kernels that also run 32-bit userlands (aarch64, x86_64, mips64, ppc64) give
    several candidates: the kernel alone cannot decide (pi-hole/docker-pi-hole#531: a Pi 4
    with 32-bit Raspbian on kernel8.img prints aarch64).
    """
    m = machine.strip().lower()
    if not m:
        return None
    level = arm_level_of_machine(m)
    if m in ("aarch64", "arm64"):
        return KernelArch((_p("arm64"), _p("arm", "v7")), 64, "little", 8, f"{machine}: 64-bit ARM kernel")
    if m == "armv8l":
        # arm64 kernels print armv8l to linux32 (AArch32) processes: the caller is 32-bit;
        # a 32-bit userland on ARMv8 is arm/v7 (shared cases' convention).
        return KernelArch((_p("arm", "v7"),), 32, "little", 8, f"{machine}: 32-bit (AArch32) view of an ARMv8 CPU")
    if level is not None and m.endswith("l"):
        # armv5tel, armv6l, armv7l: a 32-bit ARM kernel runs only 32-bit ARM userlands.
        return KernelArch((_p("arm", f"v{min(level, 7)}"),), 32, "little", level, f"{machine}: 32-bit ARMv{level} kernel")
    if level is not None:
        # armv7b, aarch64_be: big-endian ARM has no OCI platform.
        return KernelArch((), 64 if m.startswith("aarch64") else 32, "big", level, f"{machine}: big-endian ARM kernel (no OCI platform)")
    if m in ("x86_64", "amd64"):
        return KernelArch((_p("amd64"), _p("386")), 64, "little", None, f"{machine}: 64-bit x86 kernel")
    if m in ("i386", "i486", "i586", "i686", "x86"):
        return KernelArch((_p("386"),), 32, "little", None, f"{machine}: 32-bit x86 kernel")
    if m == "ppc64le":
        # no 32-bit little-endian PowerPC userland exists (nvidia-docker#750).
        return KernelArch((_p("ppc64le"),), 64, "little", None, f"{machine}: 64-bit little-endian POWER kernel")
    if m == "ppc64":
        # ppc64 is big-endian (docker/docs#6322) and also runs 32-bit powerpc userlands.
        return KernelArch((_p("ppc64"), _p("ppc")), 64, "big", None, f"{machine}: 64-bit big-endian POWER kernel")
    if m == "s390x":
        return KernelArch((_p("s390x"),), 64, "big", None, f"{machine}: IBM Z kernel")
    if m == "riscv64":
        return KernelArch((_p("riscv64"),), 64, "little", None, f"{machine}: 64-bit RISC-V kernel")
    if m in ("loongarch64", "loong64"):
        return KernelArch((_p("loong64"),), 64, "little", None, f"{machine}: 64-bit LoongArch kernel")
    if m == "mips64":
        # printed by big- and little-endian MIPS64 kernels alike; they run o32 and n64
        # userlands (docker-library/hello-world#68: a Loongson mips64el box).
        return KernelArch((_p("mips64le"), _p("mips64"), _p("mipsle"), _p("mips")), 64, None, None,
                          f"{machine}: 64-bit MIPS kernel of either byte order")
    if m == "mips":
        return KernelArch((_p("mipsle"), _p("mips")), 32, None, None, f"{machine}: 32-bit MIPS kernel of either byte order")
    return None


# dpkg --print-architecture (Debian ports list) -> (arch, variant, bits, endianness, cap, baseline, text)
_DPKG = {
    "amd64": ("amd64", "", 64, "little", None, None, "64-bit x86 userland"),
    "i386": ("386", "", 32, "little", None, None, "32-bit x86 userland"),
    "arm64": ("arm64", "", 64, "little", None, None, "64-bit ARM userland"),
    # Debian armhf targets ARMv7 (+VFPv3-D16); Raspbian's armhf is ARMv6+VFP2 (moby#41017),
    # so the baseline is decided in fleet.detect from os-release.
    "armhf": ("arm", "v7", 32, "little", 7, 7, "32-bit ARM hard-float userland"),
    # Debian armel targets ARMv5TE; a v6+ CPU with it gets arm/v6 (containerd: armel ->
    # arm/v6; the lab's Pi Zero profile).
    "armel": ("arm", "v6", 32, "little", 6, 5, "32-bit ARM soft-float (EABI) userland"),
    "mips": ("mips", "", 32, "big", None, None, "32-bit big-endian MIPS userland"),
    "mipsel": ("mipsle", "", 32, "little", None, None, "32-bit little-endian MIPS userland"),
    "mips64": ("mips64", "", 64, "big", None, None, "64-bit big-endian MIPS userland"),
    "mips64el": ("mips64le", "", 64, "little", None, None, "64-bit little-endian MIPS userland"),
    "ppc64el": ("ppc64le", "", 64, "little", None, None, "64-bit little-endian POWER userland"),
    "ppc64": ("ppc64", "", 64, "big", None, None, "64-bit big-endian POWER userland"),
    "s390x": ("s390x", "", 64, "big", None, None, "IBM Z userland"),
    "riscv64": ("riscv64", "", 64, "little", None, None, "64-bit RISC-V userland"),
    "loong64": ("loong64", "", 64, "little", None, None, "64-bit LoongArch userland"),
}
# apk --print-arch (Alpine): "armhf" is ARMv6 hard-float (for the Pi 1/Zero), "armv7" is v7.
_APK = {
    "x86_64": _DPKG["amd64"],
    "x86": _DPKG["i386"],
    "aarch64": _DPKG["arm64"],
    "armhf": ("arm", "v7", 32, "little", 7, 6, "32-bit ARMv6 hard-float userland (Alpine armhf)"),
    "armv7": ("arm", "v7", 32, "little", 7, 7, "32-bit ARMv7 hard-float userland"),
    "ppc64le": _DPKG["ppc64el"],
    "s390x": _DPKG["s390x"],
    "riscv64": _DPKG["riscv64"],
    "loongarch64": _DPKG["loong64"],
    "mips64": _DPKG["mips64"],
    "mips64el": _DPKG["mips64el"],
}
# rpm %_arch / uname -i style names (Fedora, openSUSE, CentOS).
_RPM = {
    "x86_64": _DPKG["amd64"],
    "i386": _DPKG["i386"], "i486": _DPKG["i386"], "i586": _DPKG["i386"], "i686": _DPKG["i386"],
    "aarch64": _DPKG["arm64"],
    "armv7hl": ("arm", "v7", 32, "little", 7, 7, "32-bit ARMv7 hard-float userland"),
    "armv7l": ("arm", "v7", 32, "little", 7, 7, "32-bit ARMv7 userland"),
    "armv6hl": ("arm", "v6", 32, "little", 6, 6, "32-bit ARMv6 hard-float userland"),
    "armv6l": ("arm", "v6", 32, "little", 6, 6, "32-bit ARMv6 userland"),
    "armv5tel": ("arm", "v5", 32, "little", 5, 5, "32-bit ARMv5 userland"),
    "ppc64le": _DPKG["ppc64el"],
    "ppc64": _DPKG["ppc64"],
    "s390x": _DPKG["s390x"],
    "riscv64": _DPKG["riscv64"],
    "mips64el": _DPKG["mips64el"],
    "mipsel": _DPKG["mipsel"],
}
# Go GOARCH as `docker version --format '{{.Server.Arch}}'` prints it (the engine binary).
_GOARCH = {
    "amd64": _DPKG["amd64"],
    "386": _DPKG["i386"],
    "arm64": _DPKG["arm64"],
    # A 32-bit engine: containers get a 32-bit ARM userland, v7 at most by convention.
    "arm": ("arm", "v7", 32, "little", 7, None, "32-bit ARM engine"),
    "mips": _DPKG["mips"],
    "mipsle": _DPKG["mipsel"],
    "mips64": _DPKG["mips64"],
    "mips64le": _DPKG["mips64el"],
    "ppc64le": _DPKG["ppc64el"],
    "ppc64": _DPKG["ppc64"],
    "s390x": _DPKG["s390x"],
    "riscv64": _DPKG["riscv64"],
    "loong64": _DPKG["loong64"],
}
# OpenWrt opkg arch prefix -> table row; the ARM CPU suffix sets the level below.
_OPKG_PREFIX = {
    "x86_64": _DPKG["amd64"],
    "i386": _DPKG["i386"],
    "aarch64": _DPKG["arm64"],
    "mips": _DPKG["mips"],
    "mipsel": _DPKG["mipsel"],
    "mips64": _DPKG["mips64"],
    "mips64el": _DPKG["mips64el"],
    "riscv64": _DPKG["riscv64"],
    "loongarch64": _DPKG["loong64"],
}
# ARM cores -> the ARM architecture level they implement (ARM's core technical reference
# manuals). The one table for every core name a device prints: OpenWrt's opkg CPU suffix
# (``arm_cortex-a7_neon-vfpv4``) and lscpu's "Model name" (``Cortex-A72``). A 32-bit userland
# built for an ARMv8 core is still arm/v7 at most (the callers cap it).
_ARM_CORE_LEVEL = (
    (re.compile(r"arm926|arm946|arm1020|fa526|xscale|feroceon", re.I), 5),
    # ARM11 MPCore is ARMv6K (ARM DDI 0360); ARM1136/ARM1176 are ARMv6 (Pi 1/Zero: ARM1176).
    (re.compile(r"arm1136|arm1176|arm11|mpcore", re.I), 6),
    (re.compile(r"cortex-a(5|7|8|9|12|15|17)(?![0-9])", re.I), 7),
    (re.compile(r"cortex-a\d\d|neoverse|cortex-x", re.I), 8),
)

# /proc/cpuinfo "CPU architecture" values -> ARM level: containerd cpuinfo_linux.go
# ``getCPUVariant`` (4/4T and 3 have no OCI variant; any other value is "unknown").
_CPUINFO_ARCH_LEVEL = {
    "8": 8, "aarch64": 8,
    "7": 7, "7m": 7, "?(12)": 7, "?(13)": 7, "?(14)": 7, "?(15)": 7, "?(16)": 7, "?(17)": 7,
    "6": 6, "6tej": 6,
    "5": 5, "5t": 5, "5te": 5, "5tej": 5,
    "4": 4, "4t": 4,
    "3": 3,
}


def arm_core_level(name: str) -> int | None:
    """ARM architecture level of a core named in ``name`` (``"Cortex-A53"`` -> 8,
    ``"arm1176jzf-s"`` -> 6); None when no known core is named."""
    for pattern, level in _ARM_CORE_LEVEL:
        if pattern.search(name):
            return level
    return None


def cpuinfo_arch_level(value: str) -> int | None:
    """ARM level of a /proc/cpuinfo "CPU architecture" value as containerd reads it
    (``"7"`` -> 7, ``"4T"`` -> 4, ``"AArch64"`` -> 8); None for a value containerd calls
    "unknown" (``"9"``, ``"?(18)"``). The Raspberry Pi ARMv6 quirk (an ARM1176 reporting 7)
    is the caller's business: it needs the model name."""
    return _CPUINFO_ARCH_LEVEL.get(value.strip().lower())


_PACKAGE_TABLES = {"dpkg": _DPKG, "apk": _APK, "rpm": _RPM, "engine": _GOARCH}


def _row(row: tuple, name: str, source: str) -> UserlandArch:
    arch, variant, bits, endian, cap, baseline, text = row
    return UserlandArch(_p(arch, variant), bits, endian, cap, baseline, f"{source} {name}: {text}")


def package_arch(manager: str, name: str) -> UserlandArch | None:
    """Interpret a userland architecture name; None when unknown or not an OCI platform.

    ``manager``: ``dpkg`` (``dpkg --print-architecture``), ``apk`` (``apk --print-arch``),
    ``opkg`` (an OpenWrt arch such as ``mipsel_24kc`` or ``arm_arm1176jzf-s_vfp``),
    ``rpm`` (``x86_64``, ``armv7hl``) or ``engine`` (Go GOARCH of ``Server.Arch``).
    """
    n = name.strip().lower()
    if not n:
        return None
    if manager == "opkg":
        if n.startswith("arm_"):
            core = arm_core_level(n[4:].split("_", 1)[0])
            if core is not None:
                level = min(core, 7)  # a 32-bit userland built for an ARMv8 core is arm/v7
                return UserlandArch(_p("arm", f"v{level}"), 32, "little", level, level,
                                    f"opkg {name}: 32-bit ARMv{level} userland (OpenWrt)")
            return UserlandArch(_p("arm", "v7"), 32, "little", 7, None, f"opkg {name}: 32-bit ARM userland (OpenWrt, CPU level not known)")
        prefix = n.split("_", 1)[0]
        row = _OPKG_PREFIX.get(prefix)
        return _row(row, name, "opkg") if row else None
    table = _PACKAGE_TABLES.get(manager)
    if table is None:
        raise ValueError(f"unknown package manager {manager!r}")
    row = table.get(n)
    return _row(row, name, manager) if row else None


# (e_machine, ELF class bits, little-endian) -> OCI architecture and variant (ELF gABI,
# System V elf.h). The one table between ELF binaries and platforms: the probe's elf_header
# fact is read through it, and the publish content check uses its inverse.
_ELF_PLATFORMS = {
    (3, 32, True): ("386", ""),
    (62, 64, True): ("amd64", ""),
    (40, 32, True): ("arm", "v7"),
    (183, 64, True): ("arm64", ""),
    (8, 32, False): ("mips", ""),
    (8, 32, True): ("mipsle", ""),
    (8, 64, False): ("mips64", ""),
    (8, 64, True): ("mips64le", ""),
    (21, 64, False): ("ppc64", ""),
    (21, 64, True): ("ppc64le", ""),
    (22, 64, False): ("s390x", ""),
    (243, 64, True): ("riscv64", ""),
    (258, 64, True): ("loong64", ""),
}
_ELF_OF_ARCH = {arch: (bits, "little" if little else "big", machine)
                for (machine, bits, little), (arch, _) in _ELF_PLATFORMS.items()}


def elf_platform(e_machine: int, bits: int, endianness: str) -> UserlandArch | None:
    """The platform of an ELF userland binary from its class, data encoding and e_machine.

    For MIPS and PowerPC the byte order decides (mips vs mipsle, ppc64 vs ppc64le:
    chitoku-k/edgerouter-exporter#143, a big-endian EdgeRouter got a mipsle build).
    ARM binaries give only "32-bit ARM": the level comes from the CPU facts (variant v7 is
    the ceiling). None when the combination has no OCI platform (x32, big-endian ARM,
    32-bit PowerPC/RISC-V/S390).
    """
    from fleet.elf import ElfHeader

    text = ElfHeader(bits, endianness, e_machine).description
    hit = _ELF_PLATFORMS.get((e_machine, bits, endianness == "little"))
    if hit is None:
        return None
    cap = 7 if hit[0] == "arm" else None
    return UserlandArch(_p(*hit), bits, endianness, cap, None, text)


def elf_signature(architecture: str) -> tuple[int, str, int] | None:
    """``(bits, endianness, e_machine)`` every ELF binary of an image for OCI
    ``architecture`` must have (``"arm64"`` -> ``(64, "little", 183)``); None when there is
    no rule for it."""
    return _ELF_OF_ARCH.get(architecture)
