"""Registry authentication: challenges, scopes and Bearer tokens.

* Challenges: ``WWW-Authenticate`` as RFC 7235 section 4.1 defines it; a registry sends
  ``Basic realm=...`` (htpasswd) or ``Bearer realm=...,service=...,scope=...``
  (distribution ``docs/spec/auth/token.md``).
* Tokens: one request may carry several ``scope`` parameters (``docs/spec/auth/scope.md``);
  the answer holds ``token`` or ``access_token`` and ``expires_in`` (default 60 s). An
  identity token from ``docker login`` is exchanged with the OAuth2 refresh-token grant
  (``docs/spec/auth/oauth.md``).
* Tokens are cached per (realm, service, scope set) and fetched once per key even when
  several threads ask at the same moment.

Diagnostics (logger ``fleet.registry``): INFO the scheme a registry asks for and each token
fetched (realm, scopes, as which user); never a password or token value. Scheme names
are written in lower case ("basic authentication"), so a log line is never mistaken for
(or grepped as) an ``Authorization`` value.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable
from urllib.parse import urlsplit

import requests

from fleet.log import logger
from fleet.registry.credentials import Credentials
from fleet.registry.errors import AuthError, RegistryError, registry_error_body
from fleet.registry.keyedlock import KeyedLock
from fleet.registry.transport import Transport

__all__ = ["parse_challenge", "scope", "merge_scopes", "Authenticator"]

log = logger("registry")

_CHALLENGE_PARAM_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


def parse_challenge(header: str | None) -> tuple[str, dict[str, str]] | None:
    """``'Bearer realm="x",service="y"'`` -> ``("bearer", {"realm": "x", "service": "y"})``.

    RFC 7235 section 4.1; only the first challenge is used (registries send one).
    """
    if not header:
        return None
    scheme, _, params = header.strip().partition(" ")
    out = {}
    for m in _CHALLENGE_PARAM_RE.finditer(params):
        value = m.group(2) if m.group(2) is not None else m.group(3)
        out[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    return scheme.lower(), out


def scope(repo: str, *actions: str) -> str:
    """``repository:REPO:ACTION[,ACTION]`` (distribution ``docs/spec/auth/scope.md``)."""
    return f"repository:{repo}:{','.join(actions)}"


def merge_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Merge scopes naming the same resource (``pull`` + ``pull,push``), sorted for caching."""
    merged: dict[str, list[str]] = {}
    for s in scopes:
        if s.count(":") < 2:
            merged.setdefault(s, [])
            continue
        resource, _, actions = s.rpartition(":")
        acts = merged.setdefault(resource, [])
        for a in actions.split(","):
            if a and a not in acts:
                acts.append(a)
    return tuple(sorted(f"{r}:{','.join(sorted(a))}" if a else r for r, a in merged.items()))


def _service_of(challenge: tuple[str, dict[str, str]] | None) -> tuple | None:
    """What identifies an auth service in a challenge (its ``scope`` varies per request)."""
    if challenge is None:
        return None
    return challenge[0], challenge[1].get("realm"), challenge[1].get("service")


@dataclass
class _Token:
    value: str = field(repr=False)
    expires_at: float  # time.monotonic()


