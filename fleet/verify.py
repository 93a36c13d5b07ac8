"""Verify: does each device really run the child of the index that was planned for it?

The registry side is known from the publish (:class:`fleet.publish.PublishResult`): per
platform the child manifest digest, config digest and layer diff IDs. The device side is
what its engine holds (:mod:`fleet.engine`). The comparison is pure (:func:`check_image`,
:func:`check_container`, :func:`crash_reason`, :func:`verdict`) and identifies the
child the same way on both image stores:

* classic store (Docker <= 28 default): ``image inspect .Id`` must equal the planned CONFIG
  digest; it identifies the platform unambiguously.
* containerd image store (Docker 24+ optional, 29 default): ``.Id`` is the INDEX digest, so
  the child is identified by the container's ``ImageManifestDescriptor`` (API >= 1.48,
  moby#48855) when present, and always by the layer diff IDs (``RootFS.Layers``) plus the
  image config's os/architecture/variant, which every engine reports.
* on both, the image config's platform must be the planned entry's (an "arm64" entry that
  holds an amd64 image, pi-hole/docker-pi-hole#735, matches its own digests but not this),
  and the container must really run: not exited with ``exec format error``, SIGILL (exit
  132) or SIGSEGV (exit 139), which is how an ARMv7 binary dies on an ARMv6 board
  (balena-os/balena-engine#269, mpromonet/v4l2rtspserver#335).

:func:`fleet.deploy.view.observe` gathers the device side through an
:class:`fleet.engine.Engine`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from fleet.labels import LABEL
from fleet.engine import ContainerState, ImageState
from fleet.platform import Platform, PlatformError
from fleet.results import Result

__all__ = [
    "Expected",
    "Check",
    "check_image",
    "check_container",
    "crash_reason",
    "verdict",
]

# Exit statuses of a shell-started process killed by a signal are 128 + signal number.
_SIGNAL_EXITS = {132: "SIGILL (illegal instruction: code built for a newer CPU than this one)",
                 139: "SIGSEGV (segmentation fault)",
                 135: "SIGBUS (bus error)",
                 # A 32-bit engine's default seccomp profile admits only its own 32-bit system
                 # call ABI (moby profiles/seccomp/default.json archMap lists sub-architectures
                 # for 64-bit engines only), so a 64-bit image that the 64-bit kernel would run
                 # dies at its first system call (captured: amd64 child on the lab's i386 board,
                 # audit "sig=31 arch=c000003e"; the same trap: ioi/isolate#190).
                 159: "SIGSYS (bad system call: the seccomp filter killed it; on a 32-bit engine on a "
                      "64-bit kernel, the image is 64-bit: deploy the engine's own platform, e.g. "
                      "linux/386 or linux/arm/v7)"}


#: ``Expected.index_digest`` of a ``deploy --check`` plan whose tag is not published yet.
UNPUBLISHED = "sha256:(this publish)"


@dataclass(frozen=True)
class Expected:
    """What a device must run: the ``index_digest`` of ``repository`` and, for the device's
    platform, the planned entry's ``platform``, ``manifest_digest``, ``config_digest`` and
    ``diff_ids``."""

    repository: str
    index_digest: str
    platform: Platform
    manifest_digest: str
    config_digest: str
    diff_ids: tuple[str, ...]

    @property
    def published(self) -> bool:
        """False for the plan of a ``deploy --check`` whose tag is not published yet."""
        return self.index_digest != UNPUBLISHED

    @property
    def pull_reference(self) -> str:
        """``registry/repository@<index digest>``: what every device pulls (never the tag)."""
        return f"{self.repository}@{self.index_digest}"

    @classmethod
    def from_entry(cls, repository: str, index_digest: str, entry: Any) -> "Expected":
        """From a :class:`fleet.publish.PublishedEntry`."""
        return cls(repository, index_digest, entry.platform, entry.manifest_digest,
                   entry.config_digest, tuple(entry.diff_ids))

    def to_dict(self) -> dict[str, Any]:
        """``{"repository", "index_digest", "platform" (os/arch[/variant]),
        "manifest_digest", "config_digest", "diff_ids"}``."""
        return {"repository": self.repository, "index_digest": self.index_digest, "platform": str(self.platform),
                "manifest_digest": self.manifest_digest, "config_digest": self.config_digest,
                "diff_ids": list(self.diff_ids)}

    @classmethod
    def from_dict(cls, data: Any) -> "Expected":
        """From :meth:`to_dict`'s output. Raises ValueError naming what is wrong."""
        if not isinstance(data, dict) or set(data) != {"repository", "index_digest", "platform", "manifest_digest",
                                                       "config_digest", "diff_ids"}:
            raise ValueError(f"expected: not an expected entry: {str(data)[:200]}")
        texts = [data[k] for k in ("repository", "index_digest", "manifest_digest", "config_digest")]
        diff_ids = data["diff_ids"]
        if not all(isinstance(t, str) for t in texts) or not isinstance(diff_ids, list) \
                or not all(isinstance(d, str) for d in diff_ids):
            raise ValueError("expected: digests and repository must be strings")
        try:
            platform = Platform.parse(data["platform"])
        except PlatformError as e:
            raise ValueError(f"expected: {e}") from None
        return cls(data["repository"], data["index_digest"], platform, data["manifest_digest"],
                   data["config_digest"], tuple(diff_ids))


