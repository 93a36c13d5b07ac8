"""fleet.facts without a device: the probe command's quoting and the parser on captured
probe transcripts (tests/data/probe/*.out, recorded from real runs: dash, bash and busybox
ash natively, an arm64 busybox under QEMU, the lab's boards)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fleet.facts import (
    HEADER,
    PROBE_SCRIPT,
    ProbeError,
    new_boundary,
    parse_probe_output,
    probe_command,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "probe"
ENGINE_KEYS = {"engine_arch", "engine_os", "engine_version", "engine_info_arch", "engine_error"}


def strip1(text: str) -> str:
    return text[:-1] if text.endswith("\n") else text


# ------------------------------------------------------------- the command


def test_probe_command_quotes_the_script_for_a_remote_shell():
    b = new_boundary()
    cmd = probe_command(True, b)
    # a POSIX shell parses it back into exactly: sh -c SCRIPT fleet-probe B 1
    parsed = subprocess.run(["dash", "-c", f'set -- {cmd}; for a; do printf "%s\\0" "$a"; done'],
                            capture_output=True, check=True).stdout.split(b"\0")[:-1]
    assert parsed == [b"sh", b"-c", PROBE_SCRIPT.encode(), b"fleet-probe", b.encode(), b"1"]
    assert probe_command(False, b).endswith(f" fleet-probe {b} 0")
    assert probe_command(False) != probe_command(False)  # a fresh boundary each time
    with pytest.raises(ValueError):
        probe_command(False, "x; rm -rf /")


# ------------------------------------------------------ parser, captured output


def test_parse_captured_debian_with_engine():
    facts = parse_probe_output((DATA / "debian12-amd64-dash-engine.out").read_bytes())
    assert facts["uname_s"] == "Linux" and facts["uname_m"] == "x86_64"
    assert facts["elf_header"] == "7f454c4602010100000000000000000003003e00"
    assert facts["dpkg_arch"] == "amd64"
    assert (facts["engine_arch"], facts["engine_os"], facts["engine_info_arch"]) == ("amd64", "linux", "x86_64")
    assert facts["engine_version"] == "20.10.24+dfsg1"
    assert facts["os_release"].startswith('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')
    # /proc/cpuinfo ends with an empty line: only the one trailing newline is stripped
    assert facts["cpuinfo"].endswith("\n") and not facts["cpuinfo"].endswith("\n\n")
    assert facts["lscpu"].startswith("Architecture:")
    assert "engine_error" not in facts


def test_parse_captured_busybox_arm64():
    facts = parse_probe_output((DATA / "busybox-arm64-qemu.out").read_bytes(), "a1b2c3d4e5f60718293a4b5c6d7e8f90")
    assert facts["uname_m"] == "aarch64"
    assert facts["elf_header"] == "7f454c460201010300000000000000000200b700"
    assert not {"getconf_long_bit", "dpkg_arch", "lscpu"} & facts.keys()
    # recorded while a host engine ran: its socket was there, no docker CLI on that PATH
    assert facts["engine_error"] == "no docker CLI on PATH, but the engine socket /var/run/docker.sock exists"


def test_parse_captured_permission_denied():
    facts = parse_probe_output((DATA / "debian12-amd64-permission-denied.out").read_bytes())
    assert facts["engine_error"].startswith("permission denied while trying to connect to the Docker daemon socket")
    assert facts["engine_error"].endswith("connect: permission denied\nbecome: sudo not found")
    assert not (ENGINE_KEYS - {"engine_error"}) & facts.keys()


def test_parse_captured_lab_devices_and_detect():
    """Transcripts from the simulated lab's boards (busybox + foreign docker CLI under QEMU):
    the probe's facts decide the platform a 32-bit userland on a 64-bit kernel needs."""
    from fleet.detect import detect

    pi4 = parse_probe_output((DATA / "lab-pi4-32on64.out").read_bytes(), "c0ffee00c0ffee00c0ffee00c0ffee00")
    assert pi4["uname_m"] == "aarch64"
    assert pi4["elf_header"] == "7f454c4601010103000000000000000002002800"  # ELF32 LE ARM
    assert (pi4["engine_arch"], pi4["engine_info_arch"]) == ("arm", "armv7l")
    assert "CPU architecture: 8" in pi4["cpuinfo"]
    assert not {"dpkg_arch", "getconf_long_bit", "lscpu"} & pi4.keys()  # busybox only
    assert str(detect(pi4).platform) == "linux/arm/v7"

    zero = parse_probe_output((DATA / "lab-pi-zero.out").read_bytes())
    assert zero["uname_m"] == "armv6l"
    assert zero["cpuinfo"].splitlines()[1] == "model name\t: ARMv6-compatible processor rev 7 (v6l)"
    assert str(detect(zero).platform) == "linux/arm/v6"


def _frame(b: str, *records: tuple[str, str, int]) -> bytes:
    body = "".join(f"{b} {k}\n{text}\n{b} ={rc}\n" for k, text, rc in records)
    return f"{HEADER} {b}\n{body}{b} end\n".encode()


def test_parse_keeps_text_exact_and_drops_failures():
    b = new_boundary()
    data = _frame(
        b,
        ("uname_m", "armv7l", 0),
        ("cpuinfo", "line 1\n\nline 3\n\n", 0),   # printed with two trailing newlines
        ("os_release", "  padded  \ttabs\\n", 0),
        ("dpkg_arch", "dpkg: unrecognized option '--print-architecture'\n", 1),
        ("lscpu", "", 0),
        ("getconf_long_bit", "\n", 0),
        ("no_such_key", "x\n", 0),
    )
    assert parse_probe_output(data, b) == {
        "uname_m": "armv7l",
        "cpuinfo": "line 1\n\nline 3\n",
        "os_release": "  padded  \ttabs\\n",
    }


def test_parse_ignores_banner_and_lookalike_frames():
    """A login banner before the header, and fact text containing the framing of another
    probe (e.g. an os-release that embeds an old transcript), cannot break parsing."""
    b, old = new_boundary(), new_boundary()
    fake = f"{HEADER} {old}\n{old} uname_m\nmips\n{old} =0\n{old} end\n"
    data = b"Welcome to the device!\n" + fake.encode() + _frame(
        b, ("os_release", f"NAME=x\n{fake}", 0), ("uname_m", "aarch64", 0)
    )
    facts = parse_probe_output(data, b)
    assert facts == {"os_release": f"NAME=x\n{strip1(fake)}", "uname_m": "aarch64"}
    # without the boundary the FIRST header wins: the caller must pass it when a banner
    # may hold a transcript (gather() always does)
    assert parse_probe_output(data)["uname_m"] == "mips"


def test_parse_refuses_missing_header_or_truncated_output():
    b = new_boundary()
    full = _frame(b, ("uname_m", "x86_64", 0))
    with pytest.raises(ProbeError, match="no FLEET-PROBE/1 header"):
        parse_probe_output(b"sh: 1: sh: not found\n", b)
    with pytest.raises(ProbeError, match="no FLEET-PROBE/1 header"):
        parse_probe_output(full, new_boundary())  # another probe's output
    with pytest.raises(ProbeError, match="cut short"):
        parse_probe_output(full[: full.index(b" end")], b)
    with pytest.raises(ProbeError, match="malformed"):
        parse_probe_output(full.replace(b" =0\n", b" =zero\n"), b)
