"""Networks and named volumes on an engine: typed views of ``docker network inspect`` /
``GET /networks/{id}`` and ``docker volume inspect`` / ``GET /volumes/{name}`` (the CLI
prints what the API returns, a list of such objects).

fleet creates the networks and volumes of a Compose stack and labels them; it never
removes a volume (the data of every release lives there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["NetworkState", "VolumeState", "parse_network", "parse_volume"]


@dataclass(frozen=True)
class NetworkState:
    """``id``, ``name``, ``driver``, ``labels``, ``internal``, ``options`` (driver
    options) and ``containers`` (IDs of the containers attached)."""

    id: str
    name: str
    driver: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    internal: bool = False
    options: Mapping[str, str] = field(default_factory=dict)
    containers: tuple[str, ...] = ()


@dataclass(frozen=True)
class VolumeState:
    """``name``, ``driver``, ``labels``, ``options`` (driver options), ``mountpoint``."""

    name: str
    driver: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)
    mountpoint: str = ""


def _one(raw: Any, what: str) -> Mapping[str, Any]:
    doc = json.loads(raw) if isinstance(raw, (bytes, bytearray, str)) else raw
    if isinstance(doc, list):
        if len(doc) != 1:
            raise ValueError(f"{what}: expected one object, got {len(doc)}")
        doc = doc[0]
    if not isinstance(doc, Mapping):
        raise ValueError(f"{what}: expected a JSON object")
    return doc


def _strs(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (value or {}).items()} if isinstance(value, Mapping) else {}


def parse_network(raw: Any) -> NetworkState:
    """A network inspect document (object, or the CLI's one-element list; bytes, text or
    parsed). Raises ValueError when it is neither."""
    d = _one(raw, "network inspect")
    return NetworkState(str(d.get("Id") or d.get("ID") or ""), str(d.get("Name") or ""), str(d.get("Driver") or ""),
                        _strs(d.get("Labels")), bool(d.get("Internal")), _strs(d.get("Options")),
                        tuple(sorted((d.get("Containers") or {}).keys())))


def parse_volume(raw: Any) -> VolumeState:
    """A volume inspect document (object or the CLI's one-element list)."""
    d = _one(raw, "volume inspect")
    return VolumeState(str(d.get("Name") or ""), str(d.get("Driver") or ""), _strs(d.get("Labels")),
                       _strs(d.get("Options")), str(d.get("Mountpoint") or ""))