@dataclass(frozen=True)
class Check:
    """One comparison: ``name`` (``config digest``, ``platform``, ``layers``, ...), ``ok``
    (True, False, or None when it cannot be checked on this engine), ``detail``."""

    name: str
    ok: bool | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def _short(d: str | None) -> str:
    if not d:
        return "-"
    algo, _, hexpart = d.partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else d


def check_image(expected: Expected, image: ImageState | None, store: str = "classic") -> list[Check]:
    """Compare an engine's image with the planned entry.

    ``store``: ``"classic"`` or ``"containerd"`` (:attr:`fleet.engine.EngineInfo.store`).
    Returns checks for ``config digest``, ``platform``, ``layers`` (and ``manifest`` when
    a containerd engine lists its children). A config without ``variant`` (builders before
    Docker 20.10; arm64 images from BuildKit, docker/buildx#1652) is compared on os and
    architecture only, and the check's detail says so.
    """
    if image is None:
        return [Check("image", False, "the engine has no such image")]
    checks: list[Check] = []
    if store == "containerd":
        if image.id == expected.index_digest:
            checks.append(Check("config digest", None,
                                f"containerd image store reports the index digest {_short(image.id)} as the "
                                "image ID, not the config digest: child identified by its layers"))
        elif image.id == expected.config_digest or image.id == expected.manifest_digest:
            checks.append(Check("config digest", True, f"{_short(image.id)} is the planned child"))
        else:
            checks.append(Check("config digest", False,
                                f"image ID {_short(image.id)} is neither the planned index "
                                f"{_short(expected.index_digest)} nor its {expected.platform} child"))
        wanted = [m for m in image.manifests if isinstance(m, Mapping)
                  and (m.get("ID") == expected.manifest_digest
                       or (m.get("Descriptor") or {}).get("digest") == expected.manifest_digest)]
        if image.manifests:
            avail = bool(wanted) and bool(wanted[0].get("Available"))
            checks.append(Check("manifest", avail,
                                f"child {_short(expected.manifest_digest)} "
                                f"{'present' if avail else 'not present'} in the engine's content store"))
    else:
        ok = image.id == expected.config_digest
        checks.append(Check("config digest", ok,
                            f"{_short(image.id)}" + ("" if ok else f", planned {_short(expected.config_digest)}"
                                                                    f" ({expected.platform})")))
    got = image.platform
    if got is None:
        checks.append(Check("platform", False, f"image config declares {image.platform_text!r}, "
                                               f"planned {expected.platform}"))
    elif not image.variant and expected.platform.variant and got.architecture == expected.platform.architecture:
        # normalize("arm", "") is arm/v7: without a written variant only os/arch are known
        ok = got.os == expected.platform.os
        checks.append(Check("platform", ok, f"{got.os}/{got.architecture} (config has no variant), "
                                            f"planned {expected.platform}"))
    else:
        ok = got == expected.platform
        checks.append(Check("platform", ok, f"{got}" + ("" if ok else f", planned {expected.platform}")))
    ok = tuple(image.diff_ids) == tuple(expected.diff_ids)
    if ok:
        detail = f"{len(image.diff_ids)} layer(s) as planned"
    else:
        detail = (f"{len(image.diff_ids)} layer(s) {', '.join(_short(d) for d in image.diff_ids) or '-'}; planned "
                  f"{', '.join(_short(d) for d in expected.diff_ids) or '-'}")
    checks.append(Check("layers", ok, detail))
    return checks


