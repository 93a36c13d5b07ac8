"""Errors of the executor seam, and a device's error carried as data between machines.

A handler that fails at a site raises there; the worker sends the error back as JSON
(:func:`error_to_dict`) and the controller rebuilds an exception of the same family
(:func:`error_from_dict`), so :func:`fleet.results.classify` gives the same result and
reason as for the same failure on a local thread: an SSH failure is "unreachable" with the
SSH layer's reason, any other fleet error "failed" with its message, anything else
"failed" with ``internal error: Type: message``.
"""

from __future__ import annotations

from typing import Any

from fleet.errors import FleetError, UsageError
from fleet.ssh.errors import SSHError

__all__ = [
    "BrokerUnavailable",
    "SigningError",
    "NoWorkerAnswered",
    "JobLost",
    "JobRefused",
    "DeadlineReached",
    "RemoteError",
    "RemoteSSHError",
    "error_to_dict",
    "error_from_dict",
]


class BrokerUnavailable(FleetError):
    """The broker (or the result backend) cannot be reached; raised before any work is sent."""


class SigningError(UsageError):
    """The message-signing key, certificate or certificate store is missing or unusable."""


class NoWorkerAnswered(SSHError):
    """No worker of the device's site took its job before the deadline (counted like an
    unreachable device: the site, not the device, may be down)."""

    def __init__(self, device: str, site: str, seconds: float):
        self.site = site
        super().__init__(device, f"no worker of site {site} answered within {seconds:g} s")


class JobLost(SSHError):
    """A worker started the device's job but no result came before the deadline (the
    worker may have died; with a Redis broker its job is redelivered after the visibility
    timeout and refused there once expired)."""

    def __init__(self, device: str, site: str, seconds: float, worker: str):
        self.site = site
        self.worker = worker
        super().__init__(device, f"the job started on worker {worker} of site {site} but no result came "
                                 f"within {seconds:g} s")


class DeadlineReached(FleetError):
    """The device's work did not finish within its deadline (its sessions were closed)."""

    def __init__(self, device: str, seconds: float, detail: str = ""):
        self.device = device
        self.reason = f"deadline of {seconds:g} s reached" + (f": {detail}" if detail else "")
        super().__init__(f"{device}: {self.reason}")


class JobRefused(FleetError):
    """A worker refused a job (expired, for another site, unknown kind, malformed...)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class RemoteError(FleetError):
    """A device's failure at a site: ``reason`` as the worker reported it, ``remote_type``
    the exception type raised there, ``worker`` who ran it."""

    def __init__(self, reason: str, remote_type: str = "", worker: str = ""):
        self.reason = reason
        self.remote_type = remote_type
        self.worker = worker
        super().__init__(reason)


class RemoteSSHError(SSHError):
    """An SSH failure at a site (the device is unreachable from there)."""

    def __init__(self, device: str, reason: str, remote_type: str = "", worker: str = ""):
        self.remote_type = remote_type
        self.worker = worker
        super().__init__(device, reason)


def error_to_dict(exc: BaseException) -> dict[str, Any]:
    """``{"family", "type", "reason"}`` for an error raised by a handler: family ``ssh``
    (an SSHError), ``fleet`` (another FleetError) or ``internal``; ``reason`` what
    :func:`fleet.results.classify` would say."""
    from fleet.results import classify

    family = "ssh" if isinstance(exc, SSHError) else "fleet" if isinstance(exc, FleetError) else "internal"
    return {"family": family, "type": type(exc).__name__, "reason": classify(exc)[1]}


def error_from_dict(data: Any, host: str, worker: str = "") -> FleetError:
    """The exception a worker's error dict stands for (:func:`error_to_dict`): a
    :class:`RemoteSSHError` for family ``ssh``, else a :class:`RemoteError`."""
    if not isinstance(data, dict):
        return RemoteError(f"malformed error from worker {worker or '?'}: {str(data)[:200]}", worker=worker)
    reason = str(data.get("reason") or "failed at its site (no reason given)")[:4000]
    rtype = str(data.get("type") or "")[:100]
    if data.get("family") == "ssh":
        return RemoteSSHError(host, reason, rtype, worker)
    return RemoteError(reason, rtype, worker)
