"""Inventory loading checked against Ansible's documented behaviour.

References: ansible-core lib/ansible/plugins/inventory/{ini,yaml,__init__}.py,
lib/ansible/inventory/{manager,helpers}.py, lib/ansible/vars/manager.py and the
host_group_vars vars plugin; docs inventory_guide/intro_inventory.rst and
intro_patterns.rst.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fleet.errors import InputFileError, UsageError
from fleet.inventory import expand_hostname_range, load_inventory, split_host_pattern

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def names(hosts) -> list[str]:
    return [h.name for h in hosts]


def load_error(path: Path) -> InputFileError:
    with pytest.raises(InputFileError) as info:
        load_inventory([path])
    return info.value


# ----------------------------------------------------------------- formats agree

YAML_INV = """
all:
  vars:
    tier: base
    ansible_user: fleet
  hosts:
    lone:
  children:
    pis:
      vars:
        tier: pi
      children:
        zero:
          hosts:
            zero-[a:c]:
          vars:
            tier: zero
        pi4:
          hosts:
            pi4-[01:03]:
            pi4-10:
              ansible_host: 127.0.0.5
              ansible_port: 2222
              enabled: true
    x86:
      hosts:
        nuc[1:5:2]:
"""

INI_INV = """
lone

[all:vars]
tier=base
ansible_user=fleet

[pis:children]
zero
pi4

[pis:vars]
tier=pi

[zero]
zero-[a:c]

[zero:vars]
tier=zero

[pi4]
pi4-[01:03]
pi4-10 ansible_host=127.0.0.5 ansible_port=2222 enabled=True

