"""SSH connections to devices, with OpenSSH's host-key rules, on paramiko.

Shapes:
    ``target_for(host, settings) -> Target``: how to reach one inventory host (address,
    port, user, keys, known_hosts files, host-key checking mode, jump hosts or
    ProxyCommand, algorithms, become, probe timeout).
    ``connect(target, settings) -> Session``; ``Session.run(cmd) -> CommandResult``;
    ``Session.close()`` (thread-safe).

Modules, one concern each:

* :mod:`fleet.ssh.target`      inventory variables -> :class:`Target` (the only place
  ``ansible_host``, ``ansible_port``, ``ansible_user``... are read);
* :mod:`fleet.ssh.options`     ssh(1) flags and the first-value-wins option accumulator;
* :mod:`fleet.ssh.config`      ssh_config(5) files, read as ssh(1) does, ``Match exec`` refused;
* :mod:`fleet.ssh.match`       OpenSSH's wildcard pattern matching (match.c);
* :mod:`fleet.ssh.algorithms`  OpenSSH 9.2's default algorithm lists and their options;
* :mod:`fleet.ssh.known_hosts` known_hosts parsing/matching (hostfile.c) and the host-key policy;
* :mod:`fleet.ssh.auth`        which keys are offered (IdentitiesOnly), authentication;
* :mod:`fleet.ssh.proxy`       ProxyCommand processes;
* :mod:`fleet.ssh.session`     connecting, retries, jump hosts, running commands;
* :mod:`fleet.ssh.errors`      :class:`SSHError` and its subclasses.

Diagnostics go to ``fleet.log.logger("ssh")``: INFO (``-v``) the address connected and
through what, the host-key decision with the known_hosts file:line, the key that
authenticated, retries; DEBUG (``-vv``) each remote command (``secret_args`` masked,
stdin never logged), its exit status and byte counts; TRACE (``-vvv``) the negotiated
algorithms and paramiko's own transport log.

Not supported (warned about once, or refused, never silently misused): password and
keyboard-interactive authentication, host certificates and ``@cert-authority`` trust,
``Match exec`` and other commands run from an ssh config, ``CanonicalizeHostname``, a
ProxyJump/ProxyCommand configured for a jump host itself, ssh-agent forwarding.

Errors raised are :class:`SSHError` subclasses (``FleetError``, exit status 1) whose
message starts with the inventory host name, and :class:`fleet.errors.UsageError` (exit
status 2) for bad inventory values or ssh config files.
"""

from __future__ import annotations

import logging

from fleet.ssh.algorithms import DEFAULT_ALGORITHMS, Algorithms
from fleet.ssh.errors import (
    AuthenticationFailed,
    CommandTimeout,
    HostKeyChanged,
    HostKeyRevoked,
    HostKeyUnknown,
    NegotiationFailed,
    OutputTooLarge,
    SessionClosed,
    SSHError,
    Unreachable,
)
from fleet.ssh.session import (
    DEFAULT_MAX_OUTPUT,
    PROBE_MAX_OUTPUT,
    RETRY_BUDGET,
    CommandResult,
    Session,
    close_channel,
    connect,
    wait_readable,
)
from fleet.ssh.target import PROBE_TIMEOUT_VAR, SSHSettings, Target, target_for

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
    "wait_readable",
    "close_channel",
    "Algorithms",
    "DEFAULT_ALGORITHMS",
    "SSHError",
    "HostKeyUnknown",
    "HostKeyChanged",
    "HostKeyRevoked",
    "AuthenticationFailed",
    "Unreachable",
    "NegotiationFailed",
    "CommandTimeout",
    "OutputTooLarge",
    "SessionClosed",
    "RETRY_BUDGET",
    "DEFAULT_MAX_OUTPUT",
    "PROBE_MAX_OUTPUT",
    "PROBE_TIMEOUT_VAR",
]
