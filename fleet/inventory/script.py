"""Executable inventory scripts - ansible-core ``plugins/inventory/script.py``.

An executable inventory file whose content starts with ``#!`` (or an ELF binary) is run
as Ansible runs it: ``SCRIPT --list``, no shell, standard input closed, in the current
directory. Its standard output is one JSON object::

    {"GROUP": {"hosts": [NAME...], "vars": {...}, "children": [GROUP...]},
     "GROUP2": [NAME...],                       # a bare list: the group's hosts
     "_meta": {"hostvars": {NAME: {...}}}}

Without ``_meta`` the script is run again as ``SCRIPT --host NAME`` for each host, as
Ansible does. Each run is bounded: :data:`SCRIPT_TIMEOUT` seconds (60) and
:data:`SCRIPT_MAX_OUTPUT` bytes of output (16 MiB); a failure (exit status, timeout,
output that is not JSON of that shape) is an :class:`InputFileError` naming the script
and showing the end of its standard error.

Ansible tries any executable file as a script first and falls back to the static
parsers when that fails; fleet runs only files that start like programs, so an
executable INI or YAML file (a FAT-formatted USB stick marks every file executable)
is read as before, and a script that fails is reported instead of being misread as INI.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from fleet.errors import InputFileError
from fleet.inventory.builder import Builder, populate_hosts
from fleet.yamlfile import MAX_INPUT_BYTES, parse_json

__all__ = ["SCRIPT_TIMEOUT", "SCRIPT_MAX_OUTPUT", "is_inventory_script", "parse_inventory_script", "run_script"]

#: Seconds one run of an inventory script may take.
SCRIPT_TIMEOUT = 60.0
#: Bytes of standard output (and, separately, standard error) one run may print.
SCRIPT_MAX_OUTPUT = MAX_INPUT_BYTES
_STDERR_SHOWN = 2000


def is_inventory_script(path: Path) -> bool:
    """True when ``path`` is an executable regular file starting with ``#!`` or ELF magic."""
    try:
        if not path.is_file() or not os.access(path, os.X_OK):
            return False
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head.startswith(b"#!") or head == b"\x7fELF"


