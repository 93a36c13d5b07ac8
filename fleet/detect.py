"""Decide a device's OCI platform from the raw facts the probe gathered. Pure, no I/O.

The userland decides, not the kernel: Raspberry Pi OS 32-bit on a Pi 4 boots a 64-bit
kernel (``uname -m`` aarch64) while its userland and engine are 32-bit armhf, and its engine
never accepts an arm64 entry (procount/pinn#760, Olen/solar-monitor#92). A 32-bit ARM
userland on ARMv8 hardware is ``linux/arm/v7`` (the shared cases' convention).

Fact keys (each the exact text the device printed; all optional): ``uname_s``, ``uname_m``,
``uname_r``, ``getconf_long_bit``, ``elf_header`` (hex of the first 20 bytes of a userland
executable, spaces optional), ``dpkg_arch``, ``apk_arch``, ``opkg_arch``, ``rpm_arch``,
``cpuinfo``, ``os_release``, ``lscpu``, ``engine_arch``, ``engine_os``, ``engine_version``,
``engine_info_arch``, ``page_size``, ``engine_error``.

Decision order - the first source present decides the userland's architecture, bitness and
byte order; every later source only confirms it or adds a warning naming both:

0. ``uname_s`` (or ``engine_os``) other than Linux -> refuse: a build host such as macOS
   is not a deploy target (docker/buildx#1509).
1. ``elf_header`` of a userland executable: class, byte order, e_machine.
2. package manager architecture: ``dpkg_arch`` > ``apk_arch`` > ``opkg_arch`` > ``rpm_arch``.
3. the engine's ``Server.Arch`` (``engine_arch``): the engine binary is userland too.
4. ``getconf_long_bit`` (userland word size) with the kernel machine string; for MIPS the
   byte order from ``lscpu`` (compiled into the lscpu binary, so a userland fact).
5. kernel facts, only where the kernel runs a single kind of userland: the kernel machine
   string (``uname_m``, else ``engine_info_arch`` - docker info's Architecture is the
   kernel's machine string, not an OCI arch - else lscpu's Architecture) of a 32-bit kernel
   (armv6l, armv7l, i686), ppc64le, s390x, riscv64, loongarch64; or ``/proc/cpuinfo`` in the
   32-bit ARM kernel format (a "model name : ARMv6-compatible ..." line).
6. otherwise refuse with a reason: "only kernel facts: ..." for 64-bit kernels that also run
   32-bit userlands (aarch64, x86_64, mips64, ppc64, AArch64 cpuinfo), or "no platform
   facts". x86_64 is refused like aarch64: i386 userlands and engines run on it too, and a
   guess is worse than asking for one more fact (the probe's ELF header settles it).

ARM variant of a 32-bit ARM userland = min(CPU level, userland ceiling):

* CPU level = the lowest of: ``cpuinfo`` "CPU architecture" (7 with a model name starting
  "ARMv6-compatible" is 6: containerd PR #4530; a bare "7" without a model name line is
  ignored because ARMv6 boards print it too: moby/moby#41017), the kernel machine string
  (armv6l -> 6, armv7l -> 7, aarch64 -> 8), lscpu's model name (ARM1176 -> 6).
* ceiling: 6 for an armel userland (Debian armel is ARMv5TE+; containerd maps armel to
  arm/v6), 7 for every other 32-bit ARM userland (armhf, ELF32 ARM, a 32-bit engine).
* no CPU level known: the userland's own baseline with a warning (Debian armhf 7,
  Raspbian/Alpine armhf 6, armel 5); a userland with no baseline (ELF, engine) -> refuse.

``engine_platform`` is what the device's engine asks for when pulling, computed as
containerd's ``DefaultSpec`` does (cpuinfo_linux.go): a 32-bit engine on a v8 CPU asks for
``linux/arm/v8``. It is reported next to the device platform, not used to decide it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from fleet.devicearch import (
    KernelArch,
    UserlandArch,
    arm_core_level,
    cpuinfo_arch_level,
    elf_platform,
    kernel_arch,
    package_arch,
)
from fleet.elf import ElfError, parse_header_hex
from fleet.platform import Platform

__all__ = ["Detection", "detect", "FACT_KEYS"]

#: The fact keys detect() reads: the probe's schema, defined once where the probe
#: produces them.
from fleet.facts import FACT_KEYS  # noqa: E402

_BIG_ENDIAN = {"mips", "mips64", "ppc64", "ppc", "s390x", "s390", "sparc", "sparc64", "armbe", "arm64be"}
_64_BIT = {"amd64", "arm64", "mips64", "mips64le", "ppc64", "ppc64le", "s390x", "riscv64", "loong64", "sparc64"}


@dataclass
class Detection:
    """The platform decided for one device, with the evidence for it.

    ``platform``: the device's OCI platform (None when the facts cannot decide; then
    ``error`` says why). ``endianness``: "little" | "big" | None. ``bitness``: 32 | 64 |
    None (of the userland). ``kernel_machine``: the kernel's machine string (uname -m).
    ``engine_platform``: the platform the device's engine requests when pulling, or None.
    ``evidence``: human lines, one per fact used ("elf_header: ELF32 little-endian ARM").
    ``warnings``: disagreements and assumptions. ``error``: the reason for no platform.
    ``engine_version``: the engine's ``Server.Version`` (it selects the engine's matcher);
    ``userland_isa``: the instruction set of the userland's ELF header (``"ARM"``), when
    the probe read one.
    """

    platform: Platform | None = None
    endianness: str | None = None
    bitness: int | None = None
    kernel_machine: str | None = None
    engine_platform: Platform | None = None
    evidence: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    engine_version: str | None = None
    userland_isa: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict; platforms as strings ("linux/arm/v7") or None."""
        return {
            "platform": str(self.platform) if self.platform else None,
            "endianness": self.endianness,
            "bitness": self.bitness,
            "kernel_machine": self.kernel_machine,
            "engine_platform": str(self.engine_platform) if self.engine_platform else None,
            "evidence": list(self.evidence),
            "warnings": list(self.warnings),
            "error": self.error,
            "engine_version": self.engine_version,
            "userland_isa": self.userland_isa,
        }


