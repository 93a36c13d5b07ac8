"""fleet.platform: containerd normalization, parsing, compatibility ranking, choosing.

Tables follow containerd/platforms database.go, compare.go (``platformVector``) and moby
v20.10.24 ``filterManifests``; index cases come from tests/data/cases/index-cases.yaml.
"""

from __future__ import annotations

import pytest

from fleet.errors import UsageError
from fleet.devicearch import elf_platform, kernel_arch, package_arch
from fleet.platform import (
    Platform,
    PlatformError,
    choose,
    choose_legacy,
    compatible,
    matches,
    normalize,
)
from tests.cases import load_cases

P = Platform.parse


# --- normalization (containerd database.go normalizeArch) ---------------------------------

@pytest.mark.parametrize(
    "os_, arch, variant, expected",
    [
        ("linux", "aarch64", "", "linux/arm64"),
        ("linux", "arm64", "v8", "linux/arm64"),
        ("linux", "arm64", "8", "linux/arm64"),
        ("linux", "arm64", "v8.0", "linux/arm64"),
        ("linux", "arm64", "v8.2", "linux/arm64/v8.2"),
        ("linux", "arm64", "9", "linux/arm64/v9"),
        ("linux", "arm64", "v9.0", "linux/arm64/v9"),
        ("linux", "armhf", "", "linux/arm/v7"),
        ("linux", "armhf", "v6", "linux/arm/v7"),  # containerd forces v7 for armhf
        ("linux", "armel", "", "linux/arm/v6"),
        ("linux", "arm", "", "linux/arm/v7"),
        ("linux", "arm", "7", "linux/arm/v7"),
        ("linux", "arm", "5", "linux/arm/v5"),
        ("linux", "arm", "6", "linux/arm/v6"),
        ("linux", "arm", "8", "linux/arm/v8"),
        ("linux", "arm", "V6", "linux/arm/v6"),
        ("linux", "x86_64", "", "linux/amd64"),
        ("linux", "x86-64", "", "linux/amd64"),
        ("linux", "amd64", "v1", "linux/amd64"),
        ("linux", "amd64", "v3", "linux/amd64/v3"),
        ("linux", "i386", "", "linux/386"),
        ("Linux", "AMD64", "", "linux/amd64"),
        ("macos", "arm64", "", "darwin/arm64"),
        ("linux", "ppc64le", "", "linux/ppc64le"),
        ("linux", "s390x", "", "linux/s390x"),
        ("linux", "mips64le", "", "linux/mips64le"),
        ("linux", "riscv64", "", "linux/riscv64"),
        ("unknown", "unknown", "", "unknown/unknown"),
    ],
)
def test_normalize_table(os_, arch, variant, expected):
    assert str(normalize(os_, arch, variant)) == expected
    assert normalize(os_, arch, variant) == P(expected)


def test_equal_after_normalization():
    assert Platform("linux", "aarch64", "v8") == Platform("linux", "arm64")
    assert P("linux/arm") == P("linux/arm/v7")
    assert P("linux/arm64/v8") == P("linux/arm64")
    assert P("linux/arm/v6") != P("linux/arm/v7")
    assert hash(P("linux/arm")) == hash(P("linux/arm/v7"))


# --- parse / format -----------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, formatted",
    [
        ("linux/arm/v7", "linux/arm/v7"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm64", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64"),
        ("linux/amd64", "linux/amd64"),
        ("linux/amd64/v2", "linux/amd64/v2"),
        ("linux/386", "linux/386"),
        ("linux/mips", "linux/mips"),
        ("linux/s390x", "linux/s390x"),
        ("arm64", "linux/arm64"),  # a lone architecture: our devices run Linux
        ("arm/v6", "linux/arm/v6"),  # docker --platform style arch/variant
        ("aarch64", "linux/arm64"),
        (" linux/arm/v6 ", "linux/arm/v6"),
        ("windows/amd64", "windows/amd64"),
    ],
)
def test_parse_format_round_trip(text, formatted):
    p = P(text)
    assert str(p) == formatted
    assert P(str(p)) == p  # formatting is a fixed point


