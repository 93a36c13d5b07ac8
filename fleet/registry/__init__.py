"""The registry layer: OCI distribution API client and everything it needs.

Modules (one concern each):

* :mod:`~fleet.registry.reference`  image reference grammar, digests
* :mod:`~fleet.registry.mediatypes` OCI/Docker media type constants
* :mod:`~fleet.registry.errors`     error classes, transient/permanent classification
* :mod:`~fleet.registry.credentials` the one credential resolver and the auth encodings
* :mod:`~fleet.registry.auth`       challenges, scopes, Bearer tokens
* :mod:`~fleet.registry.transport`  HTTP, TLS trust, retries, request diagnostics
* :mod:`~fleet.registry.content`    descriptors, manifests, blob streams
* :mod:`~fleet.registry.client`     :class:`RegistryClient`
* :mod:`~fleet.registry.certs`      Docker's ``/etc/docker/certs.d`` CA files

Every public name is importable from ``fleet.registry`` itself. They are loaded on first
use (PEP 562), so ``from fleet.registry import Reference`` or the media types do not pull
in ``requests``, ``tenacity`` or ``docker``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "reference": ("DEFAULT_REGISTRY", "DOCKER_HUB_API", "Reference", "digest_of", "is_digest",
                  "new_hasher", "valid_registry_host"),
    "mediatypes": ("OCI_INDEX", "OCI_MANIFEST", "OCI_CONFIG", "OCI_LAYER", "OCI_LAYER_GZIP",
                   "DOCKER_MANIFEST_LIST", "DOCKER_MANIFEST", "DOCKER_CONFIG", "DOCKER_LAYER_GZIP",
                   "INDEX_TYPES", "MANIFEST_TYPES", "MANIFEST_ACCEPT", "media_type_of"),
    "errors": ("ReferenceError", "RegistryError", "AuthError", "NotFound", "ManifestInvalid",
               "DigestMismatch", "is_transient_status", "error_from_response"),
    "credentials": ("Credentials", "resolve_credentials", "credentials_from_env",
                    "credentials_from_docker_config", "docker_auth_entry", "docker_config_json",
                    "engine_auth_config", "x_registry_auth", "DOCKER_HUB_AUTH_KEY"),
    "auth": ("parse_challenge", "scope", "merge_scopes", "Authenticator"),
    "transport": ("Transport", "redact_url"),
    "content": ("Descriptor", "Manifest", "UploadCounters", "BlobStream"),
    "client": ("RegistryClient", "DEFAULT_CHUNK_SIZE"),
    "certs": ("DOCKER_CERTS_D", "docker_certs_d_bundle"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'fleet.registry' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"fleet.registry.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from fleet.registry.auth import Authenticator, merge_scopes, parse_challenge, scope  # noqa: F401
    from fleet.registry.certs import DOCKER_CERTS_D, docker_certs_d_bundle  # noqa: F401
    from fleet.registry.client import DEFAULT_CHUNK_SIZE, RegistryClient  # noqa: F401
    from fleet.registry.content import BlobStream, Descriptor, Manifest, UploadCounters  # noqa: F401
    from fleet.registry.credentials import (DOCKER_HUB_AUTH_KEY, Credentials,  # noqa: F401
                                            credentials_from_docker_config, credentials_from_env,
                                            docker_auth_entry, docker_config_json, engine_auth_config,
                                            resolve_credentials, x_registry_auth)
    from fleet.registry.errors import (AuthError, DigestMismatch, ManifestInvalid, NotFound,  # noqa: F401
                                       ReferenceError, RegistryError, error_from_response,
                                       is_transient_status)
    from fleet.registry.mediatypes import (DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST,  # noqa: F401
                                           DOCKER_MANIFEST_LIST, INDEX_TYPES, MANIFEST_ACCEPT,
                                           MANIFEST_TYPES, OCI_CONFIG, OCI_INDEX, OCI_LAYER,
                                           OCI_LAYER_GZIP, OCI_MANIFEST, media_type_of)
    from fleet.registry.reference import (DEFAULT_REGISTRY, DOCKER_HUB_API, Reference,  # noqa: F401
                                          digest_of, is_digest, new_hasher, valid_registry_host)
    from fleet.registry.transport import Transport, redact_url  # noqa: F401
