"""OCI platforms: names, containerd's normalization, matching and ranking. Pure, no I/O.

A platform is ``os/architecture[/variant]`` as in an image index descriptor
(OCI image-spec ``image-index.md``, "platform"). Every :class:`Platform` is stored
normalized with containerd's rules (containerd/platforms ``database.go``
``normalizeArch``), so equality of two Platforms is containerd's exact match:
``linux/arm`` == ``linux/arm/v7``, ``linux/arm64/v8`` == ``linux/arm64``,
``linux/aarch64`` == ``linux/arm64``.

Ranking follows containerd's ``Only()`` / ``platformVector`` (``compare.go``), which is what
Docker >= 23 and the containerd image store use to pick an index entry; Docker <= 20.10 used
an exact match plus a "deprecated partial match" for arm (moby v20.10.24
``distribution/pull_v2_unix.go`` ``filterManifests``), see :func:`choose_legacy`.

The second half of the module maps the names a device prints (``uname -m``, dpkg/apk/opkg/
rpm architectures, ELF ``e_machine``) to what they say about its platform; deciding a
device's platform from those is :mod:`fleet.detect`'s job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from fleet.errors import UsageError

__all__ = [
    "PlatformError",
    "Platform",
    "normalize",
    "compatible",
    "matches",
    "choose",
    "choose_legacy",
    "KernelArch",
    "UserlandArch",
    "kernel_arch",
    "package_arch",
    "elf_platform",
    "arm_level_of_machine",
    "EM_NAMES",
]


class PlatformError(UsageError):
    """A malformed platform string or component; the message names the string.

    ``spec`` is the offending text as given, ``reason`` the short explanation.
    """

    def __init__(self, spec: str, reason: str):
        self.spec = spec
        self.reason = reason
        super().__init__(f"invalid platform {spec!r}: {reason}")


# Go's GOOS values (plus "unknown", which BuildKit writes on attestation entries:
# docker/buildx#1509) - an OS outside this list is a typo such as "arm64/v8" read as os/arch.
_KNOWN_OS = frozenset(
    "aix android darwin dragonfly freebsd illumos ios js linux netbsd openbsd plan9 "
    "solaris wasip1 windows zos unknown".split()
)
# Go's GOARCH values that appear in image indexes (plus "unknown" for attestation entries).
_KNOWN_ARCH = frozenset(
    "386 amd64 amd64p32 arm arm64 arm64be armbe loong64 mips mipsle mips64 mips64le "
    "mips64p32 mips64p32le ppc ppc64 ppc64le riscv riscv64 s390 s390x sparc sparc64 wasm "
    "unknown".split()
)
# Aliases containerd's normalizeArch understands (database.go), plus i486-i686 (below).
_ARCH_ALIASES = frozenset("i386 i486 i586 i686 x86_64 x86-64 aarch64 armhf armel".split())
_COMPONENT = re.compile(r"^[A-Za-z0-9_.-]+$")
_ARM64_VARIANT = re.compile(r"^v(?P<major>8|9)(?:\.(?P<minor>[0-9]))?$")
_OTHER_VARIANT = re.compile(r"^[a-z0-9][a-z0-9.]*$")


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """containerd/platforms database.go ``normalizeArch`` (both lower-cased first)."""
    arch = arch.lower()
    variant = variant.lower()
    if arch in ("i386", "i486", "i586", "i686"):
        # containerd maps only i386; i486-i686 are uname -m / rpm names of the same ABI.
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        # v1 is the x86-64 baseline (go-archvariant); v2-v4 are kept (containerd >= 1.6).
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        # arm64's canonical variant is empty: buildkit#4039/#4082 and CRI-O's
        # containers/image#898 broke on arm64 vs arm64/v8; v9 spellings added in 2024.
        if variant in ("8", "v8", "v8.0"):
            return "arm64", ""
        if variant in ("9", "9.0", "v9.0"):
            return "arm64", "v9"
        return "arm64", variant
    if arch == "armhf":
        return "arm", "v7"  # Debian armhf = ARMv7 + VFPv3-D16 (containerd forces v7)
    if arch == "armel":
        return "arm", "v6"  # containerd forces v6 for armel
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"  # a bare "linux/arm" entry is v7 (distroless#1382)
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
        return "arm", variant
    return arch, variant


def _check(spec: str, os_: str, arch: str, variant: str) -> None:
    """Reject names containerd would accept but no engine can ever match."""
    if os_ not in _KNOWN_OS:
        raise PlatformError(spec, f"unknown OS {os_!r}")
    if arch not in _KNOWN_ARCH:
        raise PlatformError(spec, f"unknown architecture {arch!r}")
    if arch == "arm" and variant not in ("v5", "v6", "v7", "v8"):
        # uname-style "v7l"/"v6l" variants: shellhub-io/shellhub#2440, moby/moby#34875.
        raise PlatformError(spec, f"invalid variant {variant!r} for arm (valid: v5, v6, v7, v8)")
    if arch == "arm64" and variant and not _ARM64_VARIANT.match(variant):
        # "--variant armv8": robertsLando/Zwave2Mqtt-docker#15; "arm64/v7" is a 32-bit level.
        raise PlatformError(spec, f"invalid variant {variant!r} for arm64 (valid: none, v8, v8.x, v9.x)")
    if arch == "amd64" and variant not in ("", "v2", "v3", "v4"):
        raise PlatformError(spec, f"invalid variant {variant!r} for amd64 (valid: none, v1, v2, v3, v4)")
    if arch == "386" and variant:
        raise PlatformError(spec, f"invalid variant {variant!r} for 386 (386 has no variants)")
    if variant and not _OTHER_VARIANT.match(variant):
        raise PlatformError(spec, f"invalid variant {variant!r}")


@dataclass(frozen=True)
class Platform:
    """An OCI platform, always normalized (containerd database.go) and validated.

    Construction normalizes: ``Platform("linux", "aarch64", "v8") == Platform("linux",
    "arm64")``. Raises :class:`PlatformError` for an unknown OS or architecture or a
    variant no engine matches (``arm/v7l``, ``arm64/armv8``, ``arm64/v7``).
    """

    os: str
    architecture: str
    variant: str = ""

    def __post_init__(self) -> None:
        spec = "/".join(p for p in (self.os, self.architecture, self.variant) if p)
        os_ = (self.os or "").lower()
        if os_ == "macos":
            os_ = "darwin"  # containerd normalizeOS
        if not os_ or not self.architecture:
            raise PlatformError(spec, "OS and architecture are required")
        for part in (self.os, self.architecture) + ((self.variant,) if self.variant else ()):
            if not _COMPONENT.match(part):
                raise PlatformError(spec, f"invalid characters in {part!r}")
        arch, variant = _normalize_arch(self.architecture, self.variant or "")
        _check(spec, os_, arch, variant)
        object.__setattr__(self, "os", os_)
        object.__setattr__(self, "architecture", arch)
        object.__setattr__(self, "variant", variant)

    @classmethod
    def parse(cls, spec: str) -> "Platform":
        """Parse ``os/arch[/variant]`` (also ``arch`` or ``arch/variant``, os linux).

        A lone architecture gets OS ``linux`` (containerd uses the host OS; our targets are
        Linux devices). Raises :class:`PlatformError` naming ``spec`` when it is empty, has
        more than three parts, an unknown OS/architecture or a malformed variant.
        """
        if not isinstance(spec, str) or not spec.strip():
            raise PlatformError(str(spec), "empty platform")
        text = spec.strip()
        parts = text.split("/")
        if len(parts) > 3 or any(not p for p in parts):
            raise PlatformError(spec, "expected os/architecture[/variant]")
        for part in parts:
            if not _COMPONENT.match(part):
                raise PlatformError(spec, f"invalid characters in {part!r}")
        first = parts[0].lower()
        is_arch = first in _KNOWN_ARCH or first in _ARCH_ALIASES
        try:
            if len(parts) == 1:
                if not is_arch:
                    raise PlatformError(spec, f"{parts[0]!r} is not an architecture (an OS alone needs the device's architecture)")
                return cls("linux", parts[0])
            if len(parts) == 2 and is_arch and first not in _KNOWN_OS:
                # "arm64/v8", "arm/v7": architecture/variant, as `docker --platform` accepts.
                return cls("linux", parts[0], parts[1])
            return cls(*parts)
        except PlatformError as exc:
            raise PlatformError(spec, exc.reason) from None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @property
    def is_attestation_like(self) -> bool:
        """True for ``unknown/unknown`` (BuildKit attestation entries, docker/buildx#1509)."""
        return self.os == "unknown" or self.architecture == "unknown"


def normalize(os: str, arch: str, variant: str = "") -> Platform:
    """containerd ``Normalize``: ``normalize("linux", "armhf") -> linux/arm/v7``.

    Raises :class:`PlatformError` on unknown names or malformed variants.
    """
    return Platform(os, arch, variant)


def _arm64_version(variant: str) -> tuple[int, int]:
    m = _ARM64_VARIANT.match(variant or "v8")
    assert m is not None  # Platform validated it
    return int(m["major"]), int(m["minor"] or 0)


def compatible(host: Platform) -> list[Platform]:
    """Platforms ``host`` accepts, best first: containerd ``Only()`` / ``platformVector``.

    * ``amd64/vN`` -> ``amd64/vN`` ... ``amd64/v2``, ``amd64``, then ``386``.
    * ``arm/vN`` -> ``arm/vN`` down to ``arm/v5`` (an arm/v6 Pi Zero never gets v7).
    * ``arm64[/v8.N|/v9.N]`` -> arm64 levels down to ``arm64`` (= v8; v9.N falls to
      v8.(N+5, at most 9)), then ``arm/v8`` ... ``arm/v5``. containerd adds the 32-bit
      fallback for every arm64 host, although some arm64 CPUs have no AArch32 mode.
    * anything else -> itself only. There is NO arm -> arm64 and NO 386 -> amd64 fallback
      (Olen/solar-monitor#92: a 32-bit engine on a 64-bit kernel never takes arm64).
    """
    os_ = host.os
    arch = host.architecture
    if arch == "amd64":
        level = int(host.variant[1:]) if host.variant else 1
        vec = [Platform(os_, "amd64", f"v{n}") for n in range(level, 1, -1)]
        return vec + [Platform(os_, "amd64"), Platform(os_, "386")]
    if arch == "arm":
        level = int(host.variant[1:])
        return [Platform(os_, "arm", f"v{n}") for n in range(level, 4, -1)]
    if arch == "arm64":
        major, minor = _arm64_version(host.variant)
        vec: list[Platform] = []
        if major == 9:
            vec += [Platform(os_, "arm64", f"v9.{n}" if n else "v9") for n in range(minor, -1, -1)]
            minor = min(minor + 5, 9)  # armv9.N is at least armv8.(N+5) (compare.go)
        vec += [Platform(os_, "arm64", f"v8.{n}" if n else "") for n in range(minor, -1, -1)]
        return vec + [Platform(os_, "arm", f"v{n}") for n in range(8, 4, -1)]
    return [host]


def matches(host: Platform, entry: Platform | None) -> bool:
    """True when a device of platform ``host`` accepts an index entry of ``entry``.

    ``None`` (a descriptor without a platform) never matches here; Docker >= 23 would take
    it as matching anything, which is not a basis for a rollout.
    """
    return entry is not None and entry in compatible(host)


def choose(host: Platform, entries: Sequence[Platform | None]) -> int | None:
    """Index of the entry containerd's ``Only(host)`` picks, or None if none matches.

    The first element of :func:`compatible` that any entry equals wins; among equal
    entries the first in index order (duplicates should be refused when publishing).
    """
    for wanted in compatible(host):
        for i, entry in enumerate(entries):
            if entry == wanted:
                return i
    return None


def choose_legacy(host: Platform, entries: Sequence[Platform | None]) -> int | None:
    """Index of the entry a Docker <= 20.10 engine pulls for ``host``, or None.

    moby v20.10.24 ``filterManifests``: the first entry that equals ``host`` after
    normalization (no v7 -> v6, no arm64 -> arm fallback); if none and the host is arm,
    the FIRST ``arm`` entry of the same OS in index order whatever its variant ("deprecated
    partial match"). That is why a Pi 4 with a 32-bit engine (linux/arm/v8) pulls arm/v6
    from an index listing arm/v6 before arm/v7 (lab-recipe.md, "Pi 4 running a 32-bit OS").
    """
    for i, entry in enumerate(entries):
        if entry == host:
            return i
    if host.architecture == "arm":
        for i, entry in enumerate(entries):
            if entry is not None and entry.os == host.os and entry.architecture == "arm":
                return i
    return None


# ---------------------------------------------------------------------------------------
# What device-side names say about a platform (used by fleet.detect)
# ---------------------------------------------------------------------------------------


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
# OpenWrt ARM CPU suffixes (arm_<cpu>[_<fpu>]) -> ARM level the packages are built for.
_ARM_CPU_LEVEL = (
    (re.compile(r"^(arm926|arm946|fa526|xscale|arm1020|feroceon|mpcore)"), 5),
    (re.compile(r"^(arm1136|arm1176|arm11)"), 6),
    (re.compile(r"^cortex-a(5|7|8|9|12|15|17)(\b|_|$)"), 7),
    (re.compile(r"^cortex-a\d\d"), 7),  # 32-bit userland built for an ARMv8 core -> arm/v7
)

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
            cpu = n[4:]
            for pattern, level in _ARM_CPU_LEVEL:
                if pattern.match(cpu):
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


#: ELF e_machine numbers (System V ABI / elf.h) that matter here -> name.
EM_NAMES = {
    2: "SPARC", 3: "x86 (i386)", 8: "MIPS", 20: "PowerPC", 21: "PowerPC64", 22: "IBM S/390",
    40: "ARM", 43: "SPARC V9", 62: "x86-64", 183: "AArch64", 243: "RISC-V", 258: "LoongArch",
}


def elf_platform(e_machine: int, bits: int, endianness: str) -> UserlandArch | None:
    """The platform of an ELF userland binary from its class, data encoding and e_machine.

    For MIPS and PowerPC the byte order decides (mips vs mipsle, ppc64 vs ppc64le:
    chitoku-k/edgerouter-exporter#143, a big-endian EdgeRouter got a mipsle build).
    ARM binaries give only "32-bit ARM": the level comes from the CPU facts (variant v7 is
    the ceiling). None when the combination has no OCI platform (x32, big-endian ARM,
    32-bit PowerPC/RISC-V/S390).
    """
    little = endianness == "little"
    name = EM_NAMES.get(e_machine, f"e_machine {e_machine}")
    text = f"ELF{bits} {endianness}-endian {name}"
    table = {
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
    hit = table.get((e_machine, bits, little))
    if hit is None:
        return None
    cap = 7 if hit[0] == "arm" else None
    return UserlandArch(_p(*hit), bits, endianness, cap, None, text)
