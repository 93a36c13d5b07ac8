"""Inventory scripts, TOML inventories, ``--limit @FILE``, ``ansible_group_priority`` and
Jinja values (issue 9 items 18-20, issue 12).

References: ansible-core ``plugins/inventory/script.py`` and ``toml.py``,
``InventoryManager.subset`` (``@FILE``), ``Group.set_variable``
(``ansible_group_priority``), and the templating of host variables.
"""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest

from fleet.errors import InputFileError, UsageError
from fleet.inventory import UnsafeText, is_template, load_inventory
from fleet.inventory import script as script_mod

PY = sys.executable


def write(path: Path, text: str, executable: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    if executable:
        path.chmod(0o755)
    return path


def script(path: Path, body: str) -> Path:
    return write(path, f"#!{PY}\nimport json, sys, time, os\n" + textwrap.dedent(body).lstrip("\n"), executable=True)


# ------------------------------------------------------------- inventory scripts


def test_script_with_meta_hostvars(tmp_path):
    inv_path = script(tmp_path / "inv.py", """
        assert sys.argv[1:] == ["--list"], sys.argv
        assert sys.stdin.read() == ""  # stdin is closed
        print(json.dumps({
            "pis": {"hosts": ["pi-1", "pi-2"], "vars": {"arch": "arm", "ansible_group_priority": 5}, "children": ["zeros"]},
            "zeros": ["zero-1"],
            "_meta": {"hostvars": {"pi-1": {"ansible_host": "127.0.0.11", "ansible_port": "2022"}}},
        }))
        """)
    inv = load_inventory([inv_path])
    assert list(inv.hosts) == ["pi-1", "pi-2", "zero-1"]
    assert inv.hosts["pi-1"].vars == {"arch": "arm", "ansible_host": "127.0.0.11", "ansible_port": 2022}
    assert inv.hosts["zero-1"].groups == ("all", "pis", "zeros")
    assert inv.groups["pis"].priority == 5 and "ansible_group_priority" not in inv.groups["pis"].vars
    assert inv.hosts["pi-1"].var_sources["ansible_host"] == str(inv_path)


def test_script_without_meta_is_asked_per_host(tmp_path):
    log = tmp_path / "calls"
    inv_path = script(tmp_path / "inv", f"""
        with open({str(log)!r}, "a") as f:
            f.write(" ".join(sys.argv[1:]) + "\\n")
        if sys.argv[1] == "--list":
            print(json.dumps({{"web": {{"hosts": ["w1", "w2"]}}}}))
        else:
            print(json.dumps({{"w1": {{"ansible_host": "127.0.0.21"}}}}.get(sys.argv[2], {{}})))
        """)
    inv = load_inventory([inv_path])
    assert inv.hosts["w1"].vars == {"ansible_host": "127.0.0.21"} and inv.hosts["w2"].vars == {}
    assert log.read_text().splitlines() == ["--list", "--host w1", "--host w2"]


def test_failing_script_shows_its_stderr(tmp_path):
    inv_path = script(tmp_path / "inv.py", """
        sys.stderr.write("cannot reach the CMDB\\nat line 7\\n")
        sys.exit(3)
        """)
    with pytest.raises(InputFileError) as info:
        load_inventory([inv_path])
    err = str(info.value)
    assert err.startswith(f"{inv_path}: inventory script ({inv_path} --list) exited with status 3")
    assert "stderr: cannot reach the CMDB | at line 7" in err and "\n" not in err


@pytest.mark.parametrize(
    "output, fragment",
    [
        ("not json", "invalid JSON"),
        ('{"g": {"hosts": "h1"}}', "'g'.hosts must be a list of names"),
        ('{"g": {"vars": [1]}}', "'g'.vars must be an object"),
        ('{"g": {"children": "x"}}', "'g'.children must be a list"),
        ('{"_meta": {"hostvars": []}}', "'_meta' must be an object"),
        ('{"g": {"hosts": ["h"]}, "_meta": {"hostvars": {"h": 1}}}', "variables of host 'h' must be an object"),
        ("[1, 2]", "expected a JSON object of groups"),
        ('{"a": {"children": ["b"]}, "b": {"children": ["a"]}}', "loop"),
    ],
)
def test_script_output_of_the_wrong_shape(tmp_path, output, fragment):
    inv_path = script(tmp_path / "inv.py", f"print({output!r})")
    with pytest.raises(InputFileError) as info:
        load_inventory([inv_path])
    assert info.value.path == str(inv_path) and fragment in info.value.reason, str(info.value)


def test_script_time_and_output_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(script_mod, "SCRIPT_TIMEOUT", 1.0)
    slow = script(tmp_path / "slow.py", """
        os.system("sleep 30 &")  # a child holding stdout open is stopped too
        time.sleep(30)
        """)
    start = time.monotonic()
    with pytest.raises(InputFileError, match="did not finish within 1 s"):
        load_inventory([slow])
    assert time.monotonic() - start < 10
    monkeypatch.setattr(script_mod, "SCRIPT_MAX_OUTPUT", 100_000)
    chatty = script(tmp_path / "chatty.py", """
        while True:
            sys.stdout.write("x" * 65536)
        """)
    with pytest.raises(InputFileError, match="printed more than 100000 bytes"):
        load_inventory([chatty])
    assert time.monotonic() - start < 20


def test_executable_static_files_are_still_read_as_such(tmp_path):
    # Files on FAT media are all executable: only files that start like programs run.
    ini = write(tmp_path / "hosts", "[g]\nh1 x=1\n", executable=True)
    yml = write(tmp_path / "hosts.yml", "g:\n  hosts:\n    h2:\n", executable=True)
    inv = load_inventory([ini, yml])
    assert list(inv.hosts) == ["h1", "h2"]


def test_script_in_an_inventory_directory(tmp_path):
    d = tmp_path / "inv"
    write(d / "01-static.ini", "[pis]\np1\n")
    script(d / "02-dynamic.py", 'print(json.dumps({"pis": ["p2"], "_meta": {"hostvars": {}}}))')
    write(d / "group_vars" / "pis.yml", "arch: arm\n")
    inv = load_inventory([d])
    assert inv.group_hosts("pis") == ["p1", "p2"] and inv.hosts["p2"].vars == {"arch": "arm"}


# --------------------------------------------------------------------------- TOML


def test_toml_inventory(tmp_path):
    inv = load_inventory([write(tmp_path / "hosts.toml", """
        [all.vars]
        has_java = false

        [web]
        children = ["apache", "nginx"]
        vars = { http_port = 8080, myvar = 23 }

        [web.hosts]
        host1 = {}
        host2 = { ansible_port = 222 }

        [apache.hosts]
        "tomcat[1:2]" = { myvar = 34 }

        [nginx.hosts.jenkins1]

        [nginx.vars]
        has_java = true
        ansible_group_priority = 3
        """)])
    assert inv.group_hosts("web") == ["host1", "host2", "tomcat1", "tomcat2", "jenkins1"]
    assert inv.hosts["tomcat2"].vars == {"has_java": False, "http_port": 8080, "myvar": 34}
    assert inv.hosts["jenkins1"].vars["has_java"] is True and inv.hosts["host2"].vars["ansible_port"] == 222
    assert inv.groups["nginx"].priority == 3


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("[g.hosts\nh1 = {}\n", 1, "invalid TOML"),
        ("[g]\nhosts = {}\n\n[g.hosts.h1]\nx = 1\n", 4, "invalid TOML: Cannot declare"),
        ('[web]\nchildren = "apache"\n', 2, "'children' of group 'web' must be an array"),
        ("[web]\nvars = 3\n", 2, "'vars' of group 'web' must be a table"),
        ('[web]\nhosts = ["a"]\n', 2, "'hosts' of group 'web' must be a table"),
        ("[web.hosts]\na = 1\n", 1, "variables of host 'a' must be a table"),
        ('[web.hosts]\n"pi[5:1]" = {}\n', 1, "begin <= end"),
        ('[web.hosts]\n"h[0:99999999]" = {}\n', 1, "100000"),
        ('plugin = "aws_ec2"\n', None, "plugin configuration"),
        ("# nothing\n", None, "empty TOML inventory"),
        ("web = 1\n", None, "group 'web' must be a table"),
        ("[web.vars]\nansible_group_priority = nan\n", 1, "ansible_group_priority of group 'web' must be an integer"),
        ("[web.vars]\nansible_group_priority = inf\n", 1, "must be an integer"),
    ],
)
def test_malformed_toml_names_the_file(tmp_path, text, line, fragment):
    path = write(tmp_path / "hosts.toml", text)
    with pytest.raises(InputFileError) as info:
        load_inventory([path])
    assert (info.value.path, info.value.line) == (str(path), line), str(info.value)
    assert fragment in info.value.reason