[x86]
nuc[1:5:2]
"""


def test_yaml_and_ini_give_same_hosts_groups_and_vars(tmp_path):
    y = load_inventory([write(tmp_path / "y" / "hosts.yml", YAML_INV)])
    i = load_inventory([write(tmp_path / "i" / "hosts.ini", INI_INV)])
    expected_hosts = ["lone", "zero-a", "zero-b", "zero-c", "pi4-01", "pi4-02", "pi4-03", "pi4-10", "nuc1", "nuc3", "nuc5"]
    assert list(y.hosts) == expected_hosts
    assert sorted(i.hosts) == sorted(expected_hosts)
    assert set(y.groups) == set(i.groups) == {"all", "ungrouped", "pis", "zero", "pi4", "x86"}
    for name in expected_hosts:
        assert dict(y.hosts[name].vars) == dict(i.hosts[name].vars), name
        assert y.hosts[name].groups == i.hosts[name].groups, name
    pi = y.hosts["pi4-10"]
    assert pi.vars == {"tier": "pi", "ansible_user": "fleet", "ansible_host": "127.0.0.5", "ansible_port": 2222, "enabled": True}
    assert _conn(pi) == ("127.0.0.5", 2222, "fleet")
    assert pi.groups == ("all", "pis", "pi4")
    assert y.hosts["zero-b"].vars["tier"] == "zero"  # child group beats parent
    assert _conn(y.hosts["nuc3"])[:2] == ("nuc3", 22)
    # implicit groups: 'lone' is only in all -> ungrouped
    assert y.hosts["lone"].groups == ("all", "ungrouped") == i.hosts["lone"].groups
    for inv in (y, i):
        assert inv.groups["pis"].depth == 1 and inv.groups["zero"].depth == 2
        assert inv.group_hosts("pis") == [n for n in inv.hosts if n.startswith(("zero", "pi4"))]
        assert inv.groups["ungrouped"].hosts == ("lone",)


def test_example_inventories_in_repo_agree():
    y = load_inventory([REPO / "inventory" / "example.yaml"])
    i = load_inventory([REPO / "inventory" / "example.ini"])
    assert list(y.hosts) == list(i.hosts)
    assert {n: dict(h.vars) for n, h in y.hosts.items()} == {n: dict(h.vars) for n, h in i.hosts.items()}
    assert y.hosts["gw1"].vars["ansible_port"] == 2200  # host_vars/gw1.json beats the inline var
    assert y.hosts["zero-a"].vars["ansible_become"] is True  # group_vars/pis/ directory
    assert not y.warnings and not i.warnings


def test_yaml_top_level_groups_null_hosts_and_string_sections(tmp_path):
    inv = load_inventory([write(tmp_path / "h.yaml", """
        web:
          hosts:
            w1:
            w2: {}
        db:
          hosts: d1          # a bare string is a one-host mapping (yaml.py)
        empty:
        """)])
    assert list(inv.hosts) == ["w1", "w2", "d1"]
    assert inv.groups["empty"].hosts == () and inv.groups["empty"].parents == ("all",)
    assert inv.hosts["d1"].groups == ("all", "db")


def test_ini_value_parsing_follows_ansible_literal_eval(tmp_path):
    inv = load_inventory([write(tmp_path / "h", """
        # comment
        ; also a comment
        [g]
        h1 a=1 b=True c=true d="1" e='two words' f=[1,2] g=x=y h=1.5 # trailing comment
        [g:vars]
        q="quoted"
        n = 42
        s = yes
        """)])
    v = inv.hosts["h1"].vars
    # shlex removes the quotes first, so d="1" is the int 1, as in Ansible
    assert (v["a"], v["b"], v["c"], v["d"], v["e"], v["f"], v["g"], v["h"]) == (1, True, "true", 1, "two words", [1, 2], "x=y", 1.5)
    # [g:vars] lines are not shlex-split: quotes make a string literal
    assert (v["q"], v["n"], v["s"]) == ("quoted", 42, "yes")


def test_ini_host_port_and_ipv6(tmp_path):
    inv = load_inventory([write(tmp_path / "h.ini", """
        [g]
        web:2201
        [::1]:2202
        fe80::1
        127.0.0.1:2203 ansible_user=me
        """)])
    assert list(inv.hosts) == ["web", "::1", "fe80::1", "127.0.0.1"]
    assert [h.vars.get("ansible_port") for h in inv.hosts.values()] == [2201, 2202, None, 2203]
    assert _conn(inv.hosts["127.0.0.1"]) == ("127.0.0.1", 2203, "me")


def test_old_spelling_aliases(tmp_path):
    inv = load_inventory([write(tmp_path / "h.ini", """
        a ansible_ssh_host=127.0.0.7 ansible_ssh_port=2022 ansible_ssh_user=old
        """)])
    h = inv.hosts["a"]
    # the inventory keeps what was written; the SSH target reads the old spellings as
    # Ansible's ssh plugin does (the last of its listed vars wins: the old one)
    assert dict(h.vars) == {"ansible_ssh_host": "127.0.0.7", "ansible_ssh_port": 2022, "ansible_ssh_user": "old"}
    assert _conn(h) == ("127.0.0.7", 2022, "old")
    both = load_inventory([write(tmp_path / "b.ini", "b ansible_host=10.0.0.1 ansible_ssh_host=127.0.0.8\n")])
    assert _conn(both.hosts["b"])[0] == "127.0.0.8"


def test_non_integer_port_is_an_error_naming_the_host(tmp_path):
    path = write(tmp_path / "h.yml", "all:\n  hosts:\n    a:\n      ansible_port: twenty\n")
    err = load_error(path)
    assert "'a'" in str(err) and "ansible_port" in str(err) and str(err).startswith(str(path))


# ------------------------------------------------------------------------ ranges


def test_ranges():
    assert expand_hostname_range("pi[01:03]") == ["pi01", "pi02", "pi03"]
    assert expand_hostname_range("pi[8:10]") == ["pi8", "pi9", "pi10"]
    assert expand_hostname_range("pi[008:010]") == ["pi008", "pi009", "pi010"]
    assert expand_hostname_range("node-[a:c].lab") == ["node-a.lab", "node-b.lab", "node-c.lab"]
    assert expand_hostname_range("h[1:10:3]") == ["h1", "h4", "h7", "h10"]
    assert expand_hostname_range("h[a:g:3]") == ["ha", "hd", "hg"]
    assert expand_hostname_range("r[1:2]c[a:b]") == ["r1ca", "r1cb", "r2ca", "r2cb"]
    assert expand_hostname_range("h[:2]") == ["h0", "h1", "h2"]
    for bad in ("pi[05:01]", "pi[01:5]", "pi[c:a]", "pi[1]", "pi[1:]", "pi[1:3:0]", "pi[a:5]", "pi[1:2"):
        with pytest.raises(ValueError):
            expand_hostname_range(bad)


def test_bad_range_in_files_names_the_line(tmp_path):
    err = load_error(write(tmp_path / "h.ini", "[g]\nok1\npi[05:01]\n"))
    assert err.line == 3 and "begin <= end" in str(err)
    assert str(err).startswith(f"{tmp_path / 'h.ini'}:3: ")
    err = load_error(write(tmp_path / "h.yml", "g:\n  hosts:\n    ok:\n    pi[01:5]:\n"))
    assert err.line == 4 and "equal length" in str(err)


# ------------------------------------------------------------ group_vars/host_vars


def test_group_and_host_vars_files_and_directories(tmp_path):
    inv_path = write(tmp_path / "hosts.ini", """
        [all:vars]
        a_inline=1
        from=all-inline
        [parent:children]
        child
        [parent:vars]
        from=parent-inline
        [child]
        h1 from=host-inline
        h2
        """)
    write(tmp_path / "group_vars" / "all.yml", "from: all-file\nall_file: true\n")
    write(tmp_path / "group_vars" / "parent.yaml", "parent_file: 1\nlayer: parent\n")
    # directory form, files merged in sorted order; hidden, backup and .txt files ignored
    write(tmp_path / "group_vars" / "child" / "10-a.yml", "layer: child-a\nchild_a: 1\n")
    write(tmp_path / "group_vars" / "child" / "20-b.json", '{"layer": "child-b"}')
    write(tmp_path / "group_vars" / "child" / "sub" / "x", "deep: yes\n")
    write(tmp_path / "group_vars" / "child" / ".hidden.yml", "layer: hidden\n")
    write(tmp_path / "group_vars" / "child" / "30-c.yml~", "layer: backup\n")
    write(tmp_path / "group_vars" / "child" / "notes.txt", "layer: text\n")
    write(tmp_path / "host_vars" / "h1", "from: host-file\n")  # no extension
    write(tmp_path / "host_vars" / "h2.yml", "")  # empty files are ignored
    write(tmp_path / "host_vars" / "unknown.yml", "x: 1\n")  # no such host: ignored
    inv = load_inventory([inv_path])
    h1, h2 = inv.hosts["h1"].vars, inv.hosts["h2"].vars
    assert h1["from"] == "host-file"
    # group_vars/all beats every inline group var (Ansible's VARIABLE_PRECEDENCE)
    assert h2["from"] == "all-file"
    assert h2["layer"] == "child-b" and h2["child_a"] == 1 and h2["deep"] is True
    assert h2["parent_file"] == 1 and h2["a_inline"] == 1 and h2["all_file"] is True
    assert inv.groups["child"].vars["layer"] == "child-b"


def test_first_of_name_yml_yaml_json_wins(tmp_path):
    inv_path = write(tmp_path / "hosts.yml", "g:\n  hosts:\n    h:\n")
    write(tmp_path / "group_vars" / "g.yaml", "v: yaml\n")
    write(tmp_path / "group_vars" / "g.json", '{"v": "json"}')
    assert load_inventory([inv_path]).hosts["h"].vars["v"] == "yaml"
    write(tmp_path / "group_vars" / "g.yml", "v: yml\n")
    assert load_inventory([inv_path]).hosts["h"].vars["v"] == "yml"


def test_bad_vars_file_names_file_and_line(tmp_path):
    inv_path = write(tmp_path / "hosts.yml", "g:\n  hosts:\n    h:\n")
    bad = write(tmp_path / "group_vars" / "g.yml", "a: 1\nb: [1, 2\nc: 3\n")
    err = load_error(inv_path)
    assert err.path == str(bad) and err.line == 3
    bad.write_text("# a list is not vars\n- a\n- b\n")
    err = load_error(inv_path)
    assert err.path == str(bad) and err.line == 2 and "mapping" in err.reason


# --------------------------------------------------------------------- precedence


def test_inheritance_order_depth_priority_and_name(tmp_path):
    inv = load_inventory([write(tmp_path / "h.yml", """
        all:
          vars: {v: all, only_all: 1}
          children:
            top:
              vars: {v: top}
              children:
                mid:
                  vars: {v: mid}
                  children:
                    leaf:
                      vars: {v: leaf}
                      hosts:
                        h1:
                        h2: {v: host}
            b_side:
              vars: {w: b_side}
              hosts: {h1: , h3: }
            a_side:
              vars: {w: a_side}
              hosts: {h1: , h3: }
            prio:
              vars: {w: prio, ansible_group_priority: 10}
              hosts: {h3: }
        """)])
    h1, h2, h3 = (inv.hosts[n] for n in ("h1", "h2", "h3"))
    assert h1.vars["v"] == "leaf" and h2.vars["v"] == "host" and h1.vars["only_all"] == 1
    # same depth: merged alphabetically, so b_side beats a_side
    assert h1.vars["w"] == "b_side"
    # ansible_group_priority 10 beats the default 1 at the same depth
    assert h3.vars["w"] == "prio"
    assert h1.groups == ("all", "a_side", "b_side", "top", "mid", "leaf")
    assert inv.groups["leaf"].depth == 3 and inv.groups["prio"].priority == 10


def test_child_group_declared_before_and_after_parent_ini(tmp_path):
    inv = load_inventory([write(tmp_path / "h.ini", """
        [grand:children]
        parent
        [parent:children]
        kid
        [kid]
        k1
        [parent:vars]
        x=parent
        [grand:vars]
        x=grand
        y=grand
        """)])
    assert inv.hosts["k1"].groups == ("all", "grand", "parent", "kid")
    assert (inv.hosts["k1"].vars["x"], inv.hosts["k1"].vars["y"]) == ("parent", "grand")


def test_multiple_sources_merge(tmp_path):
    a = write(tmp_path / "a" / "hosts.ini", "[pis]\np1 x=a\np2\n")
    b = write(tmp_path / "b" / "hosts.yml", "pis:\n  hosts:\n    p2: {x: b}\n    p3:\nx86:\n  hosts:\n    n1:\n")
    write(tmp_path / "a" / "group_vars" / "pis.yml", "src: a\n")
    write(tmp_path / "b" / "group_vars" / "pis.yml", "src: b\n")
    inv = load_inventory([a, b])
    assert list(inv.hosts) == ["p1", "p2", "p3", "n1"]
    assert inv.hosts["p2"].vars["x"] == "b" and inv.hosts["p1"].vars["x"] == "a"
    assert inv.hosts["p1"].vars["src"] == "b"  # later -i source's group_vars win
    assert inv.hosts["p1"].source == str(a) and inv.hosts["p3"].source == str(b)
    assert inv.group_hosts("pis") == ["p1", "p2", "p3"]


def test_directory_inventory(tmp_path):
    d = tmp_path / "inv"
    write(d / "01-pis.ini", "[pis]\np1\n")
    write(d / "02-x86.yml", "x86:\n  hosts:\n    n1:\n")
    write(d / "sub" / "more", "[pis]\np2\n")
    write(d / ".hidden", "[pis]\nhidden\n")
    write(d / "hosts.bak", "[pis]\nbackup\n")
    write(d / "README.md", "# not an inventory\n")
    write(d / "group_vars" / "pis.yml", "kind: pi\n")  # loaded as vars, not as inventory
    write(d / "host_vars" / "n1.yml", "kind: nuc\n")
    inv = load_inventory([d])
    assert list(inv.hosts) == ["p1", "n1", "p2"]
    assert inv.hosts["p2"].vars["kind"] == "pi" and inv.hosts["n1"].vars["kind"] == "nuc"


def test_missing_path_and_no_path(tmp_path):
    err = load_error(tmp_path / "nope.ini")
    assert str(err).startswith(str(tmp_path / "nope.ini"))
    with pytest.raises(UsageError):
        load_inventory([])


# ----------------------------------------------------------------------- patterns


@pytest.fixture()
def fleet_inv(tmp_path):
    return load_inventory([write(tmp_path / "h.yml", YAML_INV)])


@pytest.mark.parametrize(
    "limit, expected",
    [
        # Ansible's order (ansible-core 2.19 `ansible all --list-hosts`): hosts directly in
        # 'all', then level by level: ungrouped, pis and x86 (nuc*), then zero and pi4.
        (None, ["lone", "nuc1", "nuc3", "nuc5", "zero-a", "zero-b", "zero-c", "pi4-01", "pi4-02", "pi4-03", "pi4-10"]),
        ("all", ["lone", "nuc1", "nuc3", "nuc5", "zero-a", "zero-b", "zero-c", "pi4-01", "pi4-02", "pi4-03", "pi4-10"]),
        ("*", ["lone", "nuc1", "nuc3", "nuc5", "zero-a", "zero-b", "zero-c", "pi4-01", "pi4-02", "pi4-03", "pi4-10"]),
        ("pi4-02", ["pi4-02"]),
        ("zero", ["zero-a", "zero-b", "zero-c"]),
        ("pis", ["zero-a", "zero-b", "zero-c", "pi4-01", "pi4-02", "pi4-03", "pi4-10"]),
        ("ungrouped", ["lone"]),
        ("nuc*", ["nuc1", "nuc3", "nuc5"]),
        ("pi4-0?", ["pi4-01", "pi4-02", "pi4-03"]),
        ("~zero-[ab]", ["zero-a", "zero-b"]),
        ("~(nuc|pi4-0)1", ["nuc1", "pi4-01"]),
        ("zero:x86", ["nuc1", "nuc3", "nuc5", "zero-a", "zero-b", "zero-c"]),
        ("zero,x86", ["nuc1", "nuc3", "nuc5", "zero-a", "zero-b", "zero-c"]),
        ("x86, zero-a", ["nuc1", "nuc3", "nuc5", "zero-a"]),  # the order of 'all', not of the pattern
        ("pis:&pi4", ["pi4-01", "pi4-02", "pi4-03", "pi4-10"]),
        ("pis:!zero", ["pi4-01", "pi4-02", "pi4-03", "pi4-10"]),
        ("pis,!zero,!pi4-10", ["pi4-01", "pi4-02", "pi4-03"]),
        # order-independent: exclusions after intersections after unions
        ("!pi4-01:&pi4:pis", ["pi4-02", "pi4-03", "pi4-10"]),
        ("!zero", ["lone", "nuc1", "nuc3", "nuc5", "pi4-01", "pi4-02", "pi4-03", "pi4-10"]),  # implied 'all'
        ("&x86", ["nuc1", "nuc3", "nuc5"]),
        ("pis:&~.*-0[12]", ["pi4-01", "pi4-02"]),
        ("pi4[0]", ["pi4-01"]),
        ("pi4[1:2]", ["pi4-02", "pi4-03"]),
        ("pi4[-1]", ["pi4-10"]),
    ],
)
def test_select_patterns(fleet_inv, limit, expected):
    assert names(fleet_inv.select(limit)) == expected


def test_split_host_pattern_keeps_addresses_whole():
    assert split_host_pattern("fe80::1") == ["fe80::1"]
    assert split_host_pattern("[::1]:22") == ["[::1]:22"]
    assert split_host_pattern("web:2222") == ["web:2222"]
    assert split_host_pattern("pi[01:09]") == ["pi[01:09]"]
    assert split_host_pattern("a:b[1:2]:!c") == ["a", "b[1:2]", "!c"]
    assert split_host_pattern(" a , b ,,") == ["a", "b"]


def test_select_ipv6_host(tmp_path):
    inv = load_inventory([write(tmp_path / "h.ini", "[v6]\nfe80::1\n2001:db8::2\n")])
    assert names(inv.select("fe80::1")) == ["fe80::1"]
    assert names(inv.select("v6,!2001:db8::2")) == ["fe80::1"]


@pytest.mark.parametrize(
    "limit, fragment",
    [
        ("nosuch", "'nosuch' matches no host"),
        ("pis:!zeroo", "'zeroo' matches no host"),  # a typo in an exclusion must not widen a deploy
        ("pis:&x86", "selects no hosts"),
        ("~[", "malformed"),
        ("pis:~", "malformed"),
        ("pis:[x", "malformed"),
        (",,", "malformed"),
        ("pis:!", "malformed"),
        ("pi4[9]", "subscripted"),
        ("web:2222", "matches no host"),
    ],
)
def test_select_errors(fleet_inv, limit, fragment):
    with pytest.raises(UsageError) as info:
        fleet_inv.select(limit)
    assert fragment in str(info.value)


# -------------------------------------------------------------- malformed files


@pytest.mark.parametrize(
    "name, text, line, fragment",
    [
        ("bad.yml", "all:\n  children:\n    pis:\n      hosts: [a, b\n", 5, "invalid YAML"),
        ("bad.yml", "all:\n  hosts:\n   a: 1\n  b: 2\n c\n", 5, "invalid YAML"),
        ("list.yml", "all:\n  children:\n    pis:\n      hosts:\n        - pi1\n        - pi2\n", 5, "'hosts' of group 'pis' must be a mapping"),
        ("str.yml", "all:\n  children:\n    pis: just-a-string\n", 3, "group 'pis' must be a mapping"),
        ("hostvars.yml", "g:\n  hosts:\n    h1:\n    h2: [1]\n", 4, "variables of host 'h2'"),
        ("vars.yml", "g:\n  vars:\n    - a\n", 3, "'vars' of group 'g'"),
        ("top.yml", "# comment\n- all\n", 2, "mapping of group names"),
        ("empty.yml", "# nothing\n", 1, "empty YAML inventory"),
        ("plugin.yml", "\nplugin: aws_ec2\n", 2, "plugin configuration"),
        ("vault.yml", "g:\n  vars:\n    secret: !vault |\n      $ANSIBLE_VAULT;1.1;AES256\n", 3, "!vault"),
        ("loop.yml", "a:\n  children:\n    b:\n      children:\n        a:\n", 3, "loop"),
        ("prio.yml", "g:\n  vars:\n    ansible_group_priority: high\n", 3, "ansible_group_priority"),
        ("bad.ini", "[g]\nh1\nh2 novalue\n", 3, "expected key=value host variable"),
        ("bad.ini", "[g:foo]\nh1\n", 1, "unknown type 'foo'"),
        ("bad.ini", "[g]\nh1\n\n[bad group]\n", 4, "invalid section header"),
        ("bad.ini", "[g:vars]\nx=1\nnot an assignment\n[g]\n", 3, "expected key=value in [g:vars]"),
        ("bad.ini", "[g]\nh1 x='unclosed\n", 2, "cannot parse host definition"),
        ("bad.ini", "[p:children]\nc1\nc 2\n[c1]\n", 3, "expected a group name"),
        ("bad.ini", "[g]\nh1\n[p:children]\ng\ntypo\n", 5, "[p:children] includes undefined group 'typo'"),
        ("bad.ini", "[h]\nh1\n\n[nope:vars]\nx=1\n", 4, "[nope:vars] is for group 'nope'"),
        ("bad.ini", "[g]\nweb:\n", 2, "trailing ':'"),
        ("bad.ini", "[a:children]\nb\n[b:children]\na\n", 4, "loop"),
        ("noext", "[g]\nh1 novalue\n", 2, "expected key=value host variable"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, name, text, line, fragment):
    path = tmp_path / name
    path.write_text(text)
    err = load_error(path)
    assert (err.path, err.line) == (str(path), line), str(err)
    assert fragment in err.reason
    # what the CLI prints: "FILE:LINE: message", one line, no traceback
    assert str(err).startswith(f"{path}:{line}: ")
    assert "Traceback" not in str(err) and "\n" not in str(err)


def test_ini_undefined_child_declared_later_is_fine(tmp_path):
    inv = load_inventory([write(tmp_path / "h.ini", "[p:children]\nc\n[p:vars]\nx=1\n[c]\nh\n")])
    assert inv.hosts["h"].groups == ("all", "p", "c") and inv.hosts["h"].vars["x"] == 1


def test_yaml_unexpected_group_key_is_a_warning(tmp_path):
    path = write(tmp_path / "h.yml", "g:\n  hosts:\n    h:\n  ansible_user:\n    pi: 1\n")
    inv = load_inventory([path])
    assert inv.warnings == [f"{path}:4: skipping unexpected key 'ansible_user' in group 'g'; only 'vars', 'children' and 'hosts' are valid"]


def test_json_inventory_with_tabs_and_yaml_merge_keys(tmp_path):
    j = write(tmp_path / "j" / "hosts.json", '{\n\t"pis": {\n\t\t"hosts": {"p1": {"ansible_port": "2022"}},\n\t\t"vars": {"a": 1}\n\t}\n}\n')
    inv = load_inventory([j])
    assert dict(inv.hosts["p1"].vars) == {"a": 1, "ansible_port": 2022}
    j.write_text('{\n\t"pis": {\n\t\t"hosts": [1,\n\t}\n}\n')
    err = load_error(j)
    assert err.line == 4 and "invalid JSON" in err.reason
    m = write(tmp_path / "m" / "hosts.yml", """
        x: &base
          vars: {a: 1}
          hosts: {h1: }
        y:
          <<: *base
          hosts: {h2: }
        """)
    inv = load_inventory([m])
    assert inv.hosts["h1"].groups == ("all", "x") and inv.hosts["h2"].groups == ("all", "y")
    assert inv.hosts["h2"].vars["a"] == 1


def test_non_utf8_file_names_line(tmp_path):
    path = tmp_path / "h.ini"
    path.write_bytes(b"[g]\nok\nh\xff\n")
    err = load_error(path)
    assert err.line == 3 and "UTF-8" in err.reason


def _conn(host):
    """(address, port, user) of ``host`` as fleet connects to it: the one place that reads
    connection variables is fleet.ssh.target_for."""
    from fleet.ssh import SSHSettings, target_for

    t = target_for(host, SSHSettings(ssh_config=None))
    return t.hostname, t.port, t.user


def test_a_templated_connection_variable_is_an_error_naming_host_and_variable(tmp_path):
    from fleet.errors import UsageError
    from fleet.ssh import SSHSettings, target_for

    inv = load_inventory([write(tmp_path / "h.yaml", """
        all:
          vars: {ansible_password: "{{ vault_pw }}"}
          hosts:
            pi: {ansible_host: "{{ site_prefix }}.11", other: "{{ unused }}"}
            ok: {ansible_host: 127.0.0.9}
        """)])
    with pytest.raises(UsageError) as ei:
        target_for(inv.hosts["pi"], SSHSettings(ssh_config=None))
    assert "'pi'" in str(ei.value) and "ansible_host" in str(ei.value) and "Jinja" in str(ei.value)
    assert "h.yaml" in str(ei.value)
    # an unused templated value, or a password fleet only warns about, is fine
    assert target_for(inv.hosts["ok"], SSHSettings(ssh_config=None)).hostname == "127.0.0.9"
