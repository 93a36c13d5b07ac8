"""SSH connections to devices, with OpenSSH's host-key rules, on paramiko.

Shapes:
    ``target_for(host, settings) -> Target``: how to reach one inventory host (address,
    port, user, keys, known_hosts files, host-key checking mode, jump hosts, become).
    ``connect(target, settings) -> Session``; ``Session.run(cmd) -> CommandResult``.

What this adds on top of paramiko (see /work/shared/docs/library-notes.md section 3):

* Inventory variables are read the way Ansible's ``ssh`` connection plugin hands them to
  ssh(1): ``ansible_port``/``ansible_ssh_private_key_file``/``ansible_user`` become
  ``-o Port=``/``-o IdentityFile=``/``-o User=`` ahead of ``ansible_ssh_common_args`` and
  ``ansible_ssh_extra_args``. Command-line options beat ``~/.ssh/config``, and for each
  option the first value obtained wins (ssh_config(5)); ``IdentityFile`` accumulates.
* known_hosts is parsed here, not by ``paramiko.HostKeys``: that loader raises
  ``InvalidHostKey`` on ``@cert-authority``/``@revoked`` lines (paramiko#771) and would be
  re-run for every connection. Each file is parsed once per process (cached by path,
  mtime, size and inode). Hashed (``|1|salt|hmac``), ``[host]:port``, wildcard and
  negated patterns are matched as OpenSSH's hostfile.c does.
* Host-key policy (OpenSSH ``StrictHostKeyChecking``):
  ``yes`` unknown host -> :class:`HostKeyUnknown`;
  ``accept-new`` (or ``--accept-new``) unknown host -> key appended to the target's first
  known_hosts file (created 0600, directory 0700) and the connection proceeds;
  ``no`` unknown host -> accepted WITHOUT being recorded, with a warning (OpenSSH would
  record it; we do not, so a later strict run still asks).
  A key that differs from a recorded one is refused in every mode
  (:class:`HostKeyChanged`, naming file:line of the old entry), and so is a key listed
  under ``@revoked`` (:class:`HostKeyRevoked`). ``@cert-authority`` lines are kept out of
  the way: paramiko does not negotiate certificate host keys, so a host known only through
  a CA is reported as unknown, with a hint.
* ProxyJump (``-J``/``-o ProxyJump=``/ssh config), which paramiko's SSHClient ignores: each
  hop is connected and verified like a target, then a ``direct-tcpip`` channel carries the
  next hop's SSH connection.
* Retries: only transient network failures are retried (tenacity, exponential backoff with
  jitter): connection refused, reset or closed before the SSH banner (a device rebooting,
  an sshd at ``MaxStartups``), a TCP connect timeout, a refused ``direct-tcpip`` open on a
  jump host. At most ``settings.retries`` attempts, and no new attempt starts once
  ``RETRY_BUDGET`` seconds have passed since the first one, so a dead device costs at most
  about ``RETRY_BUDGET + connect_timeout`` seconds. "No route to host", "network
  unreachable" and name-resolution failures are definitive answers and are not retried.
  Authentication and host-key failures are never retried (a retry cannot fix them and
  would hammer ``MaxAuthTries``/fail2ban).

Not supported (warned about once, never silently misused): ProxyCommand, password and
keyboard-interactive authentication, host certificates, a ProxyJump configured for a jump
host itself (only the device's own ProxyJump chain is followed). Jump hosts use their ssh
config entry for user/port/keys and fall back to the device's IdentityFiles and
known_hosts files (ssh(1) would not pass ``-i`` on to a jump; one-key fleets rely on it).

Errors raised are :class:`SSHError` subclasses (``FleetError``, exit status 1) whose
message starts with the inventory host name.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import fnmatch
import hashlib
import hmac
import logging
import os
import select
import shlex
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import paramiko
import tenacity
from paramiko.ssh_exception import (
    AuthenticationException,
    BadAuthenticationType,
    ChannelException,
    PasswordRequiredException,
    SSHException,
)

from fleet.errors import FleetError, UsageError
from fleet.netguard import unattached_benchmark_address
from fleet.output import warn

# paramiko's transport threads log every failed handshake, traceback included, at ERROR
# (e.g. sshd's MaxStartups dropping a connection: "Error reading SSH protocol banner").
# With no handler configured Python's last-resort handler printed those tracebacks on
# stderr, although the same failure is retried or reported as the device's SSHError.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

__all__ = [
    "SSHSettings",
    "Target",
    "CommandResult",
    "Session",
    "target_for",
    "connect",
    "SSHError",
    "HostKeyUnknown",
    "HostKeyChanged",
    "HostKeyRevoked",
    "AuthenticationFailed",
    "Unreachable",
    "CommandTimeout",
    "RETRY_BUDGET",
]

#: Seconds after the first connect attempt during which a transient failure is retried.
RETRY_BUDGET = 5.0

DEFAULT_SSH_PORT = 22
#: Private keys tried when no IdentityFile is named (ssh(1) ``-i`` defaults, DSA dropped
#: because paramiko 4+ removed it).
DEFAULT_IDENTITIES = ("id_ed25519", "id_ecdsa", "id_rsa")
GLOBAL_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")


# --------------------------------------------------------------------------- errors


class SSHError(FleetError):
    """An SSH failure on one device; ``str()`` is ``"<device>: <message>"``.

    ``device`` is the inventory host name; ``attempts`` how many connect attempts were made.
    """

    def __init__(self, device: str, message: str, *, attempts: int = 1):
        self.device = device
        self.reason = message
        self.attempts = attempts
        super().__init__(f"{device}: {message}")


class HostKeyUnknown(SSHError):
    """The device's host key is in no known_hosts file and checking is strict.

    ``fingerprint`` is the offered key's ``SHA256:...``; ``key_line`` the known_hosts line
    that would accept it.
    """

    def __init__(self, device: str, message: str, *, fingerprint: str = "", key_line: str = ""):
        super().__init__(device, message)
        self.fingerprint = fingerprint
        self.key_line = key_line


class HostKeyChanged(SSHError):
    """The device offered a key different from the recorded one (possible MITM).

    ``path``/``line`` locate the old known_hosts entry.
    """

    def __init__(self, device: str, message: str, *, path: str = "", line: int = 0):
        super().__init__(device, message)
        self.path = path
        self.line = line


class HostKeyRevoked(SSHError):
    """The device offered a key marked ``@revoked`` in a known_hosts file (sshd(8))."""


class AuthenticationFailed(SSHError):
    """No offered key was accepted; ``tried`` lists the keys (file paths / agent comments)."""

    def __init__(self, device: str, message: str, *, tried: Sequence[str] = ()):
        super().__init__(device, message)
        self.tried = tuple(tried)


class Unreachable(SSHError):
    """No SSH connection could be made (no route, timeout, refused after retries)."""


class CommandTimeout(SSHError):
    """A command did not finish in time; partial ``stdout``/``stderr`` bytes are kept."""

    def __init__(self, device: str, message: str, *, stdout: bytes = b"", stderr: bytes = b""):
        super().__init__(device, message)
        self.stdout = stdout
        self.stderr = stderr


# ----------------------------------------------------------------------- data types


@dataclass(frozen=True)
class SSHSettings:
    """Run-wide SSH settings (CLI flags).

    ``known_hosts``: files from ``--known-hosts`` (used instead of ssh config's and the
    default ``~/.ssh/known_hosts``; inventory ``-o UserKnownHostsFile`` still wins).
    ``accept_new``: ``--accept-new``, record unknown host keys (never changed ones).
    ``connect_timeout``: seconds for TCP connect, SSH banner, key exchange and each
    authentication step. ``command_timeout``: seconds per command. ``ssh_config``: ssh
    config file (None = ``~/.ssh/config`` if it exists). ``retries``: connect attempts for
    transient network errors (1 = no retry).
    """

    known_hosts: tuple[Path, ...] = ()
    accept_new: bool = False
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    ssh_config: Path | None = None
    retries: int = 3


@dataclass(frozen=True)
class Target:
    """Everything needed to open an SSH connection to one device.

    ``name`` inventory host name (used in messages); ``hostname``/``port`` where to
    connect; ``key_files`` IdentityFiles in order (empty = agent + default ``~/.ssh/id_*``);
    ``known_hosts_files`` in order, the first one receives accepted keys;
    ``strict_host_key_checking`` ``"yes" | "no" | "accept-new"``; ``proxy_jump`` hops in
    connection order; ``become`` from ``ansible_become``.
    """

    name: str
    hostname: str
    port: int = DEFAULT_SSH_PORT
    user: str = ""
    key_files: tuple[Path, ...] = ()
    known_hosts_files: tuple[Path, ...] = ()
    strict_host_key_checking: str = "yes"
    proxy_jump: tuple["Target", ...] = ()
    become: bool = False

    @property
    def known_hosts_name(self) -> str:
        """The name this target's key is filed under in known_hosts (``[h]:p`` off port 22)."""
        return _known_hosts_name(self.hostname, self.port)

    def __str__(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


@dataclass
class CommandResult:
    """``exit_status`` (-1 when the remote sent none, e.g. killed by a signal),
    ``stdout``/``stderr`` raw bytes."""

    exit_status: int
    stdout: bytes
    stderr: bytes


# ------------------------------------------------------------------- small helpers

_warned: set[str] = set()
_warn_lock = threading.Lock()


def _warn_once(message: str, key: str | None = None) -> None:
    """Warn once per ``key`` (default: the message) per process.

    A group variable shared by 1000 devices must not print 1000 warnings: callers pass a
    key without the device name, and the message names the first device affected."""
    key = message if key is None else key
    with _warn_lock:
        if key in _warned:
            return
        _warned.add(key)
    warn(message)


def _ansible_bool(value: Any) -> bool:
    """Ansible's non-strict ``boolean()`` (ansible.module_utils.parsing.convert_bool)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value == 1
    if isinstance(value, str):
        return value.strip().lower() in ("y", "yes", "on", "1", "true", "t")
    return False


def _known_hosts_name(hostname: str, port: int) -> str:
    # OpenSSH files non-default ports as "[host]:port" (sshconnect.c put_host_port()).
    return hostname if port == DEFAULT_SSH_PORT else f"[{hostname}]:{port}"


def _expand(path: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(path)))


def _default_user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # no passwd entry, no LOGNAME: ssh(1) would fail too
        return "root"


def _parse_port(value: Any, device: str, what: str) -> int:
    try:
        port = int(str(value).strip())
    except ValueError:
        raise UsageError(f"{device}: {what}: port {value!r} is not a number") from None
    if not 0 < port < 65536:
        raise UsageError(f"{device}: {what}: port {port} is out of range")
    return port


def _strict_value(value: str, device: str, what: str) -> str:
    v = value.strip().lower()
    if v in ("yes", "true", "ask"):  # "ask" cannot prompt in a fan-out: treat as yes
        return "yes"
    if v in ("no", "false", "off"):
        return "no"
    if v == "accept-new":
        return "accept-new"
    raise UsageError(f"{device}: {what}: StrictHostKeyChecking={value!r} is not yes, no or accept-new")


# ------------------------------------------------------------ ssh(1) option parsing

#: ssh(1) flags that take an argument (OpenSSH 9.x getopt string).
_SSH_FLAGS_WITH_ARG = set("BbcDEeFIiJLlmOoPpQRSWw")
#: ssh_config options that are honoured.
_HONOURED = {
    "hostname",
    "port",
    "user",
    "identityfile",
    "userknownhostsfile",
    "stricthostkeychecking",
    "proxyjump",
    "connecttimeout",
}
#: Options that do not change which device we reach or how we trust it: ignored silently.
_HARMLESS = {
    "controlmaster", "controlpath", "controlpersist", "compression", "serveraliveinterval",
    "serveralivecountmax", "tcpkeepalive", "forwardagent", "forwardx11", "loglevel",
    "identitiesonly", "pubkeyauthentication", "passwordauthentication",
    "kbdinteractiveauthentication", "preferredauthentications", "gssapiauthentication",
    "batchmode", "hashknownhosts", "addkeystoagent", "requesttty", "sendenv", "setenv",
    "globalknownhostsfile", "checkhostip", "visualhostkey", "updatehostkeys",
    "connectionattempts", "ipqos", "exitonforwardfailure", "logintime", "numberofpasswordprompts",
}


class _Options:
    """ssh(1) option accumulator: first obtained value wins, IdentityFile accumulates."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.identity: list[str] = []
        self.config_file: str | None = None

    def set(self, key: str, value: str, *, device: str, origin: str) -> None:
        key = key.lower()
        if key == "identityfile":
            self.identity.append(value)
        elif key in _HONOURED:
            self.values.setdefault(key, value)
        elif key == "proxycommand":
            _warn_once(f"{device}: {origin}: ProxyCommand is not supported; connecting without it", "proxycommand")
        elif key not in _HARMLESS:
            _warn_once(f"{device} (and maybe others): {origin}: ssh option {key!r} is not supported; ignored", f"opt:{key}")

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
                _warn_once(f"{device}: {origin}: unexpected argument {w!r}; ignored", f"arg:{w}")
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
        elif flag == "p":
            self.values.setdefault("port", value)
        elif flag == "l":
            self.values.setdefault("user", value)
        elif flag == "J":
            self.values.setdefault("proxyjump", value)
        elif flag == "F":
            self.config_file = self.config_file or value
        # -L/-R/-D forwards, -E logfile, -b bind address ... are ignored: they do not change
        # which device we reach or how it is trusted.


# --------------------------------------------------------------- ssh config cache

_cache_lock = threading.Lock()
_ssh_config_cache: dict[str, tuple[tuple, paramiko.SSHConfig]] = {}


def _file_signature(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _ssh_config(path: Path) -> paramiko.SSHConfig | None:
    sig = _file_signature(path)
    if sig is None:
        return None
    key = str(path)
    with _cache_lock:
        hit = _ssh_config_cache.get(key)
        if hit and hit[0] == sig:
            return hit[1]
        try:
            cfg = paramiko.SSHConfig.from_path(str(path))
        except Exception as e:  # paramiko raises ConfigParseError / ValueError
            raise UsageError(f"{path}: cannot parse ssh config: {e}") from None
        _ssh_config_cache[key] = (sig, cfg)
        return cfg


def _ssh_config_lookup(config_path: Path | None, alias: str) -> dict[str, Any]:
    if config_path is None:
        return {}
    cfg = _ssh_config(config_path)
    if cfg is None:
        return {}
    try:
        return dict(cfg.lookup(alias))
    except Exception as e:
        raise UsageError(f"{config_path}: ssh config lookup for {alias!r} failed: {e}") from None


# ------------------------------------------------------------------- target_for


def _config_path(settings: SSHSettings, opts: _Options) -> Path | None:
    if opts.config_file:
        return _expand(opts.config_file)
    if settings.ssh_config is not None:
        return Path(settings.ssh_config)
    default = Path.home() / ".ssh" / "config"
    return default if default.exists() else None


def _known_hosts_list(value: str) -> list[Path]:
    # UserKnownHostsFile takes a space-separated list (ssh_config(5)); "none" disables.
    out = []
    for word in shlex.split(value):
        if word.lower() == "none":
            continue
        out.append(_expand(word))
    return out


def _default_known_hosts() -> list[Path]:
    files = [Path.home() / ".ssh" / "known_hosts"]
    if os.access(GLOBAL_KNOWN_HOSTS, os.R_OK):
        files.append(GLOBAL_KNOWN_HOSTS)
    return files


def _parse_jump_spec(spec: str, device: str, what: str) -> list[tuple[str | None, str, int | None]]:
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
                port = _parse_port(tail[1:], device, what)
        elif hostport.count(":") == 1:
            host, _, p = hostport.partition(":")
            port = _parse_port(p, device, what)
        else:
            host = hostport
        if not host:
            raise UsageError(f"{device}: {what}: no host in ProxyJump hop {part!r}")
        hops.append((user or None, host, port))
    return hops


def _host_vars(host: Any) -> dict[str, Any]:
    return dict(getattr(host, "vars", None) or {})


# Connection variables that must be one string or number (Ansible reads them as such).
_SCALAR_VARS = ("ansible_host", "ansible_ssh_host", "ansible_port", "ansible_ssh_port", "ansible_user",
                "ansible_ssh_user", "ansible_ssh_private_key_file", "ansible_private_key_file",
                "ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_ssh_args")


def target_for(host: Any, settings: SSHSettings) -> Target:
    """Resolve how to reach inventory ``host`` (a ``fleet.inventory.Host``).

    Precedence follows what Ansible's ssh plugin passes to ssh(1) and ssh(1)'s own rule
    (first value wins, command line before ssh config): ``ansible_port``,
    ``ansible_ssh_private_key_file``, ``ansible_user``, then ``ansible_ssh_args``,
    ``ansible_ssh_common_args``, ``ansible_ssh_extra_args``, then ``settings`` where it
    names something (``--known-hosts``), then the ssh config entry for the address
    (``ansible_host``, as ssh(1) is invoked with it), then defaults: port 22, the local
    user, known_hosts ``~/.ssh/known_hosts`` plus ``/etc/ssh/ssh_known_hosts`` when
    readable, StrictHostKeyChecking ``yes`` (``accept-new`` with ``settings.accept_new``).

    Raises :class:`fleet.errors.UsageError` (exit 2, naming the host) for a malformed
    port, option or ProxyJump spec, or an unreadable ssh config.
    """
    name = str(getattr(host, "name"))
    hv = _host_vars(host)
    for var in _SCALAR_VARS:
        value = hv.get(var)
        if value is not None and (isinstance(value, (dict, list, bool)) or not isinstance(value, (str, int))):
            raise UsageError(f"{name}: {var} must be a single value, got {type(value).__name__} {value!r}")
    connection = hv.get("ansible_connection")
    if connection not in (None, "ssh", "smart", "paramiko", "paramiko_ssh"):
        raise UsageError(f"{name}: ansible_connection={connection} is not supported (fleet reaches devices over SSH)")
    address = getattr(host, "address", None) or hv.get("ansible_host") or hv.get("ansible_ssh_host") or name
    address = str(address)

    opts = _Options()
    port = getattr(host, "port", None)
    if port is None:
        port = hv.get("ansible_port", hv.get("ansible_ssh_port"))
    if port is not None:
        opts.values["port"] = str(port)
    for var in ("ansible_ssh_private_key_file", "ansible_private_key_file"):
        if hv.get(var):
            opts.identity.append(str(hv[var]))
            break
    user = getattr(host, "user", None) or hv.get("ansible_user") or hv.get("ansible_ssh_user")
    if user:
        opts.values["user"] = str(user)
    for var in ("ansible_ssh_args", "ansible_ssh_common_args", "ansible_ssh_extra_args"):
        if hv.get(var):
            opts.feed_args(str(hv[var]), device=name, origin=var)
    for var in ("ansible_password", "ansible_ssh_pass"):
        if hv.get(var):
            _warn_once(f"{name} (and maybe others): {var} is set but password authentication is not supported; using keys/ssh-agent", var)

    cfg_path = _config_path(settings, opts)
    cfg = _ssh_config_lookup(cfg_path, address)
    where_cfg = str(cfg_path) if cfg_path else "ssh config"

    hostname = str(cfg.get("hostname") or address)
    port_s = opts.values.get("port") or cfg.get("port")
    port_n = _parse_port(port_s, name, "port") if port_s else DEFAULT_SSH_PORT
    user_s = opts.values.get("user") or cfg.get("user") or _default_user()
    key_files = [_expand(p) for p in opts.identity] + [_expand(p) for p in cfg.get("identityfile", [])]

    if "userknownhostsfile" in opts.values:
        known = _known_hosts_list(opts.values["userknownhostsfile"])
    elif settings.known_hosts:
        known = [Path(p) for p in settings.known_hosts]
    elif cfg.get("userknownhostsfile"):
        known = _known_hosts_list(cfg["userknownhostsfile"])
    else:
        known = _default_known_hosts()

    strict_src = opts.values.get("stricthostkeychecking") or cfg.get("stricthostkeychecking") or "yes"
    strict = _strict_value(strict_src, name, "StrictHostKeyChecking")
    if settings.accept_new and strict == "yes":
        strict = "accept-new"

    jump_spec = opts.values.get("proxyjump") or cfg.get("proxyjump")
    hops: list[Target] = []
    if jump_spec and jump_spec.strip().lower() != "none":
        for juser, jhost, jport in _parse_jump_spec(jump_spec, name, "ProxyJump"):
            jcfg = _ssh_config_lookup(cfg_path, jhost)
            jknown = (
                _known_hosts_list(jcfg["userknownhostsfile"])
                if jcfg.get("userknownhostsfile") and not settings.known_hosts
                else known
            )
            jkeys = [_expand(p) for p in jcfg.get("identityfile", [])]
            hops.append(
                Target(
                    name=f"{name} (jump {jhost})",
                    hostname=str(jcfg.get("hostname") or jhost),
                    port=jport or (_parse_port(jcfg["port"], name, where_cfg) if jcfg.get("port") else DEFAULT_SSH_PORT),
                    user=juser or jcfg.get("user") or user_s,
                    # ssh(1) does not pass -i to the jump; falling back to the device's
                    # keys after the jump's own keeps one-key fleets working.
                    key_files=tuple(dict.fromkeys(jkeys + key_files)),
                    known_hosts_files=tuple(jknown),
                    strict_host_key_checking=strict,
                )
            )

    return Target(
        name=name,
        hostname=hostname,
        port=port_n,
        user=str(user_s),
        key_files=tuple(dict.fromkeys(key_files)),
        known_hosts_files=tuple(known),
        strict_host_key_checking=strict,
        proxy_jump=tuple(hops),
        become=_ansible_bool(hv.get("ansible_become", False)),
    )


# ------------------------------------------------------------------ known_hosts


@dataclass(frozen=True)
class _KHEntry:
    marker: str  # "", "revoked" or "cert-authority"
    patterns: tuple[str, ...]  # lower-cased names/patterns, or one "|1|salt|hash" entry
    keytype: str
    blob: bytes
    path: str
    line: int

    def matches(self, name: str) -> bool:
        # hostfile.c: a hashed entry is one name; otherwise a pattern list where a
        # matching negated pattern ("!host") excludes the host outright.
        if len(self.patterns) == 1 and self.patterns[0].startswith("|1|"):
            return _hashed_match(self.patterns[0], name)
        matched = False
        for p in self.patterns:
            neg = p.startswith("!")
            pat = p[1:] if neg else p
            if pat == name or (("*" in pat or "?" in pat) and fnmatch.fnmatchcase(name, pat)):
                if neg:
                    return False
                matched = True
        return matched


def _hashed_match(entry: str, name: str) -> bool:
    try:
        _, _, salt_b64, hash_b64 = entry.split("|", 3)
        salt = base64.b64decode(salt_b64)
        want = base64.b64decode(hash_b64)
    except Exception:
        return False
    got = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return hmac.compare_digest(got, want)


@dataclass
class _KHFile:
    signature: tuple | None
    literal: dict[str, list[_KHEntry]] = field(default_factory=dict)
    other: list[_KHEntry] = field(default_factory=list)
    lines: int = 0

    def add(self, e: _KHEntry) -> None:
        simple = [p for p in e.patterns if not (p.startswith("|1|") or p.startswith("!") or "*" in p or "?" in p)]
        if len(simple) == len(e.patterns):
            for p in simple:
                self.literal.setdefault(p, []).append(e)
        else:
            self.other.append(e)

    def lookup(self, name: str) -> list[_KHEntry]:
        found = list(self.literal.get(name, ()))
        found.extend(e for e in self.other if e.matches(name))
        return found


_kh_cache: dict[str, _KHFile] = {}
_kh_write_lock = threading.Lock()


def _parse_known_hosts(path: Path, sig: tuple | None) -> _KHFile:
    parsed = _KHFile(signature=sig)
    if sig is None:
        return parsed
    try:
        data = path.read_bytes()
    except (PermissionError, IsADirectoryError, FileNotFoundError):
        return _KHFile(signature=sig)
    text_lines = data.decode("utf-8", "replace").splitlines()
    parsed.lines = len(text_lines)
    for lineno, raw in enumerate(text_lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        marker = ""
        if line.startswith("@"):
            head, _, line = line.partition(" ")
            marker = head[1:].lower()
            if marker not in ("revoked", "cert-authority"):
                continue  # unknown marker: OpenSSH skips the line too
            line = line.strip()
        fields = line.split()
        if len(fields) < 3:
            continue
        hosts, keytype, b64 = fields[0], fields[1], fields[2]
        try:
            blob = base64.b64decode(b64, validate=True)
        except Exception:
            continue  # malformed line: skipped like OpenSSH does, never fatal
        # host names compare case-insensitively; a hashed name is base64 and must not be folded
        patterns = tuple(p if p.startswith("|1|") else p.lower() for p in hosts.split(",") if p)
        parsed.add(_KHEntry(marker, patterns, keytype, blob, str(path), lineno))
    return parsed


def _known_hosts_file(path: Path) -> _KHFile:
    """Parsed known_hosts ``path``, re-read only when its mtime/size/inode changed."""
    sig = _file_signature(path)
    key = str(path)
    hit = _kh_cache.get(key)
    if hit is not None and hit.signature == sig:
        return hit
    with _cache_lock:
        hit = _kh_cache.get(key)
        if hit is not None and hit.signature == sig:
            return hit
        parsed = _parse_known_hosts(path, sig)
        _kh_cache[key] = parsed
        return parsed


def _lookup_known(files: Sequence[Path], name: str) -> list[_KHEntry]:
    name = name.lower()
    out: list[_KHEntry] = []
    for p in files:
        out.extend(_known_hosts_file(p).lookup(name))
    return out


def _key_line(name: str, key: paramiko.PKey) -> str:
    return f"{name} {key.get_name()} {key.get_base64()}"


def _record_host_key(path: Path, name: str, key: paramiko.PKey) -> None:
    """Append ``name keytype base64`` to ``path`` (0600, parent 0700), once per process.

    A process lock orders our own threads; ``flock`` orders other fleet processes and
    OpenSSH ssh(1) (which also appends).
    """
    line = _key_line(name, key)
    blob = key.asbytes()
    with _kh_write_lock:
        for e in _known_hosts_file(path).lookup(name.lower()):
            if e.marker == "" and e.blob == blob:
                return  # another thread recorded it already
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                st = os.fstat(fd)
                before = (st.st_mtime_ns, st.st_size, st.st_ino)
                prefix = b""
                if st.st_size:
                    with open(path, "rb") as f:
                        f.seek(st.st_size - 1)
                        if f.read(1) != b"\n":
                            prefix = b"\n"
                os.write(fd, prefix + line.encode() + b"\n")
                # Keep the parsed copy current instead of re-parsing the whole file after
                # each of possibly 1000 first-time devices (only if nobody else wrote it).
                cached = _kh_cache.get(str(path))
                if cached is not None and cached.signature == before:
                    st = os.fstat(fd)
                    cached.lines += 1
                    cached.add(_KHEntry("", (name.lower(),), key.get_name(), blob, str(path), cached.lines))
                    cached.signature = (st.st_mtime_ns, st.st_size, st.st_ino)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _preferred_key_types(entries: Sequence[_KHEntry]) -> list[str]:
    """Host-key algorithms to ask for first, so the server shows the key type we know."""
    out: list[str] = []
    for e in entries:
        if e.marker:
            continue
        if e.keytype == "ssh-rsa":
            out.extend(["rsa-sha2-512", "rsa-sha2-256"])
        else:
            out.append(e.keytype)
    return list(dict.fromkeys(out))


def _verify_host_key(target: Target, strict: str, entries: list[_KHEntry], key: paramiko.PKey) -> None:
    """Apply the host-key policy (module docstring). Raises HostKey* errors."""
    name = target.known_hosts_name
    blob = key.asbytes()
    ktype = key.get_name()
    fp = key.fingerprint
    for e in entries:
        if e.marker == "revoked" and e.blob == blob:
            raise HostKeyRevoked(
                target.name,
                f"host key {ktype} {fp} of {name} is marked @revoked in {e.path}:{e.line}; refusing to connect",
            )
    plain = [e for e in entries if e.marker == ""]
    if any(e.blob == blob for e in plain):
        return
    if plain:
        same = [e for e in plain if e.keytype == ktype] or plain
        old = same[0]
        raise HostKeyChanged(
            target.name,
            f"WARNING: the host key of {name} has CHANGED (possible man-in-the-middle attack, "
            f"or the device was reinstalled): it offered {ktype} {fp}, which does not match "
            f"the {old.keytype} key recorded at {old.path}:{old.line}. If the change is "
            f"expected, remove that line (ssh-keygen -R '{name}' -f {old.path}) and connect again",
            path=old.path,
            line=old.line,
        )
    files = ", ".join(str(p) for p in target.known_hosts_files) or "(no known_hosts files)"
    line = _key_line(name, key)
    if strict == "accept-new":
        if not target.known_hosts_files:
            raise HostKeyUnknown(target.name, f"host key of {name} ({ktype} {fp}) is unknown and there is no known_hosts file to record it in", fingerprint=fp, key_line=line)
        _record_host_key(target.known_hosts_files[0], name, key)
        return
    if strict == "no":
        _warn_once(
            f"{target.name}: StrictHostKeyChecking=no: accepting unverified host key {ktype} {fp} "
            f"of {name} without recording it"
        )
        return
    hint = ""
    if any(e.marker == "cert-authority" for e in entries):
        hint = " (a @cert-authority line matches this host, but host certificates are not supported)"
    raise HostKeyUnknown(
        target.name,
        f"host key of {name} is unknown{hint}: it offered {ktype} {fp}, found in none of {files}. "
        f"After checking the fingerprint on the device (ssh-keygen -lf /etc/ssh/ssh_host_{ktype.split('-')[-1]}_key.pub), "
        f"run again with --accept-new, or add this line to {target.known_hosts_files[0] if target.known_hosts_files else '~/.ssh/known_hosts'}: {line}",
        fingerprint=fp,
        key_line=line,
    )


# ----------------------------------------------------------------- private keys

_pkey_cache: dict[str, tuple[tuple, paramiko.PKey | str]] = {}


def _load_private_key(path: Path) -> paramiko.PKey | str:
    """The key at ``path`` (with its ``-cert.pub``), or a reason string it cannot be used.

    Cached by path and mtime so 1000 connections parse a key file once.
    """
    sig = _file_signature(path)
    if sig is None:
        return "not found"
    key = str(path)
    hit = _pkey_cache.get(key)
    if hit and hit[0] == sig:
        return hit[1]
    try:
        value: paramiko.PKey | str = paramiko.PKey.from_path(path)
    except PasswordRequiredException:
        value = "encrypted (use ssh-agent)"
    except (PermissionError, IsADirectoryError) as e:
        value = f"unreadable: {e.strerror}"
    except Exception as e:  # UnknownKeyType, ValueError from cryptography, SSHException
        value = f"unusable: {e}"
    with _cache_lock:
        _pkey_cache[key] = (sig, value)
    return value


def _candidate_keys(target: Target, agent_box: list) -> Iterator[tuple[str, paramiko.PKey | str]]:
    """(label, key or reason) in order: IdentityFiles, agent keys, default ~/.ssh/id_*."""
    for p in target.key_files:
        yield str(p), _load_private_key(p)
    if os.environ.get("SSH_AUTH_SOCK"):
        try:
            agent = paramiko.Agent()
        except SSHException as e:
            yield "ssh-agent", f"unusable: {e}"
        else:
            agent_box.append(agent)
            for k in agent.get_keys():
                comment = getattr(k, "comment", "") or k.fingerprint
                yield f"agent:{comment}", k
    if not target.key_files:
        for n in DEFAULT_IDENTITIES:
            p = Path.home() / ".ssh" / n
            if p.exists():
                yield str(p), _load_private_key(p)


def _authenticate(t: paramiko.Transport, target: Target) -> None:
    tried: list[str] = []
    seen: set[bytes] = set()
    agent_box: list = []
    where = f"{target.user}@{target.hostname}:{target.port}"
    try:
        for label, key in _candidate_keys(target, agent_box):
            if isinstance(key, str):
                tried.append(f"{label} ({key})")
                continue
            blob = key.asbytes()
            if blob in seen:
                continue
            seen.add(blob)
            try:
                remaining = t.auth_publickey(target.user, key)
            except BadAuthenticationType as e:
                raise AuthenticationFailed(
                    target.name,
                    f"{where} does not accept public keys (allowed: {', '.join(e.allowed_types) or 'none'})",
                    tried=tried,
                ) from None
            except AuthenticationException:
                tried.append(label)
                continue
            except (SSHException, EOFError, OSError) as e:
                # e.g. the server dropped us after MaxAuthTries
                tried.append(label)
                raise AuthenticationFailed(
                    target.name,
                    f"authentication as {where} failed: connection closed ({e or type(e).__name__}); keys tried: {', '.join(tried)}",
                    tried=tried,
                ) from None
            if t.is_authenticated():
                return
            raise AuthenticationFailed(
                target.name,
                f"{where} wants further authentication ({', '.join(remaining)}) after key {label}; only public keys are supported",
                tried=tried + [label],
            )
    finally:
        for a in agent_box:
            a.close()
    keys = ", ".join(tried) if tried else "none (no IdentityFile, no ssh-agent keys, no ~/.ssh/id_*)"
    raise AuthenticationFailed(
        target.name, f"authentication as {where} failed; keys tried: {keys}", tried=tried
    )


# ------------------------------------------------------------------ connecting


class _Transient(Exception):
    """A network failure worth another attempt; ``reason`` is for the final message."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _describe(e: BaseException) -> str:
    if isinstance(e, socket.timeout) or isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _tcp_connect(hop: Target, timeout: float) -> socket.socket:
    refused = unattached_benchmark_address(hop.hostname)
    if refused:
        raise Unreachable(hop.name, refused)
    try:
        return socket.create_connection((hop.hostname, hop.port), timeout=timeout)
    except socket.gaierror as e:
        raise Unreachable(hop.name, f"cannot resolve {hop.hostname}: {e.strerror}") from None
    except (ConnectionRefusedError, ConnectionResetError, TimeoutError, socket.timeout) as e:
        raise _Transient(_describe(e)) from None
    except OSError as e:
        if e.errno in (errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT):
            raise _Transient(_describe(e)) from None
        # EHOSTUNREACH, ENETUNREACH, EADDRNOTAVAIL...: a definitive answer, not retried.
        raise Unreachable(hop.name, f"cannot connect to {hop.hostname}:{hop.port}: {_describe(e)}") from None


def _open_hop(hop: Target, settings: SSHSettings, via: paramiko.Transport | None) -> paramiko.Transport:
    """One authenticated transport to ``hop``, directly or through ``via``'s direct-tcpip."""
    timeout = settings.connect_timeout
    entries = _lookup_known(hop.known_hosts_files, hop.known_hosts_name)
    if via is None:
        sock: Any = _tcp_connect(hop, timeout)
    else:
        try:
            sock = via.open_channel(
                "direct-tcpip", (hop.hostname, hop.port), ("127.0.0.1", 0), timeout=timeout
            )
        except ChannelException as e:
            # code 2 = connect failed (refused/unreachable as seen by the jump host)
            raise _Transient(f"jump host could not connect: {e.text}") from None
        except (SSHException, EOFError, OSError) as e:
            raise _Transient(f"jump host channel failed: {_describe(e)}") from None
    t = paramiko.Transport(sock)
    try:
        t.banner_timeout = timeout
        t.auth_timeout = timeout
        t.handshake_timeout = timeout
        t.channel_timeout = timeout
        preferred = _preferred_key_types(entries)
        if preferred:
            opts = t.get_security_options()
            available = list(opts.key_types)
            first = [k for k in preferred if k in available]
            opts.key_types = first + [k for k in available if k not in first]
        try:
            t.start_client(timeout=timeout)
        except (EOFError, ConnectionResetError, socket.timeout, TimeoutError) as e:
            raise _Transient(f"connection closed during SSH handshake ({_describe(e)})") from None
        except SSHException as e:
            msg = str(e)
            if "banner" in msg.lower() or "closed" in msg.lower() or "eof" in msg.lower():
                raise _Transient(msg) from None
            raise SSHError(hop.name, f"SSH negotiation with {hop.hostname}:{hop.port} failed: {msg}") from None
        if not t.is_active() or t.host_key is None:
            # paramiko's start_client(timeout=) returns quietly when the handshake times out
            # (a listener that accepts but never sends an SSH banner): say so, don't crash.
            raise _Transient(f"no SSH handshake from {hop.hostname}:{hop.port} within {timeout:g} s")
        key = t.get_remote_server_key()
        strict = hop.strict_host_key_checking
        if settings.accept_new and strict == "yes":
            strict = "accept-new"
        _verify_host_key(hop, strict, entries, key)
        _authenticate(t, hop)
        return t
    except BaseException:
        t.close()
        raise


def _open_hop_with_retry(hop: Target, settings: SSHSettings, via: paramiko.Transport | None) -> paramiko.Transport:
    attempts = max(1, int(settings.retries))
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts) | tenacity.stop_after_delay(RETRY_BUDGET),
        wait=tenacity.wait_exponential_jitter(multiplier=0.5, max=2.0, jitter=0.2),
        retry=tenacity.retry_if_exception_type(_Transient),
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                t = _open_hop(hop, settings, via)
                t._fleet_attempts = attempt.retry_state.attempt_number  # type: ignore[attr-defined]
                return t
    except _Transient as e:
        n = retrying.statistics.get("attempt_number", attempts)
        through = " via its jump host" if via is not None else ""
        raise Unreachable(
            hop.name,
            f"cannot reach {hop.hostname}:{hop.port}{through}: {e.reason} ({n} attempt{'s' if n != 1 else ''})",
            attempts=n,
        ) from None
    except SSHError as e:
        e.attempts = retrying.statistics.get("attempt_number", 1)
        raise
    raise AssertionError("unreachable")  # pragma: no cover


class Session:
    """An authenticated SSH connection to one device (context manager).

    ``target`` the Target; ``attempts`` connect attempts it took. Close it to close the
    device's transport and every jump transport.
    """

    def __init__(self, target: Target, settings: SSHSettings, transport: paramiko.Transport, jumps: list[paramiko.Transport]):
        self.target = target
        self.settings = settings
        self.transport = transport
        self._jumps = jumps
        self.attempts = getattr(transport, "_fleet_attempts", 1)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the device transport, then jump transports innermost first."""
        for t in [self.transport, *reversed(self._jumps)]:
            try:
                t.close()
            except Exception:
                pass

    def run(self, command: str, *, stdin: bytes | None = None, timeout: float | None = None) -> CommandResult:
        """Run ``command`` (a remote shell command line; quote inventory values with
        ``shlex.quote``) on one exec channel and return its exit status and output.

        ``stdin`` bytes are sent then EOF (EOF at once when None). Both streams are read
        as they arrive, so a command filling stderr cannot deadlock. ``timeout`` seconds
        (default ``settings.command_timeout``) bounds the whole command.

        Raises :class:`CommandTimeout` (partial output attached) or :class:`SSHError` if the
        connection fails.
        """
        limit = self.settings.command_timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + limit
        name = self.target.name
        try:
            chan = self.transport.open_session(timeout=min(limit, self.settings.connect_timeout))
        except (SSHException, EOFError, OSError) as e:
            raise SSHError(name, f"cannot open a session channel: {_describe(e)}") from None
        out: list[bytes] = []
        errb: list[bytes] = []
        try:
            chan.exec_command(command)
            pending = memoryview(stdin) if stdin else None
            if pending is None:
                chan.shutdown_write()
            fd = chan.fileno()
            while True:
                while chan.recv_ready():
                    out.append(chan.recv(65536))
                while chan.recv_stderr_ready():
                    errb.append(chan.recv_stderr(65536))
                if pending is not None and chan.send_ready():
                    n = chan.send(pending[:32768])
                    pending = pending[n:]
                    if not len(pending):
                        pending = None
                        chan.shutdown_write()
                if (chan.eof_received or chan.closed) and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CommandTimeout(
                        name,
                        f"command timed out after {limit:g} s: {command[:120]}",
                        stdout=b"".join(out),
                        stderr=b"".join(errb),
                    )
                # the channel's pipe is readable while either buffer holds data or on EOF;
                # while stdin is pending poll briefly for window space as well
                select.select([fd], [], [], min(remaining, 0.05) if pending is not None else remaining)
            remaining = max(0.0, deadline - time.monotonic())
            if not chan.status_event.wait(remaining):
                raise CommandTimeout(
                    name,
                    f"command timed out after {limit:g} s waiting for its exit status: {command[:120]}",
                    stdout=b"".join(out),
                    stderr=b"".join(errb),
                )
            return CommandResult(chan.recv_exit_status(), b"".join(out), b"".join(errb))
        except (SSHException, EOFError, OSError) as e:
            raise SSHError(name, f"command failed: connection lost ({_describe(e)})") from None
        finally:
            chan.close()


def connect(target: Target, settings: SSHSettings) -> Session:
    """Open an authenticated :class:`Session` to ``target`` (through its jump hosts).

    Raises :class:`HostKeyUnknown`, :class:`HostKeyChanged`, :class:`HostKeyRevoked`,
    :class:`AuthenticationFailed` (never retried), :class:`Unreachable` (after the retries
    described in the module docstring) or :class:`SSHError`.
    """
    jumps: list[paramiko.Transport] = []
    try:
        via = None
        for hop in target.proxy_jump:
            via = _open_hop_with_retry(hop, settings, via)
            jumps.append(via)
        t = _open_hop_with_retry(target, settings, via)
    except BaseException:
        for j in reversed(jumps):
            j.close()
        raise
    return Session(target, settings, t, jumps)
