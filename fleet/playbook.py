"""Playbooks: what to publish (and, later, how to run it) as a YAML file.

Keys: ``name``, ``image``, ``source`` (exactly one of ``build``/``native``/``pick``),
``platforms`` (``auto`` or a list), ``registry`` (credentials by reference only), or
``compose`` instead of image/source/container; then how devices run it: ``container``,
``health``, ``rollout``. docs/playbook.md documents every key with its type and default;
:data:`PLAYBOOK_KEYS` is the one list of them the validator reads (tests/unit/test_docs.py
keeps the two in step)::

    name: hello
    image: ${FLEET_REGISTRY}/fleet/hello:1.0       # registry/repository:tag, ${VAR} from the env
    source: {build: {context: app}}
    platforms: auto
    registry: {username_env: REG_USER, password_env: REG_PASSWORD}
    container: {env: {PORT: "8080"}, restart: unless-stopped}
    health: {running: 10, http: "http://127.0.0.1:8080/", timeout: 60}
    rollout: {batches: [1, "10%", "100%"], on_failure: rollback}

Relative paths are relative to the playbook's folder. Every error names the file, line and
key (``InputFileError``); unknown keys are errors, never ignored; inline secrets
(``password``, ``token``, ``auth``) are refused.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from fleet.errors import UsageError
from fleet.platform import Platform
from fleet.rollout import BatchSize, RolloutSpec, parse_batch
from fleet.yamlfile import KeyPath, LocatedDocument, load_located

if TYPE_CHECKING:
    from fleet.compose import ComposeFile, ServiceSpec

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_KEYS = {"password", "token", "auth", "secret", "identitytoken", "registrytoken"}


@dataclass(frozen=True)
class BuildSource:
    """Build the context once per platform with the local engine (``stage``: the
    Dockerfile stage to build, Compose's ``build.target``; None: the last)."""

    context: Path
    dockerfile: str = "Dockerfile"
    args: Mapping[str, str] = field(default_factory=dict)
    stage: str | None = None


@dataclass(frozen=True)
class NativeSource:
    """Build on a device of each platform with that device's own engine (over SSH)."""

    context: Path
    builders: Mapping[Platform, str]
    dockerfile: str = "Dockerfile"
    args: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PickSource:
    """Existing images: one reference per platform, or the needed subset of an index."""

    refs: Mapping[Platform, str] = field(default_factory=dict)
    index: str | None = None


Source = BuildSource | NativeSource | PickSource


@dataclass(frozen=True)
class RegistrySettings:
    """How to reach the target registry. Secrets are named, never stored here."""

    username_env: str | None = None
    password_env: str | None = None
    docker_config: Path | None = None
    insecure: bool = False
    ca: Path | None = None


@dataclass(frozen=True)
class ContainerSpec:
    """How a device runs the image (``container:``); ``None``/empty means the image's own
    default. ``command``/``entrypoint``: argv lists; ``env``/``labels``: str -> str;
    ``ports``/``volumes``/``devices``: Docker CLI forms (``-p``, ``-v``, ``--device``);
    ``restart``: Docker restart policy; ``network_mode``: ``--network`` value."""

    name: str
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    restart: str | None = None
    privileged: bool = False
    network_mode: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def to_service(self) -> "ServiceSpec":
        """This container as a one-service stack's :class:`fleet.compose.ServiceSpec` (the
        one mapping the engines know; :func:`fleet.compose.service_from_container`)."""
        from fleet.compose import service_from_container

        return service_from_container(self)


@dataclass(frozen=True)
class HealthSpec:
    """When a freshly started container counts as healthy (``health:``): it stayed running
    without a restart for ``running`` seconds, and ``command`` (argv run inside it) exits 0,
    and ``http`` (URL fetched on the device) answers 2xx, all within ``timeout`` seconds,
    retried every ``interval`` seconds."""

    running: float = 5.0
    command: tuple[str, ...] | None = None
    http: str | None = None
    timeout: float = 60.0
    interval: float = 2.0

    def to_dict(self) -> dict[str, Any]:
        from fleet.plain import to_plain

        return to_plain(self)

    @classmethod
    def from_dict(cls, data: Any) -> "HealthSpec":
        """From :meth:`to_dict`'s output; :class:`fleet.plain.PlainFormatError` names a bad field."""
        from fleet.plain import from_plain

        return from_plain(cls, data, "health")


@dataclass(frozen=True)
class Playbook:
    """A validated playbook. ``platforms`` is ``"auto"`` or a tuple of Platforms;
    ``container``/``health`` say how devices run the image (defaults when absent).
    With ``compose`` (a :class:`fleet.compose.ComposeFile`), ``image`` and ``source`` are
    None: each service names its image, and ``build:`` in the Compose file replaces
    ``source:``."""

    path: Path
    name: str
    image: str | None
    source: Source | None
    platforms: str | tuple[Platform, ...]
    registry: RegistrySettings
    document: LocatedDocument = field(repr=False, compare=False)
    container: ContainerSpec | None = None
    health: HealthSpec = field(default_factory=HealthSpec)
    rollout: RolloutSpec = field(default_factory=RolloutSpec)
    compose: "ComposeFile | None" = None

    @property
    def container_spec(self) -> ContainerSpec:
        """``container`` or the default (named after the playbook, image defaults)."""
        return self.container or ContainerSpec(name=self.name)


class _Validator:
    def __init__(self, doc: LocatedDocument, environ: Mapping[str, str]):
        self.doc = doc
        self.environ = environ
        self.base = Path(doc.path).resolve().parent

    def fail(self, keypath: KeyPath, message: str) -> UsageError:
        return self.doc.error(keypath, message)

    def mapping(self, value: Any, keypath: KeyPath, allowed: set[str], required: set[str] = frozenset()) -> dict:
        if not isinstance(value, dict):
            raise self.fail(keypath, f"must be a mapping, got {_kind(value)}")
        for key in value:
            if not isinstance(key, str):
                raise self.fail(keypath + (key,), "keys must be strings")
            if key.lower() in _SECRET_KEYS:
                raise self.fail(keypath + (key,), "inline secrets are not allowed: name an environment variable "
                                "(username_env/password_env) or use the Docker config")
            if key not in allowed:
                raise self.fail(keypath + (key,), f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for key in sorted(required - set(value)):
            raise self.fail(keypath, f"missing required key '{key}'")
        return value

    def string(self, value: Any, keypath: KeyPath, expand: bool = False) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.fail(keypath, f"must be a string, got {_kind(value)}")
        text = str(value)
        if expand:
            text = self.expand(text, keypath)
        if not text.strip():
            raise self.fail(keypath, "must not be empty")
        return text

    def boolean(self, value: Any, keypath: KeyPath) -> bool:
        if not isinstance(value, bool):
            raise self.fail(keypath, f"must be true or false, got {_kind(value)}")
        return value

    def path(self, value: Any, keypath: KeyPath, must_be_dir: bool = False, must_exist: bool = True) -> Path:
        text = self.string(value, keypath, expand=True)
        p = Path(os.path.expanduser(text))
        if not p.is_absolute():
            p = self.base / p
        if must_exist and not p.exists():
            raise self.fail(keypath, f"{p} does not exist")
        if must_be_dir and not p.is_dir():
            raise self.fail(keypath, f"{p} is not a directory")
        return p

    def platform(self, value: Any, keypath: KeyPath) -> Platform:
        text = self.string(value, keypath)
        try:
            return Platform.parse(text)
        except UsageError as exc:
            raise self.fail(keypath, str(exc)) from None

    def expand(self, text: str, keypath: KeyPath) -> str:
        def repl(m: re.Match) -> str:
            name, default = m.group(1), m.group(2)
            if name in self.environ and self.environ[name] != "":
                return self.environ[name]
            if default is not None:
                return default
            raise self.fail(keypath, f"environment variable {name} is not set (used as ${{{name}}})")

        return _VAR_RE.sub(repl, text)

    def args(self, value: Any, keypath: KeyPath) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(keypath, f"must be a mapping of build arguments, got {_kind(value)}")
        return {self.string(k, keypath + (k,)): self.string(v, keypath + (k,), expand=True) for k, v in value.items()}

    def source(self, value: Any) -> Source:
        kp: KeyPath = ("source",)
        src = self.mapping(value, kp, PLAYBOOK_KEYS["source"])
        if len(src) != 1:
            raise self.fail(kp, "needs exactly one of build, native or pick")
        (kind, body), = src.items()
        kp = kp + (kind,)
        if kind == "build":
            b = self.mapping(body, kp, PLAYBOOK_KEYS["source.build"], {"context"})
            ctx = self.path(b["context"], kp + ("context",), must_be_dir=True)
            dockerfile = self.string(b.get("dockerfile", "Dockerfile"), kp + ("dockerfile",))
            if not (ctx / dockerfile).is_file():
                raise self.fail(kp + ("dockerfile",), f"{ctx / dockerfile} does not exist")
            return BuildSource(ctx, dockerfile, self.args(b.get("args"), kp + ("args",)))
        if kind == "native":
            b = self.mapping(body, kp, PLAYBOOK_KEYS["source.native"], {"context", "builders"})
            ctx = self.path(b["context"], kp + ("context",), must_be_dir=True)
            dockerfile = self.string(b.get("dockerfile", "Dockerfile"), kp + ("dockerfile",))
            if not (ctx / dockerfile).is_file():
                raise self.fail(kp + ("dockerfile",), f"{ctx / dockerfile} does not exist")
            builders_raw = b["builders"]
            if not isinstance(builders_raw, dict) or not builders_raw:
                raise self.fail(kp + ("builders",), "must map each platform to a device name")
            builders = self._platform_map(builders_raw, kp + ("builders",), expand=False)
            return NativeSource(ctx, builders, dockerfile, self.args(b.get("args"), kp + ("args",)))
        # pick
        if not isinstance(body, dict) or not body:
            raise self.fail(kp, "must map platforms to references, or be {index: REF}")
        if "index" in body:
            if len(body) != 1:
                raise self.fail(kp, "'index' cannot be combined with per-platform references")
            return PickSource(index=self.string(body["index"], kp + ("index",), expand=True))
        return PickSource(refs=self._platform_map(body, kp, expand=True))

    def _platform_map(self, raw: dict, kp: KeyPath, expand: bool) -> dict[Platform, str]:
        out: dict[Platform, str] = {}
        for key, ref in raw.items():
            plat = self.platform(key, kp + (key,))
            if plat in out:
                raise self.fail(kp + (key,), f"duplicate platform {plat}")
            out[plat] = self.string(ref, kp + (key,), expand=expand)
        return out

    def platforms(self, value: Any) -> str | tuple[Platform, ...]:
        kp: KeyPath = ("platforms",)
        if value is None or value == "auto":
            return "auto"
        if not isinstance(value, list) or not value:
            raise self.fail(kp, "must be 'auto' or a non-empty list of platforms such as linux/arm/v7")
        seen: list[Platform] = []
        for i, item in enumerate(value):
            plat = self.platform(item, kp + (i,))
            if plat in seen:
                raise self.fail(kp + (i,), f"duplicate platform {plat}")
            seen.append(plat)
        return tuple(seen)

    def registry(self, value: Any) -> RegistrySettings:
        kp: KeyPath = ("registry",)
        if value is None:
            return RegistrySettings()
        r = self.mapping(value, kp, PLAYBOOK_KEYS["registry"])
        user_env = r.get("username_env")
        pass_env = r.get("password_env")
        if (user_env is None) != (pass_env is None):
            raise self.fail(kp, "username_env and password_env go together")
        for key in ("username_env", "password_env"):
            if key in r and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(r[key])):
                raise self.fail(kp + (key,), "must be the NAME of an environment variable, not its value")
        return RegistrySettings(
            username_env=user_env,
            password_env=pass_env,
            docker_config=self.path(r["docker_config"], kp + ("docker_config",)) if "docker_config" in r else None,
            insecure=self.boolean(r.get("insecure", False), kp + ("insecure",)),
            ca=self.path(r["ca"], kp + ("ca",)) if "ca" in r else None,
        )


_CONTAINER_KEYS = {"name", "command", "entrypoint", "env", "ports", "volumes", "devices", "restart",
                   "privileged", "network_mode", "labels"}
_HEALTH_KEYS = {"running", "command", "http", "timeout", "interval"}
_CONTAINER_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")  # moby daemon/names
_RESTART_RE = re.compile(r"(no|always|unless-stopped|on-failure(:[0-9]+)?)")
_PORT_RE = re.compile(r"(?:(?:\[[0-9a-fA-F:.]+\]|[0-9]{1,3}(?:\.[0-9]{1,3}){3}):)?(?:(?P<host>[0-9]{1,5}(?:-[0-9]{1,5})?):)?"
                      r"(?P<container>[0-9]{1,5}(?:-[0-9]{1,5})?)(?:/(?:tcp|udp|sctp))?")
_VOLUME_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")  # moby volume/local names
_VOLUME_OPTS = {"ro", "rw", "z", "Z", "shared", "rshared", "slave", "rslave", "private", "rprivate",
                "nocopy", "consistent", "cached", "delegated"}
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NETWORK_RE = re.compile(r"(host|bridge|none|default|container:[a-zA-Z0-9][a-zA-Z0-9_.-]*|[a-zA-Z0-9][a-zA-Z0-9_.-]*)")
#: Label prefix fleet records its deployments under; a playbook may not set these.
FLEET_LABEL_PREFIX = "io.fleet."


def _container(v: "_Validator", value: Any, default_name: str) -> ContainerSpec | None:
    kp: KeyPath = ("container",)
    if value is None:
        return None
    c = _plain_mapping(v, value, kp, _CONTAINER_KEYS)
    name = default_name
    if "name" in c:
        name = v.string(c["name"], kp + ("name",))
        if not _CONTAINER_NAME_RE.fullmatch(name):
            raise v.fail(kp + ("name",), "must match [a-zA-Z0-9][a-zA-Z0-9_.-]* (Docker container names)")
    if name.endswith((".previous", ".new", ".failed")):
        raise v.fail(kp + ("name",), "must not end in .previous/.new/.failed (fleet names its own "
                                     "containers so during a rollout)")
    env: dict[str, str] = {}
    if "env" in c:
        raw = c["env"]
        if not isinstance(raw, dict):
            raise v.fail(kp + ("env",), f"must be a mapping NAME: value, got {_kind(raw)}")
        for key, val in raw.items():
            if not isinstance(key, str) or not _ENV_NAME_RE.fullmatch(key):
                raise v.fail(kp + ("env", key), "environment variable names must match [A-Za-z_][A-Za-z0-9_]*")
            if val is None or val == "":
                env[key] = ""  # set but empty, as `docker run -e NAME=`
            else:
                env[key] = v.string(val, kp + ("env", key), expand=True)
                if "\n" in env[key] or "\r" in env[key] or "\0" in env[key]:
                    raise v.fail(kp + ("env", key), "a value with a line break or NUL cannot be passed to a "
                                                    "container's environment (Docker's --env-file format)")
    labels: dict[str, str] = {}
    if "labels" in c:
        raw = c["labels"]
        if not isinstance(raw, dict):
            raise v.fail(kp + ("labels",), f"must be a mapping, got {_kind(raw)}")
        for key, val in raw.items():
            k = v.string(key, kp + ("labels", key))
            if k.startswith(FLEET_LABEL_PREFIX):
                raise v.fail(kp + ("labels", key), f"labels {FLEET_LABEL_PREFIX}* are reserved: fleet records "
                                                   "each device's deployment in them")
            labels[k] = "" if val is None else str(val)
    ports = _strings(v, c.get("ports"), kp + ("ports",))
    for i, port in enumerate(ports):
        m = _PORT_RE.fullmatch(port)
        if not m:
            raise v.fail(kp + ("ports", i), f"{port!r} is not [IP:][HOST:]CONTAINER[/tcp|udp|sctp]")
        for part in (m.group("host"), m.group("container")):
            low, _, high = (part or "1").partition("-")
            if not (1 <= int(low) <= 65535 and 1 <= int(high or low) <= 65535 and int(low) <= int(high or low)):
                raise v.fail(kp + ("ports", i), f"{port!r}: ports are 1-65535 (a range low-high, low <= high)")
    volumes = _strings(v, c.get("volumes"), kp + ("volumes",), expand=True)
    for i, vol in enumerate(volumes):
        parts = vol.split(":")
        if len(parts) not in (2, 3) or not parts[1].startswith("/"):
            raise v.fail(kp + ("volumes", i), f"{vol!r} is not SOURCE:/container/path[:OPTIONS]")
        if not (parts[0].startswith("/") or _VOLUME_NAME_RE.fullmatch(parts[0])):
            raise v.fail(kp + ("volumes", i), f"source {parts[0]!r} must be an absolute path on the device "
                                              "or a volume name (relative paths have no meaning there)")
        if len(parts) == 3 and not set(parts[2].split(",")) <= _VOLUME_OPTS:
            raise v.fail(kp + ("volumes", i), f"unknown volume option(s) in {parts[2]!r} "
                                              f"(known: {', '.join(sorted(_VOLUME_OPTS))})")
    devices = _strings(v, c.get("devices"), kp + ("devices",))
    for i, dev in enumerate(devices):
        parts = dev.split(":")
        if not (1 <= len(parts) <= 3) or not parts[0].startswith("/dev/") or \
                (len(parts) >= 2 and not parts[1].startswith("/")) or \
                (len(parts) == 3 and not (parts[2] and set(parts[2]) <= set("rwm"))):
            raise v.fail(kp + ("devices", i), f"{dev!r} is not /dev/HOST[:/dev/CONTAINER[:rwm]]")
    restart = None
    if "restart" in c:
        restart = v.string(c["restart"], kp + ("restart",)) if c["restart"] is not False else "no"
        if not _RESTART_RE.fullmatch(restart):
            raise v.fail(kp + ("restart",), "must be no, always, unless-stopped or on-failure[:N]")
    network = None
    if "network_mode" in c:
        network = v.string(c["network_mode"], kp + ("network_mode",))
        if not _NETWORK_RE.fullmatch(network):
            raise v.fail(kp + ("network_mode",), "must be host, bridge, none, container:NAME or a network name")
    return ContainerSpec(
        name=name,
        command=_argv(v, c, "command", kp),
        entrypoint=_argv(v, c, "entrypoint", kp),
        env=env,
        ports=tuple(ports),
        volumes=tuple(volumes),
        devices=tuple(devices),
        restart=restart,
        privileged=v.boolean(c.get("privileged", False), kp + ("privileged",)),
        network_mode=network,
        labels=labels,
    )


def _health(v: "_Validator", value: Any) -> HealthSpec:
    kp: KeyPath = ("health",)
    if value is None:
        return HealthSpec()
    h = _plain_mapping(v, value, kp, _HEALTH_KEYS)

    def seconds(key: str, default: float, minimum: float) -> float:
        if key not in h:
            return default
        val = h[key]
        # nan compares false with everything and inf never elapses: a health loop bounded
        # by either would never end
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val) \
                or val < minimum:
            raise v.fail(kp + (key,), f"must be a finite number of seconds >= {minimum:g}, got {val!r}")
        return float(val)

    http = None
    if "http" in h:
        http = v.string(h["http"], kp + ("http",), expand=True)
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", http):
            raise v.fail(kp + ("http",), f"{http!r} is not an http:// or https:// URL")
    health = HealthSpec(
        running=seconds("running", 5.0, 0),
        command=_argv(v, h, "command", kp),
        http=http,
        timeout=seconds("timeout", 60.0, 1),
        interval=seconds("interval", 2.0, 0.1),
    )
    if health.running > health.timeout:
        raise v.fail(kp + ("running",), f"{health.running:g} s is longer than health.timeout ({health.timeout:g} s)")
    return health


