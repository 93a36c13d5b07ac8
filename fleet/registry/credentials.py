"""Registry credentials: one resolver, one holder, one encoder per wire format.

* :func:`resolve_credentials` is the one place fleet finds a registry's credentials: the
  environment variables a playbook names (``registry: {username_env, password_env}``), else
  the Docker CLI's config file (``docker_config``, default ``$DOCKER_CONFIG/config.json`` or
  ``~/.docker/config.json``), read with docker-py's own ``docker.auth`` (``auths`` entries,
  ``identitytoken``, ``credsStore`` and ``credHelpers`` through ``docker-credential-*``
  helpers: docker/cli ``docs/reference/commandline/login.md`` "Credential stores").
* :class:`Credentials` holds them; its ``repr``/``str`` never show the password or token.
* Encoders: :func:`docker_config_json` (a Docker CLI ``config.json``, for a device's
  throw-away ``DOCKER_CONFIG``), :func:`engine_auth_config` (docker-py's ``auth_config=``)
  and :func:`x_registry_auth` (the Engine API ``X-Registry-Auth`` header).

Secrets travel by environment variable name, file or helper, never in process arguments,
and are never logged: the INFO record says where credentials came from and for which user.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from fleet.errors import UsageError
from fleet.log import logger
from fleet.registry.reference import DEFAULT_REGISTRY

__all__ = ["Credentials", "resolve_credentials", "credentials_from_env",
           "credentials_from_docker_config", "docker_auth_entry", "docker_config_json",
           "engine_auth_config", "x_registry_auth", "DOCKER_HUB_AUTH_KEY"]

log = logger("registry")

#: The key the Docker CLI files Docker Hub credentials under (docker/cli
#: ``registry.IndexServer``; docker-py ``docker.auth.INDEX_URL``).
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"


class Credentials:
    """A registry login: ``username`` and ``password``, or an OAuth2 ``identity_token``
    (a refresh token, distribution ``docs/spec/auth/oauth.md``; what ``docker login``
    stores for some registries). ``source`` says where they came from, for messages.

    ``repr()``/``str()`` show the user and the source, never the password or token, and
    the object is not JSON-serialisable, so it cannot leak into a report by accident.
    """

    __slots__ = ("username", "_password", "_identity_token", "source")

    def __init__(self, username: str | None, password: str | None = None,
                 identity_token: str | None = None, *, source: str = ""):
        self.username = username or None
        self._password = password or None
        self._identity_token = identity_token or None
        self.source = source

    @classmethod
    def of(cls, value: "Credentials | tuple[str, str] | None") -> "Credentials | None":
        """``value`` as Credentials: a ``(user, password)`` pair is converted."""
        if value is None or isinstance(value, Credentials):
            return value
        user, password = value
        return cls(user, password, source="given")

    @property
    def password(self) -> str | None:
        return self._password

    @property
    def identity_token(self) -> str | None:
        return self._identity_token

    def who(self) -> str:
        """``"user 'alice'"`` or ``"an identity token"``: for messages, never a secret."""
        if self.username:
            return f"user {self.username!r}"
        return "an identity token" if self._identity_token else "an empty user name"

    def basic_authorization(self) -> str:
        """The ``Authorization`` value for HTTP Basic (RFC 7617)."""
        raw = f"{self.username or ''}:{self._password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def pair(self) -> tuple[str, str]:
        """``(user, password)`` for ``requests``' ``auth=``."""
        return (self.username or "", self._password or "")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Credentials):
            return NotImplemented
        return (self.username, self._password, self._identity_token) == \
            (other.username, other._password, other._identity_token)

    def __hash__(self) -> int:
        return hash((self.username, self._password, self._identity_token))

    def __repr__(self) -> str:
        kind = "identity token" if self._identity_token else "password"
        where = f", from {self.source}" if self.source else ""
        return f"<Credentials user={self.username!r} ({kind} hidden{where})>"

    __str__ = __repr__


def credentials_from_env(user_var: str, password_var: str) -> Credentials:
    """Read the user and password from the environment variables the user named.

    Credentials must never travel in process arguments, so the CLI and playbooks take
    variable names. Raises :class:`UsageError` naming the variable (never its value) when
    one is unset or empty.
    """
    missing = [v for v in (user_var, password_var) if not os.environ.get(v)]
    if missing:
        raise UsageError(f"registry credentials: environment variable {', '.join(missing)} is not set")
    return Credentials(os.environ[user_var], os.environ[password_var],
                       source=f"environment variables {user_var}/{password_var}")


def _config_file(docker_config: str | os.PathLike | None) -> Path | None:
    if docker_config is None:
        return None
    path = Path(docker_config)
    return path / "config.json" if path.is_dir() else path