# ------------------------------------------------------------------ --limit @FILE


@pytest.fixture()
def small(tmp_path):
    return load_inventory([write(tmp_path / "hosts.ini", "[g]\nh1\nh2\nh3\n[k]\nk1\n")])


def test_limit_file_relative_to_the_current_directory(small, tmp_path, monkeypatch):
    write(tmp_path / "run" / "site.retry", "h3\nh1\n\n  k1  \n")
    monkeypatch.chdir(tmp_path / "run")
    assert [h.name for h in small.select("@site.retry")] == ["h1", "h3", "k1"]
    assert [h.name for h in small.select("@site.retry,!k1")] == ["h1", "h3"]
    assert [h.name for h in small.select(f"@{tmp_path / 'run' / 'site.retry'}:&g")] == ["h1", "h3"]


def test_limit_file_errors_name_the_file(small, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputFileError) as info:
        small.select("@missing.retry")
    assert info.value.path == "missing.retry" and "limit file not found" in info.value.reason
    (tmp_path / "dir.retry").mkdir()
    with pytest.raises(InputFileError, match="directory"):
        small.select("@dir.retry")
    write(tmp_path / "empty.retry", "\n \n")
    with pytest.raises(InputFileError, match="names no hosts"):
        small.select("@empty.retry")  # Ansible would select every host
    write(tmp_path / "typo.retry", "h1\nh9\n")
    with pytest.raises(UsageError, match="'h9' matches no host"):
        small.select("@typo.retry")
    with pytest.raises(UsageError, match="malformed"):
        small.select("@")


