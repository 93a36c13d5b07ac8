"""Build context of examples/hello: one ``rootfs-<TARGETARCH><TARGETVARIANT>/`` per platform.

Each folder holds ``bin/busybox``, the static busybox of that platform taken from the lab
cache (``fleet lab setup``), so the image builds ``FROM scratch`` without Docker Hub.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fleet.lab.profiles import DEB_ARCHES
from fleet.lab.setup import busybox
from fleet.lab.state import LabPaths
from fleet.lab.util import LabError

#: examples/hello in a source checkout (Dockerfile, hello.sh).
EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "examples" / "hello"


def build_args(platform: str) -> dict[str, str]:
    """``linux/arm/v6`` -> ``{"TARGETARCH": "arm", "TARGETVARIANT": "v6"}`` (what BuildKit
    sets itself and the classic builder needs as --build-arg)."""
    parts = platform.split("/")
    return {"TARGETARCH": parts[1], "TARGETVARIANT": parts[2] if len(parts) > 2 else ""}


def prepare_context(paths: LabPaths, dest: str | Path) -> dict[str, Path]:
    """Fill ``dest`` with the example's files (if missing) and ``rootfs-*`` folders for
    every platform whose busybox is in the lab cache. Returns ``{platform: folder}``.

    Raises LabError if no busybox is cached (run ``fleet lab setup``)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Dockerfile", "hello.sh"):
        src = EXAMPLE_DIR / name
        if not (dest / name).exists() and src.exists():
            shutil.copy2(src, dest / name)
    made: dict[str, Path] = {}
    for arch in DEB_ARCHES.values():
        bb = busybox(paths, arch.name)
        if not bb.exists():
            continue
        folder = dest / arch.hello_dir
        (folder / "bin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(bb, folder / "bin" / "busybox")
        made[arch.platform] = folder
    if not made:
        raise LabError(f"no busybox in the lab cache {paths.cache}: run `fleet lab setup`")
    return made