@pytest.mark.parametrize(
    "text, reason",
    [
        ("arm64/v7", "invalid variant 'v7' for arm64"),
        ("linux/arm64/v7", "invalid variant 'v7' for arm64"),
        ("arm/v7l", "invalid variant 'v7l' for arm"),
        ("linux/arm/v6l", "invalid variant 'v6l' for arm"),
        ("arm64/armv8", "invalid variant 'armv8' for arm64"),
        ("linux/arm64/armv8", "invalid variant 'armv8' for arm64"),
        ("linux/arm/v4", "invalid variant 'v4' for arm"),
        ("linux/amd64/v5", "invalid variant 'v5' for amd64"),
        ("linux/386/v2", "386 has no variants"),
        ("linux/armv7", "unknown architecture 'armv7'"),
        # containerd normalizes only i386 to 386; i486-i686 stay as written and match no
        # engine (containerd/platforms database.go normalizeArch)
        ("linux/i686", "no engine matches it"),
        ("i586", "not an architecture"),
        ("linuks/arm64", "unknown OS 'linuks'"),
        ("linux", "not an architecture"),
        ("", "empty"),
        ("linux/arm/v7/extra", "expected os/architecture[/variant]"),
        ("linux//v7", "expected os/architecture[/variant]"),
        ("linux/arm 64", "invalid characters"),
    ],
)
def test_malformed_platforms_raise_usage_error_naming_the_string(text, reason):
    with pytest.raises(PlatformError) as info:
        P(text)
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2
    assert repr(text) in str(info.value)
    assert reason in str(info.value)


def test_direct_construction_validates():
    with pytest.raises(PlatformError):
        Platform("linux", "arm", "v7l")
    with pytest.raises(PlatformError):
        Platform("linux", "")


# --- compatibility vectors (containerd compare.go platformVector / Only) ---------------------

