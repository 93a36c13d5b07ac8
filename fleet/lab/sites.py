"""`fleet lab sites up / down / status`: the lab's devices split over N sites, each reached
only from its own site namespace, where that site's ``fleet worker`` runs; a broker; a
controller namespace that reaches only the broker and the registry (docs/lab.md, "Sites";
the network is sitenet.py).

Devices (those of the running lab, by address) are split into N consecutive groups,
site1 getting the first. Files under ``LABDIR/sites/`` (folders 0700, keys and secrets
0600)::

    state.json                 {"count", "assignment": {site: [device...]}, "fleet": exe,
                                "broker": ProcRecord, "workers": {site: ProcRecord}}
    broker/redis.conf          the broker's config (bind 198.18.9.1, requirepass), broker/password
    controller/controller.key  the controller's signing identity (RSA 3072, openssl) + .pem
    controller/trusted/        every site's certificate (verifies results)
    controller/env             FLEET_BROKER_URL, FLEET_CELERY_KEY/_CERT/_CERT_STORE for the controller
    siteN/site.key, site.pem   the site's signing identity; siteN/trusted/: the controller's certificate
    siteN/known_hosts          the site's devices' host keys at their site addresses
    siteN/home/                the worker's HOME: .ssh/id_ed25519 (its copy of the lab key),
                               .docker/config.json (the lab registry's credentials)
    siteN/worker.log           the worker's log

and ``LABDIR/inventory-sites.yaml``: the devices at their site addresses with ``fleet_site``.
The site addresses are also added to the lab's known_hosts (``fleet lab up`` keeps them).

The broker (Debian ``redis-server``, as user ``redis`` when that account exists) and the
workers are started with ``nsenter --net`` / ``ip netns exec`` in their namespaces;
process records as the rest of the lab (state.py), so a recycled pid is never signalled.
The workers run as root: the lab's Python and key copies are root's (a real site box runs
its worker as an unprivileged user, docs/sites.md).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import yaml

from fleet.errors import UsageError
from fleet.lab import broker, net, sitenet
from fleet.lab.broker import REDIS_SERVER
from fleet.lab.devices import Device
from fleet.lab.profiles import PROFILES
from fleet.lab.setup import LOGIN_USER
from fleet.lab.sitefiles import (connection_env, controller_dir, controller_env, ensure_identity, inventory_path,
                                 make_dir, node_name, root, site_address, site_dir, site_number, worker_log,
                                 write_controller_files, write_site_files)
from fleet.lab.state import LabPaths, ProcRecord, find_processes, load_state, rss_kib, terminate
from fleet.lab.util import LabError, progress, ssh_answers, wait_for, write_file

WORKER_TIMEOUT = 120.0
WORKER_CONCURRENCY = 8
#: Every worker of a broker must use the same value (docs/sites.md, "Delivery").
WORKER_MAX_DEADLINE = 3600


# -- layout ------------------------------------------------------------------------------------

def _state_path(paths: LabPaths) -> Path:
    return root(paths) / "state.json"


def load(paths: LabPaths) -> dict:
    try:
        return json.loads(_state_path(paths).read_text())
    except (OSError, ValueError):
        return {"count": 0, "assignment": {}, "workers": {}}


def _save(paths: LabPaths, st: dict) -> None:
    write_file(_state_path(paths), json.dumps(st, indent=2) + "\n", 0o600)


# -- which device goes where ---------------------------------------------------------------------

def lab_devices(paths: LabPaths) -> list[Device]:
    """The running lab's devices (its state.json), by address."""
    names = [n for n in load_state(paths).get("devices", {}) if n in PROFILES]
    return sorted((Device(paths, PROFILES[n]) for n in names), key=lambda d: d.profile.octet)


def split(devices: list[Device], count: int) -> dict[str, list[str]]:
    """``count`` consecutive groups of ``devices`` (sizes differ by at most one, the first
    sites get the larger ones): ``{"site1": [names], ...}``."""
    out: dict[str, list[str]] = {}
    size, extra = divmod(len(devices), count)
    i = 0
    for n in range(1, count + 1):
        k = size + (1 if n <= extra else 0)
        out[sitenet.site_name(n)] = [d.name for d in devices[i:i + k]]
        i += k
    return out


def site_of(paths: LabPaths) -> dict[str, str]:
    """``{device: site}`` of the recorded assignment ({} when the sites are down)."""
    return {d: s for s, ds in load(paths).get("assignment", {}).items() for d in ds}


# -- host keys, inventory ------------------------------------------------------------------------