def _endianness(p: Platform) -> str:
    return "big" if p.architecture in _BIG_ENDIAN else "little"


def _bits(p: Platform) -> int:
    return 64 if p.architecture in _64_BIT else 32


# ------------------------------------------------------------------------------ parsers


def _kv_lines(text: str) -> list[tuple[str, str]]:
    """``key : value`` lines of /proc/cpuinfo, lscpu or os-release (``key=value``)."""
    pairs = []
    for line in text.splitlines():
        sep = ":" if ":" in line else ("=" if "=" in line else None)
        if sep is None:
            continue
        key, _, value = line.partition(sep)
        pairs.append((key.strip().lower(), value.strip().strip('"')))
    return pairs


def _first(pairs: list[tuple[str, str]], key: str) -> str | None:
    for k, v in pairs:
        if k == key:
            return v
    return None


@dataclass
class _CpuInfo:
    level: int | None  # ARM level the CPU facts give, after quirks
    arm: bool  # an ARM cpuinfo at all
    format32: bool  # 32-bit ARM kernel format (has a model name line)
    model: str | None
    raw_arch: str | None
    note: str


def _parse_cpuinfo(text: str) -> _CpuInfo:
    pairs = _kv_lines(text)
    raw_arch = _first(pairs, "cpu architecture")
    model = _first(pairs, "model name")
    if model is None:
        # Kernels before 3.8 printed "Processor : ARMv6-compatible processor ..." (old
        # Raspbian images); on x86 "processor" is a CPU number.
        proc = _first(pairs, "processor")
        if proc and not proc.isdigit():
            model = proc
    is_arm = raw_arch is not None or bool(model and re.match(r"^(ARMv|AArch64)", model))
    if not is_arm:
        return _CpuInfo(None, False, False, model, None, "not an ARM /proc/cpuinfo")
    format32 = bool(model and model.startswith("ARMv"))
    level = cpuinfo_arch_level(raw_arch or "")
    note = f"CPU architecture {raw_arch}" if raw_arch else "no CPU architecture line"
    if model:
        note += f", model name {model!r}"
    if level == 7 and model and model.startswith("ARMv6-compatible"):
        # Raspberry Pi 1/Zero (ARM1176): the kernel says 7, the core is ARMv6
        # (containerd PR #4530; moby/moby#37647).
        level = 6
        note += " -> ARMv6 (ARM1176 reports 7; containerd PR #4530)"
    elif level == 7 and not model:
        # A lone "CPU architecture: 7" is printed by ARMv6 Pis too (moby/moby#41017).
        level = None
        note += " -> level not used (ARMv6 boards print 7 too; needs a model name)"
    elif level is None and model:
        m = re.match(r"^ARMv(\d)", model)
        level = int(m.group(1)) if m else None
    elif level is not None:
        note += f" -> ARMv{level}"
    return _CpuInfo(level, True, format32, model, raw_arch, note)


