"""known_hosts files: parsing, matching, recording, and the host-key policy.

Shapes: ``lookup_known(files, name) -> [KHEntry]`` (entries whose host field matches
``name``, in file order); ``verify_host_key(target, strict, entries, key)`` applies the
policy or raises; ``record_host_key(path, name, key)`` appends one line.

Parsed here, not by ``paramiko.HostKeys``: that loader raises ``InvalidHostKey`` on
``@cert-authority``/``@revoked`` lines (paramiko/paramiko#771) and would be re-run for
every connection. Each file is parsed once per process (cached by path, mtime, size and
inode). Lines are read and matched as OpenSSH's hostfile.c hostkeys_foreach_file() does:

* the host field is the first word (up to a space or tab), after an optional
  ``@cert-authority`` or ``@revoked`` marker (case-sensitive; any other ``@`` word makes
  the line invalid);
* a field starting with ``|`` is one hashed name ``|1|base64(salt)|base64(HMAC-SHA1)``,
  compared whole (match_maybe_hashed()); a malformed hash skips the line;
* any other field is a pattern list matched by match.c match_hostname() (see
  :mod:`fleet.ssh.match`): ``*``, ``?``, ``!`` negation, commas, case-insensitive, and
  ``[`` ``]`` literal, so ``[10.0.0.*]:2222`` matches ``[10.0.0.5]:2222``;
* the name looked up is ``host`` on port 22 and ``[host]:port`` otherwise, lower-cased as
  ssh(1) does; a line whose key does not decode, or whose key blob names a different
  type than the line, is skipped (hostfile_read_key()).

Policy (OpenSSH ``StrictHostKeyChecking``): ``yes`` unknown host -> :class:`HostKeyUnknown`;
``accept-new`` unknown host -> key appended to the target's first known_hosts file
(created 0600, directory 0700); ``no`` unknown host -> accepted WITHOUT being recorded, with
a warning (OpenSSH would record it; we do not, so a later strict run still asks). A key
that differs from a recorded one is refused in every mode (:class:`HostKeyChanged`,
naming file:line of the old entry), and so is a key listed under ``@revoked``
(:class:`HostKeyRevoked`). ``@cert-authority`` lines are kept out of the way: paramiko
does not negotiate certificate host keys, so a host known only through a CA is reported
as unknown, with a hint.
"""

from __future__ import annotations

import base64
import binascii
import errno
import fcntl
import hashlib
import hmac
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import paramiko

from fleet.ssh._util import cache_lock, file_signature, log, warn_once
from fleet.ssh.errors import HostKeyChanged, HostKeyRevoked, HostKeyUnknown, SSHError
from fleet.ssh.match import has_wildcard, match_hostname

if TYPE_CHECKING:
    from fleet.ssh.target import Target

__all__ = ["KHEntry", "lookup_known", "verify_host_key", "record_host_key", "preferred_key_types", "key_line",
           "parse_known_hosts", "host_matches"]

_HASH_MAGIC = "|1|"
_SHA1_LEN = 20


