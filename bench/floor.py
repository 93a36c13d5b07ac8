"""The paramiko floor: the least a Python controller can do per device.

A thread pool of F workers; each worker opens a TCP connection, runs the SSH handshake
with paramiko, checks the server's host key against the known_hosts file (a mismatch or
an unknown host is a failure, never accepted), authenticates with the client key, runs
``uname -m`` in one exec channel, reads its output and closes. known_hosts and the
private key are parsed once for the whole run.

Usage: floor.py HOSTS_FILE --port P --user U --key KEY --known-hosts KH --forks F [--probe]

``--probe`` runs fleet's own probe command (``fleet.facts.probe_command``) instead of
``uname -m``: the same device-side work as ``fleet probe`` with the least controller work,
which separates fleet's controller overhead from the cost of the probe on the device.
Prints one JSON document: {"ok": n, "failed": n, "errors": {address: message}}.
Exit status 0 if every device answered, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from concurrent.futures import ThreadPoolExecutor

import paramiko


def one(address: str, port: int, user: str, pkey: paramiko.PKey, known: paramiko.HostKeys,
        timeout: float, command: str = "uname -m") -> str:
    """Run ``command`` on ``address``; returns its stdout (str). Raises on any failure."""
    sock = socket.create_connection((address, port), timeout=timeout)
    t = paramiko.Transport(sock)
    try:
        t.start_client(timeout=timeout)
        key = t.get_remote_server_key()
        entry = known.lookup(f"[{address}]:{port}" if port != 22 else address)
        if not entry or entry.get(key.get_name()) != key:
            raise paramiko.SSHException(f"host key for {address} not in known_hosts or changed")
        t.auth_publickey(user, pkey)
        chan = t.open_session(timeout=timeout)
        chan.exec_command(command)
        out = b""
        while True:
            data = chan.recv(4096)
            if not data:
                break
            out += data
        if chan.recv_exit_status() != 0:
            raise paramiko.SSHException(f"{command[:40]} exited {chan.recv_exit_status()}")
        return out.decode().strip()
    finally:
        t.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("hosts")
    ap.add_argument("--port", type=int, default=22)
    ap.add_argument("--user", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--known-hosts", required=True)
    ap.add_argument("--forks", type=int, default=50)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--probe", action="store_true", help="run fleet's probe command instead of uname -m")
    a = ap.parse_args(argv)
    command = "uname -m"
    if a.probe:
        from fleet.facts import probe_command

        command = probe_command(False)
    hosts = [h.strip() for h in open(a.hosts) if h.strip()]
    pkey = paramiko.PKey.from_path(a.key)
    known = paramiko.HostKeys(a.known_hosts)
    errors: dict[str, str] = {}
    ok = 0

    def task(h: str) -> tuple[str, str | None]:
        try:
            one(h, a.port, a.user, pkey, known, a.timeout, command)
            return h, None
        except Exception as exc:  # noqa: BLE001 - a floor counts every failure the same
            return h, f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(max_workers=a.forks) as pool:
        for h, e in pool.map(task, hosts):
            if e is None:
                ok += 1
            else:
                errors[h] = e
    json.dump({"ok": ok, "failed": len(errors), "errors": errors}, sys.stdout)
    print()
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
