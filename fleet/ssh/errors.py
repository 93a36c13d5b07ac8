"""Errors of the SSH layer: :class:`SSHError` (a ``FleetError``, exit status 1) and subclasses.

Every message starts with the inventory host name (``"<device>: <message>"``). Callers
classify by type (:func:`fleet.results.classify`: every :class:`SSHError` is
"unreachable").
"""

from __future__ import annotations

from typing import Sequence

from fleet.errors import FleetError

__all__ = [
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
]


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
    """No SSH connection could be made (no route, timeout, refused after retries, a
    ProxyCommand that exited before the SSH handshake)."""


class NegotiationFailed(SSHError):
    """The device and fleet share no algorithm of one kind (key exchange, host key,
    cipher or MAC), typically a legacy device offering only algorithms OpenSSH 9.2 no
    longer enables by default.

    ``kind`` is ``"kex"``, ``"hostkey"``, ``"cipher"`` or ``"mac"``; ``offered`` what the
    device proposed; ``allowed`` what fleet proposed.
    """

    def __init__(self, device: str, message: str, *, kind: str = "", offered: Sequence[str] = (),
                 allowed: Sequence[str] = ()):
        super().__init__(device, message)
        self.kind = kind
        self.offered = tuple(offered)
        self.allowed = tuple(allowed)


class CommandTimeout(SSHError):
    """A command did not finish in time; partial ``stdout``/``stderr`` bytes are kept."""

    def __init__(self, device: str, message: str, *, stdout: bytes = b"", stderr: bytes = b""):
        super().__init__(device, message)
        self.stdout = stdout
        self.stderr = stderr


class OutputTooLarge(SSHError):
    """A command printed more than the ``max_output`` bytes the caller allowed; the channel
    was closed at that point. ``limit`` is that number; ``stdout``/``stderr`` hold what
    was kept (together at most ``limit`` bytes)."""

    def __init__(self, device: str, message: str, *, limit: int = 0, stdout: bytes = b"", stderr: bytes = b""):
        super().__init__(device, message)
        self.limit = limit
        self.stdout = stdout
        self.stderr = stderr


class SessionClosed(SSHError):
    """The session was closed (e.g. from another thread on Ctrl-C) before or while a
    command ran."""
