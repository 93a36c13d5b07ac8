"""`fleet lab up / status / down`: bring the whole lab up idempotently, report it, undo it.

State lives in ``LABDIR/state.json``: ``{"boot", "registry": ProcRecord, "devices":
{NAME: {"profile", "address", "sshd": ProcRecord, "engine": ProcRecord}}}``. A record is
trusted only while its pid still has the recorded start time and boot id (state.py), so
what a crash or a reboot leaves behind is detected, cleaned and restarted by the next
``up``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

from fleet.errors import UsageError
from fleet.lab import labregistry, net, sites
from fleet.lab.devices import Device, known_hosts_text, state_of
from fleet.lab.mounts import is_mount_point, umount_under
from fleet.lab.profiles import PROFILES, Profile
from fleet.lab.setup import LOGIN_USER, ensure_binfmt, ensure_login_user, missing_for_up
from fleet.lab.state import (LabPaths, ProcRecord, ensure_chroot_safe_dir, find_processes, load_state,
                             rss_kib, save_state, terminate)
from fleet.lab.profiles import arches_for
from fleet.lab.util import LabError, progress, run, wait_for, write_file
from fleet.output import warn

ENGINE_TIMEOUT = 120.0
SSHD_TIMEOUT = 30.0


def _user_key(paths: LabPaths) -> str:
    paths.ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not paths.key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fleet-lab user key", "-f", paths.key])
    os.chmod(paths.key, 0o600)
    return paths.key.with_suffix(".pub").read_text()


def up(paths: LabPaths, profiles: list[Profile]) -> dict:
    """Bring the registry and ``profiles``' devices up (reusing what runs); returns the
    status document. Raises UsageError (exit 2) listing what is missing before anything
    starts, LabError (exit 1) if a device does not come up."""
    missing = missing_for_up(paths, profiles)
    if missing:
        raise UsageError("the lab cannot start; missing:\n  - " + "\n  - ".join(missing)
                         + "\nrun `fleet lab setup` (as root) first")
    t0 = time.monotonic()
    ensure_chroot_safe_dir(paths.root)
    os.chmod(paths.root, 0o755)
    (paths.root / "devices").mkdir(exist_ok=True, mode=0o755)
    ensure_binfmt(paths, arches_for(profiles))  # binfmt_misc entries vanish at reboot
    uid, gid = ensure_login_user()
    pubkey = _user_key(paths)
    state = load_state(paths)
    state.setdefault("devices", {})
    net.ensure_bridge()
    state["registry"] = labregistry.start(paths, ProcRecord.load(state.get("registry")))
    save_state(paths, state)

    # Devices already running from an earlier `up` stay in the lab.
    names = [p.name for p in profiles] + [n for n in state["devices"] if n not in {p.name for p in profiles}]
    devices = [Device(paths, PROFILES[n]) for n in names if n in PROFILES]
    started: list[tuple[Device, str]] = []
    for dev in devices:
        entry = state["devices"].get(dev.name, {})
        sshd, engine = ProcRecord.load(entry.get("sshd")), ProcRecord.load(entry.get("engine"))
        sshd_alive, engine_alive = bool(sshd and sshd.alive()), bool(engine and engine.alive())
        if not dev.ns_ready() or not (sshd_alive or engine_alive) or not dev.rootfs_current(uid, gid):
            # Nothing of it runs (first start, crash, reboot) or its namespaces are gone:
            # clear whatever is left and make it afresh.
            if dev.mntns.exists() or net.netns_exists(dev.name) or dev.processes():
                progress(f"{dev.name}: clearing what an earlier run left behind")
            dev.stop([sshd, engine])
            sshd_alive = engine_alive = False
        dev.prepare(uid, gid, pubkey)
        dev.ensure_namespaces()
        entry.update({"profile": dev.profile.name, "address": dev.address})
        if not engine_alive:
            progress(f"{dev.name}: starting its {dev.profile.arch} engine")
            entry["engine"] = dev.start_engine()
            started.append((dev, "engine"))
        if not sshd_alive:
            entry["sshd"] = dev.start_sshd()
            started.append((dev, "sshd"))
        if engine_alive and sshd_alive:
            progress(f"{dev.name}: already running")
        state["devices"][dev.name] = entry
        save_state(paths, state)

    failures = []
    for dev, what in started:
        ok = wait_for(dev.engine_up, ENGINE_TIMEOUT, 0.25) if what == "engine" else wait_for(dev.sshd_up, SSHD_TIMEOUT, 0.1)
        if not ok:
            log = dev.engine_dir / "dockerd.log" if what == "engine" else dev.dir / "sshd.log"
            failures.append(f"{dev.name}: its {what} did not answer (see {log})")
    # the site addresses stay known while the sites are up (sites.py)
    write_file(paths.known_hosts, known_hosts_text(devices) + sites.known_hosts_lines(paths))
    write_inventory(paths, devices)
    site_state = sites.load(paths)
    if site_state.get("count") and not failures:
        # The sites were up before (a crash or reboot took their namespaces, broker and
        # workers): bring them back as they were, or the lab stays half up (status exit 1).
        try:
            sites.up(paths, site_state["count"], workers=site_state.get("with_workers", True),
                     kind=site_state.get("broker_kind", "redis"))
        except (LabError, UsageError) as exc:
            warn(f"sites: could not bring the sites back ({exc}); run `fleet lab sites up` or `fleet lab sites down`")
    state["last_up_seconds"] = round(time.monotonic() - t0, 1)
    save_state(paths, state)
    if failures:
        raise LabError("; ".join(failures))
    return status(paths)


def write_inventory(paths: LabPaths, devices: list[Device]) -> Path:
    """Ansible YAML inventory: group ``lab`` with each device's connection vars, plus one
    group per architecture family (arm32, arm64, x86, s390x)."""
    common = f"-o UserKnownHostsFile={paths.known_hosts} -o StrictHostKeyChecking=yes"
    hosts = {}
    groups: dict[str, dict] = {}
    for d in devices:
        hosts[d.name] = {
            "ansible_host": d.address, "ansible_port": 22, "ansible_user": LOGIN_USER,
            "ansible_ssh_private_key_file": str(paths.key), "ansible_ssh_common_args": common,
            "lab_profile": d.profile.name,
        }
        groups.setdefault(d.profile.group, {"hosts": {}})["hosts"][d.name] = None
    doc = {"all": {"children": {"lab": {"hosts": hosts}, **groups}}}
    text = ("# Written by `fleet lab up` for the lab in " + str(paths.root) + "; rewritten on every up.\n"
            + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
    write_file(paths.inventory, text, 0o644)
    return paths.inventory


def _devices_in(paths: LabPaths, state: dict) -> list[Device]:
    names = list(state.get("devices", {}))
    ddir = paths.root / "devices"
    if ddir.is_dir():
        names += [p.name for p in sorted(ddir.iterdir()) if p.name not in names]
    return [Device(paths, PROFILES[n]) for n in names if n in PROFILES]


def status(paths: LabPaths) -> dict:
    """Status document (see ``fleet lab status --json``; ``sites`` is sites.status's); ``ok``
    False when something the lab started is down (the sites too, once they are up), or
    when the lab is not up."""
    state = load_state(paths)
    reg_rec = ProcRecord.load(state.get("registry"))
    f = labregistry.files(paths)
    reg_ok = bool(reg_rec and reg_rec.alive() and labregistry.answers(paths))
    devices = [state_of(Device(paths, PROFILES[n]), e) for n, e in state.get("devices", {}).items() if n in PROFILES]
    pids = lab_processes(paths, state)
    doc = {
        "lab_dir": str(paths.root),
        "inventory": str(paths.inventory),
        "known_hosts": str(paths.known_hosts),
        "ssh_key": str(paths.key),
        "ssh_user": LOGIN_USER,
        "registry": {
            "address": labregistry.ADDRESS, "ca": str(f["ca"]), "credentials": str(f["credentials"]),
            "docker_ca": str(labregistry.CERTS_D / labregistry.ADDRESS / "ca.crt"),
            "state": "running" if reg_ok else "down",
        },
        "bridge": {"name": net.BRIDGE, "address": f"{net.HOST_ADDRESS}/{net.PREFIXLEN}", "present": net.bridge_exists()},
        "devices": devices,
        "processes": len(pids),
        "rss_mib": round(rss_kib(pids) / 1024, 1),
    }
    doc["sites"] = sites.status(paths)
    doc["ok"] = bool(devices) and reg_ok and all(d["state"] == "running" for d in devices) and doc["sites"]["ok"]
    return doc


def lab_processes(paths: LabPaths, state: dict | None = None) -> list[int]:
    state = state if state is not None else load_state(paths)
    ns_files: list[Path] = []
    for d in _devices_in(paths, state):
        ns_files += [d.mntns, net.netns_path(d.name)]
    return find_processes(markers=[str(paths.root / "devices") + "/", labregistry.marker(paths)], ns_files=ns_files)


def down(paths: LabPaths) -> dict:
    """Stop everything the lab started and remove its namespaces, mounts and bridge.

    Keeps files (keys, engine data, registry data, credentials) for the next ``up``, the
    binfmt_misc entries and the host engine (machine set-up, see ``fleet lab setup``).
    Returns ``{"stopped": N, "left": [...]}`` where ``left`` lists anything that survived.
    """
    site_res = sites.down(paths)  # its workers and broker first: they live in namespaces removed below
    state = load_state(paths)
    devices = _devices_in(paths, state)
    before = lab_processes(paths, state)
    # Graceful first: engines and sshds by record (engines stop their containerd).
    recs = []
    for d in devices:
        e = state.get("devices", {}).get(d.name, {})
        recs += [ProcRecord.load(e.get("sshd")), ProcRecord.load(e.get("engine"))]
    recs.append(ProcRecord.load(state.get("registry")))
    live = [r.pid for r in recs if r and r.alive()]
    if live:
        progress(f"stopping {len(live)} lab processes")
        terminate(live, 20)
    rest = lab_processes(paths, state)
    if rest:
        terminate(rest, 5)
    for d in devices:
        d.release_namespaces()
    for ns in net.lab_namespaces():
        run(["ip", "netns", "del", ns], check=False)
    net.delete_bridge()
    if is_mount_point(paths.ns_dir):
        run(["umount", paths.ns_dir], check=False)
    umount_under(paths.root)
    state["devices"], state["registry"] = {}, None
    if paths.root.exists():
        save_state(paths, state)
    left = leftovers(paths)
    return {"stopped": len(before) + site_res["stopped"], "left": left}


def leftovers(paths: LabPaths) -> list[str]:
    """What of the lab is still present: processes, mounts, namespaces, bridge."""
    from fleet.lab.mounts import mounts
    out = [f"process {p}" for p in lab_processes(paths)]
    prefix = str(paths.root) + "/"
    out += [f"mount {m.point}" for m in mounts() if m.point.startswith(prefix) or m.point == str(paths.root)]
    out += [f"netns {n}" for n in net.lab_namespaces()]
    out += [x for x in sites.leftovers(paths) if not x.startswith("netns ")]
    if net.bridge_exists():
        out.append(f"bridge {net.BRIDGE}")
    return out
