"""Which key exchange, host key, cipher and MAC algorithms fleet proposes: OpenSSH 9.2's.

Shapes: ``Algorithms`` (four tuples in preference order); ``assemble(kind, spec, ...)``
resolves one ssh_config(5) list option; ``apply(transport, algorithms, known_types)``
configures a paramiko Transport before its handshake.

paramiko, left to itself, also proposes ``3des-cbc``, ``aes*-cbc``, ``hmac-md5`` and
``hmac-*-96``, which OpenSSH stopped proposing by default (cbc ciphers in 7.2, 3des-cbc in
7.4, MD5 and truncated MACs in 7.2): a device offering only those would be accepted
silently by fleet and refused by ssh(1). fleet proposes exactly OpenSSH 9.2's default lists
(``ssh -G`` of 9.2, below), minus what paramiko does not implement (chacha20-poly1305,
umac, sntrup761, certificates, security keys), plus ``mlkem768x25519-sha256`` first among
key exchanges: the post-quantum default of OpenSSH 9.9 and later, which paramiko supports.

A legacy device is reached the OpenSSH way, per host: ``Ciphers``, ``MACs``,
``KexAlgorithms``, ``HostKeyAlgorithms`` in its ssh config entry or in
``ansible_ssh_common_args`` (``-o Ciphers=+aes128-cbc``), with ssh_config(5)'s list
syntax: ``+names`` appends to the default list, ``-patterns`` removes from it, ``^names``
puts names first, a bare list replaces it. Names are validated as ssh(1) does (readconf.c:
"Bad SSH2 cipher spec"); patterns (``*``, ``?``) are allowed where ssh(1) allows them.
The assembly follows kex.c kex_assemble_names().

Sources: ssh_config(5) of OpenSSH 9.2 (Ciphers, MACs, KexAlgorithms, HostKeyAlgorithms),
https://www.openssh.com/txt/release-7.2, https://www.openssh.com/txt/release-7.4,
https://github.com/openssh/openssh-portable/blob/V_9_2_P1/kex.c
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import paramiko

from fleet.errors import UsageError
from fleet.ssh._util import warn_once
from fleet.ssh.match import filter_allowlist, filter_denylist, has_wildcard

__all__ = ["Algorithms", "OPENSSH_DEFAULTS", "DEFAULT_ALGORITHMS", "assemble", "apply", "OPTION_NAMES"]

#: ssh_config option -> field of :class:`Algorithms`.
OPTION_NAMES = {"kexalgorithms": "kex", "hostkeyalgorithms": "host_keys", "ciphers": "ciphers", "macs": "macs"}
_SPELLING = {"kex": "KexAlgorithms", "host_keys": "HostKeyAlgorithms", "ciphers": "Ciphers", "macs": "MACs"}

#: OpenSSH 9.2p1 client defaults (``ssh -G`` with an empty config), in preference order.
OPENSSH_DEFAULTS: dict[str, tuple[str, ...]] = {
    "kex": (
        "mlkem768x25519-sha256",  # OpenSSH 9.9+ default; see module docstring
        "sntrup761x25519-sha512", "sntrup761x25519-sha512@openssh.com",
        "curve25519-sha256", "curve25519-sha256@libssh.org",
        "ecdh-sha2-nistp256", "ecdh-sha2-nistp384", "ecdh-sha2-nistp521",
        "diffie-hellman-group-exchange-sha256", "diffie-hellman-group16-sha512",
        "diffie-hellman-group18-sha512", "diffie-hellman-group14-sha256",
    ),
    "host_keys": (
        "ssh-ed25519-cert-v01@openssh.com", "ecdsa-sha2-nistp256-cert-v01@openssh.com",
        "ecdsa-sha2-nistp384-cert-v01@openssh.com", "ecdsa-sha2-nistp521-cert-v01@openssh.com",
        "sk-ssh-ed25519-cert-v01@openssh.com", "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
        "rsa-sha2-512-cert-v01@openssh.com", "rsa-sha2-256-cert-v01@openssh.com",
        "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
        "rsa-sha2-512", "rsa-sha2-256",
    ),
    "ciphers": (
        "chacha20-poly1305@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr",
        "aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
    ),
    "macs": (
        "umac-64-etm@openssh.com", "umac-128-etm@openssh.com", "hmac-sha2-256-etm@openssh.com",
        "hmac-sha2-512-etm@openssh.com", "hmac-sha1-etm@openssh.com", "umac-64@openssh.com",
        "umac-128@openssh.com", "hmac-sha2-256", "hmac-sha2-512", "hmac-sha1",
    ),
}

#: Every name OpenSSH 9.2 knows (``ssh -Q cipher|mac|kex|HostKeyAlgorithms``), in ``-Q``
#: order: the "all" list patterns are matched against.
OPENSSH_KNOWN: dict[str, tuple[str, ...]] = {
    "kex": (
        "diffie-hellman-group1-sha1", "diffie-hellman-group14-sha1", "diffie-hellman-group14-sha256",
        "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512", "diffie-hellman-group-exchange-sha1",
        "diffie-hellman-group-exchange-sha256", "ecdh-sha2-nistp256", "ecdh-sha2-nistp384", "ecdh-sha2-nistp521",
        "curve25519-sha256", "curve25519-sha256@libssh.org", "sntrup761x25519-sha512",
        "sntrup761x25519-sha512@openssh.com", "mlkem768x25519-sha256",
    ),
    "host_keys": (
        "ssh-ed25519", "ssh-ed25519-cert-v01@openssh.com", "sk-ssh-ed25519@openssh.com",
        "sk-ssh-ed25519-cert-v01@openssh.com", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256-cert-v01@openssh.com",
        "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp384-cert-v01@openssh.com", "ecdsa-sha2-nistp521",
        "ecdsa-sha2-nistp521-cert-v01@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
        "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com", "webauthn-sk-ecdsa-sha2-nistp256@openssh.com",
        "ssh-dss", "ssh-dss-cert-v01@openssh.com", "ssh-rsa", "ssh-rsa-cert-v01@openssh.com",
        "rsa-sha2-256", "rsa-sha2-256-cert-v01@openssh.com", "rsa-sha2-512", "rsa-sha2-512-cert-v01@openssh.com",
    ),
    "ciphers": (
        "3des-cbc", "aes128-cbc", "aes192-cbc", "aes256-cbc", "aes128-ctr", "aes192-ctr", "aes256-ctr",
        "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
    ),
    "macs": (
        "hmac-sha1", "hmac-sha1-96", "hmac-sha2-256", "hmac-sha2-512", "hmac-md5", "hmac-md5-96",
        "umac-64@openssh.com", "umac-128@openssh.com", "hmac-sha1-etm@openssh.com", "hmac-sha1-96-etm@openssh.com",
        "hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "hmac-md5-etm@openssh.com",
        "hmac-md5-96-etm@openssh.com", "umac-64-etm@openssh.com", "umac-128-etm@openssh.com",
    ),
}

# What this paramiko implements (Transport's class tables; the same names as OpenSSH's).
_T = paramiko.Transport
PARAMIKO: dict[str, frozenset[str]] = {
    "kex": frozenset(_T._kex_info),
    "host_keys": frozenset(_T._preferred_keys),
    "ciphers": frozenset(_T._cipher_info),
    "macs": frozenset(_T._mac_info),
}
# paramiko's own names for the four lists, in Transport(disabled_algorithms=...)
_PARAMIKO_KIND = {"kex": "kex", "host_keys": "keys", "ciphers": "ciphers", "macs": "macs"}
_PARAMIKO_PREFERRED = {"kex": "_preferred_kex", "host_keys": "_preferred_keys", "ciphers": "_preferred_ciphers",
                       "macs": "_preferred_macs"}


@dataclass(frozen=True)
class Algorithms:
    """The algorithm names fleet proposes, in preference order, each one implemented by
    paramiko. ``host_keys_set``: HostKeyAlgorithms was configured (then known_hosts does
    not reorder it, as in sshconnect.c order_hostkeyalgs())."""

    kex: tuple[str, ...]
    host_keys: tuple[str, ...]
    ciphers: tuple[str, ...]
    macs: tuple[str, ...]
    host_keys_set: bool = False


def _supported(kind: str, names: Sequence[str]) -> tuple[str, ...]:
    return tuple(n for n in dict.fromkeys(names) if n in PARAMIKO[kind])


DEFAULT_ALGORITHMS = Algorithms(**{k: _supported(k, v) for k, v in OPENSSH_DEFAULTS.items()})


def _cat(a: Sequence[str], b: Sequence[str]) -> list[str]:
    """kex_names_cat(): ``a`` then the names of ``b`` not already in ``a``."""
    return list(dict.fromkeys([*a, *b]))


def assemble(kind: str, spec: str | None, *, device: str, origin: str) -> tuple[str, ...]:
    """The list for ``kind`` (``"kex"``, ``"host_keys"``, ``"ciphers"``, ``"macs"``) from
    option value ``spec`` (None = OpenSSH's default), limited to what paramiko implements.

    Raises UsageError naming ``device``/``origin`` for a name OpenSSH does not know
    (outside ``-`` lists and HostKeyAlgorithms, where patterns are allowed), a negated
    pattern, or a list that leaves nothing paramiko can use. Names OpenSSH knows but
    paramiko lacks (``chacha20-poly1305@openssh.com``, ``ssh-rsa``...) are dropped with a
    warning when named explicitly."""
    default = OPENSSH_DEFAULTS[kind]
    if spec is None or not spec.strip():
        return _supported(kind, default)
    spec = spec.strip()
    what = f"{device}: {origin}: {_SPELLING[kind]} {spec!r}"
    head, body = (spec[0], spec[1:]) if spec[0] in "+-^" else ("", spec)
    if head != "-":
        patterns_ok = kind == "host_keys"  # sshkey_names_valid2(arg, 1) allows wildcards
        for name in body.split(","):
            if name.startswith("!"):
                raise UsageError(f"{what}: negated names are not allowed here")
            if patterns_ok and has_wildcard(name):
                continue
            if name not in OPENSSH_KNOWN[kind]:
                raise UsageError(f"{what}: unknown algorithm {name!r} (ssh -Q lists the known ones)")
    if head == "-":
        names = filter_denylist(default, body)
    else:
        if head == "+":
            listed = _cat(default, body.split(","))
        elif head == "^":
            listed = _cat(body.split(","), default)
        else:
            listed = body.split(",")
        names = []
        for pattern in listed:  # positive patterns expand against every known name
            names = _cat(names, filter_allowlist(OPENSSH_KNOWN[kind], pattern))
        explicit = [n for n in body.split(",") if not has_wildcard(n) and n not in PARAMIKO[kind]]
        for n in explicit:
            warn_once(f"{what}: {n} is not implemented by paramiko; left out", f"alg:{kind}:{n}")
    result = _supported(kind, names)
    if not result:
        raise UsageError(f"{what} leaves no algorithm fleet (paramiko) implements: "
                         f"it supports {', '.join(sorted(PARAMIKO[kind]))}")
    return result


def disabled(algorithms: Algorithms) -> dict[str, list[str]]:
    """paramiko ``disabled_algorithms``: everything paramiko has that ``algorithms`` lacks."""
    out: dict[str, list[str]] = {}
    for kind, pkind in _PARAMIKO_KIND.items():
        allowed = set(getattr(algorithms, kind))
        out[pkind] = sorted(n for n in getattr(_T, _PARAMIKO_PREFERRED[kind]) if n not in allowed)
    return out


def apply(transport: paramiko.Transport, algorithms: Algorithms, known_types: Sequence[str] = ()) -> None:
    """Set ``transport``'s proposal to ``algorithms`` in their order; host key types
    recorded in known_hosts (``known_types``) go first unless HostKeyAlgorithms was set,
    so the device shows the key we can check."""
    opts = transport.get_security_options()
    opts.kex = algorithms.kex
    opts.ciphers = algorithms.ciphers
    opts.digests = algorithms.macs
    keys = list(algorithms.host_keys)
    if known_types and not algorithms.host_keys_set:
        first = [k for k in known_types if k in keys]
        keys = first + [k for k in keys if k not in first]
    opts.key_types = tuple(keys)
