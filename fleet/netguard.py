"""Refuse to send traffic to the RFC 2544 benchmarking range unless it is attached here.

198.18.0.0/15 is reserved for network benchmark tests (RFC 2544, RFC 5735); fleet's lab puts
its bridge, registry and devices there. When the lab is down, nothing local owns those
addresses and a connection would leave the machine through the default route, towards
whatever a network operator put there. So a connection to that range is allowed only while a
route through a local interface (not the default route) covers the address.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

BENCHMARK_NET = ipaddress.ip_network("198.18.0.0/15")


def _local_routes(path: str = "/proc/net/route") -> list[ipaddress.IPv4Network]:
    """IPv4 routes of this network namespace other than the default route."""
    nets = []
    try:
        with open(path, encoding="ascii") as f:
            next(f, None)
            for line in f:
                fields = line.split()
                if len(fields) < 8:
                    continue
                dest, mask = (socket.inet_ntoa(struct.pack("<L", int(x, 16))) for x in (fields[1], fields[7]))
                if mask == "0.0.0.0":
                    continue
                nets.append(ipaddress.ip_network(f"{dest}/{mask}", strict=False))
    except OSError:
        pass
    return nets


def unattached_benchmark_address(host: str) -> str | None:
    """A reason to refuse ``host``, or None.

    ``host`` is refused when it is an IPv4 literal inside 198.18.0.0/15 that no local,
    non-default route covers (e.g. the fleet lab is down). Names are not resolved here.
    """
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if ip.version != 4 or ip not in BENCHMARK_NET:
        return None
    if any(ip in net for net in _local_routes()):
        return None
    return (f"{host} is in 198.18.0.0/15 (RFC 2544 benchmark range, used by `fleet lab`) but no local "
            f"interface is on it: is the lab up? (`fleet lab up`)")
