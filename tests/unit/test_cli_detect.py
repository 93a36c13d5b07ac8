"""``fleet detect FILE [--json]`` through the real console script, on files in tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import reportschema
from tests.cases import CASES_DIR

FLEET = Path(sys.executable).parent / "fleet"


def run(*args: str) -> subprocess.CompletedProcess:
    assert FLEET.is_file(), f"console script {FLEET} missing (pip install -e '.[test]')"
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    return subprocess.run([str(FLEET), "detect", *args], capture_output=True, text=True, timeout=60, env=env)


DECIDED = [
    {"host": "pi-zero", "facts": {"uname_m": "armv6l", "dpkg_arch": "armel"}},
    {"host": "pi4-32on64", "facts": {"uname_m": "aarch64", "dpkg_arch": "armhf", "engine_arch": "arm",
                                     "getconf_long_bit": "32"}},
    {"uname_s": "Linux", "uname_m": "ppc64le"},  # a bare facts object: host is its index
]


def test_all_decided_table_exit_0(tmp_path):
    f = tmp_path / "facts.yaml"
    f.write_text(json.dumps(DECIDED))  # JSON text in a .yaml file is still read
    r = run(str(f))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    row = {name: next(l for l in lines if f" {name} " in l) for name in ("pi-zero", "pi4-32on64")}
    assert "linux/arm/v6" in row["pi-zero"]
    assert "linux/arm/v7" in row["pi4-32on64"] and "linux/arm/v8" in row["pi4-32on64"]
    assert any(" 2 " in l and "linux/ppc64le" in l for l in lines)
    assert "Traceback" not in r.stderr


def test_json_is_pure_and_exit_1_when_one_undecided(tmp_path):
    f = tmp_path / "fleet.yaml"
    f.write_text(
        "# probe results\n"
        "- host: pi-zero\n"
        "  facts:\n"
        "    uname_m: armv6l\n"
        "    dpkg_arch: armel\n"
        "- host: pi4\n"
        "  facts: {uname_m: aarch64, uname_r: 4.19.75-v8+}\n"
        "- host: down\n"
        "  facts: null\n"
        "  error: unreachable\n"
    )
    r = run(str(f), "--json")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)  # stdout is exactly one JSON document
    assert [d["host"] for d in out] == ["pi-zero", "pi4", "down"]
    assert all(set(d) == {"host", "detection"} for d in out)
    doc = [d["detection"] for d in out]
    assert doc[0]["platform"] == "linux/arm/v6" and doc[0]["bitness"] == 32 and doc[0]["error"] is None
    assert doc[1]["platform"] is None and doc[1]["error"].startswith("only kernel facts")
    assert doc[2]["platform"] is None and "unreachable" in doc[2]["error"]
    assert set(doc[0]) == {"platform", "endianness", "bitness", "kernel_machine", "engine_platform",
                           "evidence", "warnings", "error", "engine_version", "userland_isa"}


def test_single_wrapped_object_json_file(tmp_path):
    f = tmp_path / "one.json"
    f.write_text(json.dumps({"host": "edgerouter", "facts": {"elf_header": "7f454c4601020100000000000000000000030008"}}))
    r = run(str(f), "--json")
    assert r.returncode == 0, r.stderr
    doc = reportschema.loads(r.stdout, "detect-json")
    assert len(doc) == 1 and doc[0]["host"] == "edgerouter"
    assert doc[0]["detection"]["platform"] == "linux/mips" and doc[0]["detection"]["endianness"] == "big"


def test_arch_cases_file_exit_1(tmp_path):
    # The case file itself is a list of {id, facts, expected}: facts are read, the
    # cases with null expectations make the exit status 1.
    cases = CASES_DIR / "arch-facts.yaml"
    r = run(str(cases), "--json")
    assert r.returncode == 1, r.stderr
    doc = reportschema.loads(r.stdout, "detect-json")
    assert len(doc) >= 14 and doc[0]["host"] == "AC-01"
    assert doc[0]["detection"]["platform"] == "linux/arm/v6"


@pytest.mark.parametrize(
    "name, text, where",
    [
        ("bad.yaml", "- host: a\n  facts: {uname_m: armv7l\n- host: b\n", "bad.yaml:"),
        ("bad.json", '[{"host": "a",\n "facts": }]\n', "bad.json:2:"),
        ("shape.yaml", "- host: a\n  facts:\n    uname_m: [armv7l]\n", "shape.yaml:3:"),
        ("entry.yaml", "- host: a\n  facts: {uname_m: armv7l}\n- just a string\n", "entry.yaml:3:"),
        ("empty.yaml", "", "empty.yaml"),
        ("nofacts.yaml", "host: a\n", "nofacts.yaml:1:"),
    ],
)
def test_malformed_file_exit_2_names_file_and_line(tmp_path, name, text, where):
    f = tmp_path / name
    f.write_text(text)
    r = run(str(f))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert where in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_missing_file_exit_2(tmp_path):
    r = run(str(tmp_path / "nope.yaml"), "--json")
    assert r.returncode == 2
    assert "nope.yaml" in r.stderr and "cannot read" in r.stderr
    doc = reportschema.loads(r.stdout, "error-json")  # --json: one JSON document also when the command fails
    assert doc["exit_status"] == 2 and doc["kind"].startswith("usage:") and "nope.yaml" in doc["error"]


def test_unknown_fact_key_warns_on_stderr_only(tmp_path):
    f = tmp_path / "typo.yaml"
    f.write_text("uname_m: armv7l\nunamem: x\n")
    r = run(str(f), "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout)[0]["detection"]["platform"] == "linux/arm/v7"
    assert "typo.yaml:2" in r.stderr and "unamem" in r.stderr
