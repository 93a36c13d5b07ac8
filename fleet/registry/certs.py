"""Trust a registry's CA the way the Docker engine does: ``/etc/docker/certs.d/HOST:PORT/*.crt``."""

from __future__ import annotations

import os
import threading
from pathlib import Path

__all__ = ["DOCKER_CERTS_D", "docker_certs_d_bundle"]

#: Where the Docker engine looks for a registry's extra CA certificates.
DOCKER_CERTS_D = Path("/etc/docker/certs.d")
_bundle_lock = threading.Lock()
_bundles: dict[tuple, str] = {}


def docker_certs_d_bundle(registry: str, system_bundle: str | None = None,
                          certs_d: str | os.PathLike | None = None) -> str | None:
    """A PEM bundle trusting the system CAs plus ``certs_d/REGISTRY/*.crt``, or None when
    that folder has no ``.crt`` file.

    The Docker engine adds those files to the system pool per registry (docker docs
    "Verify repository client with certificates"; moby ``registry.ReadCertsDirectory``),
    so users expect a registry the engine trusts to be trusted here too. ``requests`` takes
    one bundle file, so the two are concatenated into a private temporary file (cached per
    process and per file set; contains only public certificates).
    """
    folder = Path(certs_d if certs_d is not None else DOCKER_CERTS_D) / registry
    try:
        crts = sorted(p for p in folder.iterdir() if p.suffix == ".crt" and p.is_file())
    except OSError:
        return None
    if not crts:
        return None
    if system_bundle is None:
        try:
            import certifi
            system_bundle = certifi.where()
        except ImportError:  # pragma: no cover - requests depends on certifi
            system_bundle = None
    parts = [Path(system_bundle)] if system_bundle and Path(system_bundle).is_file() else []
    parts += crts
    key = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in parts)
    with _bundle_lock:
        cached = _bundles.get(key)
        if cached and Path(cached).is_file():
            return cached
        import atexit
        import tempfile
        fd, name = tempfile.mkstemp(prefix="fleet-ca-", suffix=".pem")
        with os.fdopen(fd, "wb") as f:
            for p in parts:
                f.write(p.read_bytes().rstrip(b"\n") + b"\n")
        atexit.register(lambda n=name: Path(n).unlink(missing_ok=True))
        _bundles[key] = name
        return name
