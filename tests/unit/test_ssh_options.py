"""Option resolution (inventory variables, ssh(1) flags, ssh_config) without any sshd.

ssh config resolution is checked against OpenSSH's own answer (``ssh -G -F FILE HOST``
prints the resolved configuration and connects to nothing).
"""

from __future__ import annotations

import math
import shlex
import subprocess
from pathlib import Path

import pytest

from fleet.errors import InputFileError, UsageError
from fleet.inventory import Host
from fleet.ssh import DEFAULT_ALGORITHMS, SSHSettings, target_for
from fleet.ssh._util import default_user
from fleet.ssh.algorithms import assemble
from fleet.ssh.config import apply_config
from fleet.ssh.options import Options


def test_inventory_args_parsing(ssh_home, capsys):
    st = SSHSettings(ssh_config=Path("/nonexistent"), known_hosts=(Path("/kh"),))
    host = Host(
        name="d",
        vars={
            "ansible_host": "10.1.2.3",
            "ansible_ssh_common_args": "-C -o ControlMaster=auto -p 2200 -l pi "
            "-o 'UserKnownHostsFile=/a /b' -oStrictHostKeyChecking=accept-new "
            "-J jumper@bastion:2022,[::1]:23 -o NoSuchOption=1",
            "ansible_become": "yes",
        },
    )
    t = target_for(host, st)
    assert (t.hostname, t.port, t.user) == ("10.1.2.3", 2200, "pi")
    assert t.known_hosts_files == (Path("/a"), Path("/b"))
    assert t.strict_host_key_checking == "accept-new"
    assert [(h.user, h.hostname, h.port) for h in t.proxy_jump] == [
        ("jumper", "bastion", 2022),
        ("pi", "::1", 23),
    ]
    assert t.become is True
    assert "nosuchoption" in capsys.readouterr().err.lower()  # warned, not fatal

    t = target_for(Host(name="d", vars={"ansible_become": "False"}), st)
    assert (t.hostname, t.port, t.become, t.known_hosts_files) == ("d", 22, False, (Path("/kh"),))
    with pytest.raises(UsageError, match="d: .*port"):
        target_for(Host(name="d", vars={"ansible_ssh_common_args": "-p abc"}), st)


# ------------------------------------------------------------- ssh_config vs ssh -G

CONFIG = """\
# fleet test config
Host [ab]c
    Port 1001
Host alias
    HostName %h.example
    User=aliasuser
    IdentityFile "/keys/with space"
    IdentityFile /keys/second
Host *.lan !bad.lan
    Port 1002
    ProxyJump jumper@bastion:2022
    ProxyCommand nc %h %p
Host bad.lan
    User baduser
Match host alias.example,other.example user aliasuser
    Port 1003
Match originalhost CASE.example
    Port 1004
Match !localuser nosuchlocaluser host pc-*
    User matched-localuser
Host px
    ProxyCommand ssh -W %h:%p jump
    ProxyJump ignored@jump
Host final
    HostName resolved.example
Match final host resolved.example
    Port 1005
Host resolved.example
    User from-final-pass
Match all
Include {include}
Host * !final
    Port 2222
    User fallback
    UserKnownHostsFile /kh/one /kh/two
"""

INCLUDED = """\
Host inc
    HostName included.example
    Port 1006
"""

HOSTS = ["ac", "[ab]c", "alias", "pi.lan", "bad.lan", "case.example", "pc-1", "px", "final", "inc", "other",
         "Alias"]
KEYS = ("hostname", "port", "user", "proxyjump", "proxycommand", "userknownhostsfile")


def ssh_G(cfg: Path, host: str) -> dict[str, str]:
    out = subprocess.run(["ssh", "-G", "-F", str(cfg), host], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, check=True).stdout
    got: dict[str, list[str]] = {}
    for line in out.splitlines():
        k, _, v = line.partition(" ")
        got.setdefault(k, []).append(v)
    return {k: got[k][0] for k in KEYS if k in got} | {"identityfile": got.get("identityfile", [])}


def fleet_G(cfg: Path, host: str) -> dict[str, str]:
    opts = Options()
    apply_config(cfg, opts, host_arg=host, device="t")
    v = dict(opts.values)
    out = {
        "hostname": (v.get("hostname") or host).replace("%h", host).lower(),
        "port": v.get("port", "22"),
        "user": v.get("user", default_user()),
    }
    for k in ("proxyjump", "proxycommand"):
        if k in v:
            out[k] = v[k]
    if "userknownhostsfile" in v:
        out["userknownhostsfile"] = " ".join(shlex.split(v["userknownhostsfile"]))
    ssh_default = ["~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ecdsa_sk", "~/.ssh/id_ed25519",
                   "~/.ssh/id_ed25519_sk", "~/.ssh/id_xmss", "~/.ssh/id_dsa"]
    return out | {"identityfile": opts.identity or ssh_default}


