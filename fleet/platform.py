"""OCI platforms: names, containerd's normalization, matching and ranking. Pure, no I/O.

A platform is ``os/architecture[/variant]`` as in an image index descriptor
(OCI image-spec ``image-index.md``, "platform"). Every :class:`Platform` is stored
normalized with containerd's rules (containerd/platforms ``database.go``
``normalizeArch``), so equality of two Platforms is containerd's exact match:
``linux/arm`` == ``linux/arm/v7``, ``linux/arm64/v8`` == ``linux/arm64``,
``linux/aarch64`` == ``linux/arm64``.

Ranking follows containerd's ``Only()`` / ``platformVector`` (``compare.go``), which is what
Docker >= 23 and the containerd image store use to pick an index entry; Docker <= 20.10 used
an exact match plus a "deprecated partial match" for arm (moby v20.10.24
``distribution/pull_v2_unix.go`` ``filterManifests``), see :func:`choose_legacy`.

What the names a device prints (``uname -m``, package architectures, ELF ``e_machine``)
say about its platform is :mod:`fleet.devicearch`; deciding a device's platform from them
is :mod:`fleet.detect`'s job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from fleet.errors import UsageError

__all__ = [
    "PlatformError",
    "Platform",
    "normalize",
    "compatible",
    "matches",
    "choose",
    "choose_legacy",
]


class PlatformError(UsageError):
    """A malformed platform string or component; the message names the string.

    ``spec`` is the offending text as given, ``reason`` the short explanation.
    """

    def __init__(self, spec: str, reason: str):
        self.spec = spec
        self.reason = reason
        super().__init__(f"invalid platform {spec!r}: {reason}")


# Go's GOOS values (plus "unknown", which BuildKit writes on attestation entries:
# docker/buildx#1509) - an OS outside this list is a typo such as "arm64/v8" read as os/arch.
_KNOWN_OS = frozenset(
    "aix android darwin dragonfly freebsd illumos ios js linux netbsd openbsd plan9 "
    "solaris wasip1 windows zos unknown".split()
)
# Go's GOARCH values that appear in image indexes (plus "unknown" for attestation entries).
_KNOWN_ARCH = frozenset(
    "386 amd64 amd64p32 arm arm64 arm64be armbe loong64 mips mipsle mips64 mips64le "
    "mips64p32 mips64p32le ppc ppc64 ppc64le riscv riscv64 s390 s390x sparc sparc64 wasm "
    "unknown".split()
)
# Aliases containerd's normalizeArch understands (database.go). i486-i686 are NOT among them:
# containerd keeps those names as written, and no engine matches them.
_ARCH_ALIASES = frozenset("i386 x86_64 x86-64 aarch64 armhf armel".split())
_UNAME_X86 = frozenset("i486 i586 i686".split())
_COMPONENT = re.compile(r"[A-Za-z0-9_.-]+")
_ARM64_VARIANT = re.compile(r"v(?P<major>8|9)(?:\.(?P<minor>[0-9]))?")
_OTHER_VARIANT = re.compile(r"[a-z0-9][a-z0-9.]*")


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """containerd/platforms database.go ``normalizeArch`` (both lower-cased first)."""
    arch = arch.lower()
    variant = variant.lower()
    if arch == "i386":
        # containerd maps only i386; i486-i686 stay as written (no engine matches them, so
        # an index entry written linux/i686 never serves a 386 device).
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        # v1 is the x86-64 baseline (go-archvariant); v2-v4 are kept (containerd >= 1.6).
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        # arm64's canonical variant is empty: buildkit#4039/#4082 and CRI-O's
        # containers/image#898 broke on arm64 vs arm64/v8; v9 spellings added in 2024.
        if variant in ("8", "v8", "v8.0"):
            return "arm64", ""
        if variant in ("9", "9.0", "v9.0"):
            return "arm64", "v9"
        return "arm64", variant
    if arch == "armhf":
        return "arm", "v7"  # Debian armhf = ARMv7 + VFPv3-D16 (containerd forces v7)
    if arch == "armel":
        return "arm", "v6"  # containerd forces v6 for armel
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"  # a bare "linux/arm" entry is v7 (distroless#1382)
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
        return "arm", variant
    return arch, variant


def _check(spec: str, os_: str, arch: str, variant: str) -> None:
    """Reject names containerd would accept but no engine can ever match."""
    if os_ not in _KNOWN_OS:
        raise PlatformError(spec, f"unknown OS {os_!r}")
    if arch in _UNAME_X86:
        raise PlatformError(spec, f"unknown architecture {arch!r}: containerd keeps {arch} as written and no "
                                  f"engine matches it; the OCI name of 32-bit x86 is 386")
    if arch not in _KNOWN_ARCH:
        raise PlatformError(spec, f"unknown architecture {arch!r}")
    if arch == "arm" and variant not in ("v5", "v6", "v7", "v8"):
        # uname-style "v7l"/"v6l" variants: shellhub-io/shellhub#2440, moby/moby#34875.
        raise PlatformError(spec, f"invalid variant {variant!r} for arm (valid: v5, v6, v7, v8)")
    if arch == "arm64" and variant and not _ARM64_VARIANT.fullmatch(variant):
        # "--variant armv8": robertsLando/Zwave2Mqtt-docker#15; "arm64/v7" is a 32-bit level.
        raise PlatformError(spec, f"invalid variant {variant!r} for arm64 (valid: none, v8, v8.x, v9.x)")
    if arch == "amd64" and variant not in ("", "v2", "v3", "v4"):
        raise PlatformError(spec, f"invalid variant {variant!r} for amd64 (valid: none, v1, v2, v3, v4)")
    if arch == "386" and variant:
        raise PlatformError(spec, f"invalid variant {variant!r} for 386 (386 has no variants)")
    if variant and not _OTHER_VARIANT.fullmatch(variant):
        raise PlatformError(spec, f"invalid variant {variant!r}")


@dataclass(frozen=True)
class Platform:
    """An OCI platform, always normalized (containerd database.go) and validated.

    Construction normalizes: ``Platform("linux", "aarch64", "v8") == Platform("linux",
    "arm64")``. Raises :class:`PlatformError` for an unknown OS or architecture or a
    variant no engine matches (``arm/v7l``, ``arm64/armv8``, ``arm64/v7``).
    """

    os: str
    architecture: str
    variant: str = ""

    def __post_init__(self) -> None:
        spec = "/".join(p for p in (self.os, self.architecture, self.variant) if p)
        os_ = (self.os or "").lower()
        if os_ == "macos":
            os_ = "darwin"  # containerd normalizeOS
        if not os_ or not self.architecture:
            raise PlatformError(spec, "OS and architecture are required")
        for part in (self.os, self.architecture) + ((self.variant,) if self.variant else ()):
            if not _COMPONENT.fullmatch(part):
                raise PlatformError(spec, f"invalid characters in {part!r}")
        arch, variant = _normalize_arch(self.architecture, self.variant or "")
        _check(spec, os_, arch, variant)
        object.__setattr__(self, "os", os_)
        object.__setattr__(self, "architecture", arch)
        object.__setattr__(self, "variant", variant)

    @classmethod
    def parse(cls, spec: str) -> "Platform":
        """Parse ``os/arch[/variant]`` (also ``arch`` or ``arch/variant``, os linux).

        A lone architecture gets OS ``linux`` (containerd uses the host OS; our targets are
        Linux devices). Raises :class:`PlatformError` naming ``spec`` when it is empty, has
        more than three parts, an unknown OS/architecture or a malformed variant.
        """
        if not isinstance(spec, str) or not spec.strip():
            raise PlatformError(str(spec), "empty platform")
        text = spec.strip()
        parts = text.split("/")
        if len(parts) > 3 or any(not p for p in parts):
            raise PlatformError(spec, "expected os/architecture[/variant]")
        for part in parts:
            if not _COMPONENT.fullmatch(part):
                raise PlatformError(spec, f"invalid characters in {part!r}")
        first = parts[0].lower()
        is_arch = first in _KNOWN_ARCH or first in _ARCH_ALIASES
        try:
            if len(parts) == 1:
                if not is_arch:
                    raise PlatformError(spec, f"{parts[0]!r} is not an architecture (an OS alone needs the device's architecture)")
                return cls("linux", parts[0])
            if len(parts) == 2 and is_arch and first not in _KNOWN_OS:
                # "arm64/v8", "arm/v7": architecture/variant, as `docker --platform` accepts.
                return cls("linux", parts[0], parts[1])
            return cls(*parts)
        except PlatformError as exc:
            raise PlatformError(spec, exc.reason) from None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @property
    def is_attestation_like(self) -> bool:
        """True for ``unknown/unknown`` (BuildKit attestation entries, docker/buildx#1509)."""
        return self.os == "unknown" or self.architecture == "unknown"


def normalize(os: str, arch: str, variant: str = "") -> Platform:
    """containerd ``Normalize``: ``normalize("linux", "armhf") -> linux/arm/v7``.

    Raises :class:`PlatformError` on unknown names or malformed variants.
    """
    return Platform(os, arch, variant)


def _arm64_version(variant: str) -> tuple[int, int]:
    m = _ARM64_VARIANT.fullmatch(variant or "v8")
    assert m is not None  # Platform validated it
    return int(m["major"]), int(m["minor"] or 0)


def compatible(host: Platform) -> list[Platform]:
    """Platforms ``host`` accepts, best first: containerd ``Only()`` / ``platformVector``.

    * ``amd64/vN`` -> ``amd64/vN`` ... ``amd64/v2``, ``amd64``, then ``386``.
    * ``arm/vN`` -> ``arm/vN`` down to ``arm/v5`` (an arm/v6 Pi Zero never gets v7).
    * ``arm64[/v8.N|/v9.N]`` -> arm64 levels down to ``arm64`` (= v8; v9.N falls to
      v8.(N+5, at most 9)), then ``arm/v8`` ... ``arm/v5``. containerd adds the 32-bit
      fallback for every arm64 host, although some arm64 CPUs have no AArch32 mode.
    * anything else -> itself only. There is NO arm -> arm64 and NO 386 -> amd64 fallback
      (Olen/solar-monitor#92: a 32-bit engine on a 64-bit kernel never takes arm64).
    """
    os_ = host.os
    arch = host.architecture
    if arch == "amd64":
        level = int(host.variant[1:]) if host.variant else 1
        vec = [Platform(os_, "amd64", f"v{n}") for n in range(level, 1, -1)]
        return vec + [Platform(os_, "amd64"), Platform(os_, "386")]
    if arch == "arm":
        level = int(host.variant[1:])
        return [Platform(os_, "arm", f"v{n}") for n in range(level, 4, -1)]
    if arch == "arm64":
        major, minor = _arm64_version(host.variant)
        vec: list[Platform] = []
        if major == 9:
            vec += [Platform(os_, "arm64", f"v9.{n}" if n else "v9") for n in range(minor, -1, -1)]
            minor = min(minor + 5, 9)  # armv9.N is at least armv8.(N+5) (compare.go)
        vec += [Platform(os_, "arm64", f"v8.{n}" if n else "") for n in range(minor, -1, -1)]
        return vec + [Platform(os_, "arm", f"v{n}") for n in range(8, 4, -1)]
    return [host]


def matches(host: Platform, entry: Platform | None) -> bool:
    """True when a device of platform ``host`` accepts an index entry of ``entry``.

    ``None`` (a descriptor without a platform) never matches here; Docker >= 23 would take
    it as matching anything, which is not a basis for a rollout.
    """
    return entry is not None and entry in compatible(host)


def choose(host: Platform, entries: Sequence[Platform | None]) -> int | None:
    """Index of the entry containerd's ``Only(host)`` picks, or None if none matches.

    The first element of :func:`compatible` that any entry equals wins; among equal
    entries the first in index order (duplicates should be refused when publishing).
    """
    for wanted in compatible(host):
        for i, entry in enumerate(entries):
            if entry == wanted:
                return i
    return None


def choose_legacy(host: Platform, entries: Sequence[Platform | None]) -> int | None:
    """Index of the entry a Docker <= 20.10 engine pulls for ``host``, or None.

    moby v20.10.24 ``filterManifests``: the first entry that equals ``host`` after
    normalization (no v7 -> v6, no arm64 -> arm fallback); if none and the host is arm,
    the FIRST ``arm`` entry of the same OS in index order whatever its variant ("deprecated
    partial match"). That is why a Pi 4 with a 32-bit engine (linux/arm/v8) pulls arm/v6
    from an index listing arm/v6 before arm/v7 (tests/lab/test_deploy.py shows it on the lab).
    """
    for i, entry in enumerate(entries):
        if entry == host:
            return i
    if host.architecture == "arm":
        for i, entry in enumerate(entries):
            if entry is not None and entry.os == host.os and entry.architecture == "arm":
                return i
    return None
