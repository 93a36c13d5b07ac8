"""ssh(1) options: the accumulator fed by inventory variables, ssh(1) flags and ssh_config.

Shapes: :class:`Options` (``values`` first value per lower-case option name, ``origins``
where each came from, ``identity`` IdentityFiles in order); ``Options.feed_args(text)``
parses an ``ansible_ssh_common_args``-style string; ``percent_expand(text, tokens)``;
``parse_jump_spec(spec)``; ``known_hosts_list(value)``; ``strict_value``/``flag_value``.

ssh(1)'s rule, which Ansible's ssh connection plugin relies on: for each option the first
value obtained wins, command-line options (here: inventory variables) before the config
file; ``IdentityFile`` accumulates. ``ProxyJump`` and ``ProxyCommand`` compete: whichever
is obtained first wins and the other is ignored from then on (ssh_config(5), ProxyJump),
``none`` included.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from fleet.errors import UsageError
from fleet.ssh._util import expand_path, log, parse_port, warn_once

if TYPE_CHECKING:
    from fleet.ssh.config import ConfigLine

__all__ = ["Options", "HONOURED", "HARMLESS", "percent_expand", "parse_jump_spec", "known_hosts_list",
           "strict_value", "flag_value"]

#: ssh(1) flags that take an argument (OpenSSH 9.x getopt string).
_SSH_FLAGS_WITH_ARG = set("BbcDEeFIiJLlmOoPpQRSWw")
#: ssh_config options fleet honours.
HONOURED = {
    "hostname", "port", "user", "identityfile", "identitiesonly", "userknownhostsfile", "stricthostkeychecking",
    "proxyjump", "proxycommand", "connecttimeout", "hostkeyalias", "ciphers", "macs", "kexalgorithms",
    "hostkeyalgorithms",
}
#: Options that do not change which device we reach or how we trust it: ignored silently.
HARMLESS = {
    "controlmaster", "controlpath", "controlpersist", "compression", "serveraliveinterval",
    "serveralivecountmax", "tcpkeepalive", "forwardagent", "forwardx11", "loglevel",
    "pubkeyauthentication", "passwordauthentication",
    "kbdinteractiveauthentication", "preferredauthentications", "gssapiauthentication",
    "batchmode", "hashknownhosts", "addkeystoagent", "requesttty", "sendenv", "setenv",
    "globalknownhostsfile", "checkhostip", "visualhostkey", "updatehostkeys",
    "connectionattempts", "ipqos", "exitonforwardfailure", "logintime", "numberofpasswordprompts",
    "ignoreunknown", "forwardx11trusted", "gssapidelegatecredentials", "usekeychain",
}
_PROXY = ("proxyjump", "proxycommand")


class Options:
    """ssh(1) option accumulator: first obtained value wins, IdentityFile accumulates."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.origins: dict[str, str] = {}
        self.identity: list[str] = []
        self.config_file: str | None = None

    def set(self, key: str, value: str, *, device: str, origin: str) -> None:
        """Record option ``key`` (any case) unless it already has a value; warn once about
        options fleet does not support (message names ``device`` and ``origin``)."""
        key = key.lower()
        if key == "identityfile":
            self.identity.append(value)
        elif key in _PROXY:
            if not any(k in self.values for k in _PROXY):
                self.values[key] = value
                self.origins[key] = origin
            elif key not in self.values:
                log.debug("%s: %s: %s ignored, %s was set first", device, origin, key,
                          next(k for k in _PROXY if k in self.values))
        elif key in HONOURED:
            if key not in self.values:
                self.values[key] = value
                self.origins[key] = origin
        elif key not in HARMLESS:
            warn_once(f"{device} (and maybe others): {origin}: ssh option {key!r} is read but not supported "
                      f"by fleet; ignored", f"opt:{key}")

    def set_from_config(self, cl: "ConfigLine", *, device: str) -> None:
        """One applicable ssh config line (see :mod:`fleet.ssh.config`)."""
        origin = f"{cl.path}:{cl.line}"
        if cl.keyword == "userknownhostsfile":
            value = shlex.join(cl.args)
        elif cl.keyword == "proxycommand":
            value = cl.raw
        else:
            value = cl.args[0] if cl.args else ""
        self.set(cl.keyword, value, device=device, origin=origin)

    def feed_args(self, args: str, *, device: str, origin: str) -> None:
        """Parse an ``ansible_ssh_common_args``-style string (shell words, ssh(1) flags)."""
        try:
            words = shlex.split(args)
        except ValueError as e:
            raise UsageError(f"{device}: {origin}: cannot parse {args!r}: {e}") from None
        i = 0
        while i < len(words):
            w = words[i]
            i += 1
            if not w.startswith("-") or w == "-":
                warn_once(f"{device}: {origin}: unexpected argument {w!r}; ignored", f"arg:{w}")
                continue
            flag, rest = w[1:2], w[2:]
            if flag in _SSH_FLAGS_WITH_ARG:
                if rest:
                    value = rest
                elif i < len(words):
                    value = words[i]
                    i += 1
                else:
                    raise UsageError(f"{device}: {origin}: option -{flag} needs a value")
                self._flag(flag, value, device=device, origin=origin)
            # other flags (-C, -4, -q, -T, -A, -v...) take no value and do not matter here

    def _flag(self, flag: str, value: str, *, device: str, origin: str) -> None:
        if flag == "o":
            key, sep, val = value.partition("=")
            if not sep:
                key, _, val = value.strip().partition(" ")
            key, val = key.strip(), val.strip()
            if not key or not val:
                raise UsageError(f"{device}: {origin}: malformed option -o {value!r}")
            self.set(key, val, device=device, origin=origin)
        elif flag == "i":
            self.identity.append(value)
        elif flag in "plJcm":
            key = {"p": "port", "l": "user", "J": "proxyjump", "c": "ciphers", "m": "macs"}[flag]
            self.set(key, value, device=device, origin=origin)
        elif flag == "F":
            self.config_file = self.config_file or value
        # -L/-R/-D forwards, -E logfile, -b bind address ... are ignored: they do not change
        # which device we reach or how it is trusted.


