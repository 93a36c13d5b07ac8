"""No traffic to the RFC 2544 range (the lab's) unless a local interface is on it."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from fleet import netguard
from fleet.registry import RegistryClient, RegistryError
from fleet.ssh import SSHSettings, Unreachable, connect, target_for

# /proc/net/route of a host with the lab bridge up (captured here, `fleet lab up`).
ROUTES_LAB_UP = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
fleetlab0\t000012C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""


def test_route_table_decides(tmp_path, monkeypatch):
    routes = tmp_path / "route"
    routes.write_text(ROUTES_LAB_UP)
    real = netguard._local_routes
    monkeypatch.setattr(netguard, "_local_routes", lambda: real(str(routes)))
    assert netguard.unattached_benchmark_address("198.18.0.11") is None      # on fleetlab0
    assert "is the lab up" in netguard.unattached_benchmark_address("198.18.1.5")  # only the default route
    assert netguard.unattached_benchmark_address("192.168.0.7") is None     # outside the range: not ours to judge
    assert netguard.unattached_benchmark_address("device.example") is None  # names are not resolved
    routes.write_text(ROUTES_LAB_UP.replace("fleetlab0\t000012C6", "fleetlab0\t000013C6"))
    assert netguard.unattached_benchmark_address("198.18.0.11") is not None


# 198.19.255.1 is in 198.18.0.0/15 but never on the lab bridge (198.18.0.0/24): refused
# before any socket is opened, whatever state the lab is in.
def test_ssh_refuses_before_connecting():
    host = SimpleNamespace(name="ghost", vars={"ansible_host": "198.19.255.1"}, address="198.19.255.1",
                           port=22, user="pi", groups=("all",), source="test")
    t0 = time.monotonic()
    with pytest.raises(Unreachable) as ei:
        connect(target_for(host, SSHSettings(ssh_config=None)), SSHSettings(retries=1))
    assert "RFC 2544" in str(ei.value) and time.monotonic() - t0 < 1


def test_registry_client_refuses_before_connecting():
    with pytest.raises(RegistryError) as ei:
        RegistryClient("198.19.255.1:5443")
    assert "is the lab up" in str(ei.value)