def _plain_mapping(v: "_Validator", value: Any, kp: KeyPath, allowed: set[str]) -> dict:
    """Like ``_Validator.mapping`` without the inline-secret rule (``env`` names such as
    PASSWORD are legitimate there; the check only guards registry settings)."""
    if not isinstance(value, dict):
        raise v.fail(kp, f"must be a mapping, got {_kind(value)}")
    for key in value:
        if not isinstance(key, str) or key not in allowed:
            raise v.fail(kp + (key,), f"unknown key (allowed: {', '.join(sorted(allowed))})")
    return value


def _strings(v: "_Validator", value: Any, kp: KeyPath, expand: bool = False) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise v.fail(kp, f"must be a list, got {_kind(value)}")
    return [v.string(item, kp + (i,), expand=expand) for i, item in enumerate(value)]


def _argv(v: "_Validator", body: dict, key: str, kp: KeyPath) -> tuple[str, ...] | None:
    """A command as a list of arguments, or a string split with POSIX shell rules."""
    import shlex

    if key not in body:
        return None
    value = body[key]
    if isinstance(value, list):
        if not value:
            raise v.fail(kp + (key,), "must not be an empty list")
        return tuple(v.string(x, kp + (key, i)) for i, x in enumerate(value))
    text = v.string(value, kp + (key,))
    try:
        return tuple(shlex.split(text))
    except ValueError as e:
        raise v.fail(kp + (key,), f"cannot split {text!r} into arguments: {e}") from None


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", type(None): "nothing"}.get(type(value), type(value).__name__)


