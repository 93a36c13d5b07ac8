"""The lab sites' pure parts: how devices are split, the addressing plan, the sites
inventory (read back with fleet's own inventory loader and executor seam), and the
listener check on captured ``/proc/PID/net/tcp`` text. No root, no namespaces."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from fleet.executor import queue_for, work_for
from fleet.inventory import load_inventory
from fleet.lab import sitenet
from fleet.lab.devices import Device
from fleet.lab.profiles import PROFILES
from fleet.lab.sites import listens_on_all, site_address, split, write_inventory
from fleet.lab.state import LabPaths

DATA = Path(__file__).resolve().parents[1] / "data" / "lab"
ALL = ["pi-zero", "pi3-32", "pi4-64", "pi4-32on64", "x86", "s390x", "i386"]


def _devices(names, tmp_path) -> list[Device]:
    paths = LabPaths(tmp_path)
    return sorted((Device(paths, PROFILES[n]) for n in names), key=lambda d: d.profile.octet)


def test_split_keeps_address_order_and_balances(tmp_path):
    assert split(_devices(ALL, tmp_path), 2) == {"site1": ["pi-zero", "pi3-32", "pi4-64", "pi4-32on64"],
                                                 "site2": ["x86", "s390x", "i386"]}
    five = split(_devices(ALL[:5], tmp_path), 2)
    assert five == {"site1": ["pi-zero", "pi3-32", "pi4-64"], "site2": ["pi4-32on64", "x86"]}
    three = split(_devices(ALL, tmp_path), 3)
    assert [len(v) for v in three.values()] == [3, 2, 2]
    assert sum(three.values(), []) == ALL
    # the lab tests use x86 and pi4-64 as "one device per site": that holds for both lab sizes
    for s in (split(_devices(ALL, tmp_path), 2), five):
        where = {d: site for site, ds in s.items() for d in ds}
        assert where["x86"] != where["pi4-64"]


def test_addressing_plan_never_overlaps_and_stays_in_the_benchmark_range():
    bench = ipaddress.ip_network("198.18.0.0/15")  # RFC 2544
    nets = [ipaddress.ip_network("198.18.0.0/24"),                       # the lab's own bridge
            ipaddress.ip_network(f"{sitenet.CTL_UPLINK_HOST_ADDRESS}/30", strict=False),
            ipaddress.ip_network(f"{sitenet.BROKER_ADDRESS}/32")]
    for n in [None, *range(1, sitenet.MAX_SITES + 1)]:
        b_end, p_end = sitenet.broker_link(n)
        link = ipaddress.ip_network(f"{b_end}/30", strict=False)
        assert ipaddress.ip_address(p_end) in link and b_end != p_end
        assert link.network_address != ipaddress.ip_address(b_end)  # host addresses, not the network's
        nets.append(link)
        if n is not None:
            nets.append(ipaddress.ip_network(sitenet.site_subnet(n)))
            assert ipaddress.ip_address(sitenet.site_gateway(n)) in nets[-1]
    for i, a in enumerate(nets):
        assert a.subnet_of(bench)
        for b in nets[i + 1:]:
            assert not a.overlaps(b), (a, b)
    assert site_address("site2", "x86") == "198.18.12.15"
    assert sitenet.site_ns(2) == "fleetlab-site2"


def test_sites_inventory_reads_back_with_fleet_site_and_site_addresses(tmp_path):
    paths = LabPaths(tmp_path)
    assignment = split(_devices(ALL, tmp_path), 2)
    inv_path = write_inventory(paths, assignment)
    inv = load_inventory([str(inv_path)])
    hosts = {h.name: h for h in inv.hosts.values()}
    assert sorted(hosts) == sorted(ALL)
    for site, names in assignment.items():
        for name in names:
            h = hosts[name]
            assert h.var("fleet_site") == site
            assert h.var("ansible_host") == site_address(site, name)
            work = work_for(h, "probe", deadline=60)
            assert work.site == site and queue_for(work.site) == f"fleet.site.{site}"
            # the key is a path each site worker resolves in its own HOME; no ssh arguments
            # (host keys are the worker's known_hosts', not the controller's say)
            assert work.connection["ansible_ssh_private_key_file"] == "~/.ssh/id_ed25519"
            assert "ansible_ssh_common_args" not in work.connection
    assert set(inv.groups["site1"].hosts) == set(assignment["site1"])
    assert inv_path.stat().st_mode & 0o777 == 0o644


def test_listener_check_on_captured_proc_net_tcp():
    device = (DATA / "proc-net-tcp-device-x86.txt").read_text()
    worker = (DATA / "proc-net-tcp-site1-worker.txt").read_text()
    assert listens_on_all(device)            # sshd on 0.0.0.0:22 (st 0A)
    assert not listens_on_all(device, 2222)
    # the worker's namespace only has client connections TO port 22 (rem_address :0016)
    assert not listens_on_all(worker)
    only_lab_address = device.replace("00000000:0016 00000000:0000 0A", "0F0012C6:0016 00000000:0000 0A")
    assert not listens_on_all(only_lab_address)  # 198.18.0.15:22 only: the site address is not served


@pytest.mark.parametrize("n", [0, sitenet.MAX_SITES + 1])
def test_site_count_bounds(n, tmp_path):
    from fleet.errors import UsageError
    from fleet.lab import sites

    with pytest.raises(UsageError, match=f"--sites {n}: between 1 and 9"):
        sites.up(LabPaths(tmp_path), n)  # refused before anything is touched
    assert list(tmp_path.iterdir()) == []


def test_sites_on_a_lab_that_is_not_up(tmp_path):
    from fleet.errors import UsageError
    from fleet.lab import sites

    with pytest.raises(UsageError, match="the lab is not up"):
        sites.up(LabPaths(tmp_path), 2)
    assert sites.status(LabPaths(tmp_path)) == {
        "configured": False, "count": 0, "inventory": str(tmp_path / "inventory-sites.yaml"),
        "controller_env": str(tmp_path / "sites" / "controller" / "env"), "sites": [], "ok": True}