def _parse_elf(text: str) -> tuple[UserlandArch | None, str | None, str | None, str | None]:
    """(userland, evidence, warning, machine name) from the hex of an ELF header's first
    20 bytes."""
    try:
        header = parse_header_hex(text)
    except ElfError as e:
        return None, None, f"elf_header ignored: {e}", None
    desc = f"elf_header: {header.description}"
    userland = elf_platform(header.machine, header.bits, header.endianness)
    if userland is None:
        return None, desc, f"elf_header: {header.description} has no OCI platform", header.machine_name
    return userland, desc, None, header.machine_name


def _opkg_arch(text: str) -> str | None:
    """The main arch of ``opkg print-architecture`` ("arch NAME PRIORITY" lines) or a name."""
    best: tuple[int, str] | None = None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "arch" and parts[1] not in ("all", "noarch"):
            prio = int(parts[2]) if parts[2].isdigit() else 0
            if best is None or prio > best[0]:
                best = (prio, parts[1])
    if best:
        return best[1]
    words = text.split()
    return words[0] if len(words) == 1 else None


# ------------------------------------------------------------------------------ detect


def detect(facts: Mapping[str, Any]) -> Detection:
    """Decide the OCI platform of one device from its raw facts (see module docstring).

    ``facts``: fact key -> the text the device printed (non-strings are converted; empty
    values count as absent). Never raises for odd facts: malformed ones become warnings and
    an undecidable device gets ``platform=None`` and an ``error`` reason, never a guess.
    """
    f = {k: str(v) for k, v in facts.items() if v is not None and str(v).strip()}
    s = {k: v.strip() for k, v in f.items()}
    d = Detection()

    # 0. Not a Linux device.
    uname_s = s.get("uname_s")
    if uname_s:
        d.evidence.append(f"uname_s: {uname_s}")
        if uname_s.lower() != "linux":
            # macOS build hosts (docker/buildx#1509): Linux containers run in Docker
            # Desktop's VM; a build host's own platform must never become a target.
            d.error = (f"not a Linux device (uname -s {uname_s}): Linux containers run in a VM whose "
                       "platform the facts do not show; a build host is not a deploy target")
            return d
    engine_os = s.get("engine_os")
    if engine_os and engine_os.lower() != "linux":
        d.error = f"the engine runs {engine_os} containers (engine_os {engine_os}), not Linux ones"
        return d

    if "engine_error" in s:
        # The engine did not answer (AC-07: an ARMv7 docker-ce on an ARMv6 Pi dies with
        # "illegal hardware instruction"); the platform can still be decided.
        d.warnings.append(f"engine: {s['engine_error']}")
    if "engine_version" in s:
        d.engine_version = s["engine_version"]
        d.evidence.append(f"engine_version: {s['engine_version']}")
    if "page_size" in s:
        d.evidence.append(f"page_size: {s['page_size']}")

    # Kernel machine string and CPU level.
    lscpu = _kv_lines(f["lscpu"]) if "lscpu" in f else []
    lscpu_arch = _first(lscpu, "architecture")
    machine_src = next(((k, s[k]) for k in ("uname_m", "engine_info_arch") if k in s), None)
    if machine_src is None and lscpu_arch:
        machine_src = ("lscpu Architecture", lscpu_arch)
    if "uname_m" in s and "engine_info_arch" in s and s["uname_m"] != s["engine_info_arch"]:
        d.warnings.append(f"uname -m {s['uname_m']} and docker info Architecture "
                          f"{s['engine_info_arch']} differ; uname -m is used")
    karch: KernelArch | None = None
    if machine_src:
        d.kernel_machine = machine_src[1]
        karch = kernel_arch(machine_src[1])
        if karch is None:
            d.evidence.append(f"{machine_src[0]}: {machine_src[1]} (unknown kernel machine)")
        else:
            d.evidence.append(f"{machine_src[0]}: {karch.description}")
    if "uname_r" in s:
        d.evidence.append(f"uname_r: {s['uname_r']}")

    cpu = _parse_cpuinfo(f["cpuinfo"]) if "cpuinfo" in f else None
    levels: list[tuple[int, str]] = []
    if cpu and cpu.arm:
        d.evidence.append(f"cpuinfo: {cpu.note}")
        if cpu.level is not None:
            levels.append((cpu.level, "cpuinfo"))
    if karch and karch.arm_level is not None:
        levels.append((karch.arm_level, machine_src[0]))
    lscpu_model = _first(lscpu, "model name")
    core_level = arm_core_level(lscpu_model) if lscpu_model else None
    if core_level is not None:
        levels.append((core_level, f"lscpu model {lscpu_model}"))
    cpu_level = min(levels)[0] if levels else None

    # The engine's own platform (containerd DefaultSpec: GOARCH + cpuinfo variant).
    engine_arch = s.get("engine_arch")
    engine_user: UserlandArch | None = None
    if engine_arch:
        engine_user = package_arch("engine", engine_arch)
        if engine_user is None:
            d.warnings.append(f"engine_arch {engine_arch!r} is not a known Go architecture")
        else:
            d.engine_platform = _engine_platform(engine_user.platform, cpu, d.kernel_machine)
            if d.engine_platform is None:
                seen = f"CPU architecture {cpu.raw_arch}" if cpu and cpu.raw_arch else f"machine {d.kernel_machine}"
                d.warnings.append(f"engine platform not predicted: containerd reads {seen} as an ARM "
                                  f"variant no index entry carries")
            else:
                d.evidence.append(f"engine: {d.engine_platform} (Server.Arch {engine_arch})")

    # 1-4. Userland sources, in decision order.
    sources: list[tuple[str, UserlandArch]] = []
    if "elf_header" in s:
        ua, ev, warn, d.userland_isa = _parse_elf(s["elf_header"])
        if ev:
            d.evidence.append(ev)
        if warn:
            d.warnings.append(warn)
        if ua:
            sources.append(("elf_header", ua))
    raspbian = _is_raspbian(f.get("os_release", ""))
    if "os_release" in f:
        os_id = _first(_kv_lines(f["os_release"]), "pretty_name") or _first(_kv_lines(f["os_release"]), "id")
        d.evidence.append(f"os_release: {os_id}")
    for key, manager in (("dpkg_arch", "dpkg"), ("apk_arch", "apk"), ("opkg_arch", "opkg"), ("rpm_arch", "rpm")):
        if key not in s:
            continue
        name = _opkg_arch(s[key]) if manager == "opkg" else s[key]
        ua = package_arch(manager, name) if name else None
        if ua is None:
            d.warnings.append(f"{key} {s[key]!r} is not an architecture with an OCI platform; ignored")
            continue
        if manager == "dpkg" and name == "armhf" and raspbian:
            # Raspbian's armhf is ARMv6+VFP2, unlike Debian's ARMv7 armhf (moby/moby#41017).
            ua = UserlandArch(ua.platform, 32, "little", 7, 6, "dpkg armhf: Raspbian 32-bit ARMv6 hard-float userland")
        d.evidence.append(f"{key}: {ua.description.split(': ', 1)[1]} ({name})")
        sources.append((key, ua))
    if engine_user:
        sources.append(("engine_arch", engine_user))
    long_bit = s.get("getconf_long_bit")
    if long_bit:
        d.evidence.append(f"getconf_long_bit: {long_bit}")
        ua, why = _from_long_bit(long_bit, karch, lscpu)
        if ua:
            sources.append(("getconf_long_bit", ua))
        elif why and not sources:
            d.warnings.append(why)

    if sources:
        decider_key, decider = sources[0]
        agreeing = [ua for _, ua in sources if ua.platform.architecture == decider.platform.architecture]
        for key, ua in sources[1:]:
            if ua.platform.architecture != decider.platform.architecture or ua.bits != decider.bits:
                d.warnings.append(f"{key} says {ua.platform} but {decider_key} says {decider.platform}; "
                                  f"{decider_key} decides")
        if karch and karch.candidates and decider.platform not in karch.candidates and not (
            decider.platform.architecture == "arm" and any(c.architecture == "arm" for c in karch.candidates)
        ):
            d.warnings.append(f"kernel {d.kernel_machine} does not run a {decider.platform} userland; "
                              f"{decider_key} decides")
        platform = decider.platform
        d.bitness = decider.bits
        d.endianness = decider.endianness
        if platform.architecture == "arm":
            caps = [ua.arm_cap for ua in agreeing if ua.arm_cap is not None]
            cap = min(caps) if caps else 7
            if cpu_level is not None:
                level = min(cpu_level, cap)
                d.evidence.append(f"ARM level: CPU ARMv{cpu_level} ({min(levels)[1]}), userland ceiling v{cap} -> v{level}")
            else:
                baseline = next((ua.arm_baseline for ua in agreeing if ua.arm_baseline is not None), None)
                if baseline is None:
                    d.error = ("32-bit ARM userland but no fact gives the ARM level (no cpuinfo, "
                               "uname -m or package architecture)")
                    return d
                level = min(baseline, cap)
                d.warnings.append(f"no CPU facts: ARM level v{level} from the userland's baseline only")
            if level < 5:
                d.error = f"ARMv{level} has no OCI variant (arm/v5 is the oldest)"
                return d
            platform = Platform(platform.os, "arm", f"v{level}")
        elif platform.architecture == "arm64" and cpu_level is not None and cpu_level < 8:
            d.warnings.append(f"a 64-bit ARM userland but the CPU facts say ARMv{cpu_level}")
        d.platform = platform
    else:
        _decide_from_kernel(d, s, karch, cpu, cpu_level)
        if d.platform is None:
            return d

    if d.engine_platform and d.platform and (
        d.engine_platform.os != d.platform.os or d.engine_platform.architecture != d.platform.architecture
    ):
        # A 64-bit userland with a 32-bit engine (or the reverse): the engine pulls for its
        # own platform (Olen/solar-monitor#92).
        d.warnings.append(f"engine platform {d.engine_platform} disagrees with the userland's "
                          f"{d.platform}: the engine pulls images for {d.engine_platform}")
    return d


