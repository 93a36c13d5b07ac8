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
from typing import Any, Callable

__all__ = ["PlainFormatError", "to_plain", "from_plain"]

class PlainFormatError(ValueError):
    """Data that does not fit the type it is read as (the message names where)."""


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
    return _reader(cls)(data, where or cls.__name__)


_Reader = Callable[[Any, str], Any]
_READERS: dict[Any, _Reader] = {}


def _reader(hint: Any) -> _Reader:
    """The function reading data of type ``hint`` (made once per type: a job holds many)."""
    r = _READERS.get(hint)
    if r is None:
        r = _READERS[hint] = _make_reader(hint)
    return r


def _make_reader(hint: Any) -> _Reader:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) != 1:  # pragma: no cover - not used by the model
            raise PlainFormatError(f"unsupported type {hint}")
        inner = _reader(rest[0])
        nullable = len(rest) < len(typing.get_args(hint))

        def optional(data: Any, where: str) -> Any:
            return None if data is None and nullable else inner(data, where)

        return optional
    if origin is tuple:
        item = _reader(typing.get_args(hint)[0])

        def sequence(data: Any, where: str) -> Any:
            if not isinstance(data, list):
                raise PlainFormatError(f"{where}: expected a list, got {type(data).__name__}")
            return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(data))

        return sequence
    if origin in (Mapping, dict) or hint in (Mapping, dict):
        value = _reader((typing.get_args(hint) or (str, str))[1])

        def mapping(data: Any, where: str) -> Any:
            if not isinstance(data, list) or not all(isinstance(p, list) and len(p) == 2 for p in data):
                raise PlainFormatError(f"{where}: expected a list of [key, value] pairs")
            out = {}
            for k, v in data:
                if not isinstance(k, str):
                    raise PlainFormatError(f"{where}: key {k!r} is not a string")
                out[k] = value(v, f"{where}[{k}]")
            return out

        return mapping
    if dataclasses.is_dataclass(hint):
        return _dataclass_reader(hint)
    if hint is Path:
        def path(data: Any, where: str) -> Any:
            if not isinstance(data, str):
                raise PlainFormatError(f"{where}: expected a path string")
            return Path(data)

        return path
    if hint in (int, float):
        allowed = (int,) if hint is int else (int, float)
        what = "an integer" if hint is int else "a number"

        def number(data: Any, where: str) -> Any:
            if isinstance(data, bool) or not isinstance(data, allowed):
                raise PlainFormatError(f"{where}: expected {what}, got {type(data).__name__}")
            return data

        return number
    if hint in (str, bool):
        def scalar(data: Any, where: str) -> Any:
            if not isinstance(data, hint):
                raise PlainFormatError(f"{where}: expected {hint.__name__}, got {type(data).__name__}")
            return data

        return scalar
    if hint is Any:
        return lambda data, where: data
    raise PlainFormatError(f"unsupported type {hint}")  # pragma: no cover - not used by the model


def _dataclass_reader(cls: type) -> _Reader:
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    required = [f.name for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    hints = typing.get_type_hints(cls)
    readers: dict[str, _Reader] = {}

    def read(data: Any, where: str) -> Any:
        if not isinstance(data, dict):
            raise PlainFormatError(f"{where}: expected an object, got {type(data).__name__}")
        unknown = [k for k in data if k not in names]
        if unknown:
            raise PlainFormatError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        for name in required:
            if name not in data:
                raise PlainFormatError(f"{where}: missing field {name}")
        if not readers:  # filled on first use: a field's type may be the class itself
            readers.update((n, _reader(hints[n])) for n in names)
        return cls(**{k: readers[k](v, f"{where}.{k}") for k, v in data.items()})

    return read
