"""The lab's site networks: devices split over sites that only their own site reaches.

Beside the lab's own network (bridge ``fleetlab0``, 198.18.0.0/24, see net.py), which the
devices keep for the registry and for everyone else's tests, ``fleet lab sites up`` adds:

- per site N (1..9) a network namespace ``fleetlab-siteN`` holding bridge ``br0`` with
  198.18.(10+N).1/24; each device of the site gets a second interface ``eth1`` on that
  bridge with 198.18.(10+N).<its octet>/24 (a veth whose site end is ``d<octet>``). The
  site worker runs in this namespace. IPv6 is off on the site links (IPv4-only lab, and
  no neighbour-discovery chatter on them).
- ``fleetlab-broker``: the broker's namespace. Its address 198.18.9.1/32 sits on ``lo``;
  one point-to-point link per peer (``ctl``: 198.18.9.4/30, siteN: 198.18.9.(4N+4)/30,
  the broker end the first host address). Each peer has exactly one route into it,
  198.18.9.1/32 via its link, and the broker namespace does not forward: a site reaches
  the broker, not the controller nor another site.
- ``fleetlab-ctl``: the controller's namespace. Links: ``broker`` (above) and ``uplink``,
  a veth to the host (host end ``flabctl``, 198.18.8.1/30; ctl end 198.18.8.2/30) with
  ONE route, 198.18.0.1/32 (the registry's address) via the host. It has no route to any
  device address (198.18.0.0/24 nor a site network): only the broker and the registry.

Every new namespace has forwarding off (``net.ipv4.ip_forward=0`` set explicitly), so no
namespace routes between the networks it touches; devices' namespaces never forward
either. Veths are created with both ends directly in their namespaces (``ip link add ...
netns A type veth peer name ... netns B``), so the only new name in the host namespace is
``flabctl``. Nothing leaves the lab's 198.18.0.0/15 range.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import socket
import threading
from pathlib import Path
from typing import Callable, TypeVar

from fleet.lab import net
from fleet.lab.util import LabError, run

T = TypeVar("T")

MAX_SITES = 9
CTL_NS = "fleetlab-ctl"
BROKER_NS = "fleetlab-broker"
BROKER_ADDRESS = "198.18.9.1"
BROKER_PORT = 6379
#: The host end of the controller's uplink and the addresses on it.
CTL_UPLINK_HOST = "flabctl"
CTL_UPLINK_HOST_ADDRESS = "198.18.8.1"
CTL_UPLINK_ADDRESS = "198.18.8.2"
SITE_BRIDGE = "br0"
DEVICE_SITE_IF = "eth1"


def site_name(n: int) -> str:
    return f"site{n}"


def site_ns(n: int) -> str:
    return f"fleetlab-site{n}"


def site_subnet(n: int) -> str:
    """``198.18.(10+N).0/24``: site N's device network."""
    return f"198.18.{10 + n}.0/24"


def site_gateway(n: int) -> str:
    """Site N's own address on its bridge (where its worker's SSH comes from)."""
    return f"198.18.{10 + n}.1"


def site_device_address(n: int, octet: int) -> str:
    return f"198.18.{10 + n}.{octet}"


def broker_link(n: int | None) -> tuple[str, str]:
    """(broker end, peer end) addresses of the /30 link to the broker of site ``n``, or of
    the controller for None."""
    base = 4 if n is None else 4 * n + 4
    return f"198.18.9.{base + 1}", f"198.18.9.{base + 2}"


def ns_path(ns: str) -> Path:
    return net.NETNS_DIR / ns


def ns_exists(ns: str) -> bool:
    return ns_path(ns).exists() and ns in _ns_list()


def _ns_list() -> list[str]:
    cp = run(["ip", "netns", "list"], check=False)
    return [ln.split()[0] for ln in cp.stdout.decode().splitlines() if ln.strip()]


def links(ns: str) -> dict[str, dict]:
    """``ip -j addr show`` of namespace ``ns`` by interface name ({} when it is absent)."""
    cp = run(["ip", "-j", "-n", ns, "addr", "show"], check=False)
    if cp.returncode != 0:
        return {}
    return {d["ifname"]: d for d in json.loads(cp.stdout or b"[]")}


def _has(link: dict | None, addr: str, prefix: int) -> bool:
    return any(a.get("local") == addr and a.get("prefixlen") == prefix for a in (link or {}).get("addr_info", []))


def _sysctl(ns: str, *settings: str) -> None:
    run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *settings], what=f"{ns}: sysctl")