def test_config_resolution_equals_ssh_G(ssh_home, tmp_path):
    inc = tmp_path / "included.conf"
    inc.write_text(INCLUDED)
    cfg = tmp_path / "config"
    cfg.write_text(CONFIG.format(include=inc))
    fleet = {h: fleet_G(cfg, h) for h in HOSTS}
    openssh = {h: ssh_G(cfg, h) for h in HOSTS}
    diff = {h: (openssh[h], fleet[h]) for h in HOSTS if openssh[h] != fleet[h]}
    assert diff == {}, diff
    # the table exercises what it claims to
    assert fleet["[ab]c"]["port"] == "1001" and fleet["ac"]["port"] == "2222"  # brackets are literal
    assert fleet["alias"]["port"] == "1003" and fleet["alias"]["identityfile"] == ["/keys/with space", "/keys/second"]
    assert fleet["pi.lan"]["proxyjump"] == "jumper@bastion:2022" and "proxycommand" not in fleet["pi.lan"]
    assert fleet["px"]["proxycommand"] == "ssh -W %h:%p jump" and "proxyjump" not in fleet["px"]
    assert fleet["bad.lan"]["user"] == "baduser" and fleet["bad.lan"]["port"] == "2222"
    assert fleet["final"]["port"] == "1005" and fleet["final"]["user"] == "from-final-pass"
    assert fleet["inc"]["port"] == "1006" and fleet["case.example"]["port"] == "1004"


def test_match_exec_refused_with_file_and_line(ssh_home, tmp_path):
    marker = tmp_path / "ran"
    cfg = tmp_path / "config"
    cfg.write_text(f"Host other\n    Port 1\nMatch host nothere exec \"touch {marker}\"\n    Port 2\n"
                   f"Match host dev* exec \"touch {marker}\"\n    Port 3\n")
    st = SSHSettings(ssh_config=cfg)
    # line 3 is skipped (its host criterion fails first, ssh(1) would not run it either)
    t = target_for(Host(name="x", vars={"ansible_host": "other"}), st)
    assert t.port == 1
    with pytest.raises(InputFileError) as ei:
        target_for(Host(name="dev1", vars={}), st)
    assert ei.value.exit_code == 2
    assert str(ei.value).startswith(f"{cfg}:5: 'Match exec touch {marker}'") and "dev1" in str(ei.value)
    # and named through ansible_ssh_common_args -F, the same
    with pytest.raises(InputFileError, match=f"{cfg}:5"):
        target_for(Host(name="dev2", vars={"ansible_ssh_common_args": f"-F {cfg}"}), SSHSettings())
    assert not marker.exists()


def test_ignored_config_options_warn_once(ssh_home, tmp_path, capsys):
    cfg = tmp_path / "config"
    cfg.write_text("Host *\n    CertificateFile ~/.ssh/cert.pub\n    ServerAliveInterval 5\n")
    st = SSHSettings(ssh_config=cfg)
    for n in range(3):
        target_for(Host(name=f"d{n}", vars={}), st)
    err = capsys.readouterr().err
    assert err.count("'certificatefile'") == 1 and f"{cfg}:2" in err
    assert "serveraliveinterval" not in err.lower()  # harmless: silent


def test_bad_config_line_is_a_usage_error(ssh_home, tmp_path):
    cfg = tmp_path / "config"
    cfg.write_text("Host a\n    User 'unterminated\n")
    with pytest.raises(InputFileError, match=f"{cfg}:2: invalid quotes"):
        target_for(Host(name="a", vars={}), SSHSettings(ssh_config=cfg))


# ---------------------------------------------------------------- ProxyCommand

def test_proxy_command_tokens_and_precedence(ssh_home, tmp_path):
    cfg = tmp_path / "config"
    cfg.write_text("Host dev\n    HostName Dev.Internal\n    User cfguser\n    ProxyCommand ssh -W %h:%p -l %r %n 100%%\n")
    st = SSHSettings(ssh_config=cfg)
    t = target_for(Host(name="dev", vars={"ansible_port": 2200}), st)
    # %p is the port ssh(1) ends up with (the inventory's), %h the HostName, %n the alias
    assert t.proxy_command == "ssh -W dev.internal:2200 -l cfguser dev 100%"
    assert t.proxy_jump == () and t.known_hosts_name == "[Dev.Internal]:2200"

    # from the inventory; the first of ProxyJump/ProxyCommand wins, "none" included
    t = target_for(Host(name="x", vars={"ansible_ssh_common_args": "-o 'ProxyCommand=nc %h %p' -J j@b"}), st)
    assert (t.proxy_command, t.proxy_jump) == ("nc x 22", ())
    t = target_for(Host(name="x", vars={"ansible_ssh_common_args": "-J j@b -o 'ProxyCommand=nc %h %p'"}), st)
    assert t.proxy_command is None and [h.hostname for h in t.proxy_jump] == ["b"]
    t = target_for(Host(name="dev", vars={"ansible_ssh_common_args": "-o ProxyCommand=none"}), st)
    assert (t.proxy_command, t.proxy_jump) == (None, ())
    with pytest.raises(UsageError, match="unknown token %z"):
        target_for(Host(name="x", vars={"ansible_ssh_common_args": "-o 'ProxyCommand=nc %z'"}), st)


