"""From an inventory host to an SSH target: the one place connection variables are read.

Shapes: ``target_for(host, settings) -> Target``; :class:`SSHSettings` (run-wide CLI
flags); :class:`Target` (everything needed to connect to one device, frozen).

Inventory variables are read the way Ansible's ``ssh`` connection plugin hands them to
ssh(1): ``ansible_port``/``ansible_ssh_private_key_file``/``ansible_user`` become
``-o Port=``/``-o IdentityFile=``/``-o User=`` ahead of ``ansible_ssh_args``,
``ansible_ssh_common_args`` and ``ansible_ssh_extra_args``. Command-line options beat the
ssh config, and for each option the first value obtained wins (ssh_config(5));
``IdentityFile`` accumulates. fleet's own per-host variable: ``fleet_probe_timeout``
(seconds for the probe command, a finite number above 0).

Jump hosts (ProxyJump) use their ssh config entry for user/port/keys and fall back to the
device's IdentityFiles and known_hosts files (ssh(1) would not pass ``-i`` on to a jump;
one-key fleets rely on it); a ProxyJump or ProxyCommand configured for a jump host itself
is not followed (only the device's own chain is).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.errors import UsageError
from fleet.ssh._util import (
    DEFAULT_SSH_PORT,
    ansible_bool,
    default_user,
    expand_path,
    known_hosts_name,
    parse_port,
    parse_seconds,
    warn_once,
)
from fleet.ssh.algorithms import DEFAULT_ALGORITHMS, OPTION_NAMES, Algorithms, assemble
from fleet.ssh.config import apply_config
from fleet.ssh.options import (
    Options,
    flag_value,
    known_hosts_list,
    parse_jump_spec,
    percent_expand,
    strict_value,
)

__all__ = ["SSHSettings", "Target", "target_for", "GLOBAL_KNOWN_HOSTS", "PROBE_TIMEOUT_VAR"]

GLOBAL_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")
#: Inventory variable holding a per-host probe timeout in seconds.
PROBE_TIMEOUT_VAR = "fleet_probe_timeout"


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
    connect; ``user`` login; ``key_files`` IdentityFiles in order (empty = agent + default
    ``~/.ssh/id_*``); ``identities_only`` (IdentitiesOnly: offer only ``key_files``, or
    the default files when there are none, and agent keys only when they are one of
    those); ``known_hosts_files`` in order, the first one receives accepted keys;
    ``strict_host_key_checking`` ``"yes" | "no" | "accept-new"``; ``proxy_jump`` hops in
    connection order; ``proxy_command`` the expanded ProxyCommand (None = connect
    directly or through ``proxy_jump``); ``host_key_alias`` (HostKeyAlias, "" = none);
    ``algorithms`` what is proposed (:mod:`fleet.ssh.algorithms`); ``become`` from
    ``ansible_become``; ``probe_timeout`` seconds from ``fleet_probe_timeout`` (None =
    the run's command timeout).
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
    identities_only: bool = False
    proxy_command: str | None = None
    host_key_alias: str = ""
    algorithms: Algorithms = DEFAULT_ALGORITHMS
    probe_timeout: float | None = None

    @property
    def known_hosts_name(self) -> str:
        """The name this target's key is filed under in known_hosts: HostKeyAlias when set,
        else the host name, as ``[host]:port`` off port 22."""
        return self.host_key_alias or known_hosts_name(self.hostname, self.port)

    def __str__(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


def _config_path(settings: SSHSettings, opts: Options) -> Path | None:
    if opts.config_file:
        if opts.config_file.lower() == "none":
            return None
        return expand_path(opts.config_file)
    if settings.ssh_config is not None:
        return Path(settings.ssh_config)
    default = Path.home() / ".ssh" / "config"
    return default if default.exists() else None


def _default_known_hosts() -> list[Path]:
    files = [Path.home() / ".ssh" / "known_hosts"]
    if os.access(GLOBAL_KNOWN_HOSTS, os.R_OK):
        files.append(GLOBAL_KNOWN_HOSTS)
    return files


def _file_tokens(hostname: str, host_arg: str, port: int, user: str, alias: str, jump: str) -> dict[str, str]:
    """ssh_config(5) TOKENS for IdentityFile and UserKnownHostsFile."""
    local = socket.gethostname()
    tokens = {
        "d": str(Path.home()), "h": hostname, "i": str(os.getuid()), "j": jump, "k": alias or host_arg,
        "L": local.split(".")[0], "l": local, "n": host_arg, "p": str(port), "r": user, "u": default_user(),
    }
    tokens["C"] = hashlib.sha1((local + hostname + str(port) + user + jump).encode()).hexdigest()
    return tokens


class _HostVars:
    """A host's variables as fleet acts on them: through ``Host.var`` where the host has it,
    so a Jinja-templated value is a usage error naming the host and variable instead of
    literal text sent to a device."""

    def __init__(self, host: Any):
        self._host = host
        self._vars = dict(getattr(host, "vars", None) or {})

    def get(self, name: str, default: Any = None) -> Any:
        if name not in self._vars:
            return default
        reader = getattr(self._host, "var", None)
        return reader(name, default) if callable(reader) else self._vars[name]

    def __getitem__(self, name: str) -> Any:
        return self.get(name)


def _host_vars(host: Any) -> _HostVars:
    return _HostVars(host)


# Connection variables that must be one string or number (Ansible reads them as such).
_SCALAR_VARS = ("ansible_host", "ansible_ssh_host", "ansible_port", "ansible_ssh_port", "ansible_user",
                "ansible_ssh_user", "ansible_ssh_private_key_file", "ansible_private_key_file",
                "ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_ssh_args")


def _algorithms(opts: Options, device: str) -> Algorithms:
    fields = {}
    for option, kind in OPTION_NAMES.items():
        spec = opts.values.get(option)
        fields[kind] = assemble(kind, spec, device=device, origin=opts.origins.get(option, "default"))
    return Algorithms(**fields, host_keys_set="hostkeyalgorithms" in opts.values)


def target_for(host: Any, settings: SSHSettings) -> Target:
    """Resolve how to reach inventory ``host`` (a ``fleet.inventory.Host``: ``name`` and
    ``vars``; its address/port/user properties are not used).

    Precedence follows what Ansible's ssh plugin passes to ssh(1) and ssh(1)'s own rule
    (first value wins, command line before ssh config): ``ansible_port``,
    ``ansible_ssh_private_key_file``, ``ansible_user``, then ``ansible_ssh_args``,
    ``ansible_ssh_common_args``, ``ansible_ssh_extra_args``, then ``settings`` where it
    names something (``--known-hosts``), then the ssh config entry for the address
    (``ansible_host``, as ssh(1) is invoked with it), then defaults: port 22, the local
    user, known_hosts ``~/.ssh/known_hosts`` plus ``/etc/ssh/ssh_known_hosts`` when
    readable, StrictHostKeyChecking ``yes`` (``accept-new`` with ``settings.accept_new``).

    Raises :class:`fleet.errors.UsageError` (exit 2, naming the host, or the ssh config
    file and line) for a malformed port, timeout, option, algorithm list, ProxyJump spec
    or ProxyCommand token, an unreadable ssh config, or a ``Match exec`` in it.
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
    # Ansible's ssh plugin lists the old spellings after the new ones, and the last one set
    # wins (ansible-core lib/ansible/plugins/connection/ssh.py, the options' ``vars``)
    address = str(hv.get("ansible_ssh_host") or hv.get("ansible_host") or name)

    opts = Options()
    for var in ("ansible_ssh_port", "ansible_port"):
        if hv.get(var) is not None:
            opts.set("port", str(parse_port(hv[var], name, var)), device=name, origin=var)
            break
    for var in ("ansible_ssh_private_key_file", "ansible_private_key_file"):
        if hv.get(var):
            opts.identity.append(str(hv[var]))
            break
    for var in ("ansible_ssh_user", "ansible_user"):
        if hv.get(var):
            opts.set("user", str(hv[var]), device=name, origin=var)
            break
    for var in ("ansible_ssh_args", "ansible_ssh_common_args", "ansible_ssh_extra_args"):
        if hv.get(var):
            opts.feed_args(str(hv[var]), device=name, origin=var)
    for var in ("ansible_password", "ansible_ssh_pass"):
        if hv._vars.get(var):  # only warned about (a templated vault value is fine here)
            warn_once(f"{name} (and maybe others): {var} is set but password authentication is not supported; "
                      f"using keys/ssh-agent", var)
    probe_timeout = None
    if hv.get(PROBE_TIMEOUT_VAR) is not None:
        probe_timeout = parse_seconds(hv[PROBE_TIMEOUT_VAR], name, PROBE_TIMEOUT_VAR)
    if settings.known_hosts and "userknownhostsfile" not in opts.values:
        # --known-hosts comes after the inventory's own options and before the ssh config
        opts.values["userknownhostsfile"] = shlex.join(str(p) for p in settings.known_hosts)
        opts.origins["userknownhostsfile"] = "--known-hosts"

    cfg_path = _config_path(settings, opts)
    apply_config(cfg_path, opts, host_arg=address, device=name)
    where_cfg = str(cfg_path) if cfg_path else "ssh config"

    hostname = address
    if opts.values.get("hostname"):
        hostname = percent_expand(opts.values["hostname"], {"h": address}, device=name,
                                  what=f"{opts.origins['hostname']}: HostName")
    port_s = opts.values.get("port")
    port_n = parse_port(port_s, name, opts.origins.get("port", "port")) if port_s else DEFAULT_SSH_PORT
    user_s = opts.values.get("user") or default_user()
    alias = opts.values.get("hostkeyalias", "")
    jump_spec = opts.values.get("proxyjump")
    if jump_spec and jump_spec.strip().lower() == "none":
        jump_spec = None
    tokens = _file_tokens(hostname, address, port_n, user_s, alias, jump_spec or "")

    def files(values: list[str], what: str) -> list[Path]:
        return [expand_path(percent_expand(v, tokens, device=name, what=what)) for v in values]

    key_files = files(opts.identity, "IdentityFile")
    if opts.origins.get("userknownhostsfile") == "--known-hosts":
        known = [Path(p) for p in settings.known_hosts]
    elif "userknownhostsfile" in opts.values:
        known = known_hosts_list(opts.values["userknownhostsfile"],
                                 expand=lambda w: files([w], "UserKnownHostsFile")[0])
    else:
        known = _default_known_hosts()

    strict = strict_value(opts.values.get("stricthostkeychecking", "yes"), name, "StrictHostKeyChecking")
    if settings.accept_new and strict == "yes":
        strict = "accept-new"
    identities_only = flag_value(opts.values["identitiesonly"], name, "IdentitiesOnly") \
        if "identitiesonly" in opts.values else False

    proxy_command = opts.values.get("proxycommand")
    if proxy_command is not None:
        if proxy_command.strip().lower() == "none":
            proxy_command = None
        else:
            proxy_command = percent_expand(
                proxy_command,
                {"h": hostname.lower(), "k": alias or address, "n": address, "p": str(port_n), "r": user_s},
                device=name, what=f"{opts.origins['proxycommand']}: ProxyCommand",
            )

    hops: list[Target] = []
    if jump_spec:
        jump_spec = percent_expand(jump_spec, {"h": hostname.lower(), "n": address, "p": str(port_n), "r": user_s},
                                   device=name, what="ProxyJump")
        for juser, jhost, jport in parse_jump_spec(jump_spec, name, "ProxyJump"):
            hops.append(_jump_target(name, juser, jhost, jport, cfg_path, where_cfg, settings, user_s, key_files,
                                     known, strict))

    return Target(
        name=name,
        hostname=hostname,
        port=port_n,
        user=str(user_s),
        key_files=tuple(dict.fromkeys(key_files)),
        known_hosts_files=tuple(known),
        strict_host_key_checking=strict,
        proxy_jump=tuple(hops),
        become=ansible_bool(hv.get("ansible_become", False)),
        identities_only=identities_only,
        proxy_command=proxy_command,
        host_key_alias=alias,
        algorithms=_algorithms(opts, name),
        probe_timeout=probe_timeout,
    )