def known_hosts_lines(paths: LabPaths) -> str:
    """known_hosts lines of every device at its site address (empty when the sites are
    down): what ``fleet lab up`` adds to the lab's known_hosts."""
    lines = []
    for device, site in site_of(paths).items():
        dev = Device(paths, PROFILES[device])
        if dev.host_key.with_suffix(".pub").exists():
            kind, blob = dev.host_key.with_suffix(".pub").read_text().split()[:2]
            lines.append(f"{site_address(site, device)} {kind} {blob}\n")
    return "".join(lines)


def _write_lab_known_hosts(paths: LabPaths) -> None:
    from fleet.lab.devices import known_hosts_text

    devs = [d for d in lab_devices(paths) if d.host_key.with_suffix(".pub").exists()]
    write_file(paths.known_hosts, known_hosts_text(devs) + known_hosts_lines(paths))


def write_inventory(paths: LabPaths, assignment: dict[str, list[str]]) -> Path:
    """The sites inventory: group per site (``fleet_site`` on it) and the lab's usual
    groups; hosts at their site addresses, the key path each site worker resolves in its
    own HOME. No ssh arguments: host keys are checked by each worker against its own
    known_hosts (docs/sites.md, "What stays at the site")."""
    hosts: dict[str, dict] = {}
    groups: dict[str, dict] = {}
    for site, names in assignment.items():
        groups[site] = {"vars": {"fleet_site": site}, "hosts": {}}
        for name in names:
            hosts[name] = {"ansible_host": site_address(site, name), "ansible_port": 22,
                           "ansible_user": LOGIN_USER, "ansible_ssh_private_key_file": "~/.ssh/id_ed25519",
                           "lab_profile": name}
            groups[site]["hosts"][name] = None
    for name in hosts:
        groups.setdefault(PROFILES[name].group, {"hosts": {}})["hosts"][name] = None
    doc = {"all": {"children": {"lab": {"hosts": hosts}, **groups}}}
    text = (f"# Written by `fleet lab sites up` for the lab in {paths.root}: the devices at their site\n"
            f"# addresses; reach them through the site workers (--executor celery).\n"
            + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
    write_file(inventory_path(paths), text, 0o644)
    return inventory_path(paths)


# -- devices' sshd --------------------------------------------------------------------------------

_LISTEN_RE = re.compile(r"^ListenAddress .*$", re.MULTILINE)


def listens_on_all(proc_net_tcp: str, port: int = 22) -> bool:
    """True if the text of a ``/proc/PID/net/tcp`` (proc(5): ``local_address`` as hex
    ADDR:PORT, ``st`` 0A = LISTEN) shows a listener on 0.0.0.0:``port``."""
    want = f"00000000:{port:04X}"
    for line in proc_net_tcp.splitlines()[1:]:
        f = line.split()
        if len(f) > 3 and f[1] == want and f[3] == "0A":
            return True
    return False


def _listens_everywhere(pid: int) -> bool:
    """True if ``pid``'s network namespace has a TCP listener on 0.0.0.0:22."""
    try:
        return listens_on_all(Path(f"/proc/{pid}/net/tcp").read_text())
    except OSError:
        return False


def ensure_sshd_listens(paths: LabPaths, dev: Device) -> None:
    """The device's sshd listens on every address (its site address too). An sshd
    started before the lab did so is reloaded once: SIGHUP makes sshd re-execute itself
    with the same pid and config path (sshd(8), SIGHUP); open sessions are untouched."""
    entry = load_state(paths).get("devices", {}).get(dev.name, {})
    rec = ProcRecord.load(entry.get("sshd"))
    if not (rec and rec.alive()):
        raise LabError(f"{dev.name}: its sshd is not running; run `fleet lab up` first")
    if _listens_everywhere(rec.pid):
        return
    text = dev.sshd_config.read_text()
    want = _LISTEN_RE.sub("ListenAddress 0.0.0.0:22", text)
    if want != text:
        write_file(dev.sshd_config, want, 0o644)
    progress(f"{dev.name}: reloading its sshd to listen on its site address too")
    os.kill(rec.pid, signal.SIGHUP)
    if not wait_for(lambda: _listens_everywhere(rec.pid), 15, 0.05):
        raise LabError(f"{dev.name}: its sshd did not listen on 0.0.0.0:22 after a reload; see {dev.dir / 'sshd.log'}")


# -- workers --------------------------------------------------------------------------------------

def fleet_executable() -> str:
    exe = Path(sys.executable).with_name("fleet")
    if not exe.exists():
        raise LabError(f"no fleet command next to {sys.executable}: install fleet (pip install -e .) first")
    return str(exe)


def worker_argv(paths: LabPaths, site: str, exe: str) -> list[str]:
    d = site_dir(paths, site)
    return [exe, "worker", "--site", site, "--name", node_name(site), "--key", str(d / "site.key"),
            "--cert", str(d / "site.pem"), "--cert-store", str(d / "trusted"), "--known-hosts",
            str(d / "known_hosts"), "--concurrency", str(WORKER_CONCURRENCY), "--max-deadline",
            str(WORKER_MAX_DEADLINE), "-v"]


def start_worker(paths: LabPaths, site: str, exe: str, kind: str = "redis") -> tuple[ProcRecord, int]:
    """Start ``site``'s worker in its namespace; returns its record and the log offset its
    readiness line will follow."""
    d = site_dir(paths, site)
    stale = find_processes(markers=[str(d / "site.key")])  # started, never recorded (a crash in between)
    if stale:
        terminate(stale, 30)
    log = worker_log(paths, site)
    offset = log.stat().st_size if log.exists() else 0
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(d / "home"), "LANG": "C.UTF-8",
           "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **connection_env(paths, kind)}
    argv = ["ip", "netns", "exec", sitenet.site_ns(site_number(site)), *worker_argv(paths, site, exe)]
    with open(log, "ab") as out:
        os.chmod(log, 0o600)
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True, close_fds=True)
    progress(f"{site}: starting its worker {node_name(site)} (log {log})")
    return ProcRecord.of(p.pid, str(d / "site.key")), offset