def _is_raspbian(os_release: str) -> bool:
    pairs = _kv_lines(os_release)
    ids = " ".join(v for k, v in pairs if k in ("id", "id_like")).lower().split()
    return "raspbian" in ids


def _engine_platform(p: Platform, cpu: _CpuInfo | None, machine: str | None) -> Platform | None:
    """containerd DefaultSpec: the variant from cpuinfo "CPU architecture" (ARMv6 quirk),
    falling back to the kernel machine string (cpuinfo_linux.go ``getArmCPUVariant``,
    ``getCPUVariantFromArch``).

    None (no prediction) where containerd's answer is a variant no index entry carries:
    "CPU architecture" 4/4T (arm/v4), 3 (arm/v3), a value it calls "unknown" (9, ?(18)), or
    the same from the machine string (armv4tl): better to predict nothing than an entry the
    engine would not take.
    """
    if p.architecture != "arm":
        return p
    if cpu and cpu.raw_arch:
        level = cpuinfo_arch_level(cpu.raw_arch)
        if level == 7 and cpu.model and cpu.model.lower().startswith("armv6-compatible"):
            level = 6
    elif machine:
        m = machine.strip().lower()
        level = 8 if m == "aarch64" else int(m[4]) if re.match(r"^armv[3-8]", m) else None
    else:
        # engines before containerd's machine-string fallback read no variant at all: a
        # bare "linux/arm", which normalizes to v7 (the lab's armhf engine on an x86
        # /proc/cpuinfo: "no matching manifest for linux/arm")
        return Platform(p.os, "arm")
    if level is None or level < 5:
        return None
    return Platform(p.os, "arm", f"v{level}")