# ---------------------------------------------------------------- algorithms

def test_default_algorithms_are_openssh_92s():
    assert "aes128-cbc" not in DEFAULT_ALGORITHMS.ciphers and "3des-cbc" not in DEFAULT_ALGORITHMS.ciphers
    assert "hmac-md5" not in DEFAULT_ALGORITHMS.macs and "hmac-sha1-96" not in DEFAULT_ALGORITHMS.macs
    assert DEFAULT_ALGORITHMS.ciphers == ("aes128-ctr", "aes192-ctr", "aes256-ctr", "aes128-gcm@openssh.com",
                                          "aes256-gcm@openssh.com")
    # hmac-sha1 IS in OpenSSH 9.2's default MACs (ssh -G), so it stays
    assert DEFAULT_ALGORITHMS.macs[-1] == "hmac-sha1"
    out = subprocess.run(["ssh", "-G", "-F", "/dev/null", "x"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL).stdout
    openssh = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    for field, key in (("ciphers", "ciphers"), ("macs", "macs"), ("host_keys", "hostkeyalgorithms")):
        ours = getattr(DEFAULT_ALGORITHMS, field)
        theirs = openssh[key].split(",")
        assert set(ours) <= set(theirs), field
        assert list(ours) == [a for a in theirs if a in ours], field  # same order
    assert set(DEFAULT_ALGORITHMS.kex) - {"mlkem768x25519-sha256"} <= set(openssh["kexalgorithms"].split(","))


@pytest.mark.parametrize("spec,expected", [
    ("+aes128-cbc", ("aes128-ctr", "aes192-ctr", "aes256-ctr", "aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                     "aes128-cbc")),
    ("^aes128-cbc,3des-cbc", ("aes128-cbc", "3des-cbc", "aes128-ctr", "aes192-ctr", "aes256-ctr",
                              "aes128-gcm@openssh.com", "aes256-gcm@openssh.com")),
    ("-*-gcm@openssh.com,aes192*", ("aes128-ctr", "aes256-ctr")),
    ("aes256-ctr,aes128-cbc", ("aes256-ctr", "aes128-cbc")),
])
def test_cipher_list_syntax(spec, expected):
    assert assemble("ciphers", spec, device="d", origin="o") == expected


def test_algorithm_options_reach_the_target(ssh_home):
    st = SSHSettings(ssh_config=Path("/nonexistent"))
    t = target_for(Host(name="old", vars={"ansible_ssh_common_args": "-o Ciphers=+aes128-cbc -o MACs=+hmac-md5 "
                                                                     "-o HostKeyAlgorithms=ssh-ed25519"}), st)
    assert t.algorithms.ciphers[-1] == "aes128-cbc" and t.algorithms.macs[-1] == "hmac-md5"
    assert t.algorithms.host_keys == ("ssh-ed25519",) and t.algorithms.host_keys_set
    assert target_for(Host(name="new", vars={}), st).algorithms == DEFAULT_ALGORITHMS
    with pytest.raises(UsageError, match="old: ansible_ssh_common_args: Ciphers 'aes128-cbx'.*unknown algorithm"):
        target_for(Host(name="old", vars={"ansible_ssh_common_args": "-c aes128-cbx"}), st)
    with pytest.raises(UsageError, match="leaves no algorithm"):
        target_for(Host(name="old", vars={"ansible_ssh_common_args": "-o Ciphers=chacha20-poly1305@openssh.com"}), st)


# ------------------------------------------------- numbers from inventory variables

@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "nan", "inf", "Infinity", 0, -3, "30s", True,
                                   "", [30]])
def test_probe_timeout_rejects_bad_values(ssh_home, value):
    st = SSHSettings(ssh_config=Path("/nonexistent"))
    with pytest.raises(UsageError) as ei:
        target_for(Host(name="pi7", vars={"fleet_probe_timeout": value}), st)
    assert str(ei.value).startswith("pi7: fleet_probe_timeout ")


def test_probe_timeout_read(ssh_home):
    st = SSHSettings(ssh_config=Path("/nonexistent"))
    assert target_for(Host(name="a", vars={"fleet_probe_timeout": 90}), st).probe_timeout == 90.0
    assert target_for(Host(name="a", vars={"fleet_probe_timeout": "2.5"}), st).probe_timeout == 2.5
    assert target_for(Host(name="a", vars={}), st).probe_timeout is None


@pytest.mark.parametrize("value", [math.nan, math.inf, "nan", "inf", 22.0, "2e3", 0, 65536, True])
def test_ports_reject_non_integers_and_non_finite(ssh_home, value):
    st = SSHSettings(ssh_config=Path("/nonexistent"))
    with pytest.raises(UsageError, match=r"^pi8: (ansible_port|ansible_port must be)"):
        target_for(Host(name="pi8", vars={"ansible_port": value}), st)
