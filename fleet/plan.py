"""Which platforms one multi-arch tag must hold, who provides each, and which entry every
device will receive. Pure, no I/O: the probe's decisions come in, a :class:`Plan` goes out.

Rules:

* ``platforms: auto`` (or no explicit list): the index holds every device's OWN decided
  platform, deduplicated, so each device receives the image built for it (never merely a
  compatible one: an arm/v7 board given the arm/v6 build would run, but slower and not
  what the user wants). The order is fixed (:func:`canonical_order`), not the inventory's,
  so the same fleet always gives the same index bytes (same index digest).
* An explicit list (playbook ``platforms:`` or ``--platform``) is published as given, in
  the user's order; devices then receive the best entry under containerd's matching rules
  (``fleet.platform.choose``): e.g. an ``arm/v6`` entry serves ``arm/v7`` devices when the
  list has no v7.
* Each device's entry is what containerd ``Only(device platform)`` picks. Its engine by
  itself may pick another one: Docker <= 20.10 matches exactly, then takes the FIRST arm
  entry whatever its variant (moby v20.10.24 ``filterManifests``; a Pi 4 running a 32-bit
  OS: the engine asks for arm/v8, shown on the lab by tests/lab/test_deploy.py). When the engine's own pick differs,
  ``explicit_platform`` is True and deploy pulls with ``--platform``.
* A device with no platform decided, or with no compatible entry, is an error: nothing is
  pushed (``Plan.errors``; the CLI exits 1).

:func:`choose_entry` is the one place that picks a device's entry: planning a publish,
deploying it and verifying a published index all go through :func:`plan_devices`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from fleet.detect import Detection
from fleet.errors import FleetError
from fleet.platform import Platform, PlatformError, choose, choose_legacy, compatible
from fleet.playbook import BuildSource, NativeSource, PickSource, Playbook

__all__ = ["DevicePlan", "Plan", "make_plan", "plan_devices", "choose_entry", "NoMatchingEntry",
           "canonical_order", "engine_is_legacy"]


class NoMatchingEntry(FleetError):
    """No entry of the index is one a device of that platform can run (exit code 1)."""

    def __init__(self, device: Platform, reason: str):
        self.device = device
        super().__init__(reason)


def choose_entry(device: Platform, entries: Sequence[Platform | None], *, legacy: bool = False,
                 labels: Sequence[str] | None = None, planned: bool = False) -> int:
    """0-based index of the entry a device of platform ``device`` must get.

    ``entries``: the index's platforms in index order (None for attestation and malformed
    entries, which are never candidates). Follows containerd ``Only()``
    (:func:`fleet.platform.choose`), or Docker <= 20.10's matcher with ``legacy=True``
    (:func:`fleet.platform.choose_legacy`). ``labels``: the entries as written in the
    index, for the message; ``planned``: the index is not published yet (the message says
    what it "would hold"). Raises :class:`NoMatchingEntry` naming the device platform, what
    it accepts and what the index holds.
    """
    pick = (choose_legacy if legacy else choose)(device, entries)
    if pick is not None:
        return pick
    labels = list(labels) if labels is not None else [str(e) for e in entries if e is not None]
    accepted = ", ".join(str(p) for p in compatible(device))
    held = ", ".join(lb for lb, e in zip(labels, entries) if e is not None) if len(labels) == len(entries) \
        else ", ".join(labels)
    bare_arm = [lb for lb, e in zip(labels, entries) if e is not None and e.architecture == "arm"
                and len(lb.split("/")) < 3] if len(labels) == len(entries) else []
    hint = (f" ({', '.join(bare_arm)} has no variant, which normalizes to arm/v7)"
            if bare_arm and device.architecture in ("arm", "arm64") else "")
    raise NoMatchingEntry(device, f"no entry a {device} device can run (it accepts {accepted}); "
                                  f"the index {'would hold' if planned else 'holds'} {held or 'nothing'}{hint}")

# Index order for ``platforms: auto``: the usual architectures first, and for 32-bit ARM
# the HIGHEST variant first, because a Docker <= 20.10 engine without an exact match takes
# the first arm entry: arm/v7 first serves a 32-bit Pi 4 (engine asks arm/v8) its own
# arm/v7 build instead of the Pi Zero's arm/v6 one.
_ARCH_ORDER = ("amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64")


def canonical_order(platforms: Sequence[Platform]) -> list[Platform]:
    """Deduplicate and sort ``platforms`` into the fixed index order used for ``auto``:
    linux first, then amd64, arm64, arm (v8, v7, v6, v5), 386, ppc64le, s390x, riscv64,
    then others alphabetically; variants descending within an architecture."""

    def key(p: Platform) -> tuple:
        arch_rank = _ARCH_ORDER.index(p.architecture) if p.architecture in _ARCH_ORDER else len(_ARCH_ORDER)
        digits = re.sub(r"[^0-9]", "", p.variant)
        return (p.os != "linux", p.os, arch_rank, p.architecture, -int(digits or 0), p.variant)

    return sorted(dict.fromkeys(platforms), key=key)


def engine_is_legacy(version: str | None) -> bool | None:
    """True for a Docker engine <= 22 (the 20.10 matcher), False for 23+ (containerd
    ``Only()``), None when ``version`` is unknown or unparsable (``"20.10.24+dfsg1"`` -> True)."""
    if not version:
        return None
    m = re.match(r"^\s*v?(\d+)\.(\d+)", version)
    if not m:
        return None
    return int(m.group(1)) < 23


@dataclass
class DevicePlan:
    """One device in a plan.

    ``platform``: its decided platform (None: undecided); ``engine_platform``: what its
    engine asks for when pulling (None: unknown); ``entry_platform``: the index entry it
    will receive (containerd rules), None when none fits; ``engine_entry``: the entry its
    engine would pick by itself (None: none or unknown); ``explicit_platform``: True when
    ``engine_entry`` differs from ``entry_platform`` (deploy pulls with ``--platform``);
    ``entry_index``: the position of its entry among the plan's platforms (the published
    index's entries, in order); ``error``: why this device cannot be served, else None.
    """

    host: str
    platform: Platform | None
    engine_platform: Platform | None = None
    entry_platform: Platform | None = None
    explicit_platform: bool = False
    error: str | None = None
    engine_entry: Platform | None = None
    note: str | None = None
    entry_index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        def s(p: Platform | None) -> str | None:
            return str(p) if p is not None else None

        return {"host": self.host, "platform": s(self.platform),
                "engine_platform": s(self.engine_platform), "entry_platform": s(self.entry_platform),
                "engine_entry": s(self.engine_entry), "explicit_platform": self.explicit_platform,
                "entry_index": self.entry_index,
                "note": self.note, "error": self.error}

    @classmethod
    def from_dict(cls, data: Any) -> "DevicePlan":
        """From :meth:`to_dict`'s output. Raises ValueError naming a missing or mistyped
        field."""
        if not isinstance(data, dict) or not isinstance(data.get("host"), str):
            raise ValueError(f"device plan: not a device plan: {str(data)[:200]}")
        known = {"host", "platform", "engine_platform", "entry_platform", "engine_entry", "explicit_platform",
                 "entry_index", "note", "error"}
        if set(data) - known:
            raise ValueError(f"device plan: unknown field(s) {', '.join(sorted(map(str, set(data) - known)))}")

        def p(key: str) -> Platform | None:
            v = data.get(key)
            try:
                return None if v is None else Platform.parse(v)
            except PlatformError as e:
                raise ValueError(f"device plan: {key}: {e}") from None

        def text(key: str) -> str | None:
            v = data.get(key)
            if v is not None and not isinstance(v, str):
                raise ValueError(f"device plan: {key} is not a string")
            return v

        index = data.get("entry_index")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
            raise ValueError("device plan: entry_index is not an integer")
        explicit = data.get("explicit_platform", False)
        if not isinstance(explicit, bool):
            raise ValueError("device plan: explicit_platform is not a boolean")
        return cls(data["host"], p("platform"), p("engine_platform"), p("entry_platform"), explicit,
                   text("error"), p("engine_entry"), text("note"), index)


@dataclass
class Plan:
    """What one publish will hold and who gets what.

    ``platforms``: the index's platforms in index order; ``sources``: for each, a human
    description of who provides it; ``devices``: one :class:`DevicePlan` per device (inventory
    order); ``source_errors``: platforms no source can provide.
    """

    platforms: tuple[Platform, ...]
    sources: dict[Platform, str]
    devices: list[DevicePlan] = field(default_factory=list)
    source_errors: list[str] = field(default_factory=list)
    mode: str = "auto"

    @property
    def errors(self) -> list[str]:
        """Every reason not to publish: ``"HOST: reason"`` per device, then source errors."""
        out = [f"{d.host}: {d.error}" for d in self.devices if d.error]
        if not self.platforms:
            out.append("no platform to publish (no device has a decided platform and no explicit list)")
        return out + list(self.source_errors)

    def to_dict(self) -> dict[str, Any]:
        return {"platforms": [str(p) for p in self.platforms],
                "sources": {str(p): self.sources.get(p) for p in self.platforms},
                "mode": self.mode,
                "devices": [d.to_dict() for d in self.devices],
                "errors": self.errors}


def describe_source(playbook: Playbook, platform: Platform) -> tuple[str | None, str | None]:
    """``(description, error)`` of who provides ``platform`` for ``playbook``'s source."""
    src = playbook.source
    if isinstance(src, BuildSource):
        return f"build {src.context.name}/{src.dockerfile} on the local engine for {platform}", None
    if isinstance(src, NativeSource):
        builder = src.builders.get(platform)
        if builder is None:
            return None, (f"{platform}: the native source names no builder device for it "
                          f"(source.native.builders has {', '.join(map(str, src.builders)) or 'none'})")
        return f"build natively on device {builder}", None
    if isinstance(src, PickSource):
        if src.index:
            return f"pick the {platform} entry of {src.index}", None
        ref = src.refs.get(platform)
        if ref is None:
            return None, (f"{platform}: source.pick names no reference for it "
                          f"(it has {', '.join(map(str, src.refs)) or 'none'})")
        return f"pick {ref}", None
    return None, f"{platform}: unknown source"  # pragma: no cover - playbook validates


