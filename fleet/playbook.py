"""Playbooks: what to publish (and, later, how to run it) as a YAML file.

Shape (keys of the publish stage; the deploy stage adds ``container`` and ``health``)::

    name: hello                                   # required, [a-z0-9][a-z0-9_.-]*
    image: ${FLEET_REGISTRY}/fleet/hello:1.0      # registry/repository:tag, ${VAR} from the env
    source:                                        # exactly one of build / native / pick
      build: {context: DIR, dockerfile: Dockerfile, args: {K: V}}
      # native: {context: DIR, dockerfile: Dockerfile, builders: {linux/arm/v6: pi-zero}}
      # pick: {linux/arm64: REF, linux/amd64: REF}   or   pick: {index: REF}
    platforms: auto                                # or a list such as [linux/arm/v7, linux/arm64]
    registry:                                      # optional; credentials by reference only
      username_env: REG_USER                       # environment variable names, or
      password_env: REG_PASSWORD
      docker_config: ~/.docker/config.json         # the Docker config (default when no *_env)
      insecure: false                              # plain HTTP: only for a registry you name
      ca: certs/ca.crt                             # extra CA bundle for TLS

Relative paths are relative to the playbook's folder. Every error names the file, line and
key (``InputFileError``); unknown keys are errors, never ignored; inline secrets
(``password``, ``token``, ``auth``) are refused.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from fleet.errors import UsageError
from fleet.platform import Platform
from fleet.yamlfile import KeyPath, LocatedDocument, load_located

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_KEYS = {"password", "token", "auth", "secret", "identitytoken", "registrytoken"}


@dataclass(frozen=True)
class BuildSource:
    """Build the context once per platform with the local engine."""

    context: Path
    dockerfile: str = "Dockerfile"
    args: Mapping[str, str] = field(default_factory=dict)


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
class Playbook:
    """A validated playbook. ``platforms`` is ``"auto"`` or a tuple of Platforms."""

    path: Path
    name: str
    image: str
    source: Source
    platforms: str | tuple[Platform, ...]
    registry: RegistrySettings
    document: LocatedDocument = field(repr=False, compare=False)


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
        src = self.mapping(value, kp, {"build", "native", "pick"})
        if len(src) != 1:
            raise self.fail(kp, "needs exactly one of build, native or pick")
        (kind, body), = src.items()
        kp = kp + (kind,)
        if kind == "build":
            b = self.mapping(body, kp, {"context", "dockerfile", "args"}, {"context"})
            ctx = self.path(b["context"], kp + ("context",), must_be_dir=True)
            dockerfile = self.string(b.get("dockerfile", "Dockerfile"), kp + ("dockerfile",))
            if not (ctx / dockerfile).is_file():
                raise self.fail(kp + ("dockerfile",), f"{ctx / dockerfile} does not exist")
            return BuildSource(ctx, dockerfile, self.args(b.get("args"), kp + ("args",)))
        if kind == "native":
            b = self.mapping(body, kp, {"context", "dockerfile", "args", "builders"}, {"context", "builders"})
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
        r = self.mapping(value, kp, {"username_env", "password_env", "docker_config", "insecure", "ca"})
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


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", type(None): "nothing"}.get(type(value), type(value).__name__)


TOP_LEVEL_KEYS = {"name", "image", "source", "platforms", "registry"}


def load_playbook(path: str | Path, environ: Mapping[str, str] | None = None) -> Playbook:
    """Read and validate a playbook.

    ``environ`` (default ``os.environ``) supplies ``${VAR}`` / ``${VAR:-default}`` values.
    Raises InputFileError naming file, line and key for any invalid content.
    """
    doc = load_located(path)
    v = _Validator(doc, os.environ if environ is None else environ)
    top = v.mapping(doc.data, (), TOP_LEVEL_KEYS, {"name", "image", "source"})
    name = v.string(top["name"], ("name",))
    if not _NAME_RE.match(name):
        raise v.fail(("name",), "must match [a-z0-9][a-z0-9_.-]* (it names containers and reports)")
    image = v.string(top["image"], ("image",), expand=True)
    if "@" in image:
        raise v.fail(("image",), "must be a tag (registry/repository:tag), not a digest: publishing pushes a tag")
    return Playbook(
        path=Path(doc.path),
        name=name,
        image=image,
        source=v.source(top["source"]),
        platforms=v.platforms(top.get("platforms")),
        registry=v.registry(top.get("registry")),
        document=doc,
    )