def percent_expand(text: str, tokens: dict[str, str], *, device: str, what: str) -> str:
    """Replace ``%x`` by ``tokens["x"]`` and ``%%`` by ``%`` (misc.c percent_expand()).

    Raises UsageError naming ``device`` and ``what`` for an unknown token or a lone ``%``
    at the end, which ssh(1) rejects too."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        if i + 1 >= n:
            raise UsageError(f"{device}: {what}: {text!r} ends with a lone '%'")
        t = text[i + 1]
        if t == "%":
            out.append("%")
        elif t in tokens:
            out.append(tokens[t])
        else:
            raise UsageError(f"{device}: {what}: unknown token %{t} in {text!r} "
                             f"(known here: {' '.join('%' + k for k in sorted(tokens))} %%)")
        i += 2
    return "".join(out)


def parse_jump_spec(spec: str, device: str, what: str) -> list[tuple[str | None, str, int | None]]:
    """``user@host:port,host2`` (also ``[v6addr]:port``) -> [(user, host, port), ...]."""
    hops = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            raise UsageError(f"{device}: {what}: empty hop in ProxyJump {spec!r}")
        if part.startswith("ssh://"):
            part = part[len("ssh://"):]
        user, at, hostport = part.rpartition("@")
        if not at:
            user = None
        port: int | None = None
        if hostport.startswith("["):
            host, _, tail = hostport[1:].partition("]")
            if tail.startswith(":"):
                port = parse_port(tail[1:], device, what)
        elif hostport.count(":") == 1:
            host, _, p = hostport.partition(":")
            port = parse_port(p, device, what)
        else:
            host = hostport
        if not host:
            raise UsageError(f"{device}: {what}: no host in ProxyJump hop {part!r}")
        hops.append((user or None, host, port))
    return hops


def known_hosts_list(value: str, expand=expand_path) -> list[Path]:
    """UserKnownHostsFile takes a space-separated list (ssh_config(5)); ``none`` disables."""
    return [expand(word) for word in shlex.split(value) if word.lower() != "none"]


def strict_value(value: str, device: str, what: str) -> str:
    """StrictHostKeyChecking -> ``"yes"``, ``"no"`` or ``"accept-new"`` (``ask`` is ``yes``:
    a fan-out cannot prompt)."""
    v = value.strip().lower()
    if v in ("yes", "true", "ask"):
        return "yes"
    if v in ("no", "false", "off"):
        return "no"
    if v == "accept-new":
        return "accept-new"
    raise UsageError(f"{device}: {what}: StrictHostKeyChecking={value!r} is not yes, no or accept-new")


def flag_value(value: str, device: str, what: str) -> bool:
    """A yes/no ssh option (readconf.c parse_flag: yes/true, no/false)."""
    v = value.strip().lower()
    if v in ("yes", "true"):
        return True
    if v in ("no", "false"):
        return False
    raise UsageError(f"{device}: {what}: {value!r} is not yes or no")