@pytest.mark.parametrize(
    "host, vector",
    [
        ("linux/arm/v8", ["linux/arm/v8", "linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]),
        ("linux/arm/v7", ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]),
        ("linux/arm/v6", ["linux/arm/v6", "linux/arm/v5"]),
        ("linux/arm/v5", ["linux/arm/v5"]),
        ("linux/arm64", ["linux/arm64", "linux/arm/v8", "linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]),
        ("linux/arm64/v8.2", ["linux/arm64/v8.2", "linux/arm64/v8.1", "linux/arm64",
                              "linux/arm/v8", "linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]),
        ("linux/arm64/v9", ["linux/arm64/v9", "linux/arm64/v8.5", "linux/arm64/v8.4", "linux/arm64/v8.3",
                            "linux/arm64/v8.2", "linux/arm64/v8.1", "linux/arm64",
                            "linux/arm/v8", "linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]),
        ("linux/amd64", ["linux/amd64", "linux/386"]),
        ("linux/amd64/v3", ["linux/amd64/v3", "linux/amd64/v2", "linux/amd64", "linux/386"]),
        ("linux/386", ["linux/386"]),
        ("linux/s390x", ["linux/s390x"]),
        ("linux/mips", ["linux/mips"]),
    ],
)
def test_compatible_vectors(host, vector):
    assert [str(p) for p in compatible(P(host))] == vector


def test_no_upward_fallbacks():
    # Olen/solar-monitor#92: a 32-bit engine on a 64-bit kernel never takes arm64.
    assert not matches(P("linux/arm/v8"), P("linux/arm64"))
    assert not matches(P("linux/arm/v7"), P("linux/arm64"))
    assert not matches(P("linux/386"), P("linux/amd64"))
    assert not matches(P("linux/arm/v6"), P("linux/arm/v7"))  # moby#37647 Pi Zero
    assert not matches(P("linux/mips"), P("linux/mipsle"))
    assert matches(P("linux/arm64/v8"), P("linux/arm64"))  # containers/image#898
    assert matches(P("linux/arm64"), P("linux/arm/v7"))
    assert matches(P("linux/amd64"), P("linux/386"))
    assert not matches(P("linux/arm64"), None)
    assert not matches(P("linux/arm64"), P("unknown/unknown"))


# --- choose vs choose_legacy ---------------------------------------------------------------

def test_choose_prefers_vector_order_not_index_order():
    entries = [P("linux/arm/v6"), P("linux/arm/v7"), P("linux/arm64")]
    assert choose(P("linux/arm/v7"), entries) == 1
    assert choose(P("linux/arm/v6"), entries) == 0
    assert choose(P("linux/arm64"), entries) == 2
    assert choose(P("linux/arm/v8"), entries) == 1  # 32-bit engine on a Pi 4: v7 beats v6
    assert choose(P("linux/amd64"), entries) is None
    assert choose(P("linux/amd64"), [P("linux/386"), P("linux/amd64")]) == 1
    assert choose(P("linux/amd64"), [P("linux/386")]) == 0
    assert choose(P("linux/arm64"), []) is None
    assert choose(P("linux/arm64"), [None, P("linux/arm64")]) == 1


def test_choose_legacy_pi4_32bit_takes_first_arm_entry():
    # A Pi 4 running a 32-bit OS (tests/lab/test_deploy.py shows it on the lab): engine 20.10
    # asks for linux/arm/v8, nothing matches exactly, so it falls back to the FIRST arm entry (arm/v6), not the best (v7).
    entries = [P("linux/amd64"), P("linux/arm/v6"), P("linux/arm/v7")]
    host = P("linux/arm/v8")
    assert choose_legacy(host, entries) == 1
    assert choose(host, entries) == 2


def test_choose_legacy_exact_and_no_fallbacks():
    assert choose_legacy(P("linux/arm/v7"), [P("linux/arm/v6"), P("linux/arm/v7")]) == 1
    assert choose_legacy(P("linux/arm/v7"), [P("linux/arm")]) == 0  # arm == arm/v7
    # An arm/v6 Pi Zero on an index with only v7: the deprecated partial match takes it
    # (moby#37647's wrong pull); containerd's matcher refuses.
    assert choose_legacy(P("linux/arm/v6"), [P("linux/arm/v7")]) == 0
    assert choose(P("linux/arm/v6"), [P("linux/arm/v7")]) is None
    # No arm64 -> arm fallback and no amd64 -> 386 fallback on 20.10.
    assert choose_legacy(P("linux/arm64"), [P("linux/arm/v7")]) is None
    assert choose(P("linux/arm64"), [P("linux/arm/v7")]) == 0
    assert choose_legacy(P("linux/amd64"), [P("linux/386")]) is None
    # The partial match compares OS too.
    assert choose_legacy(P("linux/arm/v7"), [P("windows/arm64"), P("freebsd/arm/v6")]) is None
    assert choose_legacy(P("linux/arm/v7"), [None, P("linux/arm/v6")]) == 1


# --- index cases (tests/data/cases/index-cases.yaml) --- -------------------------------------

INDEX_CASES = load_cases("index-cases.yaml")
MATCHING = [c for c in INDEX_CASES if c.get("device_platform")]
MALFORMED = [c for c in INDEX_CASES if "invalid" in str(c["expected"].get("error") or "")]


def test_index_cases_present():
    assert len(MATCHING) >= 6 and len(MALFORMED) >= 2


@pytest.mark.parametrize("case", MATCHING, ids=[c["id"] for c in MATCHING])
def test_index_case_matching(case):
    device = P(case["device_platform"])
    entries = [P(e["platform"]) for e in case["index"]]
    assert choose(device, entries) == case["expected"]["entry"]
    if case["expected"]["entry"] is None:
        assert not any(matches(device, e) for e in entries)
    else:
        assert matches(device, entries[case["expected"]["entry"]])


@pytest.mark.parametrize("case", MALFORMED, ids=[c["id"] for c in MALFORMED])
def test_index_case_malformed_variants_are_platform_errors(case):
    # Refusing such an index is a later issue; here: parse rejects exactly the entries
    # whose variant the case's reason names (armv8, v6l/v7l) and accepts the others.
    rejected = []
    for entry in case["index"]:
        try:
            P(entry["platform"])
        except PlatformError as exc:
            assert entry["platform"] in str(exc)
            rejected.append(entry["platform"].rsplit("/", 1)[-1])
    assert rejected
    assert all(v in case["expected"]["error"] for v in rejected)


# --- device-side names ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "machine, candidates, decides",
    [
        ("aarch64", ["linux/arm64", "linux/arm/v7"], False),
        ("armv6l", ["linux/arm/v6"], True),
        ("armv7l", ["linux/arm/v7"], True),
        ("armv8l", ["linux/arm/v7"], True),
        ("x86_64", ["linux/amd64", "linux/386"], False),
        ("i686", ["linux/386"], True),
        ("ppc64le", ["linux/ppc64le"], True),
        ("ppc64", ["linux/ppc64", "linux/ppc"], False),
        ("s390x", ["linux/s390x"], True),
        ("mips64", ["linux/mips64le", "linux/mips64", "linux/mipsle", "linux/mips"], False),
        ("mips", ["linux/mipsle", "linux/mips"], False),
        ("riscv64", ["linux/riscv64"], True),
    ],
)
def test_kernel_arch(machine, candidates, decides):
    k = kernel_arch(machine)
    assert [str(c) for c in k.candidates] == candidates
    assert k.decides is decides


def test_kernel_arch_unknown():
    assert kernel_arch("vax") is None
    assert kernel_arch("") is None
    assert kernel_arch("armv7b").candidates == ()  # big-endian ARM has no OCI platform


@pytest.mark.parametrize(
    "manager, name, platform, cap",
    [
        ("dpkg", "armhf", "linux/arm/v7", 7),
        ("dpkg", "armel", "linux/arm/v6", 6),
        ("dpkg", "arm64", "linux/arm64", None),
        ("dpkg", "amd64", "linux/amd64", None),
        ("dpkg", "i386", "linux/386", None),
        ("dpkg", "ppc64el", "linux/ppc64le", None),
        ("dpkg", "mipsel", "linux/mipsle", None),
        ("dpkg", "mips64el", "linux/mips64le", None),
        ("apk", "armhf", "linux/arm/v7", 7),
        ("apk", "x86", "linux/386", None),
        ("apk", "aarch64", "linux/arm64", None),
        ("rpm", "armv7hl", "linux/arm/v7", 7),
        ("rpm", "x86_64", "linux/amd64", None),
        ("opkg", "mipsel_24kc", "linux/mipsle", None),
        ("opkg", "mips_24kc", "linux/mips", None),
        ("opkg", "arm_arm1176jzf-s_vfp", "linux/arm/v6", 6),
        ("opkg", "arm_cortex-a7_neon-vfpv4", "linux/arm/v7", 7),
        ("opkg", "aarch64_cortex-a53", "linux/arm64", None),
        ("engine", "arm", "linux/arm/v7", 7),
        ("engine", "arm64", "linux/arm64", None),
    ],
)
def test_package_arch(manager, name, platform, cap):
    ua = package_arch(manager, name)
    assert str(ua.platform) == platform and ua.arm_cap == cap


def test_package_arch_unknown():
    assert package_arch("dpkg", "powerpc") is None
    assert package_arch("dpkg", "") is None
    with pytest.raises(ValueError):
        package_arch("pacman", "x86_64")


@pytest.mark.parametrize(
    "e_machine, bits, endian, platform",
    [
        (40, 32, "little", "linux/arm/v7"),
        (183, 64, "little", "linux/arm64"),
        (62, 64, "little", "linux/amd64"),
        (3, 32, "little", "linux/386"),
        (8, 32, "big", "linux/mips"),
        (8, 32, "little", "linux/mipsle"),
        (8, 64, "big", "linux/mips64"),
        (8, 64, "little", "linux/mips64le"),
        (21, 64, "little", "linux/ppc64le"),
        (21, 64, "big", "linux/ppc64"),
        (22, 64, "big", "linux/s390x"),
        (243, 64, "little", "linux/riscv64"),
    ],
)
def test_elf_platform(e_machine, bits, endian, platform):
    assert str(elf_platform(e_machine, bits, endian).platform) == platform


def test_elf_platform_without_oci_platform():
    assert elf_platform(62, 32, "little") is None  # x32
    assert elf_platform(40, 32, "big") is None  # big-endian ARM
    assert elf_platform(20, 32, "big") is None  # 32-bit PowerPC
