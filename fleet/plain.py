"""Frozen dataclasses as plain JSON data and back, driven by their type hints.

Used for the settings a device's work carries across machines (:mod:`fleet.compose.model`:
:class:`~fleet.compose.model.ServiceSpec` and its parts). The encoding::

    dataclass          -> {"field": value, ...}   (every field, defaults included)
    tuple[X, ...]      -> [x, ...]
    Mapping[str, str]  -> [[key, value], ...]      (keys are data: container variable names,
                                                    label keys; never field names)
    Path               -> "text"
    X | None           -> value or null

:func:`from_plain` is strict: an unknown or mistyped field is a :class:`PlainFormatError`
naming where (``spec.mounts[0].read_only``), so a job written by another version of fleet
is refused rather than half read. ``from_plain(cls, to_plain(x)) == x`` for every value
the types allow.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["PlainFormatError", "to_plain", "from_plain"]

_HINTS: dict[type, dict[str, Any]] = {}


class PlainFormatError(ValueError):
    """Data that does not fit the type it is read as (the message names where)."""


def _hints(cls: type) -> dict[str, Any]:
    h = _HINTS.get(cls)
    if h is None:
        h = _HINTS[cls] = typing.get_type_hints(cls)
    return h


def to_plain(value: Any) -> Any:
    """``value`` (a dataclass instance, or anything its fields hold) as JSON data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return [[str(k), to_plain(v)] for k, v in value.items()]
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def from_plain(cls: type, data: Any, where: str = "") -> Any:
    """An instance of dataclass ``cls`` from :func:`to_plain`'s output. Raises
    :class:`PlainFormatError` naming the field for unknown, missing (without a default) or
    mistyped fields."""
    return _read(cls, data, where or cls.__name__)


def _read(hint: Any, data: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if data is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _read(rest[0], data, where)
        raise PlainFormatError(f"{where}: unsupported type {hint}")  # pragma: no cover - not used by the model
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(data, list):
            raise PlainFormatError(f"{where}: expected a list, got {type(data).__name__}")
        return tuple(_read(args[0], v, f"{where}[{i}]") for i, v in enumerate(data))
    if origin in (Mapping, dict) or hint in (Mapping, dict):
        args = typing.get_args(hint) or (str, str)
        if not isinstance(data, list) or not all(isinstance(p, list) and len(p) == 2 for p in data):
            raise PlainFormatError(f"{where}: expected a list of [key, value] pairs")
        out = {}
        for k, v in data:
            if not isinstance(k, str):
                raise PlainFormatError(f"{where}: key {k!r} is not a string")
            out[k] = _read(args[1], v, f"{where}[{k}]")
        return out
    if dataclasses.is_dataclass(hint):
        if not isinstance(data, dict):
            raise PlainFormatError(f"{where}: expected an object, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(hint)}
        unknown = sorted(set(data) - set(fields), key=str)
        if unknown:
            raise PlainFormatError(f"{where}: unknown field(s) {', '.join(map(str, unknown))}")
        hints = _hints(hint)
        kwargs = {}
        for name, f in fields.items():
            if name in data:
                kwargs[name] = _read(hints[name], data[name], f"{where}.{name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise PlainFormatError(f"{where}: missing field {name}")
        return hint(**kwargs)
    if hint is Path:
        if not isinstance(data, str):
            raise PlainFormatError(f"{where}: expected a path string")
        return Path(data)
    if hint is float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise PlainFormatError(f"{where}: expected a number, got {type(data).__name__}")
        return data
    if hint is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise PlainFormatError(f"{where}: expected an integer, got {type(data).__name__}")
        return data
    if hint in (str, bool):
        if not isinstance(data, hint):
            raise PlainFormatError(f"{where}: expected {hint.__name__}, got {type(data).__name__}")
        return data
    if hint is Any:
        return data
    raise PlainFormatError(f"{where}: unsupported type {hint}")  # pragma: no cover - not used by the model
