"""fleet.detect: every real device case, the lab's board profiles and edge cases.

Device texts are real captures (tests/data/detect/README.md says which are not).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleet.detect import detect
from fleet.platform import Platform
from tests.cases import load_cases

DATA = Path(__file__).resolve().parents[1] / "data" / "detect"
ELF = dict(line.split(":", 1) for line in (DATA / "elf-headers.txt").read_text().splitlines() if line.strip())
CPU_PI_ZERO = (DATA / "cpuinfo" / "pi-zero.txt").read_text()
CPU_PI3_32 = (DATA / "cpuinfo" / "pi3-32.txt").read_text()
CPU_PI4_64K = (DATA / "cpuinfo" / "pi4-cm4-64bit-kernel.txt").read_text()
RASPBIAN = (DATA / "os-release-raspbian-10.txt").read_text()

ARCH_CASES = load_cases("arch-facts.yaml")


def test_all_cases_loaded():
    assert len(ARCH_CASES) >= 14
    assert all("facts" in c and "expected" in c for c in ARCH_CASES)


@pytest.mark.parametrize("case", ARCH_CASES, ids=[c["id"] for c in ARCH_CASES])
def test_arch_case(case):
    d = detect(case["facts"])
    expected = case["expected"]["platform"]
    if expected is None:
        assert d.platform is None
        assert d.error, "an undecided device must carry a reason"
        # Same kind of reason as the case ("only kernel facts", "not a Linux device").
        assert d.error.split(":")[0].split("(")[0].strip() == case["expected"]["error"].split(":")[0].split("(")[0].strip()
    else:
        assert d.platform == Platform.parse(expected), (d.evidence, d.warnings)
        assert d.error is None
        assert d.bitness in (32, 64) and d.endianness in ("little", "big")
    json.dumps(d.to_dict())


# --- the lab's board profiles (fleet/lab/profiles.py) ---------------------------------------

LAB = {
    "pi-zero": (
        {"uname_s": "Linux", "uname_m": "armv6l", "elf_header": ELF["armel"], "dpkg_arch": "armel",
         "cpuinfo": CPU_PI_ZERO, "os_release": RASPBIAN, "engine_arch": "arm", "engine_os": "linux",
         "engine_info_arch": "armv6l"},
        "linux/arm/v6", 32, "linux/arm/v6",
    ),
    "pi3-32": (
        {"uname_s": "Linux", "uname_m": "armv7l", "elf_header": ELF["armhf"], "dpkg_arch": "armhf",
         "cpuinfo": CPU_PI3_32, "os_release": RASPBIAN, "engine_arch": "arm", "getconf_long_bit": "32"},
        "linux/arm/v7", 32, "linux/arm/v7",
    ),
    "pi4-64": (
        {"uname_s": "Linux", "uname_m": "aarch64", "elf_header": ELF["arm64"], "dpkg_arch": "arm64",
         "cpuinfo": CPU_PI4_64K, "engine_arch": "arm64", "getconf_long_bit": "64"},
        "linux/arm64", 64, "linux/arm64",
    ),
    "pi4-32on64": (
        {"uname_s": "Linux", "uname_m": "aarch64", "elf_header": ELF["armhf"], "dpkg_arch": "armhf",
         "cpuinfo": CPU_PI4_64K, "os_release": RASPBIAN, "engine_arch": "arm", "getconf_long_bit": "32"},
        "linux/arm/v7", 32, "linux/arm/v8",  # the 32-bit engine asks for arm/v8 (solar-monitor#92)
    ),
    "x86": (
        {"uname_s": "Linux", "uname_m": "x86_64", "elf_header": ELF["amd64"], "dpkg_arch": "amd64",
         "engine_arch": "amd64", "engine_os": "linux", "getconf_long_bit": "64"},
        "linux/amd64", 64, "linux/amd64",
    ),
}


@pytest.mark.parametrize("name", list(LAB))
def test_lab_profiles(name):
    facts, platform, bits, engine = LAB[name]
    d = detect(facts)
    assert str(d.platform) == platform
    assert d.bitness == bits and d.endianness == "little"
    assert str(d.engine_platform) == engine
    assert d.warnings == [] and d.error is None
    assert any(e.startswith("elf_header: ELF") for e in d.evidence)


@pytest.mark.parametrize("name", list(LAB))
def test_lab_profiles_elf_header_alone(name):
    # The userland's ELF header plus the CPU facts decide without any package manager.
    facts, platform, _, _ = LAB[name]
    slim = {k: v for k, v in facts.items() if k in ("elf_header", "cpuinfo", "uname_m")}
    assert str(detect(slim).platform) == platform


def test_pi_zero_evidence_names_the_armv6_quirk():
    d = detect({"cpuinfo": CPU_PI_ZERO, "uname_m": "armv6l", "elf_header": ELF["armel"]})
    assert "elf_header: ELF32 little-endian ARM" in d.evidence
    assert any("PR #4530" in e for e in d.evidence)


def test_pi4_32on64_without_userland_facts_is_refused():
    d = detect({"uname_m": "aarch64", "cpuinfo": CPU_PI4_64K})
    assert d.platform is None and d.error.startswith("only kernel facts")


# --- other architectures --------------------------------------------------------------------

def test_s390x_big_endian():
    d = detect({"uname_s": "Linux", "uname_m": "s390x", "elf_header": ELF["s390x"], "dpkg_arch": "s390x"})
    assert str(d.platform) == "linux/s390x"
    assert d.endianness == "big" and d.bitness == 64
    assert "elf_header: ELF64 big-endian IBM S/390" in d.evidence
    assert d.warnings == []


def test_s390x_kernel_alone_decides():
    d = detect({"uname_m": "s390x"})
    assert str(d.platform) == "linux/s390x" and d.endianness == "big"


def test_i386_userland_on_x86_64_kernel():
    d = detect({"uname_s": "Linux", "uname_m": "x86_64", "elf_header": ELF["i386"], "getconf_long_bit": "32",
                "dpkg_arch": "i386", "engine_arch": "386"})
    assert str(d.platform) == "linux/386"
    assert d.bitness == 32 and d.kernel_machine == "x86_64"
    assert d.warnings == []


def test_i386_from_getconf_and_kernel():
    assert str(detect({"uname_m": "x86_64", "getconf_long_bit": "32"}).platform) == "linux/386"
    assert str(detect({"uname_m": "x86_64", "getconf_long_bit": "64"}).platform) == "linux/amd64"


def test_x86_64_kernel_alone_is_refused():
    # Documented choice: x86_64 kernels also run i386 userlands and engines.
    d = detect({"uname_s": "Linux", "uname_m": "x86_64"})
    assert d.platform is None and d.error.startswith("only kernel facts: uname -m x86_64")


def test_mips64_byte_order_from_lscpu():
    lscpu = "Architecture:        mips64\nByte Order:          Little Endian\nCPU(s):              4\n"
    d = detect({"uname_m": "mips64", "getconf_long_bit": "64", "lscpu": lscpu})
    assert str(d.platform) == "linux/mips64le"
    d = detect({"uname_m": "mips64", "getconf_long_bit": "64"})
    assert d.platform is None and "byte order unknown" in " ".join(d.warnings)


def test_mips_elf_byte_order_decides():
    le = "7f454c46010101000000000000000000" + "0300" + "0800"
    be = "7f454c46010201000000000000000000" + "0003" + "0008"
    assert str(detect({"elf_header": le, "uname_m": "mips"}).platform) == "linux/mipsle"
    assert str(detect({"elf_header": be, "uname_m": "mips"}).platform) == "linux/mips"


def test_ppc64_big_endian_never_ppc64le():
    d = detect({"uname_m": "ppc64"})
    assert d.platform is None
    d = detect({"uname_m": "ppc64", "getconf_long_bit": "64"})
    assert str(d.platform) == "linux/ppc64"


def test_darwin_refused():
    d = detect({"uname_s": "Darwin", "uname_m": "arm64", "engine_arch": "arm64", "engine_os": "linux"})
    assert d.platform is None and d.error.startswith("not a Linux device (uname -s Darwin)")


# --- disagreements, fallbacks and warnings ----------------------------------------------------

def test_engine_userland_disagreement_is_a_warning_naming_both():
    d = detect({"uname_m": "aarch64", "elf_header": ELF["arm64"], "dpkg_arch": "arm64",
                "cpuinfo": CPU_PI4_64K, "engine_arch": "arm"})
    assert str(d.platform) == "linux/arm64"
    assert str(d.engine_platform) == "linux/arm/v8"
    joined = " ".join(d.warnings)
    assert "linux/arm/v8" in joined and "linux/arm64" in joined


def test_elf_header_beats_package_arch_with_warning():
    d = detect({"uname_m": "aarch64", "elf_header": ELF["armhf"], "dpkg_arch": "arm64", "cpuinfo": CPU_PI4_64K})
    assert str(d.platform) == "linux/arm/v7"
    assert any("dpkg_arch" in w and "elf_header" in w for w in d.warnings)


def test_malformed_elf_header_falls_back_to_package_arch():
    d = detect({"elf_header": "7f454c46 0101", "dpkg_arch": "armhf", "uname_m": "armv7l"})
    assert str(d.platform) == "linux/arm/v7"
    assert any(w.startswith("elf_header ignored") for w in d.warnings)
    d = detect({"elf_header": "not hex at all", "dpkg_arch": "amd64"})
    assert str(d.platform) == "linux/amd64"
    d = detect({"elf_header": "00" * 20, "dpkg_arch": "amd64"})
    assert any("no ELF magic" in w for w in d.warnings)


def test_engine_error_is_a_warning():
    d = detect({"uname_m": "armv6l", "cpuinfo": CPU_PI_ZERO,
                "engine_error": "docker: illegal hardware instruction"})
    assert str(d.platform) == "linux/arm/v6"
    assert any("illegal hardware instruction" in w for w in d.warnings)


def test_armel_userland_capped_at_v6_and_v5_cpu():
    # Debian armel on a Pi 3 (ARMv7): arm/v6; on a Kirkwood ARMv5TE NAS: arm/v5.
    assert str(detect({"dpkg_arch": "armel", "cpuinfo": CPU_PI3_32}).platform) == "linux/arm/v6"
    kirkwood = "Processor\t: Feroceon 88FR131 rev 1 (v5l)\nCPU architecture: 5TE\nHardware\t: Marvell Kirkwood\n"
    assert str(detect({"dpkg_arch": "armel", "cpuinfo": kirkwood}).platform) == "linux/arm/v5"


def test_arm_level_without_cpu_facts_uses_userland_baseline():
    d = detect({"dpkg_arch": "armhf"})
    assert str(d.platform) == "linux/arm/v7" and d.warnings
    d = detect({"dpkg_arch": "armhf", "os_release": RASPBIAN})
    assert str(d.platform) == "linux/arm/v6"  # Raspbian armhf is ARMv6+VFP2 (moby#41017)
    d = detect({"dpkg_arch": "armhf", "os_release": RASPBIAN, "cpuinfo": CPU_PI3_32})
    assert str(d.platform) == "linux/arm/v7" and d.warnings == []


def test_32bit_engine_without_level_is_refused():
    d = detect({"engine_arch": "arm"})
    assert d.platform is None and "ARM level" in d.error
    assert str(d.engine_platform) == "linux/arm/v7"  # what "linux/arm" normalizes to


def test_engine_info_arch_is_a_kernel_machine_string():
    assert detect({"engine_info_arch": "aarch64"}).platform is None
    assert str(detect({"engine_info_arch": "armv7l"}).platform) == "linux/arm/v7"
    assert str(detect({"engine_info_arch": "x86_64", "engine_arch": "amd64"}).platform) == "linux/amd64"


def test_opkg_print_architecture_output():
    text = "arch all 1\narch noarch 1\narch mipsel_24kc 10\n"
    d = detect({"opkg_arch": text, "uname_m": "mips"})
    assert str(d.platform) == "linux/mipsle" and d.endianness == "little"


def test_armv8l_uname_is_32bit():
    assert str(detect({"uname_m": "armv8l"}).platform) == "linux/arm/v7"


def test_empty_and_unknown_facts():
    d = detect({})
    assert d.platform is None and d.error.startswith("no platform facts")
    d = detect({"uname_r": "5.10", "page_size": 4096})
    assert d.platform is None and d.error
    d = detect({"uname_m": "vax"})
    assert d.platform is None and d.error
    d = detect({"dpkg_arch": "powerpc"})
    assert d.platform is None and any("powerpc" in w for w in d.warnings)


def test_to_dict_shape():
    d = detect({"uname_m": "armv7l"}).to_dict()
    assert d == {
        "platform": "linux/arm/v7", "endianness": "little", "bitness": 32, "kernel_machine": "armv7l",
        "engine_platform": None, "evidence": d["evidence"], "warnings": [], "error": None,
        "engine_version": None, "userland_isa": None,
    }
    assert json.loads(json.dumps(d)) == d
    d = detect({"elf_header": "7f454c4601010100000000000000000003002800", "engine_version": "20.10.24+dfsg1",
                "uname_m": "armv7l"})
    assert (d.userland_isa, d.engine_version) == ("ARM", "20.10.24+dfsg1")


# containerd cpuinfo_linux.go getArmCPUVariant: "CPU architecture" 4/4T -> arm/v4, 3 -> arm/v3,
# anything outside its table -> "unknown"; no index entry carries those variants, so fleet
# predicts no engine platform rather than a wrong one (issue: conformance with containerd's
# platform tables).
@pytest.mark.parametrize("cpu_arch, machine", [("4T", "armv4tl"), ("4", "armv4l"), ("3", "armv3l"),
                                               ("9", "armv7l"), ("?(18)", "armv7l")])
def test_engine_platform_not_predicted_for_variants_containerd_cannot_match(cpu_arch, machine):
    cpuinfo = f"model name\t: ARM core\nCPU architecture: {cpu_arch}\n"
    d = detect({"engine_arch": "arm", "uname_m": machine, "cpuinfo": cpuinfo})
    assert d.engine_platform is None
    assert any("engine platform not predicted" in w for w in d.warnings)


def test_engine_platform_from_machine_string_when_cpuinfo_has_no_architecture_line():
    # containerd falls back to uname's machine: armvNx -> vN, aarch64 -> v8, other -> unknown
    d = detect({"engine_arch": "arm", "dpkg_arch": "armhf", "uname_m": "armv6l"})
    assert str(d.engine_platform) == "linux/arm/v6"
    d = detect({"engine_arch": "arm", "dpkg_arch": "armhf", "uname_m": "aarch64"})
    assert str(d.engine_platform) == "linux/arm/v8"
    d = detect({"engine_arch": "arm", "dpkg_arch": "armel", "uname_m": "armv4tl"})
    assert d.engine_platform is None


def test_arm_core_table_is_one_for_opkg_and_lscpu():
    from fleet.devicearch import arm_core_level, package_arch

    # ARM11 MPCore is ARMv6K (ARM DDI 0360), also as an OpenWrt opkg CPU suffix
    assert arm_core_level("arm_mpcore") == 6
    assert str(package_arch("opkg", "arm_mpcore_vfp").platform) == "linux/arm/v6"
    # a 32-bit OpenWrt userland built for a Cortex-A53 (ARMv8) core is arm/v7; lscpu's model
    # name of the same core says ARMv8
    assert str(package_arch("opkg", "arm_cortex-a53_neon-vfpv4").platform) == "linux/arm/v7"
    assert arm_core_level("Cortex-A53") == 8
    assert str(package_arch("opkg", "arm_cortex-a7_neon-vfpv4").platform) == "linux/arm/v7"
    assert str(package_arch("opkg", "arm_arm926ej-s").platform) == "linux/arm/v5"
