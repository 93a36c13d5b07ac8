"""What converting a Compose service needs: the context (document, device, stack) and the
scalar casts shared by every converter (:mod:`fleet.compose.convert`).

Every error names the file, line and key, and the device when there is one. Values arrive as docker compose has them
after interpolation: a boolean or number given through a variable is a string
(``privileged: ${PRIV}``) and is cast as compose-go's ``loader/interpolate.go`` casts it
(``true``/``false``, and YAML 1.1's ``yes``/``no``/``on``/``off``; whole numbers).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from fleet.compose.dotenv import EnvFile
from fleet.compose.interpolate import Lookup
from fleet.compose.model import NetworkSpec, VolumeSpec
from fleet.errors import InputFileError
from fleet.yamlfile import KeyPath, LocatedDocument

__all__ = ["Context", "NeedsDevice", "Converter", "FLEET_LABEL_PREFIX"]

#: Label prefix fleet records its deployments under; a Compose file may not set these.
FLEET_LABEL_PREFIX = "io.fleet."


class NeedsDevice(Exception):
    """Raised by the lookup of a check made before any device is known: the key is
    checked again for each device."""


@dataclass
class Context:
    """What converting a service needs besides its own mapping: the located document (for
    errors), the device (None when the file is first read), the stack's networks and
    volumes by Compose key, the env files read when the file was loaded (by path), the
    variables of the device (``environment: [NAME]`` takes its value from there), the
    folder relative paths start from, and the names of the stack's services."""

    doc: LocatedDocument
    device: str | None
    networks: Mapping[str, NetworkSpec]
    volumes: Mapping[str, VolumeSpec]
    env_files: Mapping[Path, EnvFile]
    lookup: Lookup
    base: Path
    services: tuple[str, ...]
    default_network: str | None = None
    notes: list[str] = field(default_factory=list)

    def fail(self, path: KeyPath, message: str) -> InputFileError:
        return self.doc.error(path, f"device {self.device}: {message}" if self.device else message)


Converter = Callable[[Context, KeyPath, Any, Mapping[str, Any]], Mapping[str, Any]]


# ------------------------------------------------------------------------- scalars


def _bool(ctx: Context, kp: KeyPath, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("true", "y", "yes", "on"):
        return True
    if text in ("false", "n", "no", "off"):
        return False
    raise ctx.fail(kp, f"{value!r} is not true or false")


def _int(ctx: Context, kp: KeyPath, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool):
        raise ctx.fail(kp, f"{value!r} is not a whole number")
    try:
        number = int(value) if isinstance(value, int) else int(str(value).strip(), 10)
    except ValueError:
        raise ctx.fail(kp, f"{value!r} is not a whole number") from None
    if minimum is not None and number < minimum:
        raise ctx.fail(kp, f"{number} is less than {minimum}")
    return number


def _text(ctx: Context, kp: KeyPath, value: Any, empty_ok: bool = False) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = "" if value is None else str(value)
    if not empty_ok and not text.strip():
        raise ctx.fail(kp, "must not be empty")
    if "\0" in text:
        raise ctx.fail(kp, "a NUL character cannot be passed to the engine")
    return text


def _parsed(ctx: Context, kp: KeyPath, fn: Callable[[Any], Any], value: Any) -> Any:
    try:
        return fn(value)
    except ValueError as e:
        raise ctx.fail(kp, str(e)) from None


def _argv(ctx: Context, kp: KeyPath, value: Any) -> tuple[str, ...] | None:
    """A command as a list, or a string split as a shell would (docker compose uses
    go-shellwords the same way)."""
    if value is None:
        return None
    if isinstance(value, list):
        if not value:
            raise ctx.fail(kp, "an empty list (resetting the image's default) is not implemented by fleet")
        return tuple(_text(ctx, kp + (i,), v, empty_ok=True) for i, v in enumerate(value))
    text = _text(ctx, kp, value)
    try:
        return tuple(shlex.split(text))
    except ValueError as e:
        raise ctx.fail(kp, f"cannot split {text!r} into arguments: {e}") from None


def _strings(ctx: Context, kp: KeyPath, value: Any) -> list[str]:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return [_text(ctx, kp, value)]
    return [_text(ctx, kp + (i,), v) for i, v in enumerate(value or [])]


def _pairs(ctx: Context, kp: KeyPath, value: Any, sep: str = "=") -> list[tuple[str, str | None, KeyPath]]:
    """``list_or_dict``: ``{K: V}`` or ``["K=V", "K"]``; a missing value is None."""
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((str(k), None if v is None else _text(ctx, kp + (k,), v, empty_ok=True), kp + (k,)))
    else:
        for i, item in enumerate(value or []):
            k, eq, v = str(item).partition(sep)
            out.append((k, v if eq else None, kp + (i,)))
    for k, _, where in out:
        if not k.strip():
            raise ctx.fail(where, "a name must not be empty")
    return out


def _no_newline(ctx: Context, kp: KeyPath, name: str, value: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise ctx.fail(kp, f"the value of {name} has a line break or NUL: it cannot be passed to a container's "
                           "environment (Docker's --env-file format)")
    return value