def _from_long_bit(long_bit: str, karch: KernelArch | None, lscpu: list[tuple[str, str]]) -> tuple[UserlandArch | None, str | None]:
    """Userland from getconf LONG_BIT + the kernel's candidates (+ lscpu byte order)."""
    if long_bit not in ("32", "64"):
        return None, f"getconf_long_bit {long_bit!r} is neither 32 nor 64; ignored"
    if karch is None:
        return None, "getconf_long_bit without a kernel machine string does not name an architecture"
    bits = int(long_bit)
    order = (_first(lscpu, "byte order") or "").lower()
    endian = "little" if order.startswith("little") else "big" if order.startswith("big") else None
    fits = [c for c in karch.candidates if _bits(c) == bits]
    if endian:
        fits = [c for c in fits if _endianness(c) == endian]
    if len(fits) != 1:
        if not fits:
            return None, f"a {bits}-bit userland on kernel {karch.description} has no OCI platform"
        return None, (f"a {bits}-bit userland on {karch.description}: byte order unknown "
                      f"({' or '.join(map(str, fits))})")
    p = fits[0]
    cap = 7 if p.architecture == "arm" else None
    return UserlandArch(p, bits, _endianness(p), cap, None, f"{bits}-bit userland on {karch.description}"), None


def _decide_from_kernel(d: Detection, s: Mapping[str, str], karch: KernelArch | None,
                        cpu: _CpuInfo | None, cpu_level: int | None) -> None:
    """Step 5/6: kernel facts decide only where the kernel runs one kind of userland."""
    reason_tail = "and no userland or engine fact is present"
    if karch is not None:
        d.endianness = karch.endianness
        if karch.decides:
            p = karch.candidates[0]
            if p.architecture == "arm":
                level = min(cpu_level if cpu_level is not None else 7, 7)
                if karch.arm_level == 8:
                    level = 7  # armv8l: a 32-bit userland on ARMv8 is arm/v7
                if level < 5:
                    d.error = f"ARMv{level} has no OCI variant (arm/v5 is the oldest)"
                    return
                p = Platform(p.os, "arm", f"v{level}")
            d.platform, d.bitness, d.endianness = p, _bits(p), _endianness(p)
            return
        if not karch.candidates:
            d.error = f"kernel machine {d.kernel_machine}: {karch.description}"
            return
        machine = d.kernel_machine
        if karch.arm_level == 8:
            d.error = (f"only kernel facts: uname -m {machine}; a 64-bit kernel of this kind also runs "
                       f"32-bit armhf userlands and engines, {reason_tail}")
        elif machine and machine.lower().startswith("mips"):
            release = s.get("uname_r", "")
            if release.endswith("el"):
                # Loongson mips64el (docker-library/hello-world#68): the release names the byte order.
                d.endianness = "little"
                d.error = (f"only kernel facts: a little-endian MIPS{'64' if '64' in machine else ''} kernel "
                           f"(release string ends in {release.rsplit('.', 1)[-1]}) runs "
                           f"{'o32 mipsle as well as n64 mips64le' if '64' in machine else 'mipsle'} userlands, {reason_tail}")
            else:
                d.error = (f"only kernel facts: uname -m {machine} is printed by big- and little-endian "
                           f"kernels, which run 32- and 64-bit userlands, {reason_tail}")
        else:
            others = ", ".join(str(c) for c in karch.candidates)
            d.error = f"only kernel facts: uname -m {machine}; such a kernel runs {others} userlands, {reason_tail}"
        return
    if cpu is not None and cpu.arm:
        if cpu.format32 and cpu.model and "(v8l)" in cpu.model:
            # A linux32 process on an arm64 kernel sees "ARMv8 Processor ... (v8l)": 32-bit.
            d.platform, d.bitness, d.endianness = Platform("linux", "arm", "v7"), 32, "little"
            return
        if cpu.format32 and cpu_level is not None and cpu_level <= 7:
            # 32-bit ARM kernel format (model name "ARMv6-compatible"/"ARMv7 Processor"):
            # such a kernel runs only 32-bit ARM userlands (moby/moby#40733, Pi 1).
            level = cpu_level
            if level < 5:
                d.error = f"ARMv{level} has no OCI variant (arm/v5 is the oldest)"
                return
            p = Platform("linux", "arm", f"v{level}")
            d.platform, d.bitness, d.endianness = p, 32, "little"
            return
        if cpu_level == 8 or (cpu.raw_arch or "").lower() in ("8", "aarch64"):
            d.endianness = "little"
            # Pi CM4 (graysky2/kodi-standalone-service#43): AArch64 cpuinfo has no model
            # name and reads the same under a 32-bit Raspberry Pi OS.
            d.error = ("only kernel facts: /proc/cpuinfo of a 64-bit ARM kernel; a 64-bit kernel of this "
                       f"kind also runs 32-bit armhf userlands and engines, {reason_tail}")
            return
        d.error = f"only kernel facts: an ARM /proc/cpuinfo ({cpu.note}) that does not fix the userland, {reason_tail}"
        return
    if s.get("uname_r") or s.get("cpuinfo") or s.get("os_release"):
        d.error = ("no platform facts: need one of elf_header, dpkg_arch, apk_arch, opkg_arch, rpm_arch, "
                   "engine_arch, uname_m or engine_info_arch")
    else:
        d.error = "no platform facts: the facts are empty"