def crash_reason(container: ContainerState | None, logs: str = "") -> str | None:
    """Why a container died on the CPU, or None: ``exec format error`` (a binary of another
    architecture, or a foreign one without an interpreter), SIGILL (exit 132: instructions
    the CPU lacks, the ARMv7-binary-on-ARMv6 case), SIGSEGV (exit 139), SIGBUS (exit 135),
    SIGSYS (exit 159: a system call the seccomp filter forbids, a 64-bit image on a 32-bit
    engine)."""
    if container is None:
        return None
    text = f"{container.error}\n{logs}".lower()
    if "exec format error" in text:
        return "exec format error: the binary is for another architecture"
    if not container.running and container.exit_code in _SIGNAL_EXITS:
        return f"exited {container.exit_code} = {_SIGNAL_EXITS[container.exit_code]}"
    if "illegal instruction" in text:
        return "illegal instruction: code built for a newer CPU than this one"
    return None


def check_container(expected: Expected, container: ContainerState | None, image: ImageState | None,
                    store: str = "classic", logs: str = "") -> list[Check]:
    """Compare a device's container with the planned entry: it exists, runs the planned
    image (classic: ``.Image`` is the config digest; containerd: its
    ``ImageManifestDescriptor`` is the planned child when the engine reports one, else its
    image is the verified index image), carries fleet's labels for this index, and is
    running without a crash (:func:`crash_reason`)."""
    if container is None:
        return [Check("container", False, "no such container")]
    checks: list[Check] = []
    if store == "containerd":
        if container.manifest_digest:
            ok = container.manifest_digest == expected.manifest_digest
            checks.append(Check("container image", ok, f"created from child {_short(container.manifest_digest)}"
                                + ("" if ok else f", planned {_short(expected.manifest_digest)}")))
        else:
            ok = image is not None and container.image_id == image.id
            checks.append(Check("container image", ok, f"image {_short(container.image_id)}"))
    else:
        ok = container.image_id == expected.config_digest
        checks.append(Check("container image", ok, f"{_short(container.image_id)}"
                            + ("" if ok else f", planned {_short(expected.config_digest)}")))
    label_index = container.labels.get(LABEL["index"])
    ok = label_index == expected.index_digest
    checks.append(Check("deployment", ok, f"{container.labels.get(LABEL['deployment']) or 'no fleet label'}, index "
                        f"{_short(label_index)}" + ("" if ok else f", planned {_short(expected.index_digest)}")))
    crash = crash_reason(container, logs)
    if crash:
        checks.append(Check("running", False, crash))
    elif container.restarting or not container.running:
        checks.append(Check("running", False, f"{container.status}, exit code {container.exit_code}"
                            + (f": {container.error}" if container.error else "")))
    elif container.health not in (None, "healthy", "starting"):
        checks.append(Check("running", False, f"running but its image's HEALTHCHECK says {container.health}"))
    else:
        restarts = f", {container.restart_count} restart(s)" if container.restart_count else ""
        checks.append(Check("running", True, f"running since {container.started_at[:19]}{restarts}"))
    return checks


def verdict(checks: Sequence[Check]) -> tuple[Result, str]:
    """``(result, reason)`` from a device's checks: ``verified`` (no check failed),
    ``missing`` (no container), ``drifted`` (it runs another image, index or platform than
    planned), ``crashed`` (the planned image, not running). ``reason`` joins the failures."""
    failed = [c for c in checks if c.ok is False]
    if not failed:
        return Result.VERIFIED, ""
    reason = "; ".join(f"{c.name}: {c.detail}" for c in failed)
    names = {c.name for c in failed}
    if "container" in names:
        return Result.MISSING, reason
    if names <= {"running"}:
        return Result.CRASHED, reason
    return Result.DRIFTED, reason
