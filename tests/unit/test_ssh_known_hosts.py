"""known_hosts matching checked against OpenSSH itself (``ssh-keygen -F``), no sshd.

The bug this guards against: patterns were matched with ``fnmatch``, which reads
``[10.0.0.*]`` as a character class, so ``[10.0.0.*]:2222`` matched nothing, the device
counted as unknown, and ``--accept-new`` accepted a CHANGED key.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

from fleet.ssh import known_hosts as kh
from fleet.ssh.match import match_hostname, match_pattern, match_pattern_list

# (host field, looked-up host, port): every row becomes one known_hosts line and every
# (host, port) one lookup; fleet must find exactly the lines ssh-keygen -F finds.
ROWS = [
    ("[10.0.0.*]:2222", "10.0.0.5", 2222),
    ("[10.0.0.?]:2222", "10.0.0.55", 2222),
    ("[10.0.0.5]:2222", "10.0.0.5", 22),
    ("10.0.0.*", "10.0.0.5", 2222),
    ("10.0.0.5", "10.0.0.5", 22),
    ("*:2222", "x.example", 2222),
    ("[x.example]:*", "x.example", 2200),
    ("[abc]", "a", 22),
    ("[a-c]x", "bx", 22),
    ("*.example.com,!bad.example.com", "bad.example.com", 22),
    ("!bad.example.com,*.example.com", "good.example.com", 22),
    ("Foo.Example.COM", "foo.example.com", 22),
    ("foo.example.com,", "foo.example.com", 2222),
    (",,", "empty.example", 22),
    ("!*", "nobody.example", 22),
    ("?", "a", 22),
    ("??", "b", 22),
    ("*a*a*b", "a" * 30, 22),  # OpenSSH's recursive matcher is exponential in the stars: keep it small here
    ("fe80::1", "fe80::1", 22),
    ("[fe80::*]:2222", "fe80::1", 2222),
    ("[fe80::1]:2222,[fe80::1]:22", "fe80::1", 22),
    ("**", "star.example", 22),
    ("*.lan", "pi.lan", 22),
    ("pi?.lan", "pi3.lan", 22),
    ("pi?.lan", "pi10.lan", 22),
]


@pytest.fixture(scope="module")
def keydir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("khkeys")
    for n in ("a", "b"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", n, "-f", str(d / n)], check=True,
                       capture_output=True)
    return d


def pub(keydir: Path, n: str = "a") -> str:
    return " ".join((keydir / f"{n}.pub").read_text().split()[:2])


def name_for(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def keygen_lines(path: Path, name: str) -> set[int]:
    out = subprocess.run(["ssh-keygen", "-F", name, "-f", str(path)], capture_output=True, text=True).stdout
    return {int(m) for m in re.findall(r"^# Host .* found: line (\d+)", out, re.M)}


def fleet_lines(path: Path, name: str) -> set[int]:
    kh._kh_cache.clear()
    return {e.line for e in kh.lookup_known([path], name)}


def test_matching_equals_ssh_keygen(tmp_path, keydir):
    key = pub(keydir)
    lines = [f"{field} {key}" for field, _, _ in ROWS]
    # markers and hashed names take part in the same comparison
    lines += [f"@revoked [10.0.0.*]:2222 {key}", f"@cert-authority *.example.com {key}", f"@bogus * {key}"]
    plain = tmp_path / "to_hash"
    plain.write_text(f"[10.0.0.5]:2222 {key}\npi.lan {key}\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(plain)], check=True, capture_output=True)
    hashed = [line for line in plain.read_text().splitlines() if line.startswith("|1|")]
    assert len(hashed) == 2
    lines += hashed + ["|1|bm90IGEgc2FsdA==|bm90IGEgaGFzaA== " + key, "|2|x|y " + key]
    f = tmp_path / "known_hosts"
    f.write_text("\n".join(lines) + "\n")

    names = sorted({name_for(h, p) for _, h, p in ROWS} | {"[10.0.0.5]:2222", "pi.lan", "other.example"})
    table = {n: (keygen_lines(f, n), fleet_lines(f, n)) for n in names}
    mismatches = {n: v for n, v in table.items() if v[0] != v[1]}
    assert mismatches == {}, mismatches
    # and the rows that motivated the fix really do match (so the comparison is not vacuous)
    assert 1 in table["[10.0.0.5]:2222"][1] and len(ROWS) + 1 in table["[10.0.0.5]:2222"][1]
    assert len(ROWS) + 4 in table["[10.0.0.5]:2222"][1]  # the hashed entry
    assert 10 not in table["bad.example.com"][1]  # "*.example.com,!bad.example.com": negated
    assert 11 in table["good.example.com"][1]
    assert sum(len(v[1]) for v in table.values()) >= 20


def test_pathological_pattern_is_bounded():
    # ssh-keygen -F takes minutes on "*a*a*a*a*a*a*a*a*a*a*a*b" against 60 "a"s (match.c
    # recurses at every star); fleet's matcher accepts the same strings in linear passes.
    t0 = time.monotonic()
    assert match_pattern("a" * 5000, "*a" * 40 + "b") is False
    assert match_pattern("a" * 5000 + "b", "*a" * 40 + "b") is True
    assert time.monotonic() - t0 < 2


def test_match_primitives():
    assert match_pattern("[10.0.0.5]:2222", "[10.0.0.*]:2222")
    assert not match_pattern("a", "[abc]")
    assert match_pattern_list("bad.lan", "*.lan,!bad.lan", False) == -1
    assert match_pattern_list("Foo", "foo", True) == 0  # only the pattern is lower-cased
    assert match_hostname("Foo", "FOO") == 1
    assert match_pattern_list("x", "x" * 1023 + ",x", False) == 0  # over-long sub-pattern: no match


def test_bad_lines_are_skipped_not_fatal(tmp_path, keydir):
    key = pub(keydir)
    ktype, b64 = key.split()
    other_type = pub(keydir, "b").split()[1]
    f = tmp_path / "kh"
    f.write_text(
        "\n".join([
            "host1",                                  # no key
            f"host1 {ktype}",                        # truncated
            f"host1 {ktype} !!!not-base64!!!",       # bad base64
            f"host1 ssh-rsa {b64}",                  # blob says ed25519, line says ssh-rsa
            f"@revoked@x host1 {key}",               # malformed marker
            f"@revoked host1 {ktype} {other_type}",  # fine (line 6)
            f"\thost1\t{ktype}\t{b64}\tcomment with spaces",  # tabs are separators (line 7)
        ]) + "\n"
    )
    entries = kh.parse_known_hosts(f, (1,))
    found = entries.lookup("host1")
    assert [(e.line, e.marker) for e in found] == [(6, "revoked"), (7, "")]


def test_verify_uses_file_line_and_refuses_changed_key_under_bracket_pattern(tmp_path, keydir, caplog):
    """The reported bug, without a server: a changed key under ``[10.0.0.*]:2222`` is
    refused even with accept-new, and the file is not appended to."""
    from fleet.ssh import HostKeyChanged, Target

    f = tmp_path / "kh"
    f.write_text(f"# fleet\n[10.0.0.*]:2222 {pub(keydir, 'a')}\n")
    before = f.read_text()
    offered = paramiko.PKey.from_path(keydir / "b")
    target = Target(name="dev7", hostname="10.0.0.7", port=2222, known_hosts_files=(f,))
    entries = kh.lookup_known(target.known_hosts_files, target.known_hosts_name)
    assert [e.line for e in entries] == [2]
    with pytest.raises(HostKeyChanged) as ei:
        kh.verify_host_key(target, "accept-new", entries, offered)
    assert (ei.value.path, ei.value.line) == (str(f), 2) and "CHANGED" in str(ei.value)
    assert f.read_text() == before
    # the recorded key itself is accepted, and -v says which line matched
    caplog.set_level("INFO", logger="fleet.ssh")
    kh.verify_host_key(target, "yes", entries, paramiko.PKey.from_path(keydir / "a"))
    assert f"matches {f}:2" in caplog.text


def test_accept_new_never_writes_through_a_symlink(tmp_path, keydir):
    from fleet.ssh import SSHError, Target

    real = tmp_path / "real"
    real.write_text("")
    link = tmp_path / "link"
    link.symlink_to(real)
    target = Target(name="dev9", hostname="10.0.0.9", known_hosts_files=(link,))
    with pytest.raises(SSHError, match=f"^dev9: cannot record the new host key of 10.0.0.9 in {link}: it is a symlink"):
        kh.verify_host_key(target, "accept-new", [], paramiko.PKey.from_path(keydir / "a"))
    assert real.read_text() == ""