def make_plan(playbook: Playbook, detections: Mapping[str, Detection | None],
              explicit_platforms: Sequence[Platform] | None = None,
              engine_versions: Mapping[str, str | None] | None = None,
              probe_errors: Mapping[str, str] | None = None) -> Plan:
    """Plan a publish.

    ``detections``: host name -> :class:`Detection` from the probe (inventory order; None
    when the device could not be probed, then ``probe_errors[host]`` says why).
    ``explicit_platforms``: ``--platform`` values; they replace the playbook's list.
    ``engine_versions``: host -> ``docker version`` Server.Version (the ``engine_version``
    fact), which selects the engine's matcher (<= 22: Docker 20.10's, else containerd's);
    unknown -> both are checked and any disagreement marks ``explicit_platform``.

    Never raises for device problems: they land in :attr:`Plan.errors`.
    """
    if explicit_platforms:
        platforms = list(dict.fromkeys(explicit_platforms))
        mode = "explicit (--platform)"
    elif isinstance(playbook.platforms, tuple):
        platforms = list(playbook.platforms)
        mode = "explicit (playbook)"
    else:
        platforms = canonical_order([d.platform for d in detections.values()
                                     if d is not None and d.platform is not None])
        mode = "auto"
    sources: dict[Platform, str] = {}
    source_errors: list[str] = []
    for p in platforms:
        text, problem = describe_source(playbook, p)
        if problem:
            source_errors.append(problem)
        else:
            sources[p] = text  # type: ignore[assignment]
    devices = plan_devices(detections, platforms, engine_versions, probe_errors, planned=True)
    return Plan(tuple(platforms), sources, devices, source_errors, mode)


