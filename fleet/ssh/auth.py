"""Public-key authentication: which keys are offered, in which order, and the attempt.

Shapes: ``authenticate(transport, target) -> str`` (the label of the key that was
accepted: a file path or ``agent:<comment>``); raises :class:`AuthenticationFailed`.

Order: the target's IdentityFiles, then ssh-agent keys, then (only when no IdentityFile
is named) the default ``~/.ssh/id_ed25519``, ``id_ecdsa``, ``id_rsa`` (ssh(1)'s ``-i``
defaults; DSA dropped because paramiko 4+ removed it). A key is offered once even if
found twice. Password and keyboard-interactive authentication are not supported.

``IdentitiesOnly yes`` (ssh_config(5)) is honoured as sshconnect2.c pubkey_prepare()
does: only the IdentityFiles are offered (the default files when none is named), and an
agent key only when it is the key of one of those files, whose public half is read from
the private key, the file itself or ``FILE.pub`` (sshkey_load_public()); so an encrypted
key whose passphrase only the agent holds still works, and the agent's other keys are not
offered (they would count against the server's ``MaxAuthTries``).
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import paramiko
from paramiko.ssh_exception import (
    AuthenticationException,
    BadAuthenticationType,
    PasswordRequiredException,
    SSHException,
)

from fleet.ssh._util import cache_lock, file_signature, log
from fleet.ssh.errors import AuthenticationFailed

if TYPE_CHECKING:
    from fleet.ssh.target import Target

__all__ = ["authenticate", "DEFAULT_IDENTITIES", "load_private_key", "public_blob"]

#: Private keys tried when no IdentityFile is named.
DEFAULT_IDENTITIES = ("id_ed25519", "id_ecdsa", "id_rsa")

_pkey_cache: dict[str, tuple[tuple, paramiko.PKey | str]] = {}


def load_private_key(path: Path) -> paramiko.PKey | str:
    """The key at ``path``, or a reason string it cannot be used.

    Cached by path and mtime so 1000 connections parse a key file once.
    """
    sig = file_signature(path)
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
    with cache_lock:
        _pkey_cache[key] = (sig, value)
    return value


def _public_line_blob(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            head = f.read(16384)
    except OSError:
        return None
    words = head.split(b"\n", 1)[0].split()
    if len(words) < 2:
        return None
    try:
        blob = base64.b64decode(words[1], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(blob) < 4:
        return None
    (n,) = struct.unpack(">I", blob[:4])
    return blob if blob[4:4 + n] == words[0] else None


def public_blob(path: Path, private: paramiko.PKey | str) -> bytes | None:
    """The public key of IdentityFile ``path``: from its loaded private key, else the file
    read as a public key line, else ``path.pub``; None if none of them gives one."""
    if isinstance(private, paramiko.PKey):
        return private.asbytes()
    return _public_line_blob(path) or _public_line_blob(Path(str(path) + ".pub"))


def _default_files() -> list[Path]:
    return [p for p in (Path.home() / ".ssh" / n for n in DEFAULT_IDENTITIES) if p.exists()]


def _candidate_keys(target: "Target", agent_box: list) -> Iterator[tuple[str, paramiko.PKey | str]]:
    """(label, key or reason) in the order of the module docstring."""
    files = list(target.key_files)
    if not files and target.identities_only:
        files = _default_files()
    wanted: set[bytes] = set()
    for p in files:
        key = load_private_key(p)
        blob = public_blob(p, key)
        if blob:
            wanted.add(blob)
        yield str(p), key
    if os.environ.get("SSH_AUTH_SOCK"):
        try:
            agent = paramiko.Agent()
        except SSHException as e:
            yield "ssh-agent", f"unusable: {e}"
        else:
            agent_box.append(agent)
            skipped = 0
            for k in agent.get_keys():
                if target.identities_only and k.asbytes() not in wanted:
                    skipped += 1
                    continue
                comment = getattr(k, "comment", "") or k.fingerprint
                yield f"agent:{comment}", k
            if skipped:
                log.debug("%s: IdentitiesOnly: %d ssh-agent key(s) not offered", target.name, skipped)
    if not target.key_files and not target.identities_only:
        for p in _default_files():
            yield str(p), load_private_key(p)


def authenticate(t: paramiko.Transport, target: "Target") -> str:
    """Authenticate ``t`` as ``target.user``; returns the label of the accepted key.

    Raises :class:`AuthenticationFailed` (never retried by the caller: a retry cannot fix
    it and would hammer ``MaxAuthTries``/fail2ban)."""
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
                log.debug("%s: key %s (%s) refused by %s", target.name, label, key.fingerprint, where)
                tried.append(label)
                continue
            except (SSHException, EOFError, OSError) as e:
                # e.g. the server dropped us after MaxAuthTries
                tried.append(label)
                raise AuthenticationFailed(
                    target.name,
                    f"authentication as {where} failed: connection closed ({e or type(e).__name__}); "
                    f"keys tried: {', '.join(tried)}",
                    tried=tried,
                ) from None
            if t.is_authenticated():
                log.info("%s: authenticated as %s with %s (%s %s)", target.name, where, label, key.get_name(),
                         key.fingerprint)
                return label
            raise AuthenticationFailed(
                target.name,
                f"{where} wants further authentication ({', '.join(remaining)}) after key {label}; "
                f"only public keys are supported",
                tried=tried + [label],
            )
    finally:
        for a in agent_box:
            a.close()
    keys = ", ".join(tried) if tried else "none (no IdentityFile, no ssh-agent keys, no ~/.ssh/id_*)"
    only = " (IdentitiesOnly: ssh-agent keys other than these files' are not offered)" if target.identities_only else ""
    raise AuthenticationFailed(target.name, f"authentication as {where} failed; keys tried: {keys}{only}", tried=tried)