_ROLLOUT_KEYS = {"batches", "pause", "max_fail_percentage", "max_fail", "on_failure", "keep_images"}


def _rollout(v: "_Validator", value: Any) -> RolloutSpec:
    """``rollout:`` (see :class:`fleet.rollout.RolloutSpec`)."""
    kp: KeyPath = ("rollout",)
    if value is None:
        return RolloutSpec()
    r = _plain_mapping(v, value, kp, _ROLLOUT_KEYS)
    sizes: tuple[BatchSize, ...] = ()
    if "batches" in r:
        raw = r["batches"]
        if not isinstance(raw, list) or not raw:
            raise v.fail(kp + ("batches",), "must be a list of counts and percentages, e.g. [1, \"10%\", \"100%\"]")
        try:
            sizes = tuple(parse_batch(x, "batches") for x in raw)
        except UsageError as exc:
            raise v.fail(kp + ("batches",), str(exc).split(": ", 1)[-1]) from None

    def number(key: str, minimum: float, maximum: float | None = None, integer: bool = False) -> float | None:
        if key not in r:
            return None
        val = r[key]
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val) or val < minimum \
                or (maximum is not None and val > maximum) or (integer and int(val) != val):
            bound = f"{minimum:g}" + (f" to {maximum:g}" if maximum is not None else " or more")
            raise v.fail(kp + (key,), f"must be a finite {'whole ' if integer else ''}number, {bound}; got {val!r}")
        return float(val)

    on_failure = str(r.get("on_failure", "stop"))
    if on_failure not in ("stop", "rollback"):
        raise v.fail(kp + ("on_failure",), "must be stop or rollback")
    max_fail = number("max_fail", 0, integer=True)
    keep = number("keep_images", 1, integer=True)
    return RolloutSpec(batches=sizes, pause=number("pause", 0, 86400) or 0.0,
                       max_fail_percentage=number("max_fail_percentage", 0, 100),
                       max_fail=None if max_fail is None else int(max_fail),
                       on_failure=on_failure, keep_images=2 if keep is None else int(keep))


