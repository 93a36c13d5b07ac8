"""One device's work as data: :class:`DeviceWork`, and how it is made from an inventory host.

A work item is what crosses the seam between the controller (which decides what to do on
which device, in which batch) and whoever reaches the device (a local thread, or a Celery
worker at the device's site). It is plain JSON, so it can travel through a broker, and it
holds **references, never secret material**: how to reach the device (its connection
variables: address, port, user, key FILE path, ssh arguments, become), never a password,
a key's contents or a registry password - the worker resolves key files, known_hosts and
registry credentials from its own machine and environment.

Shapes::

    DeviceWork(kind="probe", host="pi-k1", site="kitchen",
               connection={"ansible_host": "10.0.0.7", "ansible_user": "pi", ...},
               payload={}, deadline=120.0)
    DeviceWork.to_dict() -> {"kind", "host", "site", "connection", "payload", "deadline"}
    DeviceWork.from_dict(d) -> DeviceWork        (raises WorkFormatError)
    work_for(host, kind, payload=None, deadline=...) -> DeviceWork   (from an inventory Host)

The site is the inventory variable ``fleet_site`` (a name of letters, digits, ``.``, ``_``
and ``-``): its devices are worked on by the workers consuming the broker queue
``fleet.site.<name>``.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from fleet.errors import FleetError, UsageError

__all__ = [
    "DeviceWork",
    "WorkFormatError",
    "SITE_VAR",
    "CONNECTION_VARS",
    "MAX_DEADLINE",
    "DEFAULT_MAX_DEADLINE",
    "connection_vars",
    "site_of",
    "work_for",
    "check_site_name",
    "queue_for",
]

#: Inventory variable naming a host's site.
SITE_VAR = "fleet_site"

#: The connection variables a work item carries (what :func:`fleet.ssh.target_for` reads,
#: plus become); ``fleet_*`` variables travel too unless their name looks secret.
#: ``ansible_password``/``ansible_ssh_pass``/``ansible_become_pass*`` never do.
CONNECTION_VARS = frozenset({
    "ansible_host", "ansible_ssh_host", "ansible_port", "ansible_ssh_port",
    "ansible_user", "ansible_ssh_user",
    "ansible_ssh_private_key_file", "ansible_private_key_file",
    "ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_ssh_args",
    "ansible_connection", "ansible_become", "ansible_become_user", "ansible_become_method",
})

#: Longest deadline a work item may have (seconds): one day.
MAX_DEADLINE = 86400.0
#: Longest job deadline site workers accept unless told otherwise (``--max-deadline``, of
#: the workers and of the controller).
DEFAULT_MAX_DEADLINE = 3600.0

# A name that says it holds a secret: never sent, whatever its prefix. Names ending in
# _env/_file/_path/_command/_helper name WHERE a secret is (a reference), which is fine.
_SECRET_NAME = re.compile(r"(pass(word|wd|phrase)?|secret|token|credential|private_key|apikey|api_key)s?$",
                          re.IGNORECASE)
_REFERENCE_SUFFIX = re.compile(r"_(env|file|path|command|helper|var)$", re.IGNORECASE)
_SITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_KIND_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
_MAX_HOST = 255
_MAX_JSON = 256 * 1024  # one work item, serialised


class WorkFormatError(FleetError):
    """A work item that is not well-formed (a worker receiving one refuses it)."""


@functools.lru_cache(maxsize=4096)
def secret_name(name: str) -> bool:
    """True when variable or payload key ``name`` looks like it holds secret material
    (``*password``, ``*_token``, ``*secret``...), unless it is a reference to one
    (``password_env``, ``token_file``)."""
    return bool(_SECRET_NAME.search(name)) and not _REFERENCE_SUFFIX.search(name)


def check_site_name(site: str, where: str = "fleet_site") -> str:
    """``site`` if it is a valid site name (1-63 of ``A-Za-z0-9._-``, starting with a
    letter or digit); raises UsageError naming ``where`` otherwise."""
    if not isinstance(site, str) or not _SITE_RE.match(site):
        raise UsageError(f"{where}: {site!r} is not a site name (1-63 letters, digits, '.', '_' or '-', "
                         f"starting with a letter or digit)")
    return site


def queue_for(site: str) -> str:
    """The broker queue of ``site``'s workers: ``fleet.site.<site>``."""
    return f"fleet.site.{check_site_name(site, 'site')}"


