"""What the client hands back: descriptors, fetched manifests, streamed blobs, counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import requests

from fleet.registry.errors import DigestMismatch, RegistryError
from fleet.registry.reference import new_hasher
from fleet.registry.transport import short_reason

__all__ = ["Descriptor", "Manifest", "UploadCounters", "BlobStream", "rechunk"]


@dataclass(frozen=True)
class Descriptor:
    """What a HEAD tells: ``media_type``, ``digest`` and ``size`` (bytes)."""

    media_type: str
    digest: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """A manifest or index as fetched: exact ``raw`` bytes, their verified sha256
    ``digest``, ``size`` (= len(raw)), the ``media_type`` the registry served and the parsed
    ``json``."""

    media_type: str
    digest: str
    size: int
    raw: bytes = field(repr=False)
    json: Any = field(repr=False, compare=False)

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size)


@dataclass
class UploadCounters:
    """Per-client counters for benchmarks: blobs uploaded (mounts and skips excluded),
    bytes sent in them, and mounts that succeeded."""

    blob_uploads: int = 0
    bytes_uploaded: int = 0
    blob_mounts: int = 0
    manifests_put: int = 0


class BlobStream:
    """A blob being downloaded: iterate for chunks (``bytes``), or :meth:`read` it all.

    The sha256 is checked as bytes flow; :class:`DigestMismatch` is raised at the end of
    iteration if the content does not hash to ``digest``; a connection lost mid-way raises
    :class:`RegistryError` (``transient=True``). ``size`` is the Content-Length (bytes) or
    None. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, response: requests.Response, digest: str, reference: str, registry: str,
                 chunk_size: int = 1024 * 1024):
        self._resp = response
        self.digest = digest
        self.reference = reference
        self._registry = registry
        self._chunk = chunk_size
        length = response.headers.get("Content-Length")
        self.size: int | None = int(length) if length and length.isdigit() else None
        self._consumed = False

    def __iter__(self) -> Iterator[bytes]:
        if self._consumed:
            raise RuntimeError("blob stream already consumed")
        self._consumed = True
        h = new_hasher(self.digest, self.reference)
        n = 0
        try:
            for chunk in self._resp.iter_content(chunk_size=self._chunk):
                if chunk:
                    h.update(chunk)
                    n += len(chunk)
                    yield chunk
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as e:
            raise RegistryError(f"{self.reference}: blob download interrupted after {n} bytes "
                                f"({short_reason(e)})", reference=self.reference,
                                registry=self._registry, transient=True) from None
        finally:
            self._resp.close()
        got = f"{self.digest.split(':', 1)[0]}:{h.hexdigest()}"
        if got != self.digest or (self.size is not None and n != self.size):
            raise DigestMismatch(
                f"{self.reference}: downloaded blob hashes to {got} ({n} bytes), not the "
                f"digest asked for", reference=self.reference, registry=self._registry)

    def read(self) -> bytes:
        """All bytes, verified; loads the whole blob in memory."""
        return b"".join(self)

    def close(self) -> None:
        self._resp.close()

    def __enter__(self) -> "BlobStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def rechunk(data: Any, size: int) -> Iterator[bytes]:
    """Yield chunks of exactly ``size`` bytes (the last may be shorter) from an iterable of
    bytes or a binary file object, holding at most about ``size`` bytes."""
    if hasattr(data, "read") and not isinstance(data, BlobStream):
        while True:
            chunk = data.read(size)
            if not chunk:
                return
            yield bytes(chunk)
    buf = bytearray()
    for piece in data:
        buf += piece
        while len(buf) >= size:
            chunk = bytes(memoryview(buf)[:size])
            del buf[:size]
            yield chunk
    if buf:
        yield bytes(buf)