def worker_ready(paths: LabPaths, site: str, offset: int) -> bool:
    try:
        with open(worker_log(paths, site), "rb") as f:
            f.seek(offset)
            return f"worker {node_name(site)} ready".encode() in f.read()
    except OSError:
        return False


# -- up / down / status ----------------------------------------------------------------------------

def up(paths: LabPaths, count: int, *, workers: bool = True, kind: str = "redis") -> dict:
    """Split the running lab's devices into ``count`` sites and bring the sites' network,
    the broker (``kind``: redis, or rabbitmq with redis for results), the files and
    (``workers``) a worker per site up; idempotent (another ``count``, broker or device
    set takes the sites down and up again). Returns :func:`status`. Raises UsageError
    (exit 2) when the lab is not up, ``count`` does not fit or the broker is not
    installed, LabError (exit 1) when a part does not come up."""
    if not 1 <= count <= sitenet.MAX_SITES:
        raise UsageError(f"--sites {count}: between 1 and {sitenet.MAX_SITES}")
    if kind not in broker.KINDS:
        raise UsageError(f"--broker {kind!r}: choose one of {', '.join(broker.KINDS)}")
    devices = lab_devices(paths)
    if not devices:
        raise UsageError("the lab is not up (no devices in its state): run `fleet lab up` first")
    if count > len(devices):
        raise UsageError(f"--sites {count}: more sites than the lab's {len(devices)} devices")
    if not Path(REDIS_SERVER).exists():
        raise UsageError(f"no {REDIS_SERVER} (Debian package redis-server): run `fleet lab setup` first")
    if kind == "rabbitmq" and not broker.rabbitmq_available():
        raise UsageError(f"--broker rabbitmq: no {broker.RABBITMQ_SERVER} or rabbitmq user "
                         f"(apt-get install rabbitmq-server)")
    assignment = split(devices, count)
    st = load(paths)
    if st.get("count") and (st.get("assignment"), st.get("broker_kind", "redis")) != (assignment, kind):
        progress(f"sites: splitting {len(devices)} devices into {count} sites anew (broker {kind})")
        down(paths)
        st = load(paths)
    make_dir(root(paths), 0o755)  # the brokers (users redis, rabbitmq) go through it; each part is 0700
    st.update(count=count, assignment=assignment, broker_kind=kind, with_workers=workers)
    st.setdefault("workers", {})
    _save(paths, st)

    sitenet.ensure_broker_ns()
    sitenet.ensure_ctl()
    for n in sitenet.present_sites():
        if n > count:
            sitenet.delete_ns(sitenet.site_ns(n))
    by_name = {d.name: d for d in devices}
    for site, names in assignment.items():
        n = site_number(site)
        sitenet.ensure_site(n)
        for name in names:
            sitenet.ensure_device_link(n, name, by_name[name].profile.octet)
            ensure_sshd_listens(paths, by_name[name])

    certs = {s: ensure_identity(make_dir(site_dir(paths, s)), "site", f"fleet-lab-{s}")[1] for s in assignment}
    write_controller_files(paths, list(assignment), certs, kind)
    for site, names in assignment.items():
        write_site_files(paths, site, names, controller_dir(paths) / "controller.pem")
    write_inventory(paths, assignment)
    _write_lab_known_hosts(paths)

    st["broker"] = asdict(broker.start_redis(paths, ProcRecord.load(st.get("broker"))))
    _save(paths, st)
    if kind == "rabbitmq":
        recs = broker.start_rabbitmq(paths, st.get("rabbitmq") or {}, WORKER_MAX_DEADLINE + 600)
        st["rabbitmq"] = {k: asdict(v) if isinstance(v, ProcRecord) else v for k, v in recs.items()}
        _save(paths, st)
    failures = []
    if workers:
        exe = fleet_executable()
        st["fleet"] = exe
        waiting = []
        for site in assignment:
            rec = ProcRecord.load(st["workers"].get(site))
            if rec and rec.alive():
                continue
            rec, offset = start_worker(paths, site, exe, kind)
            st["workers"][site] = asdict(rec)
            waiting.append((site, offset))
        _save(paths, st)
        for site, offset in waiting:
            rec = ProcRecord.load(st["workers"][site])
            if not wait_for(lambda: worker_ready(paths, site, offset) or not rec.alive(), WORKER_TIMEOUT, 0.2) \
                    or not rec.alive():
                failures.append(f"{site}: its worker did not get ready (see {worker_log(paths, site)})")
    for site, names in assignment.items():
        ns = sitenet.site_ns(site_number(site))
        for name in names:
            addr = site_address(site, name)
            if not wait_for(lambda: sitenet.in_netns(ns, lambda: ssh_answers(addr)), 10, 0.2):
                failures.append(f"{name}: its sshd does not answer on {addr} from {ns}")
    if failures:
        raise LabError("; ".join(failures))
    return status(paths)