def test_group_named_like_a_limit_file_is_refused(tmp_path, monkeypatch):
    inv = load_inventory([write(tmp_path / "hosts.ini", "[@OS]\nh1\n[other]\nh2\n")])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputFileError) as info:
        inv.select("@OS")  # as Ansible: '@OS' names a file, not the group
    assert info.value.path == "OS"
    assert [h.name for h in inv.select("other")] == ["h2"]


# ------------------------------------------------------- ansible_group_priority


def test_group_priority_orders_groups_and_is_not_a_variable(tmp_path):
    inv = load_inventory([write(tmp_path / "h.yml", """
        a_group:
          vars:
            testvar: a
            ansible_group_priority: 10
          hosts:
            h1:
        b_group:
          vars:
            testvar: b
          hosts:
            h1:
        """)])
    h1 = inv.hosts["h1"]
    assert h1.vars == {"testvar": "a"}  # a_group wins despite sorting first by name
    assert inv.groups["a_group"].priority == 10 and inv.groups["a_group"].vars == {"testvar": "a"}
    assert h1.groups == ("all", "b_group", "a_group")


def test_group_priority_in_group_vars_file_is_a_plain_variable(tmp_path):
    # Ansible reads the priority only from the inventory source itself.
    path = write(tmp_path / "hosts.ini", "[a]\nh1\n[b]\nh1\n")
    write(tmp_path / "group_vars" / "a.yml", "ansible_group_priority: 10\nv: a\n")
    write(tmp_path / "group_vars" / "b.yml", "v: b\n")
    h1 = load_inventory([path]).hosts["h1"]
    assert h1.vars == {"ansible_group_priority": 10, "v": "b"}


# ----------------------------------------------------------------- Jinja values


def test_templated_values_load_but_cannot_be_used(tmp_path):
    path = write(tmp_path / "hosts.yml", """
        all:
          vars:
            domain: lan
            unused: "{{ lookup('env', 'HOME') }}"
          hosts:
            pi1:
              ansible_host: "{{ inventory_hostname }}.{{ domain }}"
              ansible_user: pi
              tags: ["a", "{% if x %}b{% endif %}"]
              literal: !unsafe "{{ not a template }}"
        """)
    write(tmp_path / "host_vars" / "pi1.yml", "ansible_port: 22\nbecome_pass: '{# hidden #}'\n")
    pi1 = load_inventory([path]).hosts["pi1"]  # loading never fails on templates
    assert pi1.var("ansible_user") == "pi" and pi1.var("ansible_port") == 22
    assert pi1.var("missing") is None and pi1.var("missing", "dflt") == "dflt"
    literal = pi1.var("literal")
    assert literal == "{{ not a template }}" and isinstance(literal, UnsafeText)
    with pytest.raises(UsageError) as info:
        pi1.var("ansible_host")
    msg = str(info.value)
    assert "host 'pi1'" in msg and "ansible_host" in msg and f"set in {path}" in msg and "{{ inventory_hostname }}" in msg
    assert info.value.exit_code == 2
    with pytest.raises(UsageError, match=f"variable tags is a Jinja template \\(set in {path}\\)"):
        pi1.var("tags")
    with pytest.raises(UsageError, match=f"set in {tmp_path / 'host_vars' / 'pi1.yml'}"):
        pi1.var("become_pass")
    with pytest.raises(UsageError, match="variable unused"):
        pi1.var("unused")


def test_ini_and_group_vars_templates_name_their_file(tmp_path):
    path = write(tmp_path / "hosts.ini", "[pis]\npi1 ansible_host='{{ x }}'\n[pis:vars]\nansible_user={{ u }}\n")
    gv = write(tmp_path / "group_vars" / "all.yml", "ntp: '{{ ntp_server }}'\n")
    pi1 = load_inventory([path]).hosts["pi1"]
    with pytest.raises(UsageError, match=f"ansible_host is a Jinja template \\(set in {path}\\)"):
        pi1.var("ansible_host")
    with pytest.raises(UsageError, match=f"ansible_user is a Jinja template \\(set in {path}\\)"):
        pi1.var("ansible_user")
    with pytest.raises(UsageError, match=f"set in {gv}"):
        pi1.var("ntp")


def test_is_template():
    assert is_template("{{ x }}") and is_template("a {% if %}") and is_template({"k": ["{# c #}"]})
    assert not is_template("plain {x} }}") and not is_template(UnsafeText("{{ x }}")) and not is_template(42)
