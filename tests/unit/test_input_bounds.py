"""Hostile input files end in exit status 2 with FILE:LINE, bounded in time and memory (issue 9).

Each test feeds the hostile input that used to hang, exhaust memory or raise a traceback
(items 7, 8, 13, 14) and checks the error type (InputFileError, exit status 2), the file
and line it names, and - where boundedness is the point - a generous time bound.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet.errors import InputFileError
from fleet.inventory import MAX_HOSTS_PER_PATTERN, expand_hostname_range, load_inventory
from fleet.yamlfile import (
    MAX_ALIAS_NODES,
    MAX_DEPTH,
    MAX_INPUT_BYTES,
    load_located,
    parse_json,
    read_input,
)

FLEET = str(Path(sys.executable).with_name("fleet"))

# The 539-byte playbook of issue 9 item 7: nine levels of ten aliases, 10^9 strings.
BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def children_bomb(levels: int) -> str:
    """An inventory whose groups each hold the previous one twice, through aliases:
    walking it naively visits 2**levels groups."""
    lines = ["all:", "  children:", "    g0: &g0", "      hosts: {h0: }"]
    for i in range(1, levels + 1):
        lines += [f"    g{i}: &g{i}", "      children:", f"        a{i}: *g{i - 1}", f"        b{i}: *g{i - 1}"]
    return "\n".join(lines) + "\n"


def fleet(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([FLEET, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def assert_one_line_error(cp: subprocess.CompletedProcess, fragment: str) -> None:
    assert cp.returncode == 2, cp.stderr
    assert fragment in cp.stderr, cp.stderr
    assert "Traceback" not in cp.stderr


# ------------------------------------------------------------------ item 7: aliases


def test_billion_laughs_playbook_is_refused_fast(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 600
    start = time.monotonic()
    with pytest.raises(InputFileError) as info:
        load_located(path)
    assert time.monotonic() - start < 10
    err = info.value
    assert err.path == str(path) and err.exit_code == 2
    assert f"more than {MAX_ALIAS_NODES} nodes" in err.reason
    # The alias that crosses the bound: row f (10^5 nodes in all by then).
    assert err.line in (5, 6, 7), str(err)
    assert str(err).startswith(f"{path}:{err.line}: ")


def test_billion_laughs_through_the_cli_exit_2(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(BILLION_LAUGHS)
    start = time.monotonic()
    cp = fleet("plan", str(path), cwd=tmp_path)
    assert time.monotonic() - start < 30
    assert_one_line_error(cp, f"{path}:")
    assert "billion laughs" in cp.stderr


def test_inventory_children_alias_bomb_is_refused_fast(tmp_path):
    path = tmp_path / "h.yml"
    path.write_text(children_bomb(20))
    start = time.monotonic()
    with pytest.raises(InputFileError) as info:
        load_inventory([path])
    assert time.monotonic() - start < 10
    assert info.value.path == str(path) and info.value.line is not None
    assert "nodes" in info.value.reason


def test_modest_alias_reuse_still_loads(tmp_path):
    # Anchors and merge keys are ordinary YAML: a few levels of reuse stay fine.
    path = tmp_path / "h.yml"
    path.write_text(children_bomb(5))
    inv = load_inventory([path])
    assert list(inv.hosts) == ["h0"] and "g5" in inv.groups
    doc = tmp_path / "p.yaml"
    doc.write_text("base: &b {x: 1, y: [1, 2]}\none: *b\ntwo: {<<: *b, z: 3}\n")
    assert load_located(doc).data["two"] == {"x": 1, "y": [1, 2], "z": 3}


def test_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("a: &x\n  - 1\n  - *x\n")
    with pytest.raises(InputFileError) as info:
        load_located(path)
    assert info.value.line == 3 and "contains it" in info.value.reason


# -------------------------------------------------------------- item 8: host ranges


def test_huge_host_range_is_refused_without_expanding(tmp_path):
    start = time.monotonic()
    with pytest.raises(ValueError, match=f"more than the {MAX_HOSTS_PER_PATTERN}"):
        expand_hostname_range("host[0:99999999]")
    with pytest.raises(ValueError, match="expands to 1000000 hosts"):
        expand_hostname_range("r[0:999]c[0:999]")  # the product counts
    assert len(expand_hostname_range("h[1:100000]")) == MAX_HOSTS_PER_PATTERN
    for name, text, line in (
        ("h.ini", "[g]\nok\nhost[0:99999999]\n", 3),
        ("h.yml", "g:\n  hosts:\n    ok:\n    host[0:99999999]:\n", 4),
    ):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(InputFileError) as info:
            load_inventory([path])
        assert (info.value.path, info.value.line) == (str(path), line)
        assert "99999999" in info.value.reason and "100000" in info.value.reason
    assert time.monotonic() - start < 10


# ------------------------------------------------ item 13: depth, keys, size, /dev/zero


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", 1, f"nested more than {MAX_DEPTH} levels"),
        ("a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 300)), 101, f"nested more than {MAX_DEPTH} levels"),
        ("{" + '"a": [' * 3000 + "]" * 3000 + "}\n", 1, f"nested more than {MAX_DEPTH} levels"),
        ("name: x\n? [a, b]\n: 1\n", 2, "mapping key must be a plain value"),
        ("name: x\n? {a: 1}\n: 1\n", 2, "mapping key must be a plain value"),
    ],
)
def test_deep_nesting_and_complex_keys_name_the_line(tmp_path, text, line, fragment):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(InputFileError) as info:
        load_located(path)
    assert (info.value.path, info.value.line) == (str(path), line), str(info.value)
    assert fragment in info.value.reason


def test_deep_nesting_in_inventories_and_vars_files(tmp_path):
    inv = tmp_path / "h.yml"
    inv.write_text("g:\n  vars:\n    deep: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(InputFileError) as info:
        load_inventory([inv])
    assert info.value.path == str(inv) and "nested" in info.value.reason
    inv.write_text("g:\n  hosts:\n    h:\n")
    (tmp_path / "host_vars").mkdir()
    vf = tmp_path / "host_vars" / "h.json"
    vf.write_text('{"x":\t' + "[" * 5000 + "]" * 5000 + "}")  # tab: the JSON path
    with pytest.raises(InputFileError) as info:
        load_inventory([inv])
    assert info.value.path == str(vf) and "nested" in info.value.reason
    vf.write_text("? [a, b]\n: 1\n")
    with pytest.raises(InputFileError) as info:
        load_inventory([inv])
    assert (info.value.path, info.value.line) == (str(vf), 1)


def test_parse_json_bounds_depth():
    with pytest.raises(InputFileError, match="nested more than"):
        parse_json("f.json", "[" * 100000 + "]" * 100000)
    with pytest.raises(InputFileError, match="nested more than 3"):
        parse_json("f.json", "[[[[]]]]", max_depth=3)
    with pytest.raises(InputFileError) as info:
        parse_json("f.json", '{\n"a": 1,\n}')
    assert info.value.line == 3
    assert parse_json("f.json", json.dumps({"a": [[1]]})) == {"a": [[1]]}


def test_oversized_file_is_refused_before_reading_it_whole(tmp_path):
    path = tmp_path / "big.yaml"
    with open(path, "wb") as f:
        f.truncate(MAX_INPUT_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(InputFileError, match="larger than the 16 MiB"):
        read_input(path)
    with pytest.raises(InputFileError, match="larger than the 16 MiB"):
        load_located(path)
    small = tmp_path / "small.yaml"
    small.write_text("a: 1\n")
    with pytest.raises(InputFileError, match="larger than the 4 bytes"):
        read_input(small, max_bytes=4)
    assert read_input(small, max_bytes=5) == "a: 1\n"


def test_dev_zero_and_devices_are_refused(tmp_path):
    for target in ("/dev/zero", "/dev/null"):
        with pytest.raises(InputFileError, match="character device, not a regular file"):
            load_located(target)
    with pytest.raises(InputFileError, match="character device"):
        load_inventory(["/dev/zero"])
    start = time.monotonic()
    cp = fleet("plan", "/dev/zero", cwd=tmp_path)
    assert time.monotonic() - start < 30
    assert_one_line_error(cp, "/dev/zero: cannot read: a character device, not a regular file")


def test_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_bytes(b"name: a\nimage: \xff\n")
    with pytest.raises(InputFileError) as info:
        load_located(path)
    assert info.value.line == 2 and "not UTF-8" in info.value.reason


# --------------------------------------------------------------------- item 14: FIFOs


@pytest.fixture()
def fifo(tmp_path):
    path = tmp_path / "p.yaml"
    os.mkfifo(path)
    return path


def test_fifo_playbook_is_refused_not_waited_on(fifo, tmp_path):
    start = time.monotonic()
    with pytest.raises(InputFileError, match="a FIFO, not a regular file"):
        load_located(fifo)
    cp = fleet("plan", str(fifo), cwd=tmp_path)
    assert time.monotonic() - start < 30
    assert_one_line_error(cp, f"{fifo}: cannot read: a FIFO, not a regular file")


def test_fifo_inventory_given_with_i_is_an_error(fifo):
    with pytest.raises(InputFileError) as info:
        load_inventory([fifo])
    assert info.value.path == str(fifo) and "a FIFO" in info.value.reason


def test_fifo_socket_in_inventory_directory_is_an_error(tmp_path):
    d = tmp_path / "inv"
    d.mkdir()
    (d / "01.ini").write_text("[g]\nh1\n")
    os.mkfifo(d / "02-pipe")
    with pytest.raises(InputFileError) as info:
        load_inventory([d])
    assert info.value.path == str(d / "02-pipe") and "a FIFO" in info.value.reason
    os.unlink(d / "02-pipe")
    sock_path = d / "03-sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        with pytest.raises(InputFileError) as info:
            load_inventory([d])
    assert info.value.path == str(sock_path) and "socket" in info.value.reason


def test_fifo_in_group_vars_and_host_vars_is_an_error(tmp_path):
    inv = tmp_path / "h.ini"
    inv.write_text("[g]\nh1\n")
    (tmp_path / "group_vars").mkdir()
    os.mkfifo(tmp_path / "group_vars" / "g.yml")
    with pytest.raises(InputFileError) as info:
        load_inventory([inv])
    assert info.value.path == str(tmp_path / "group_vars" / "g.yml") and "FIFO" in info.value.reason
    os.unlink(tmp_path / "group_vars" / "g.yml")
    (tmp_path / "host_vars" / "h1").mkdir(parents=True)
    os.mkfifo(tmp_path / "host_vars" / "h1" / "conn")
    with pytest.raises(InputFileError) as info:
        load_inventory([inv])
    assert info.value.path == str(tmp_path / "host_vars" / "h1" / "conn")


def test_fifo_limit_file_is_an_error(tmp_path, fifo):
    inv = tmp_path / "h.ini"
    inv.write_text("[g]\nh1\n")
    with pytest.raises(InputFileError, match="FIFO"):
        load_inventory([inv]).select(f"@{fifo}")