def _namespaces(paths: LabPaths) -> list[str]:
    st = load(paths)
    nums = set(sitenet.present_sites()) | {site_number(s) for s in st.get("assignment", {})}
    return [sitenet.CTL_NS, sitenet.BROKER_NS, *(sitenet.site_ns(n) for n in sorted(nums))]


def processes(paths: LabPaths) -> list[int]:
    """Every process of the sites: naming ``LABDIR/sites/`` (workers, broker) or living in
    the ctl, broker or a site namespace (a controller run there too), with descendants."""
    return find_processes(markers=[str(root(paths)) + "/"],
                          ns_files=[sitenet.ns_path(ns) for ns in _namespaces(paths)])


def down(paths: LabPaths) -> dict:
    """Stop the workers (SIGTERM: Celery's warm shutdown) and the broker, remove the ctl,
    broker and site namespaces (the devices' ``eth1`` go with them), ``flabctl``, the site
    lines of the lab's known_hosts and the sites inventory. Keeps identities, passwords
    and logs. Returns ``{"stopped": N, "left": [...]}``."""
    st = load(paths)
    before = processes(paths)
    recs = [ProcRecord.load(r) for r in st.get("workers", {}).values()] + [ProcRecord.load(st.get("broker"))]
    recs += [ProcRecord.load(r) for r in (st.get("rabbitmq") or {}).values()]
    live = [r.pid for r in recs if r and r.alive()]
    if live:
        progress(f"sites: stopping {len(live)} processes")
        terminate(live, 30)
    rest = processes(paths)
    if rest:
        terminate(rest, 5)
    assigned = site_of(paths)
    for ns in _namespaces(paths):
        if ns == sitenet.CTL_NS:
            sitenet.delete_ctl()
        else:
            sitenet.delete_ns(ns)
    for name in assigned:
        if name in PROFILES and net.netns_exists(name):
            sitenet.delete_device_link(name)
    if _state_path(paths).exists():
        _save(paths, {"count": 0, "assignment": {}, "workers": {}, "broker": None, "rabbitmq": None,
                      "fleet": st.get("fleet")})
        if paths.known_hosts.exists():
            _write_lab_known_hosts(paths)
    inventory_path(paths).unlink(missing_ok=True)
    return {"stopped": len(before), "left": leftovers(paths, list(assigned))}