TOP_LEVEL_KEYS = {"name", "image", "source", "platforms", "registry", "container", "health", "rollout", "compose"}

#: Every key a playbook may hold, by section ("" is the top level); the validator reads its
#: lists from here and docs/playbook.md documents each (tests/unit/test_docs.py compares
#: the two). ``source.pick`` also takes platforms (``linux/arm64: REF``) as keys.
PLAYBOOK_KEYS: dict[str, frozenset[str]] = {
    "": frozenset(TOP_LEVEL_KEYS),
    "source": frozenset({"build", "native", "pick"}),
    "source.build": frozenset({"context", "dockerfile", "args"}),
    "source.native": frozenset({"context", "dockerfile", "args", "builders"}),
    "source.pick": frozenset({"index"}),
    "registry": frozenset({"username_env", "password_env", "docker_config", "insecure", "ca"}),
    "container": frozenset(_CONTAINER_KEYS),
    "health": frozenset(_HEALTH_KEYS),
    "rollout": frozenset(_ROLLOUT_KEYS),
}


def load_playbook(path: str | Path, environ: Mapping[str, str] | None = None) -> Playbook:
    """Read and validate a playbook.

    ``environ`` (default ``os.environ``) supplies ``${VAR}`` / ``${VAR:-default}`` values
    (with ``compose:``, the values that are the same for every device: the services'
    ``image`` and ``build``; per-device values come later, :func:`fleet.compose.resolve`).
    Raises InputFileError naming file, line and key for any invalid content (of the
    Compose file too).
    """
    doc = load_located(path)
    v = _Validator(doc, os.environ if environ is None else environ)
    stack = isinstance(doc.data, dict) and "compose" in doc.data
    top = v.mapping(doc.data, (), TOP_LEVEL_KEYS, {"name", "compose"} if stack else {"name", "image", "source"})
    name = v.string(top["name"], ("name",))
    if not _NAME_RE.fullmatch(name):
        raise v.fail(("name",), "must match [a-z0-9][a-z0-9_.-]* (it names containers and reports)")
    if stack:
        from fleet.compose import compose_of_playbook

        return Playbook(path=Path(doc.path), name=name, image=None, source=None,
                        platforms=v.platforms(top.get("platforms")), registry=v.registry(top.get("registry")),
                        document=doc, health=_health(v, top.get("health")), rollout=_rollout(v, top.get("rollout")),
                        compose=compose_of_playbook(doc, top, name, v.environ))
    image = v.string(top["image"], ("image",), expand=True)
    if "@" in image:
        raise v.fail(("image",), "must be a tag (registry/repository:tag), not a digest: publishing pushes a tag")
    from fleet.registry import Reference  # late: keeps `requests` out of plain playbook reads

    try:
        Reference.parse(image)
    except UsageError as exc:
        raise v.fail(("image",), str(exc)) from None
    return Playbook(
        path=Path(doc.path),
        name=name,
        image=image,
        source=v.source(top["source"]),
        platforms=v.platforms(top.get("platforms")),
        registry=v.registry(top.get("registry")),
        document=doc,
        container=_container(v, top.get("container"), name),
        health=_health(v, top.get("health")),
        rollout=_rollout(v, top.get("rollout")),
    )