def ensure_ns(ns: str) -> None:
    """Namespace ``ns`` with ``lo`` up and forwarding off (idempotent)."""
    if not ns_exists(ns):
        if ns_path(ns).exists():  # a stale file left by a crash: ip netns refuses to reuse it
            run(["ip", "netns", "del", ns], check=False)
        run(["ip", "netns", "add", ns])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    _sysctl(ns, "net.ipv4.ip_forward=0")


def delete_ns(ns: str) -> None:
    """Remove ``ns`` (its veths and their peers in other namespaces go with it)."""
    if ns_path(ns).exists() or ns in _ns_list():
        run(["ip", "netns", "del", ns], check=False)


def _addr(ns: str | None, ifname: str, cidr: str, have: dict | None) -> None:
    addr, prefix = cidr.split("/")
    if not _has(have, addr, int(prefix)):
        run(["ip", *(["-n", ns] if ns else []), "addr", "add", cidr, "dev", ifname])


def _veth(ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
    """A veth pair with end ``name_a`` in ``ns_a`` and ``name_b`` in ``ns_b`` (remade when
    one end is missing)."""
    a, b = links(ns_a), links(ns_b)
    if name_a in a and name_b in b:
        return
    if name_a in a:
        run(["ip", "-n", ns_a, "link", "del", name_a], check=False)
    if name_b in b:
        run(["ip", "-n", ns_b, "link", "del", name_b], check=False)
    run(["ip", "-n", ns_a, "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b],
        what=f"veth {ns_a}/{name_a} - {ns_b}/{name_b}")


def _route(ns: str, dest: str, via: str, dev: str) -> None:
    run(["ip", "-n", ns, "route", "replace", dest, "via", via, "dev", dev])


def ensure_broker_ns() -> None:
    ensure_ns(BROKER_NS)
    _addr(BROKER_NS, "lo", f"{BROKER_ADDRESS}/32", links(BROKER_NS).get("lo"))


def _broker_peer(ns: str, n: int | None) -> None:
    """The /30 link between the broker and ``ns`` (site ``n`` or, for None, the controller)."""
    b_end, p_end = broker_link(n)
    b_name = "ctl" if n is None else site_name(n)
    _veth(BROKER_NS, b_name, ns, "broker")
    _addr(BROKER_NS, b_name, f"{b_end}/30", links(BROKER_NS).get(b_name))
    _addr(ns, "broker", f"{p_end}/30", links(ns).get("broker"))
    for where, ifname in ((BROKER_NS, b_name), (ns, "broker")):
        run(["ip", "-n", where, "link", "set", ifname, "up"])
    _route(ns, f"{BROKER_ADDRESS}/32", b_end, "broker")


def ensure_ctl() -> None:
    """The controller's namespace: the broker link and the uplink to the registry only."""
    ensure_ns(CTL_NS)
    _broker_peer(CTL_NS, None)
    have = links(CTL_NS)
    if "uplink" not in have or not Path(f"/sys/class/net/{CTL_UPLINK_HOST}").exists():
        if "uplink" in have:
            run(["ip", "-n", CTL_NS, "link", "del", "uplink"], check=False)
        if Path(f"/sys/class/net/{CTL_UPLINK_HOST}").exists():
            run(["ip", "link", "del", CTL_UPLINK_HOST], check=False)
        run(["ip", "link", "add", CTL_UPLINK_HOST, "type", "veth", "peer", "name", "uplink", "netns", CTL_NS])
        have = links(CTL_NS)
    host_links = net._links()
    _addr(None, CTL_UPLINK_HOST, f"{CTL_UPLINK_HOST_ADDRESS}/30", host_links.get(CTL_UPLINK_HOST))
    _addr(CTL_NS, "uplink", f"{CTL_UPLINK_ADDRESS}/30", have.get("uplink"))
    run(["ip", "link", "set", CTL_UPLINK_HOST, "up"])
    run(["ip", "-n", CTL_NS, "link", "set", "uplink", "up"])
    _route(CTL_NS, f"{net.HOST_ADDRESS}/32", CTL_UPLINK_HOST_ADDRESS, "uplink")


def delete_ctl() -> None:
    delete_ns(CTL_NS)
    if Path(f"/sys/class/net/{CTL_UPLINK_HOST}").exists():
        run(["ip", "link", "del", CTL_UPLINK_HOST], check=False)


def ensure_site(n: int) -> None:
    """Site ``n``'s namespace, its bridge and its broker link (no devices yet)."""
    ns = site_ns(n)
    ensure_ns(ns)
    have = links(ns)
    if SITE_BRIDGE not in have:
        run(["ip", "-n", ns, "link", "add", SITE_BRIDGE, "type", "bridge"])
        have = links(ns)
    _sysctl(ns, f"net.ipv6.conf.{SITE_BRIDGE}.disable_ipv6=1")
    _addr(ns, SITE_BRIDGE, f"{site_gateway(n)}/24", have.get(SITE_BRIDGE))
    run(["ip", "-n", ns, "link", "set", SITE_BRIDGE, "up"])
    _broker_peer(ns, n)


def ensure_device_link(n: int, device: str, octet: int) -> None:
    """``eth1`` of ``device`` on site ``n``'s bridge with its site address (idempotent;
    a link left in another site's network is moved)."""
    ns, dev_ns, port = site_ns(n), net.netns_name(device), f"d{octet}"
    _veth(ns, port, dev_ns, DEVICE_SITE_IF)
    for where, ifname in ((ns, port), (dev_ns, DEVICE_SITE_IF)):
        _sysctl(where, f"net.ipv6.conf.{ifname}.disable_ipv6=1")
    want = site_device_address(n, octet)
    have = links(dev_ns).get(DEVICE_SITE_IF, {})
    for a in have.get("addr_info", []):
        if a.get("family") == "inet" and a.get("local") != want:
            run(["ip", "-n", dev_ns, "addr", "del", f"{a['local']}/{a['prefixlen']}", "dev", DEVICE_SITE_IF],
                check=False)
    _addr(dev_ns, DEVICE_SITE_IF, f"{want}/24", have)
    run(["ip", "-n", ns, "link", "set", port, "master", SITE_BRIDGE])
    run(["ip", "-n", ns, "link", "set", port, "up"])
    run(["ip", "-n", dev_ns, "link", "set", DEVICE_SITE_IF, "up"])


def device_link_address(device: str) -> str | None:
    """The IPv4 address on ``device``'s ``eth1`` (None: no site link)."""
    link = links(net.netns_name(device)).get(DEVICE_SITE_IF) or {}
    return next((a["local"] for a in link.get("addr_info", []) if a.get("family") == "inet"), None)


def delete_device_link(device: str) -> None:
    dev_ns = net.netns_name(device)
    if DEVICE_SITE_IF in links(dev_ns):
        run(["ip", "-n", dev_ns, "link", "del", DEVICE_SITE_IF], check=False)


def present_sites() -> list[int]:
    """Numbers of the ``fleetlab-siteN`` namespaces present (also ones a crash left)."""
    out = []
    for ns in _ns_list():
        tail = ns.removeprefix("fleetlab-site")
        if ns != tail and tail.isdigit():
            out.append(int(tail))
    return sorted(out)


# -- looking from inside a namespace -------------------------------------------------------

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def in_netns(ns: str, fn: Callable[[], T], timeout: float = 30.0) -> T:
    """``fn()`` run on a new thread that first joins network namespace ``ns`` (setns(2)
    changes the calling thread only, so this process and its other threads stay where
    they are; sockets ``fn`` opens belong to ``ns``). Raises LabError if ``ns`` cannot be
    entered; re-raises what ``fn`` raises."""
    box: dict = {}

    def body() -> None:
        try:
            fd = os.open(ns_path(ns), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            box["err"] = LabError(f"namespace {ns}: {e.strerror}")
            return
        try:
            if _libc.setns(fd, _CLONE_NEWNET) != 0:
                box["err"] = LabError(f"setns({ns}): {os.strerror(ctypes.get_errno())}")
                return
        finally:
            os.close(fd)
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["err"] = e

    t = threading.Thread(target=body, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise LabError(f"namespace {ns}: no answer within {timeout:g} s")
    if "err" in box:
        raise box["err"]
    return box["value"]


def tcp_open(addr: str, port: int, timeout: float = 2.0) -> bool:
    """True if a TCP connection to ``addr:port`` succeeds from the calling thread's namespace."""
    try:
        with socket.create_connection((addr, port), timeout=timeout):
            return True
    except OSError:
        return False


def routes(ns: str) -> list[dict]:
    """``ip -j route show`` of ``ns`` (main table)."""
    cp = run(["ip", "-j", "-n", ns, "route", "show"], check=False)
    return json.loads(cp.stdout or b"[]") if cp.returncode == 0 else []


def route_get(ns: str, addr: str) -> str | None:
    """The route ``ns`` would use to ``addr`` (``ip route get``), None when unreachable."""
    cp = run(["ip", "-n", ns, "route", "get", addr], check=False)
    return cp.stdout.decode().strip() or None if cp.returncode == 0 else None