def _json_value(value: Any, where: str, depth: int = 0) -> Any:
    """``value`` if it is plain JSON (str, int, float, bool, None, lists and string-keyed
    mappings of those); raises WorkFormatError naming ``where``."""
    if depth > 32:
        raise WorkFormatError(f"{where}: nested more than 32 levels")
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise WorkFormatError(f"{where}: {value!r} is not a finite number")
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v, where, depth + 1) for v in value]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise WorkFormatError(f"{where}: key {k!r} is not a string")
            out[k] = _json_value(v, f"{where}.{k}", depth + 1)
        return out
    raise WorkFormatError(f"{where}: {type(value).__name__} is not JSON data")


@dataclass(frozen=True)
class DeviceWork:
    """One unit of per-device work (frozen, JSON-serialisable).

    ``kind``: the handler registry key (``"probe"``, ``"deploy"``...); ``host``: the
    inventory host name; ``site``: the host's ``fleet_site`` (None: no site, local work
    only); ``connection``: the host's connection variables (only names in
    :data:`CONNECTION_VARS` or ``fleet_*`` names that do not look secret: anything else
    is refused, so secret material cannot be put in by mistake); ``payload``: the kind's
    own JSON arguments (keys that look secret, e.g. ``password``, are refused: send
    ``password_env``, the name of the variable holding it at the site); ``deadline``:
    seconds the controller waits for the result, counted from sending (0 < deadline <=
    :data:`MAX_DEADLINE`); ``secrets``: names of secret values the payload's DATA holds
    (a container variable ``DB_PASSWORD`` of the app the job deploys: data, encoded so that
    its name is not a key, see :mod:`fleet.plain`); not part of :meth:`to_dict`: an
    executor that sends work off this machine refuses an item that has any (a usage
    error naming the host and the names), the local executor runs it. Raises
    :class:`WorkFormatError` for anything else.
    """

    kind: str
    host: str
    site: str | None = None
    connection: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    payload: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    deadline: float = 300.0
    secrets: tuple[str, ...] = field(default=(), compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not _KIND_RE.match(self.kind):
            raise WorkFormatError(f"work kind {self.kind!r} is not a kind name (lowercase letters, digits, ._-)")
        if not isinstance(self.host, str) or not self.host or len(self.host) > _MAX_HOST:
            raise WorkFormatError(f"work host {self.host!r} is not an inventory host name")
        if self.site is not None:
            try:
                check_site_name(self.site, f"{self.host}: fleet_site")
            except UsageError as e:
                raise WorkFormatError(str(e)) from None
        if isinstance(self.deadline, bool) or not isinstance(self.deadline, (int, float)) \
                or not math.isfinite(self.deadline) or not 0 < self.deadline <= MAX_DEADLINE:
            raise WorkFormatError(f"{self.host}: deadline {self.deadline!r} is not a number of seconds in "
                                  f"(0, {MAX_DEADLINE:g}]")
        if not isinstance(self.connection, Mapping) or not isinstance(self.payload, Mapping):
            raise WorkFormatError(f"{self.host}: connection and payload must be mappings")
        for name in self.connection:
            if not isinstance(name, str) or not (name in CONNECTION_VARS or
                                                 (name.startswith("fleet_") and not secret_name(name))):
                raise WorkFormatError(f"{self.host}: {name!r} is not a connection variable a work item may carry")
        object.__setattr__(self, "connection", _json_value(dict(self.connection), f"{self.host}: connection"))
        payload = _json_value(dict(self.payload), f"{self.host}: payload")
        _refuse_secret_keys(payload, f"{self.host}: payload")
        object.__setattr__(self, "payload", payload)
        object.__setattr__(self, "deadline", float(self.deadline))
        if not isinstance(self.secrets, tuple) or not all(isinstance(n, str) for n in self.secrets):
            raise WorkFormatError(f"{self.host}: secrets must be a tuple of names")
        if len(json.dumps(self.to_dict())) > _MAX_JSON:
            raise WorkFormatError(f"{self.host}: work item larger than {_MAX_JSON // 1024} KiB")

    def to_dict(self) -> dict[str, Any]:
        """The work item as a JSON object (a new dict each call)."""
        return {"kind": self.kind, "host": self.host, "site": self.site,
                "connection": json.loads(json.dumps(self.connection)),
                "payload": json.loads(json.dumps(self.payload)), "deadline": self.deadline}

    @classmethod
    def from_dict(cls, data: Any) -> "DeviceWork":
        """The work item in JSON object ``data`` (as :meth:`to_dict` gives). Raises
        :class:`WorkFormatError` for a missing, unknown or malformed field."""
        if not isinstance(data, Mapping):
            raise WorkFormatError(f"a work item must be a JSON object, got {type(data).__name__}")
        known = {"kind", "host", "site", "connection", "payload", "deadline"}
        extra = sorted(set(data) - known, key=str)
        if extra:
            raise WorkFormatError(f"work item has unknown fields: {', '.join(map(str, extra))}")
        missing = sorted(k for k in ("kind", "host", "deadline") if k not in data)
        if missing:
            raise WorkFormatError(f"work item lacks {', '.join(missing)}")
        return cls(kind=data["kind"], host=data["host"], site=data.get("site"),
                   connection=data.get("connection") or {}, payload=data.get("payload") or {},
                   deadline=data["deadline"])


def _refuse_secret_keys(value: Any, where: str) -> None:
    stack = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                if secret_name(k):
                    raise WorkFormatError(f"{path}.{k}: a work item carries no secret; name where the site "
                                          f"finds it instead (e.g. {k}_env)")
                stack.append((v, f"{path}.{k}"))
        elif isinstance(item, list):
            stack.extend((v, path) for v in item)


def connection_vars(host: Any) -> dict[str, Any]:
    """The variables of inventory ``host`` (a :class:`fleet.inventory.Host`) that say how to
    reach it: :data:`CONNECTION_VARS` and ``fleet_*`` names that do not look secret,
    read with ``Host.var`` (a Jinja-templated value is a UsageError naming the host and
    variable). Passwords (``ansible_password``, ``ansible_ssh_pass``, become passwords)
    are never read."""
    out: dict[str, Any] = {}
    for name in getattr(host, "vars", {}) or {}:
        if name in CONNECTION_VARS or (name.startswith("fleet_") and not secret_name(name)):
            value = host.var(name) if hasattr(host, "var") else host.vars[name]
            if value is not None:
                out[name] = value
    return out


def site_of(host: Any) -> str | None:
    """``host``'s ``fleet_site`` (None when unset or empty). Raises UsageError naming the
    host for a value that is not a site name."""
    value = host.var(SITE_VAR) if hasattr(host, "var") else (getattr(host, "vars", {}) or {}).get(SITE_VAR)
    if value is None or value == "":
        return None
    return check_site_name(str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value,
                           f"host {host.name!r}: {SITE_VAR}")


def work_for(host: Any, kind: str, payload: Mapping[str, Any] | None = None, deadline: float = 300.0,
             secrets: tuple[str, ...] | list[str] = ()) -> DeviceWork:
    """The work item ``kind`` for inventory ``host``: its site, its connection variables,
    ``payload``, ``deadline`` seconds and the names of the ``secrets`` its payload holds.
    Raises UsageError (exit 2) naming the host for a bad ``fleet_site``, a templated
    connection variable or a malformed payload."""
    try:
        return DeviceWork(kind=kind, host=host.name, site=site_of(host), connection=connection_vars(host),
                          payload=dict(payload or {}), deadline=deadline, secrets=tuple(secrets))
    except WorkFormatError as e:
        raise UsageError(str(e)) from None
