"""Image indexes (OCI image index / Docker manifest list): read, check, build, plan. Pure.

An image index lists one descriptor per platform; a device's engine picks the entry its
platform accepts (containerd ``Only()``, see :mod:`fleet.platform`). This module decides
what may be published under one multi-arch tag and which entry each device gets:

* :func:`parse_index` reads an index as published, keeping malformed platforms (so they can
  be refused with a reason) and flagging BuildKit attestation entries.
* :func:`check_index`, :func:`check_config`, :func:`check_elf`, :func:`check_pull_path`
  refuse the mistakes seen in the field (cases in ``tests/data/cases/index-cases.yaml``):
  duplicate platforms, uname-style or misspelled variants, an entry whose image config or
  binaries are another architecture, a media type the devices' pull path does not serve.
* :func:`build_index` writes deterministic index bytes (same entries -> same digest).

Which entry a device gets is :func:`fleet.plan.choose_entry` (one chooser for planning,
deploy and verify).

No I/O here except :func:`check_elf` reading a file the caller names.
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterable, Mapping, Sequence

from fleet.devicearch import elf_signature
from fleet.elf import ARM_CPU_ARCH, ElfError, ElfHeader, arm_cpu_arch, parse_header
from fleet.errors import FleetError
from fleet.platform import Platform, PlatformError

# Media types live in one place (OCI image-spec media-types.md; Docker image manifest v2
# schema 2); re-exported here for the modules and tests that import them from fleet.publish.index.
from fleet.registry.mediatypes import (  # noqa: F401
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
)

# BuildKit marks provenance/SBOM entries with this annotation and platform unknown/unknown
# (docker/buildx#1509; buildkit docs/attestations/attestation-storage.md).
ATTESTATION_ANNOTATION = "vnd.docker.reference.type"
ATTESTATION_VALUE = "attestation-manifest"

_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")


class IndexRefused(FleetError):
    """An index, entry or image that must not be published (or fails verification).

    ``problems`` is a list of :class:`Problem`; ``str()`` joins their reasons. Exit code 1
    (a check failed).
    """

    def __init__(self, problems: Sequence["Problem"]):
        self.problems = list(problems)
        super().__init__("; ".join(p.reason for p in self.problems))

    @property
    def kinds(self) -> set[str]:
        return {p.kind for p in self.problems}


@dataclass(frozen=True)
class Problem:
    """One reason to refuse. ``kind``: ``invalid-platform``, ``missing-platform``,
    ``duplicate-platform``, ``bad-descriptor``, ``mixed-media-types``, ``config-mismatch``,
    ``elf-mismatch``, ``pull-path``. ``entry``: 0-based entry index or None."""

    kind: str
    reason: str
    entry: int | None = None


@dataclass(frozen=True)
class IndexEntry:
    """One descriptor of an image index.

    ``platform``: normalized :class:`Platform`, or None when the written platform is missing
    or malformed (then ``platform_error`` says why). ``written``: the platform exactly as it
    appears in the index (``"linux/arm/v7l"``). ``digest`` (``sha256:<hex>``), ``size``
    (bytes of the child manifest), ``media_type`` of the child, ``annotations``.
    """

    platform: Platform | None
    digest: str
    size: int
    media_type: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    written: str = ""
    platform_error: str | None = None

    def __post_init__(self) -> None:
        if not self.written and self.platform is not None:
            object.__setattr__(self, "written", str(self.platform))
        object.__setattr__(self, "annotations", dict(self.annotations or {}))

    @classmethod
    def from_spec(cls, spec: str | None, digest: str, size: int, media_type: str,
                  annotations: Mapping[str, str] | None = None) -> "IndexEntry":
        """Entry for a platform written as ``os/arch[/variant]``; a malformed spec is kept
        (``platform=None``, ``platform_error`` set) so :func:`check_index` can refuse it."""
        platform, error = None, None
        if spec:
            try:
                platform = Platform.parse(spec)
            except PlatformError as e:
                error = e.reason
        return cls(platform, digest, size, media_type, annotations or {}, spec or "", error)

    @property
    def is_attestation(self) -> bool:
        """BuildKit attestation entry: not a platform, never matched for a device."""
        if self.annotations.get(ATTESTATION_ANNOTATION) == ATTESTATION_VALUE:
            return True
        return self.platform is not None and self.platform.is_attestation_like

    @property
    def candidate(self) -> Platform | None:
        """The platform a device may be given this entry for; None for attestation and
        malformed entries, which are never candidates."""
        return None if self.is_attestation else self.platform

    @property
    def label(self) -> str:
        return self.written or (str(self.platform) if self.platform else "(no platform)")


# --------------------------------------------------------------------------- parse


def _written_platform(p: Mapping[str, Any] | None) -> str:
    if not p:
        return ""
    parts = [str(p.get("os") or ""), str(p.get("architecture") or "")]
    if p.get("variant"):
        parts.append(str(p["variant"]))
    return "/".join(parts)


def parse_index(raw: bytes | str | Mapping[str, Any]) -> list[IndexEntry]:
    """Entries of an OCI image index or Docker manifest list, in index order.

    ``raw``: the index bytes/str or its parsed JSON. Platforms are kept as written and
    normalized where valid; attestation entries are included (see
    :attr:`IndexEntry.is_attestation`). Raises :class:`IndexRefused` (``bad-descriptor``)
    when the document is not an index or a descriptor lacks digest/size/mediaType.
    """
    doc = json.loads(raw) if isinstance(raw, (bytes, bytearray, str)) else raw
    if not isinstance(doc, Mapping) or not isinstance(doc.get("manifests"), list):
        raise IndexRefused([Problem("bad-descriptor", "not an image index (no 'manifests' list)")])
    entries = []
    for i, d in enumerate(doc["manifests"]):
        if not isinstance(d, Mapping) or "digest" not in d or "size" not in d:
            raise IndexRefused([Problem("bad-descriptor",
                                        f"entry {i}: descriptor without digest or size", i)])
        entries.append(IndexEntry.from_spec(_written_platform(d.get("platform")),
                                            str(d["digest"]), int(d["size"]),
                                            str(d.get("mediaType") or ""),
                                            d.get("annotations") or {}))
    return entries


def index_media_type(raw: bytes | str | Mapping[str, Any]) -> str | None:
    """The ``mediaType`` field of an index document, or None."""
    doc = json.loads(raw) if isinstance(raw, (bytes, bytearray, str)) else raw
    return doc.get("mediaType") if isinstance(doc, Mapping) else None


# --------------------------------------------------------------------------- checks


def _problems(entries: Sequence[IndexEntry]) -> list[Problem]:
    out: list[Problem] = []
    seen: dict[Platform, int] = {}
    for i, e in enumerate(entries):
        if not _DIGEST_RE.fullmatch(e.digest) or e.size <= 0:
            out.append(Problem("bad-descriptor", f"entry {i} ({e.label}): invalid digest "
                                                 f"{e.digest!r} or size {e.size}", i))
        if e.is_attestation:
            continue
        if e.platform is None:
            if e.platform_error:
                out.append(Problem(
                    "invalid-platform",
                    f"entry {i}: invalid platform {e.written!r}: {e.platform_error}; current "
                    f"engines never match it, refuse to publish", i))
            else:
                out.append(Problem("missing-platform",
                                   f"entry {i}: no platform (os/architecture) on the descriptor; "
                                   f"refuse to publish", i))
            continue
        if e.platform in seen:
            first = seen[e.platform]
            out.append(Problem(
                "duplicate-platform",
                f"duplicate platform {e.platform} (entries {first} and {i}, written "
                f"{entries[first].label!r} and {e.label!r}): which one a device pulls is "
                f"undefined; refuse to publish", i))
        else:
            seen[e.platform] = i
    return out


def check_index(entries: Sequence[IndexEntry]) -> None:
    """Refuse an index that must not be published.

    Raises :class:`IndexRefused` listing every problem: a malformed platform (uname-style
    ``arm/v7l`` - shellhub-io/shellhub#2440; ``arm64/armv8`` - robertsLando/Zwave2Mqtt-docker#15;
    ``arm64/v7``), a missing platform, two entries normalizing to the same platform
    (mpromonet/v4l2rtspserver#335), a malformed digest or size. Attestation entries are
    exempt from platform checks.
    """
    problems = _problems(entries)
    if problems:
        raise IndexRefused(problems)


def _config_platform(config: bytes | str | Mapping[str, Any]) -> tuple[str, Platform | None, str | None]:
    doc = json.loads(config) if isinstance(config, (bytes, bytearray, str)) else config
    written = _written_platform(doc if isinstance(doc, Mapping) else None)
    try:
        return written, Platform.parse(written), None
    except PlatformError as e:
        return written, None, e.reason


def check_config(entry_platform: Platform, config: bytes | str | Mapping[str, Any]) -> None:
    """Refuse an entry whose image config declares another platform.

    ``config``: the image config blob (bytes/str) or its parsed JSON (``os``,
    ``architecture``, ``variant``). The "arm tag holding an amd64 image" mistake
    (pi-hole/docker-pi-hole#735, #780). A config without ``variant`` is compared on OS and
    architecture only, because builders before Docker 20.10 never recorded it (the ELF
    check covers the ARM level). Raises :class:`IndexRefused` (``config-mismatch``).
    """
    written, declared, error = _config_platform(config)
    if declared is None:
        raise IndexRefused([Problem("config-mismatch",
                                    f"descriptor platform {entry_platform} but the image config "
                                    f"declares {written or 'no platform'!r} ({error})")])
    same = (declared.os == entry_platform.os
            and declared.architecture == entry_platform.architecture)
    has_variant = len(written.split("/")) > 2
    if same and has_variant:
        same = declared.variant == entry_platform.variant
    if not same:
        raise IndexRefused([Problem(
            "config-mismatch",
            f"descriptor platform {entry_platform} but the image config declares {declared}: "
            f"refuse to publish, fail verify")])


def check_pull_path(media_type: str, serves: Iterable[str] | None = None,
                    fails: Iterable[str] | None = None) -> None:
    """Refuse an index media type the devices' pull path (mirror, proxy) does not serve.

    ``serves``/``fails``: media types a probe of the exact pull path saw served / not
    served (project-zot/zot#2836: an on-demand mirror that served Docker manifest lists but
    not OCI indexes). Raises :class:`IndexRefused` (``pull-path``).
    """
    serves = list(serves or [])
    fails = list(fails or [])
    if media_type in fails or (serves and media_type not in serves):
        alt = [m for m in serves if m in INDEX_TYPES and m != media_type]
        hint = (f"publish a {'Docker manifest list v2' if alt[0] == DOCKER_MANIFEST_LIST else 'OCI image index'}"
                f" ({alt[0]}) or fix the pull path before rollout") if alt else \
            "fix the pull path before rollout"
        raise IndexRefused([Problem("pull-path", f"the pull path does not serve {media_type}; {hint}")])


# --------------------------------------------------------------------------- ELF

@dataclass(frozen=True)
class ElfInfo:
    """What an ELF header (and, for 32-bit ARM, its build attributes) says.

    ``bits`` 32|64, ``endianness`` "little"|"big", ``machine`` (e_machine number),
    ``arm_arch`` (Tag_CPU_arch name such as ``"v7"``, or None), ``arm_level`` (the OCI arm
    variant level it needs, 5-9, or None), ``notes`` (what could not be checked).
    """

    bits: int
    endianness: str
    machine: int
    arm_arch: str | None = None
    arm_level: int | None = None
    notes: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        text = ElfHeader(self.bits, self.endianness, self.machine).description
        return text + (f" (Tag_CPU_arch {self.arm_arch})" if self.arm_arch else "")


def check_elf(entry_platform: Platform, elf: bytes | str | os.PathLike | BinaryIO) -> ElfInfo:
    """Refuse a binary that cannot run on devices taking ``entry_platform``.

    ``elf``: the whole file (bytes), just its first bytes (>= 20; the ``elf_header`` fact),
    a path, or a seekable binary file. Class, data encoding and e_machine must be the
    entry architecture's (ELF gABI). For 32-bit ARM the ``Tag_CPU_arch`` build attribute
    (read with pyelftools from ``.ARM.attributes``; ARM IHI 0045) must be no higher than the
    entry's variant: an ARMv7 binary labelled arm/v6 faults on a Pi Zero
    (mpromonet/v4l2rtspserver#335). Returns :class:`ElfInfo`; raises :class:`IndexRefused`
    (``elf-mismatch``).
    """
    if isinstance(elf, (str, os.PathLike)):
        with open(elf, "rb") as f:
            return check_elf(entry_platform, io.BytesIO(f.read()))
    if isinstance(elf, (bytes, bytearray, memoryview)):
        stream: BinaryIO = io.BytesIO(bytes(elf))
    else:
        stream = elf
    stream.seek(0)
    head = stream.read(64)
    try:
        header = parse_header(head)
    except ElfError as e:
        raise IndexRefused([Problem("elf-mismatch", f"not an ELF file: {e}")]) from None
    bits, endian, machine = header.bits, header.endianness, header.machine
    info = ElfInfo(bits, endian, machine)
    want = elf_signature(entry_platform.architecture)
    if want is None:
        raise IndexRefused([Problem("elf-mismatch", f"entry {entry_platform}: no ELF rule for "
                                                    f"architecture {entry_platform.architecture!r}")])
    if (bits, endian, machine) != want:
        wanted = ElfInfo(*want).description
        raise IndexRefused([Problem(
            "elf-mismatch",
            f"entry {entry_platform} holds an {info.description} binary; that platform needs "
            f"{wanted}")])
    if entry_platform.architecture != "arm":
        return info
    code, note = arm_cpu_arch(stream)
    if code is None:
        return ElfInfo(bits, endian, machine, notes=(note,) if note else ())
    name, level = ARM_CPU_ARCH.get(code, (f"code {code}", 9))
    info = ElfInfo(bits, endian, machine, name, level)
    entry_level = int(entry_platform.variant[1:])
    if level > entry_level:
        raise IndexRefused([Problem(
            "elf-mismatch",
            f"entry {entry_platform} holds a binary built for ARM {name} (Tag_CPU_arch "
            f"{code}), which needs arm/v{level}; an arm/v{entry_level} device would fault "
            f"on its instructions")])
    return info


# --------------------------------------------------------------------------- build


def _platform_json(p: Platform) -> dict[str, str]:
    out = {"architecture": p.architecture, "os": p.os}
    # Write the variant explicitly where the architecture has one: a bare "arm" is read
    # as v7 (distroless#1382) and CRI-O once required arm64 "v8" (containers/image#898).
    if p.architecture == "arm64":
        out["variant"] = p.variant or "v8"
    elif p.variant:
        out["variant"] = p.variant
    return out


def build_index(entries: Sequence[IndexEntry], media_type: str | None = None,
                annotations: Mapping[str, str] | None = None) -> tuple[bytes, str]:
    """Serialize an index over ``entries`` (in the given order); returns (bytes, media_type).

    The media type follows the children unless given: Docker v2 manifests -> Docker
    manifest list; OCI manifests/indexes -> OCI image index; a mix is refused
    (``mixed-media-types``; distribution accepts it, engines and mirrors disagree).
    Every entry carries os/architecture, plus variant for arm (always) and arm64 ("v8").
    Same inputs give the same bytes (compact JSON, fixed key order). Runs
    :func:`check_index` first. A Docker manifest list cannot carry annotations or
    attestation entries, so those are refused there.
    """
    check_index(entries)
    child_types = {e.media_type for e in entries}
    if media_type is None:
        if child_types <= {DOCKER_MANIFEST}:
            media_type = DOCKER_MANIFEST_LIST
        elif child_types <= {OCI_MANIFEST, OCI_INDEX}:
            media_type = OCI_INDEX
        else:
            raise IndexRefused([Problem("mixed-media-types",
                                        f"children of mixed media types {sorted(child_types)}: "
                                        f"choose the index media type explicitly")])
    if media_type not in INDEX_TYPES:
        raise IndexRefused([Problem("bad-descriptor", f"{media_type!r} is not an index media type")])
    problems = []
    manifests = []
    for i, e in enumerate(entries):
        if e.media_type not in MANIFEST_TYPES + INDEX_TYPES:
            problems.append(Problem("bad-descriptor", f"entry {i} ({e.label}): child media "
                                                      f"type {e.media_type!r} is not a manifest", i))
        if media_type == DOCKER_MANIFEST_LIST and (e.annotations or e.is_attestation):
            problems.append(Problem("bad-descriptor", f"entry {i} ({e.label}): a Docker manifest "
                                                      f"list has no annotations or attestations", i))
        d: dict[str, Any] = {"mediaType": e.media_type, "digest": e.digest, "size": e.size}
        if e.is_attestation:
            d["platform"] = {"architecture": "unknown", "os": "unknown"}
        else:
            assert e.platform is not None  # check_index
            d["platform"] = _platform_json(e.platform)
        if e.annotations:
            d["annotations"] = dict(sorted(e.annotations.items()))
        manifests.append(d)
    if problems:
        raise IndexRefused(problems)
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}
    if annotations:
        if media_type == DOCKER_MANIFEST_LIST:
            raise IndexRefused([Problem("bad-descriptor", "a Docker manifest list has no annotations")])
        doc["annotations"] = dict(sorted(annotations.items()))
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode(), media_type
