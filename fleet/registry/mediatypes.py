"""Media types of images, indexes and their parts: the one place fleet spells them.

OCI image-spec ``media-types.md`` (v1.1) and the Docker image manifest v2 schema 2 spec
(distribution ``docs/spec/manifest-v2-2.md``). Pure constants: importing this module pulls
in no HTTP library.
"""

from __future__ import annotations

__all__ = [
    "OCI_INDEX", "OCI_MANIFEST", "OCI_CONFIG", "OCI_LAYER", "OCI_LAYER_GZIP",
    "DOCKER_MANIFEST_LIST", "DOCKER_MANIFEST", "DOCKER_CONFIG", "DOCKER_LAYER_GZIP",
    "INDEX_TYPES", "MANIFEST_TYPES", "MANIFEST_ACCEPT", "media_type_of",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

#: Multi-platform documents (an image index / a manifest list).
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
#: Single-platform image manifests.
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
#: The ``Accept`` list of every manifest request. distribution 2.8.2 answers 404 to a
#: GET/HEAD of an OCI manifest or index without a matching ``Accept``, and silently
#: down-converts a Docker manifest list to its linux/amd64 child when only the Docker v2
#: manifest type is accepted (distribution ``registry/handlers/manifests.go``), so every
#: manifest request names all four.
MANIFEST_ACCEPT = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)


def media_type_of(content_type: str | None) -> str:
    """The media type of a ``Content-Type`` value, parameters dropped
    (``"application/json; charset=utf-8"`` -> ``"application/json"``)."""
    return (content_type or "").split(";", 1)[0].strip()