def _jump_target(name: str, juser: str | None, jhost: str, jport: int | None, cfg_path: Path | None, where_cfg: str,
                 settings: SSHSettings, user_s: str, key_files: list[Path], known: list[Path], strict: str) -> Target:
    jopts = Options()
    apply_config(cfg_path, jopts, host_arg=jhost, device=f"{name} (jump {jhost})")
    jv = jopts.values
    jhostname = percent_expand(jv["hostname"], {"h": jhost}, device=name, what="HostName") if jv.get("hostname") \
        else jhost
    jport_n = jport or (parse_port(jv["port"], name, where_cfg) if jv.get("port") else DEFAULT_SSH_PORT)
    jknown = (known_hosts_list(jv["userknownhostsfile"]) if jv.get("userknownhostsfile") and not settings.known_hosts
              else known)
    jkeys = [expand_path(p) for p in jopts.identity]
    return Target(
        name=f"{name} (jump {jhost})",
        hostname=jhostname,
        port=jport_n,
        user=juser or jv.get("user") or user_s,
        # ssh(1) does not pass -i to the jump; falling back to the device's keys after the
        # jump's own keeps one-key fleets working.
        key_files=tuple(dict.fromkeys(jkeys + key_files)),
        known_hosts_files=tuple(jknown),
        strict_host_key_checking=strict,
        identities_only=flag_value(jv["identitiesonly"], name, "IdentitiesOnly") if "identitiesonly" in jv else False,
        host_key_alias=jv.get("hostkeyalias", ""),
        algorithms=_algorithms(jopts, f"{name} (jump {jhost})"),
    )
