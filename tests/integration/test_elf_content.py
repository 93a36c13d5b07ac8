"""ELF checks (fleet.publish.index.check_elf) on Debian's real static busybox binaries
(armel, armhf, arm64, amd64, s390x), cross-checked with binutils' readelf."""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

import pytest

from fleet.platform import Platform
from fleet.publish.index import IndexRefused, check_elf
from tests.busybox_cache import fetch_busybox


# --------------------------------------------------------------------------- ELF on real binaries


@pytest.fixture(scope="session")
def busybox() -> dict[str, Path]:
    return fetch_busybox()


def _readelf_cpu_arch(path: Path) -> str | None:
    out = subprocess.run(["readelf", "-A", str(path)], capture_output=True, text=True, check=True).stdout
    m = re.search(r"Tag_CPU_arch:\s*(\S+)", out)
    return m.group(1) if m else None


@pytest.mark.parametrize("arch,entry,ok,needle", [
    ("armhf", "linux/arm/v7", True, None),
    ("armhf", "linux/arm", True, None),
    ("armhf", "linux/arm/v8", True, None),
    ("armhf", "linux/arm/v6", False, "ARM v7"),
    ("armhf", "linux/arm/v5", False, "ARM v7"),
    ("armel", "linux/arm/v5", True, None),
    ("armel", "linux/arm/v6", True, None),
    ("armel", "linux/arm/v7", True, None),
    ("armel", "linux/arm64", False, "ELF32 little-endian ARM"),
    ("arm64", "linux/arm64", True, None),
    ("arm64", "linux/arm/v7", False, "ELF64 little-endian AArch64"),
    ("amd64", "linux/amd64", True, None),
    ("amd64", "linux/arm64", False, "x86-64"),
    ("amd64", "linux/386", False, "x86-64"),
    ("s390x", "linux/s390x", True, None),
    ("s390x", "linux/ppc64le", False, "big-endian"),
    ("s390x", "linux/amd64", False, "big-endian"),
    ("s390x", "linux/arm64", False, "big-endian"),
])
def test_check_elf_on_debian_busybox(busybox, arch, entry, ok, needle):
    path = busybox[arch]
    platform = Platform.parse(entry)
    if ok:
        info = check_elf(platform, path)
        if platform.architecture == "arm":
            # pyelftools' reading agrees with binutils' readelf -A.
            assert info.arm_arch == _readelf_cpu_arch(path)
            assert info.arm_level == {"armel": 5, "armhf": 7}[arch]
    else:
        with pytest.raises(IndexRefused) as exc:
            check_elf(platform, path)
        assert exc.value.kinds == {"elf-mismatch"}
        assert needle in str(exc.value) and entry in str(exc.value)


def test_check_elf_inputs(busybox):
    data = busybox["armhf"].read_bytes()
    v7, v6 = Platform.parse("linux/arm/v7"), Platform.parse("linux/arm/v6")
    assert check_elf(v7, data).arm_arch == "v7"
    with open(busybox["armhf"], "rb") as f:
        with pytest.raises(IndexRefused):
            check_elf(v6, f)
    # Only the header (the probe's elf_header fact is the first 20 bytes): architecture is
    # checked, the ARM level cannot be and says so.
    info = check_elf(v6, data[:20])
    assert info.arm_level is None and any("not verified" in n for n in info.notes)
    with pytest.raises(IndexRefused, match="AArch64"):
        check_elf(Platform.parse("linux/arm64"), bytes.fromhex(data[:20].hex()))
    with pytest.raises(IndexRefused, match="not an ELF"):
        check_elf(v7, b"#!/bin/sh\necho hi\n" + b"\0" * 40)
    with pytest.raises(IndexRefused, match="not an ELF"):
        check_elf(v7, io.BytesIO(b"\x7fEL"))