def plan_devices(detections: Mapping[str, Detection | None], platforms: Sequence[Platform | None],
                 engine_versions: Mapping[str, str | None] | None = None,
                 probe_errors: Mapping[str, str] | None = None, *, planned: bool = False) -> list[DevicePlan]:
    """One :class:`DevicePlan` per host of ``detections`` (in its order) against an index
    whose entries are ``platforms`` (None: an attestation or malformed entry); ``planned``:
    that index is not published yet. Never raises for device problems: they land in
    ``DevicePlan.error``."""
    engine_versions = engine_versions or {}
    probe_errors = probe_errors or {}
    return [_plan_device(host, det, platforms, engine_versions.get(host), probe_errors.get(host), planned)
            for host, det in detections.items()]


def _plan_device(host: str, det: Detection | None, platforms: Sequence[Platform | None],
                 engine_version: str | None, probe_error: str | None, planned: bool) -> DevicePlan:
    if det is None:
        return DevicePlan(host, None, error=f"not probed: {probe_error or 'no facts'}")
    dp = DevicePlan(host, det.platform, det.engine_platform)
    if det.platform is None:
        dp.error = f"undecided platform: {det.error or 'no platform facts'}"
        return dp
    try:
        i = choose_entry(det.platform, platforms, planned=planned)
    except NoMatchingEntry as exc:
        dp.error = str(exc)
        return dp
    dp.entry_index = i
    dp.entry_platform = platforms[i]
    if dp.entry_platform != det.platform:
        dp.note = f"receives {dp.entry_platform} (no {det.platform} entry)"
    if det.engine_platform is None:
        dp.note = ((dp.note + "; ") if dp.note else "") + "engine platform unknown"
        return dp
    legacy = engine_is_legacy(engine_version)
    picks = set()
    for legacy_matcher in ((True,) if legacy else (False,) if legacy is False else (True, False)):
        try:
            picks.add(platforms[choose_entry(det.engine_platform, platforms, legacy=legacy_matcher)])
        except NoMatchingEntry:
            picks.add(None)
    engine_entry = next(iter(picks)) if len(picks) == 1 else None
    dp.engine_entry = engine_entry
    if picks != {dp.entry_platform}:
        dp.explicit_platform = True
        own = " or ".join("nothing" if p is None else str(p) for p in picks)
        dp.note = ((dp.note + "; ") if dp.note else "") + (
            f"engine ({det.engine_platform}{', ' + engine_version if engine_version else ''}) "
            f"would pick {own}: pull with --platform {dp.entry_platform}")
    return dp
