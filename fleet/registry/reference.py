"""Image references and digests: the grammar of distribution/reference.

``[registry[:port]/]repository[:tag][@digest]`` as distribution ``reference/regexp.go``
and ``reference/normalize.go`` (``ParseNormalizedNamed``) define it; digests as OCI
image-spec ``descriptor.md`` "Digests". Pure: no I/O, no HTTP library.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from fleet.registry.errors import ReferenceError

__all__ = ["DEFAULT_REGISTRY", "DOCKER_HUB_API", "Reference", "digest_of", "new_hasher",
           "is_digest", "valid_registry_host"]

DEFAULT_REGISTRY = "docker.io"
#: Docker Hub's API endpoint differs from the name used in references and credentials.
DOCKER_HUB_API = "registry-1.docker.io"

_DIGEST_RE = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")

# distribution/reference grammar (reference/regexp.go).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_ANY_DIGEST_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    """``"sha256:<hex>"`` of ``data`` (OCI image-spec descriptor.md "Digests")."""
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def is_digest(ref: str) -> bool:
    """True when ``ref`` (what follows ``/manifests/``) names a digest, not a tag."""
    return ref.startswith(("sha256:", "sha512:"))


def new_hasher(digest: str, reference: str):
    """A fresh ``hashlib`` object of ``digest``'s algorithm; raises :class:`ReferenceError`
    naming ``reference`` when ``digest`` is not ``sha256:<64 hex>`` or ``sha512:<128 hex>``."""
    if not _DIGEST_RE.match(digest):
        raise ReferenceError(f"{reference}: invalid digest {digest!r} (want sha256:<64 hex>)")
    return hashlib.new(digest.split(":", 1)[0])


def valid_registry_host(host: str) -> bool:
    """True for ``host[:port]`` as the reference grammar allows it (``[v6]:port`` too)."""
    return bool(host) and "/" not in host and bool(_DOMAIN_RE.match(host))


@dataclass(frozen=True)
class Reference:
    """An image reference ``[registry[:port]/]repository[:tag][@digest]``.

    ``registry`` is ``"docker.io"`` when the first path component is not a host (contains no
    ``.`` or ``:`` and is not ``localhost``), and Docker Hub single-component names get the
    ``library/`` prefix, as in distribution/reference ``ParseNormalizedNamed``.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Reference":
        """Parse ``text``; raises :class:`ReferenceError` naming it when malformed."""
        def bad(why: str) -> ReferenceError:
            return ReferenceError(f"invalid image reference {text!r}: {why}")

        if not text or text != text.strip():
            raise bad("empty or surrounded by whitespace")
        if "://" in text:
            raise bad("a reference has no URL scheme")
        rest, digest = text, None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not _ANY_DIGEST_RE.match(digest):
                raise bad(f"malformed digest {digest!r}")
            if digest.startswith("sha256:") and not _DIGEST_RE.match(digest):
                raise bad(f"malformed sha256 digest {digest!r} (want 64 lower-case hex digits)")
        tag = None
        # A ':' after the last '/' separates the tag; one before it belongs to host:port.
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1:]
            if not _TAG_RE.match(tag):
                raise bad(f"malformed tag {tag!r}")
        first, sep, remainder = rest.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"
                    or first != first.lower()):
            registry, path = first, remainder
            if not _DOMAIN_RE.match(registry):
                raise bad(f"malformed registry host {registry!r}")
        else:
            registry, path = DEFAULT_REGISTRY, rest
        if registry == "index.docker.io":
            registry = DEFAULT_REGISTRY
        if registry == DEFAULT_REGISTRY and "/" not in path:
            path = f"library/{path}"
        if not path:
            raise bad("no repository name")
        if path != path.lower():
            raise bad("repository names must be lower-case")
        if not _PATH_RE.match(path):
            raise bad(f"malformed repository name {path!r}")
        if len(registry) + 1 + len(path) > 255:
            raise bad("name longer than 255 characters")
        return cls(registry, path, tag, digest)

    @property
    def ref(self) -> str:
        """What goes after ``/manifests/``: the digest if any, else the tag (default latest)."""
        return self.digest or self.tag or "latest"

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def with_digest(self, digest: str) -> "Reference":
        return Reference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s
