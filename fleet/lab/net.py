"""The lab network: one Linux bridge on the host, one network namespace per device.

Addresses come from 198.18.0.0/15 (RFC 2544, reserved for benchmarking), so they never
clash with a user's real networks: bridge ``fleetlab0`` = 198.18.0.1/24 on the host, device
``octet`` = 198.18.0.<octet>/24 on ``eth0`` inside namespace ``fleetlab-<device>``, joined
to the bridge by a veth pair whose host end is ``flab<octet>``. Devices run their sshd and
engine in their namespace (an engine with ``--bridge=none`` in the host namespace deletes
the host engine's docker0).
"""

from __future__ import annotations

import json
from pathlib import Path

from fleet.lab.util import run

BRIDGE = "fleetlab0"
SUBNET_PREFIX = "198.18.0."
PREFIXLEN = 24
HOST_ADDRESS = SUBNET_PREFIX + "1"
NETNS_DIR = Path("/var/run/netns")


def device_address(octet: int) -> str:
    return f"{SUBNET_PREFIX}{octet}"


def netns_name(device: str) -> str:
    return f"fleetlab-{device}"


def netns_path(device: str) -> Path:
    return NETNS_DIR / netns_name(device)


def veth_name(octet: int) -> str:
    return f"flab{octet}"


def _links(ns: str | None = None) -> dict[str, dict]:
    args = ["ip", "-j"] + (["-n", ns] if ns else []) + ["addr", "show"]
    cp = run(args, check=False)
    if cp.returncode != 0:
        return {}
    return {d["ifname"]: d for d in json.loads(cp.stdout or b"[]")}


def _has_addr(link: dict, addr: str) -> bool:
    return any(a.get("local") == addr for a in link.get("addr_info", []))


def bridge_exists() -> bool:
    return Path(f"/sys/class/net/{BRIDGE}").exists()


def ensure_bridge() -> None:
    """Create ``fleetlab0`` with 198.18.0.1/24 and bring it up (idempotent)."""
    if not bridge_exists():
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    link = _links().get(BRIDGE, {})
    if not _has_addr(link, HOST_ADDRESS):
        run(["ip", "addr", "add", f"{HOST_ADDRESS}/{PREFIXLEN}", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])


def delete_bridge() -> None:
    if bridge_exists():
        run(["ip", "link", "del", BRIDGE], check=False)


def netns_exists(device: str) -> bool:
    return netns_path(device).exists() and netns_name(device) in run(["ip", "netns", "list"]).stdout.decode()


def ensure_device_net(device: str, octet: int) -> None:
    """Namespace + veth pair + address for one device (idempotent; repairs a half-made one)."""
    ns, veth, addr = netns_name(device), veth_name(octet), device_address(octet)
    if not netns_exists(device):
        if netns_path(device).exists():  # a stale file left by a crash: ip netns refuses it
            run(["ip", "netns", "del", ns], check=False)
        run(["ip", "netns", "add", ns])
    inner = _links(ns)
    if "eth0" not in inner:
        if Path(f"/sys/class/net/{veth}").exists():
            run(["ip", "link", "del", veth], check=False)
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        inner = _links(ns)
    if not _has_addr(inner.get("eth0", {}), addr):
        run(["ip", "-n", ns, "addr", "add", f"{addr}/{PREFIXLEN}", "dev", "eth0"])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    run(["ip", "link", "set", veth, "master", BRIDGE])
    run(["ip", "link", "set", veth, "up"])


def delete_device_net(device: str, octet: int) -> None:
    """Remove the device's namespace (its veth pair goes with it)."""
    if netns_path(device).exists() or netns_name(device) in run(["ip", "netns", "list"], check=False).stdout.decode():
        run(["ip", "netns", "del", netns_name(device)], check=False)
    if Path(f"/sys/class/net/{veth_name(octet)}").exists():
        run(["ip", "link", "del", veth_name(octet)], check=False)


def lab_namespaces() -> list[str]:
    """Names of every ``fleetlab-*`` namespace present (including ones a crash left)."""
    cp = run(["ip", "netns", "list"], check=False)
    return [ln.split()[0] for ln in cp.stdout.decode().splitlines() if ln.startswith("fleetlab-")]