def leftovers(paths: LabPaths, devices: list[str] | None = None) -> list[str]:
    out = [f"process {p}" for p in processes(paths)]
    out += [f"netns {ns}" for ns in _namespaces(paths) if sitenet.ns_exists(ns)]
    if Path(f"/sys/class/net/{sitenet.CTL_UPLINK_HOST}").exists():
        out.append(f"link {sitenet.CTL_UPLINK_HOST}")
    for name in devices or []:
        if net.netns_exists(name) and sitenet.DEVICE_SITE_IF in sitenet.links(net.netns_name(name)):
            out.append(f"link {name}/{sitenet.DEVICE_SITE_IF}")
    return out


def _device_addresses(paths: LabPaths) -> list[str]:
    out = [d.address for d in lab_devices(paths)]
    return out + [site_address(s, d) for d, s in site_of(paths).items()]


def status(paths: LabPaths) -> dict:
    """The sites' status document (``fleet lab sites status --json``, and ``sites`` in
    ``fleet lab status``): ``configured`` False when the sites are down; else the broker,
    the controller's namespace (``reaches_devices``: device addresses it has a route to,
    which must be none) and per site its worker and devices (``link``: eth1 holds the
    site address; ``ssh``: the device's sshd answers on it from the site's namespace).
    ``ok``: every part is up (True when the sites are down: nothing to be up)."""
    st = load(paths)
    count = int(st.get("count") or 0)
    doc: dict = {"configured": count > 0, "count": count, "inventory": str(inventory_path(paths)),
                 "controller_env": str(controller_env(paths)), "sites": []}
    if not count:
        doc["ok"] = True
        return doc
    ctl_present = sitenet.ns_exists(sitenet.CTL_NS)
    reaches = [a for a in _device_addresses(paths) if ctl_present and sitenet.route_get(sitenet.CTL_NS, a)]
    kind = st.get("broker_kind", "redis")
    rec = ProcRecord.load(st.get("broker"))
    redis_ok = bool(rec and rec.alive() and broker.redis_answers(paths))
    broker_ok = redis_ok
    doc["broker"] = {"kind": kind, "namespace": sitenet.BROKER_NS,
                     "address": f"{sitenet.BROKER_ADDRESS}:{sitenet.BROKER_PORT}",
                     "state": "running" if redis_ok else "down", "pid": rec.pid if rec and rec.alive() else None}
    if kind == "rabbitmq":
        rabbit = ProcRecord.load((st.get("rabbitmq") or {}).get("rabbitmq"))
        rabbit_ok = bool(rabbit and rabbit.alive() and broker.rabbitmq_answers(paths))
        broker_ok = redis_ok and rabbit_ok
        doc["broker"]["address"] = f"{sitenet.BROKER_ADDRESS}:{broker.AMQP_PORT}"
        doc["broker"]["state"] = "running" if rabbit_ok else "down"
        doc["broker"]["pid"] = rabbit.pid if rabbit_ok else None
        doc["result_backend"] = {"kind": "redis", "address": f"{sitenet.BROKER_ADDRESS}:{sitenet.BROKER_PORT}",
                                 "state": "running" if redis_ok else "down"}
    doc["controller"] = {"namespace": sitenet.CTL_NS, "present": ctl_present, "reaches_devices": reaches,
                         "registry_route": bool(ctl_present and sitenet.route_get(sitenet.CTL_NS, net.HOST_ADDRESS))}
    ok = broker_ok and ctl_present and not reaches and doc["controller"]["registry_route"]
    for site, names in st.get("assignment", {}).items():
        n = site_number(site)
        ns = sitenet.site_ns(n)
        present = sitenet.ns_exists(ns)
        w = ProcRecord.load(st.get("workers", {}).get(site))
        w_ok = bool(w and w.alive())
        devs = []
        for name in names:
            addr = site_address(site, name)
            link = net.netns_exists(name) and sitenet.device_link_address(name) == addr
            ssh = bool(present and link and sitenet.in_netns(ns, lambda: ssh_answers(addr, timeout=3)))
            devs.append({"name": name, "address": addr, "link": link, "ssh": ssh})
            ok = ok and link and ssh
        doc["sites"].append({
            "name": site, "namespace": ns, "network": sitenet.site_subnet(n), "present": present,
            "worker": {"node": node_name(site), "state": "running" if w_ok else "down",
                       "pid": w.pid if w_ok else None, "log": str(worker_log(paths, site))},
            "devices": devs})
        ok = ok and present and w_ok
    pids = processes(paths)
    doc["processes"] = len(pids)
    doc["rss_mib"] = round(rss_kib(pids) / 1024, 1)
    doc["ok"] = bool(ok)
    return doc