def credentials_from_docker_config(registry: str, docker_config: str | os.PathLike | None = None
                                   ) -> Credentials | None:
    """The credentials the Docker CLI would use for ``registry`` (``host[:port]``), or None.

    ``docker_config``: a ``config.json`` path or a folder holding one; None means docker-py's
    lookup (``$DOCKER_CONFIG/config.json``, ``~/.docker/config.json``, ``~/.dockercfg``).
    A given path that does not exist means no credentials (never another file).
    Raises :class:`UsageError` naming the file when it is malformed or its credential
    helper fails (the helper's message names the helper, not secrets).
    """
    import docker.auth
    import docker.errors

    path = _config_file(docker_config)
    where = str(path) if path is not None else "(default Docker config)"
    if path is not None and not path.is_file():
        log.info("registry %s: Docker config %s not found: no credentials", registry, path)
        return None
    try:
        config = docker.auth.load_config(str(path) if path is not None else None)
        helper = config.get_credential_store(registry) if (config.creds_store or config.cred_helpers) else None
        entry = config.resolve_authconfig(registry)
    except docker.errors.InvalidConfigFile as e:
        raise UsageError(f"docker config {where}: {e}") from None
    except docker.errors.DockerException as e:
        raise UsageError(f"registry credentials for {registry} from the Docker config {where}: {e}") from None
    user = password = token = None
    if entry:
        user = entry.get("username") or entry.get("Username")
        password = entry.get("password") or entry.get("Password")
        token = entry.get("IdentityToken")
    if not (user or password or token):
        log.info("registry %s: no credentials for it in %s", registry, where)
        return None
    source = f"Docker config {where}" + (f" (docker-credential-{helper})" if helper else "")
    creds = Credentials(user, password, token, source=source)
    log.info("registry %s: credentials (%s) from %s", registry, creds.who(), source)
    return creds


def resolve_credentials(settings: Any, registry: str) -> Credentials | None:
    """The credentials for ``registry`` under a playbook's registry ``settings``.

    ``settings`` has ``username_env``, ``password_env`` and ``docker_config`` (as
    :class:`fleet.playbook.RegistrySettings`; None means defaults). The named environment
    variables win when both are set; else the Docker config (:func:`credentials_from_docker_config`).
    Returns None when there are none (anonymous access). Raises :class:`UsageError`
    naming an unset variable or a bad config file, never a secret.
    """
    user_env = getattr(settings, "username_env", None)
    password_env = getattr(settings, "password_env", None)
    if user_env and password_env:
        creds = credentials_from_env(user_env, password_env)
        log.info("registry %s: credentials (%s) from %s", registry, creds.who(), creds.source)
        return creds
    return credentials_from_docker_config(registry, getattr(settings, "docker_config", None))


def _auth_key(registry: str) -> str:
    return DOCKER_HUB_AUTH_KEY if registry in (DEFAULT_REGISTRY, "index.docker.io") else registry


def docker_auth_entry(credentials: Credentials) -> dict[str, str]:
    """One ``auths`` entry of a Docker CLI ``config.json``: ``{"auth": base64("user:password")}``
    and/or ``{"identitytoken": ...}`` (docker/cli ``cli/config/configfile/file.go``)."""
    entry: dict[str, str] = {}
    if credentials.username or credentials.password:
        raw = f"{credentials.username or ''}:{credentials.password or ''}".encode()
        entry["auth"] = base64.b64encode(raw).decode("ascii")
    if credentials.identity_token:
        entry["identitytoken"] = credentials.identity_token
    return entry


def docker_config_json(credentials: Credentials, registry: str) -> bytes:
    """A Docker CLI ``config.json`` holding ``registry``'s credentials:
    ``{"auths": {REGISTRY: {"auth": base64("user:password")}}}`` (Docker Hub under
    :data:`DOCKER_HUB_AUTH_KEY`, where the CLI looks). Meant for a device's throw-away
    ``DOCKER_CONFIG``, sent on stdin, never as an argument."""
    return json.dumps({"auths": {_auth_key(registry): docker_auth_entry(credentials)}}).encode()


def engine_auth_config(credentials: Credentials | None, registry: str) -> dict[str, str] | None:
    """The Engine API ``AuthConfig`` (moby ``api/types/registry.AuthConfig``) as docker-py's
    ``auth_config=`` takes it: ``username``/``password`` or ``identitytoken``, and
    ``serveraddress``. None when ``credentials`` is None."""
    if credentials is None:
        return None
    auth: dict[str, str] = {}
    if credentials.identity_token:
        auth["identitytoken"] = credentials.identity_token
    else:
        auth["username"] = credentials.username or ""
        auth["password"] = credentials.password or ""
    auth["serveraddress"] = _auth_key(registry)
    return auth


def x_registry_auth(credentials: Credentials, registry: str) -> str:
    """The ``X-Registry-Auth`` header value of an Engine API pull/push: base64url of the
    JSON :func:`engine_auth_config` (``{"username", "password", "serveraddress"}``), encoded
    by docker-py's own ``docker.auth.encode_header`` (Engine API reference,
    "Authentication")."""
    from docker.auth import encode_header

    return encode_header(engine_auth_config(credentials, registry)).decode("ascii")