def _stderr_tail(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace").strip()
    if not text:
        return ""
    if len(text) > _STDERR_SHOWN:
        text = "..." + text[-_STDERR_SHOWN:]
    return "; stderr: " + " | ".join(line.rstrip() for line in text.splitlines() if line.strip())


def run_script(path: Path, args: list[str], timeout: float | None = None, max_output: int | None = None) -> str:
    """Run ``path ARGS`` and return its standard output (UTF-8).

    ``timeout`` (seconds) and ``max_output`` (bytes, per stream) default to
    :data:`SCRIPT_TIMEOUT` and :data:`SCRIPT_MAX_OUTPUT`.

    No shell; stdin is /dev/null; the script runs in its own session so that a timeout
    or an oversized output kills it and everything it started. Raises
    :class:`InputFileError` naming the script for a failure to start, a non-zero exit,
    more than ``timeout`` seconds or ``max_output`` bytes, or output that is not UTF-8.
    """
    timeout = SCRIPT_TIMEOUT if timeout is None else timeout
    max_output = SCRIPT_MAX_OUTPUT if max_output is None else max_output
    source = str(path)
    cmd = " ".join([source, *args])
    try:
        proc = subprocess.Popen(
            [str(path.absolute()), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise InputFileError(source, f"cannot run inventory script ({cmd}): {exc.strerror or exc}") from None
    out: list[bytes] = []
    err: list[bytes] = []
    sizes = {"out": 0, "err": 0}
    problem = None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        assert proc.stdout is not None and proc.stderr is not None
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        sel.register(proc.stderr, selectors.EVENT_READ, "err")
        while sel.get_map() and problem is None:
            left = deadline - time.monotonic()
            if left <= 0:
                problem = f"inventory script ({cmd}) did not finish within {timeout:g} s"
                break
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                sizes[key.data] += len(chunk)
                (out if key.data == "out" else err).append(chunk)
                if sizes[key.data] > max_output:
                    problem = f"inventory script ({cmd}) printed more than {max_output} bytes"
                    break
    if problem is not None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        status = proc.wait(timeout=max(1.0, deadline - time.monotonic()) if problem is None else 5)
    except subprocess.TimeoutExpired:
        # Output closed but the script lingers: stop it like a timeout.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        problem = f"inventory script ({cmd}) did not finish within {timeout:g} s"
        status = None
    proc.stdout.close()
    proc.stderr.close()
    stderr = b"".join(err)
    if problem is not None:
        raise InputFileError(source, problem + _stderr_tail(stderr))
    if status != 0:
        raise InputFileError(source, f"inventory script ({cmd}) exited with status {status}" + _stderr_tail(stderr))
    try:
        return b"".join(out).decode("utf-8")
    except UnicodeDecodeError:
        raise InputFileError(source, f"inventory script ({cmd}) printed text that is not UTF-8" + _stderr_tail(stderr)) from None


def _fail(source: str, what: str, message: str) -> InputFileError:
    return InputFileError(source, f"inventory script output ({what}): {message}")


def _names(value: Any, source: str, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(source, "--list", f"{what} must be a list of names, found {value!r:.80}")
    return value


def parse_inventory_script(path: Path, b: Builder) -> None:
    """Run the inventory script ``path`` and add what it prints to ``b``.

    Raises :class:`InputFileError` naming the script (see :func:`run_script`), or
    saying which part of its JSON has the wrong shape.
    """
    source = str(path)
    data = _parse_output(path, run_script(path, ["--list"]), "--list")
    if not isinstance(data, dict):
        raise _fail(source, "--list", f"expected a JSON object of groups, found {type(data).__name__}")
    hostvars: dict[str, Any] | None = None
    hosts: dict[str, None] = {}
    for group, gdata in data.items():
        if group == "_meta":
            if not isinstance(gdata, dict) or not isinstance(gdata.get("hostvars", {}), dict):
                raise _fail(source, "--list", "'_meta' must be an object with a 'hostvars' object")
            hostvars = gdata.get("hostvars")
            continue
        if not group:
            raise _fail(source, "--list", "a group name is empty")
        b.add_group(group)
        if not isinstance(gdata, dict):
            gdata = {"hosts": gdata}  # a bare list of hosts (script.py _parse_group)
        elif not any(k in gdata for k in ("hosts", "vars", "children")):
            gdata = {"hosts": [group], "vars": gdata}  # Ansible's reading of a malformed group
        for name in _names(gdata.get("hosts", []), source, f"{group!r}.hosts"):
            hosts.setdefault(name, None)
            b.add_host(name, group, source)
        group_vars = gdata.get("vars", {})
        if not isinstance(group_vars, dict):
            raise _fail(source, "--list", f"{group!r}.vars must be an object, found {type(group_vars).__name__}")
        for key, value in group_vars.items():
            problem = b.set_group_var(group, key, value, source)
            if problem:
                raise _fail(source, "--list", problem)
        for child in _names(gdata.get("children", []), source, f"{group!r}.children"):
            b.add_group(child)
            problem = b.add_child(group, child)
            if problem:
                raise _fail(source, "--list", problem)
    for name in hosts:
        if hostvars is None:
            got = _parse_output(path, run_script(path, ["--host", name]), f"--host {name}") or {}
        else:
            got = hostvars.get(name, {})
        if not isinstance(got, dict):
            raise _fail(source, "--host" if hostvars is None else "_meta.hostvars", f"variables of host {name!r} must be an object")
        populate_hosts(b, [name], None, got, None, source)


def _parse_output(path: Path, text: str, what: str) -> Any:
    if what != "--list" and not text.strip():
        return {}
    try:
        return parse_json(path, text)
    except InputFileError as exc:
        raise _fail(str(path), what, exc.reason + (f" (line {exc.line} of its output)" if exc.line else "")) from None
