"""Fetch Debian's static busybox for several architectures (real ELF binaries for tests).

Cache: ``$FLEET_TEST_CACHE/busybox/<debian-arch>/bin/busybox`` (default
``/var/cache/fleet-test``). .ci/run can pre-fetch with the same commands:

    dpkg --add-architecture armel; dpkg --add-architecture armhf   # (and arm64, s390x)
    apt-get update
    cd "$(mktemp -d)" && apt-get download busybox-static:ARCH
    dpkg-deb -x busybox-static_*_ARCH.deb /var/cache/fleet-test/busybox/ARCH
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

ARCHES = ("armel", "armhf", "arm64", "amd64", "s390x")


def cache_root() -> Path:
    return Path(os.environ.get("FLEET_TEST_CACHE", "/var/cache/fleet-test")) / "busybox"


def _run(*cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def _download(arch: str, dest: Path) -> None:
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        res = _run("apt-get", "download", f"busybox-static:{arch}", cwd=Path(tmp))
        if res.returncode != 0:
            raise RuntimeError(f"apt-get download busybox-static:{arch} failed: {res.stderr.strip()}")
        (deb,) = Path(tmp).glob("busybox-static_*.deb")
        unpacked = Path(tmp) / "x"
        res = _run("dpkg-deb", "-x", str(deb), str(unpacked))
        if res.returncode != 0:
            raise RuntimeError(f"dpkg-deb -x {deb.name} failed: {res.stderr.strip()}")
        os.replace(unpacked, dest)  # atomic: a half-unpacked tree is never seen


def fetch_busybox(arches: tuple[str, ...] = ARCHES) -> dict[str, Path]:
    """Return {debian arch: path of its static busybox}, downloading what is missing.

    Adds missing foreign architectures to dpkg and runs ``apt-get update`` once if a
    download fails (tests run as root on the CI machine kind). A file lock keeps
    concurrent pytest sessions from racing.
    """
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    paths = {a: root / a / "bin" / "busybox" for a in arches}
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = [a for a in arches if not paths[a].is_file()]
        updated = False
        for arch in missing:
            dest = root / arch
            if dest.exists():
                shutil.rmtree(dest)
            try:
                _download(arch, dest)
            except RuntimeError:
                if updated:
                    raise
                foreign = set(_run("dpkg", "--print-foreign-architectures").stdout.split())
                native = _run("dpkg", "--print-architecture").stdout.strip()
                for a in arches:
                    if a != native and a not in foreign:
                        _run("dpkg", "--add-architecture", a)
                # A mirror in mid-sync fails one index now and then ("File has unexpected
                # size"); apt keeps the other lists, so try the download regardless.
                _run("apt-get", "update")
                updated = True
                _download(arch, dest)
    return paths