def _hashed_match(field_: str, name: str) -> bool:
    """match_maybe_hashed() for a field starting with ``|``; None-safe: malformed -> False."""
    if not field_.startswith(_HASH_MAGIC):
        return False
    salt_b64, sep, hash_b64 = field_[len(_HASH_MAGIC):].partition("|")
    if not sep or not 0 < len(salt_b64) <= 1024:
        return False
    try:
        salt = base64.b64decode(salt_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(salt) != _SHA1_LEN:
        return False
    digest = hmac.new(salt, name.encode("utf-8", "surrogateescape"), hashlib.sha1).digest()
    # host_hash() re-encodes salt and digest and compares the whole field as text
    want = f"{_HASH_MAGIC}{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
    return hmac.compare_digest(want.encode(), field_.encode("utf-8", "surrogateescape"))


def host_matches(hosts_field: str, name: str) -> bool:
    """True if a known_hosts host field (pattern list or hashed name) matches ``name``
    (already in ``[host]:port`` form and lower case)."""
    if hosts_field.startswith("|"):
        return _hashed_match(hosts_field, name)
    return match_hostname(name, hosts_field) == 1


@dataclass(frozen=True)
class KHEntry:
    """One usable known_hosts line: ``marker`` ``""``/``"revoked"``/``"cert-authority"``,
    ``hosts`` the raw host field, ``keytype``/``blob`` the key, ``path``/``line`` where."""

    marker: str
    hosts: str
    keytype: str
    blob: bytes
    path: str
    line: int

    def matches(self, name: str) -> bool:
        return host_matches(self.hosts, name)


@dataclass
class KHFile:
    """A parsed known_hosts file: ``literal`` indexes lines whose host field is a plain
    name list (no wildcard, negation or hash) by lower-cased name; ``other`` holds the rest,
    matched one by one."""

    signature: tuple | None
    literal: dict[str, list[KHEntry]] = field(default_factory=dict)
    other: list[KHEntry] = field(default_factory=list)
    lines: int = 0

    def add(self, e: KHEntry) -> None:
        names = e.hosts.split(",")
        if e.hosts.startswith("|") or any(
            n.startswith("!") or has_wildcard(n) or len(n.encode("utf-8", "surrogateescape")) >= 1023 for n in names
        ):
            self.other.append(e)
            return
        for n in dict.fromkeys(n.encode("utf-8", "surrogateescape").lower().decode("utf-8", "surrogateescape")
                               for n in names):
            self.literal.setdefault(n, []).append(e)

    def lookup(self, name: str) -> list[KHEntry]:
        found = list(self.literal.get(name, ()))
        found.extend(e for e in self.other if e.matches(name))
        found.sort(key=lambda e: e.line)
        return found


_kh_cache: dict[str, KHFile] = {}
_kh_write_lock = threading.Lock()


def _blob_type(blob: bytes) -> str | None:
    if len(blob) < 4:
        return None
    (n,) = struct.unpack(">I", blob[:4])
    if n > len(blob) - 4:
        return None
    try:
        return blob[4:4 + n].decode("ascii")
    except UnicodeDecodeError:
        return None


def _check_marker(rest: str) -> tuple[str | None, str]:
    """hostfile.c check_markers(): (marker or None if invalid, remainder of the line)."""
    marker = ""
    while rest.startswith("@"):
        if marker:
            return None, rest  # only one marker is allowed
        cut = min((i for i in (rest.find(" "), rest.find("\t")) if i >= 0), default=-1)
        if cut <= 1 or cut >= 32:
            return None, rest
        word = rest[:cut]
        if word == "@cert-authority":
            marker = "cert-authority"
        elif word == "@revoked":
            marker = "revoked"
        else:
            return None, rest
        rest = rest[cut:].lstrip(" \t")
    return marker, rest


def parse_known_hosts(path: Path, sig: tuple | None) -> KHFile:
    """Parse ``path`` (whose :func:`file_signature` is ``sig``); unreadable -> empty."""
    parsed = KHFile(signature=sig)
    if sig is None:
        return parsed
    try:
        data = path.read_bytes()
    except (PermissionError, IsADirectoryError, FileNotFoundError):
        return KHFile(signature=sig)
    text_lines = data.decode("utf-8", "surrogateescape").split("\n")
    if text_lines and text_lines[-1] == "":
        text_lines.pop()
    parsed.lines = len(text_lines)
    for lineno, raw in enumerate(text_lines, 1):
        line = raw.lstrip(" \t")
        if not line or line.startswith("#"):
            continue
        marker, line = _check_marker(line)
        if marker is None:
            continue  # invalid marker: OpenSSH skips the line too
        cut = min((i for i in (line.find(" "), line.find("\t")) if i >= 0), default=len(line))
        hosts, rest = line[:cut], line[cut:].lstrip(" \t")
        words = rest.replace("\t", " ").split(" ")
        words = [w for w in words if w]
        if len(words) < 2 or words[0].startswith("#"):
            continue  # truncated before the key
        keytype, b64 = words[0], words[1].rstrip("\r")
        try:
            blob = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            continue  # malformed line: skipped like OpenSSH does, never fatal
        if _blob_type(blob) != keytype:
            continue
        parsed.add(KHEntry(marker, hosts, keytype, blob, str(path), lineno))
    return parsed


def known_hosts_file(path: Path) -> KHFile:
    """Parsed known_hosts ``path``, re-read only when its mtime/size/inode changed."""
    sig = file_signature(path)
    key = str(path)
    hit = _kh_cache.get(key)
    if hit is not None and hit.signature == sig:
        return hit
    with cache_lock:
        hit = _kh_cache.get(key)
        if hit is not None and hit.signature == sig:
            return hit
        parsed = parse_known_hosts(path, sig)
        _kh_cache[key] = parsed
        return parsed


def _lower(name: str) -> str:
    # ssh(1) lower-cases the host name with tolower(): ASCII only
    return name.encode("utf-8", "surrogateescape").lower().decode("utf-8", "surrogateescape")


def lookup_known(files: Sequence[Path], name: str) -> list[KHEntry]:
    """Entries of ``files`` (in order) whose host field matches ``name``."""
    name = _lower(name)
    out: list[KHEntry] = []
    for p in files:
        out.extend(known_hosts_file(p).lookup(name))
    return out


def key_line(name: str, key: paramiko.PKey) -> str:
    return f"{name} {key.get_name()} {key.get_base64()}"


def record_host_key(path: Path, name: str, key: paramiko.PKey) -> None:
    """Append ``name keytype base64`` to ``path`` (0600, parent 0700), once per process.

    A process lock orders our own threads; ``flock`` orders other fleet processes and
    OpenSSH ssh(1) (which also appends). Never follows a symlink at ``path``.
    """
    line = key_line(name, key)
    blob = key.asbytes()
    with _kh_write_lock:
        for e in known_hosts_file(path).lookup(_lower(name)):
            if e.marker == "" and e.blob == blob:
                return  # another thread recorded it already
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                st = os.fstat(fd)
                before = (st.st_mtime_ns, st.st_size, st.st_ino)
                prefix = b""
                if st.st_size:
                    if os.pread(fd, 1, st.st_size - 1) != b"\n":
                        prefix = b"\n"
                os.write(fd, prefix + line.encode() + b"\n")
                # Keep the parsed copy current instead of re-parsing the whole file after
                # each of possibly 1000 first-time devices (only if nobody else wrote it).
                cached = _kh_cache.get(str(path))
                if cached is not None and cached.signature == before:
                    st = os.fstat(fd)
                    cached.lines += 1
                    cached.add(KHEntry("", _lower(name), key.get_name(), blob, str(path), cached.lines))
                    cached.signature = (st.st_mtime_ns, st.st_size, st.st_ino)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def preferred_key_types(entries: Sequence[KHEntry]) -> list[str]:
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


def verify_host_key(target: "Target", strict: str, entries: list[KHEntry], key: paramiko.PKey) -> None:
    """Apply the host-key policy (module docstring) to ``key`` offered by ``target``.

    ``strict`` is ``"yes"``, ``"no"`` or ``"accept-new"``; ``entries`` from
    :func:`lookup_known` for ``target.known_hosts_name``. Raises :class:`HostKeyRevoked`,
    :class:`HostKeyChanged` or :class:`HostKeyUnknown`; logs the decision at INFO.
    """
    name = target.known_hosts_name
    blob = key.asbytes()
    ktype = key.get_name()
    fp = key.fingerprint
    for e in entries:
        if e.marker == "revoked" and e.blob == blob:
            log.info("%s: host key %s %s of %s is @revoked at %s:%d: refused", target.name, ktype, fp, name,
                     e.path, e.line)
            raise HostKeyRevoked(
                target.name,
                f"host key {ktype} {fp} of {name} is marked @revoked in {e.path}:{e.line}; refusing to connect",
            )
    plain = [e for e in entries if e.marker == ""]
    for e in plain:
        if e.blob == blob:
            log.info("%s: host key %s %s of %s matches %s:%d", target.name, ktype, fp, name, e.path, e.line)
            return
    if plain:
        same = [e for e in plain if e.keytype == ktype] or plain
        old = same[0]
        log.info("%s: host key %s %s of %s differs from %s:%d: refused", target.name, ktype, fp, name,
                 old.path, old.line)
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
    line = key_line(name, key)
    if strict == "accept-new":
        if not target.known_hosts_files:
            raise HostKeyUnknown(target.name, f"host key of {name} ({ktype} {fp}) is unknown and there is no "
                                 f"known_hosts file to record it in", fingerprint=fp, key_line=line)
        try:
            record_host_key(target.known_hosts_files[0], name, key)
        except OSError as e:
            why = "it is a symlink, and fleet never writes through one" if e.errno == errno.ELOOP else e.strerror
            raise SSHError(target.name, f"cannot record the new host key of {name} in "
                           f"{target.known_hosts_files[0]}: {why}") from None
        log.info("%s: new host key %s %s of %s accepted and recorded in %s", target.name, ktype, fp, name,
                 target.known_hosts_files[0])
        return
    if strict == "no":
        log.info("%s: unknown host key %s %s of %s accepted unrecorded (StrictHostKeyChecking=no)", target.name,
                 ktype, fp, name)
        warn_once(
            f"{target.name}: StrictHostKeyChecking=no: accepting unverified host key {ktype} {fp} "
            f"of {name} without recording it"
        )
        return
    hint = ""
    if any(e.marker == "cert-authority" for e in entries):
        hint = " (a @cert-authority line matches this host, but host certificates are not supported)"
    log.info("%s: host key %s %s of %s is in none of %s: refused", target.name, ktype, fp, name, files)
    raise HostKeyUnknown(
        target.name,
        f"host key of {name} is unknown{hint}: it offered {ktype} {fp}, found in none of {files}. "
        f"After checking the fingerprint on the device (ssh-keygen -lf /etc/ssh/ssh_host_{ktype.split('-')[-1]}_key.pub), "
        f"run again with --accept-new, or add this line to {target.known_hosts_files[0] if target.known_hosts_files else '~/.ssh/known_hosts'}: {line}",
        fingerprint=fp,
        key_line=line,
    )