class Authenticator:
    """Answers one registry's challenges for a client (thread-safe).

    ``credentials``: given ones, or None to call ``resolve()`` once, lazily, at the first
    challenge (so an anonymous registry never runs a credential helper). ``insecure``:
    the client speaks plain HTTP (then a plain-HTTP token realm is accepted).
    """

    def __init__(self, registry: str, transport: Transport, credentials: Credentials | None,
                 resolve: Callable[[], Credentials | None] | None, insecure: bool):
        self.registry = registry
        self._transport = transport
        self._creds = credentials
        self._resolve = resolve if credentials is None else None
        self._resolved = credentials is not None or resolve is None
        self._insecure = insecure
        self._lock = threading.Lock()
        self._fetching = KeyedLock()
        self._challenge: tuple[str, dict[str, str]] | None = None
        self._tokens: dict[tuple, _Token] = {}

    @property
    def scheme(self) -> str | None:
        """``"basic"``, ``"bearer"`` (after the first challenge) or None."""
        return self._challenge[0] if self._challenge else None

    def credentials(self) -> Credentials | None:
        with self._lock:
            if not self._resolved:
                self._creds = self._resolve() if self._resolve else None
                self._resolved = True
            return self._creds

    def _who(self) -> str:
        creds = self.credentials()
        return creds.who() if creds else "anonymous access"

    # ------------------------------------------------------------- tokens

    def _cached(self, key: tuple) -> str | None:
        with self._lock:
            tok = self._tokens.get(key)
            return tok.value if tok and tok.expires_at > time.monotonic() else None

    def _token(self, realm: str, service: str | None, scopes: tuple[str, ...], what: str) -> str:
        key = (realm, service, scopes)
        value = self._cached(key)
        if value:
            return value
        with self._fetching.hold(key) as waited:
            if waited:  # another thread fetched this very token while we waited
                value = self._cached(key)
                if value:
                    return value
            return self._fetch_token(key, what)

    def _fetch_token(self, key: tuple, what: str) -> str:
        realm, service, scopes = key
        creds = self.credentials()
        if creds and urlsplit(realm).scheme != "https" and not self._insecure:
            raise AuthError(f"{what}: refusing to send credentials to token service {realm} "
                            f"over plain HTTP", reference=what, registry=self.registry)
        if creds and creds.identity_token:
            log.info("registry %s: bearer token from %s (service %s) for %s, refresh-token grant",
                     self.registry, realm, service, " ".join(scopes) or "no scope")
            form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                    "client_id": "fleet", "scope": " ".join(scopes)}
            if service:
                form["service"] = service
            resp = self._transport.send("POST", realm, data=form)
        else:
            log.info("registry %s: bearer token from %s (service %s) for %s, as %s",
                     self.registry, realm, service, " ".join(scopes) or "no scope", self._who())
            params = [("service", service)] if service else []
            params += [("scope", s) for s in scopes]
            resp = self._transport.send("GET", realm, params=params,
                                        auth=creds.pair() if creds else None)
        if resp.status_code in (401, 403):
            raise AuthError(f"{what}: token service {realm} refused {self._who()} for registry "
                            f"{self.registry} (HTTP {resp.status_code})",
                            reference=what, registry=self.registry, status=resp.status_code)
        if resp.status_code != 200:
            raise RegistryError(f"{what}: token service {realm} answered HTTP {resp.status_code}",
                                reference=what, registry=self.registry, status=resp.status_code)
        try:
            body = resp.json()
            value = body.get("token") or body.get("access_token")
            expires_in = float(body.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            value = None
        if not value:
            raise AuthError(f"{what}: token service {realm} sent no token", reference=what,
                            registry=self.registry)
        # Renew a little early so a token does not expire between check and use.
        tok = _Token(value, time.monotonic() + max(1.0, expires_in - min(10.0, expires_in / 5)))
        with self._lock:
            self._tokens[key] = tok
        return tok.value

    # ------------------------------------------------------------- challenges

    def authorization(self, scopes: tuple[str, ...], what: str) -> str | None:
        """The ``Authorization`` value for a request needing ``scopes`` under the last
        challenge, or None (no challenge yet, or no credentials for Basic)."""
        ch = self._challenge
        if ch is None:
            return None
        scheme, params = ch
        if scheme == "basic":
            creds = self.credentials()
            return creds.basic_authorization() if creds else None
        if scheme == "bearer":
            return "Bearer " + self._token(params["realm"], params.get("service"), scopes, what)
        return None

    def challenged(self, resp: requests.Response, sent_auth: str | None, scopes: tuple[str, ...],
                   attempt: int, what: str) -> tuple[str, ...] | None:
        """Handle a 401: remember the challenge and return the scopes to retry with, or
        None when asking again cannot help (then :meth:`refused` gives the error).
        Raises AuthError when Basic auth is asked and there are no credentials."""
        challenge = parse_challenge(resp.headers.get("WWW-Authenticate"))
        if challenge is None or challenge[0] not in ("basic", "bearer"):
            return None
        if challenge[0] == "bearer" and "realm" not in challenge[1]:
            return None
        creds = self.credentials()
        if sent_auth and challenge[0] == "basic":
            return None  # our Basic credentials were refused
        if challenge[0] == "basic" and creds is None:
            code, _ = registry_error_body(resp)
            raise AuthError(f"{what}: registry {self.registry} requires authentication and "
                            f"no credentials were found for it (Docker config or environment)",
                            reference=what, registry=self.registry, status=401, code=code)
        if sent_auth and challenge[0] == "bearer":
            extra = challenge[1].get("scope", "")
            new = merge_scopes([*scopes, *extra.split()])
            with self._lock:
                self._tokens.pop((challenge[1]["realm"], challenge[1].get("service"), scopes), None)
            if attempt >= 1 and new == scopes:
                return None
            scopes = new
        if _service_of(challenge) != _service_of(self._challenge):
            self._announce(challenge)
        self._challenge = challenge
        return scopes

    def _announce(self, challenge: tuple[str, dict[str, str]]) -> None:
        scheme, params = challenge
        if scheme == "basic":
            log.info("registry %s: basic authentication (realm %r), as %s", self.registry,
                     params.get("realm", ""), self._who())
        else:
            log.info("registry %s: bearer token authentication (token service %s, service %s), as %s",
                     self.registry, params.get("realm"), params.get("service"), self._who())

    def refused(self, resp: requests.Response, what: str) -> AuthError:
        """The error for a 401 that :meth:`challenged` could not answer."""
        code, message = registry_error_body(resp)
        return AuthError(f"{what}: registry {self.registry} refused {self._who()} "
                         f"(HTTP 401{', ' + code if code else ''}{': ' + message if message else ''})",
                         reference=what, registry=self.registry, status=401, code=code)
