"""Small helpers shared by the lab modules: running commands, progress lines, waiting."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from fleet.errors import FleetError
from fleet.output import err


class LabError(FleetError):
    """A lab step failed (exit status 1); the message says which step and why."""


def progress(msg: str) -> None:
    """One progress line on stderr."""
    err.print(f"[dim]lab:[/dim] {msg}", highlight=False)


def run(args: Sequence[str | os.PathLike], *, check: bool = True, env: Mapping[str, str] | None = None,
        input: bytes | None = None, timeout: float | None = 600, what: str | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``args`` (an argument list, never a shell string) and capture its output.

    Raises LabError with the command's stderr tail when ``check`` and it fails."""
    argv = [os.fspath(a) for a in args]
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        cp = subprocess.run(argv, capture_output=True, env=full_env, input=input, timeout=timeout, cwd=cwd)
    except FileNotFoundError as exc:
        raise LabError(f"{what or argv[0]}: {argv[0]} not found ({exc})") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{what or argv[0]}: timed out after {timeout}s: {' '.join(argv[:6])}") from None
    if check and cp.returncode != 0:
        tail = (cp.stderr or cp.stdout or b"").decode(errors="replace").strip().splitlines()[-6:]
        raise LabError(f"{what or ' '.join(argv[:4])} failed (exit {cp.returncode}): " + " | ".join(tail))
    return cp


def wait_for(pred: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``pred`` until it is true or ``timeout`` seconds pass; returns the last result."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return True
        except Exception:  # noqa: BLE001 - a probe that raises means "not yet"
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def engine_answers(sock: Path, timeout: float = 2.0) -> bool:
    """True if a Docker engine answers ``GET /_ping`` with 200 on the unix socket ``sock``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(os.fspath(sock))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            data = s.recv(64)
        return data.startswith(b"HTTP/1.") and b" 200 " in data[:16]
    except OSError:
        return False


def ssh_answers(addr: str, port: int = 22, timeout: float = 2.0) -> bool:
    """True if an SSH server on ``addr:port`` sends its ``SSH-2.0`` banner."""
    try:
        with socket.create_connection((addr, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(8).startswith(b"SSH-2.0")
    except OSError:
        return False


def tcp_answers(addr: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=timeout):
            return True
    except OSError:
        return False


def write_file(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Write atomically with ``mode`` (set before the data lands, so secrets never sit
    world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data.encode() if isinstance(data, str) else data)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
