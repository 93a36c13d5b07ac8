"""`fleet lab ...`: a simulated fleet of boards on this machine (needs root).

    fleet lab setup  [--profiles ...]     packages, foreign engine files, binfmt_misc, host engine
    fleet lab up     [--profiles a,b]     registry + devices (idempotent; repairs after a crash/reboot)
    fleet lab status [--json]             exit 1 if something the lab started is down
    fleet lab down                        stop all of it; no process, mount, netns or bridge left
    fleet lab sites up [--sites N]        split the devices over N site networks, broker, site workers
    fleet lab sites status [--json]       the sites (exit 1 if a part is down)
    fleet lab sites down                  stop the sites' workers and broker, remove their namespaces
    fleet lab hello-context DIR           build context of examples/hello for every lab platform

The lab directory is ``--lab-dir``, else ``$FLEET_LAB_DIR``, else ``/var/lib/fleet-lab``; it
must be root-owned and not group/world-writable on every path component (sshd's
ChrootDirectory rule), so not under /tmp.
"""

from __future__ import annotations

from typing import Optional

import typer

from fleet.lab import control, labregistry, sites
from fleet.lab.profiles import PROFILES, parse_profiles
from fleet.lab.setup import require_root
from fleet.lab.setup import setup as run_setup
from fleet.lab.state import DEFAULT_LAB_DIR, ENV_LAB_DIR, LabPaths, resolve_lab_dir
from fleet.errors import FleetError
from fleet.output import emit_json, err, out, table

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help=__doc__.split("\n\n")[0])

LabDirOpt = typer.Option(None, "--lab-dir", help=f"Lab directory (default ${ENV_LAB_DIR} or {DEFAULT_LAB_DIR}).")
ProfilesOpt = typer.Option(None, "--profiles", help=f"Comma-separated profiles (default the five Pis/x86; known: {', '.join(PROFILES)}; 'all').")


def _paths(lab_dir: Optional[str]) -> LabPaths:
    return LabPaths(resolve_lab_dir(lab_dir))


@app.command("setup")
def setup_cmd(
    profiles: Optional[str] = typer.Option("all", "--profiles", help="Profiles whose architectures to fetch ('all' = every profile; optional ones may fail with a warning)."),
    no_install: bool = typer.Option(False, "--no-install", help="Do not apt-get install the host packages."),
    no_host_engine: bool = typer.Option(False, "--no-host-engine", help="Do not start a host Docker engine when none answers."),
    lab_dir: Optional[str] = LabDirOpt,
) -> None:
    """Install what the lab needs (idempotent): Debian packages, foreign engine files, binfmt_misc, a host engine."""
    paths = _paths(lab_dir)
    summary = run_setup(paths, parse_profiles(profiles), install=not no_install, host_engine=not no_host_engine)
    err.print(f"lab setup done: {summary}", highlight=False)


@app.command("up")
def up_cmd(profiles: Optional[str] = ProfilesOpt, lab_dir: Optional[str] = LabDirOpt,
           site_count: Optional[int] = typer.Option(None, "--sites", metavar="N",
                                                    help="Then split the devices over N sites (as `fleet lab sites up --sites N`)."),
           json_out: bool = typer.Option(False, "--json", help="Print the status document as JSON.")) -> None:
    """Start the lab registry and devices (reuses what runs; recovers from a crash or reboot)."""
    require_root()
    paths = _paths(lab_dir)
    doc = control.up(paths, parse_profiles(profiles))
    if site_count is not None:
        sites.up(paths, site_count)
        doc = control.status(paths)
    if json_out:
        emit_json(doc)
        return
    _print_status(doc)
    out.print(
        f"\nInventory: {doc['inventory']}\n"
        f"  fleet probe -i {doc['inventory']}\n"
        f"  ssh -i {doc['ssh_key']} -o UserKnownHostsFile={doc['known_hosts']} {doc['ssh_user']}@{doc['devices'][0]['address'] if doc['devices'] else '198.18.0.11'}\n"
        f"Registry: https://{doc['registry']['address']} (CA {doc['registry']['ca']}, "
        f"credentials {doc['registry']['credentials']}, merged into {labregistry.docker_config_path()})\n"
        "  DOCKER_BUILDKIT=0 /usr/bin/docker build --platform linux/arm/v6 ...; /usr/bin/docker push "
        f"{doc['registry']['address']}/NAME:TAG\n"
        "Device engines have no bridge network: run containers there with --network host.",
        highlight=False)


@app.command("status")
def status_cmd(lab_dir: Optional[str] = LabDirOpt,
               json_out: bool = typer.Option(False, "--json", help="One JSON document on stdout.")) -> None:
    """Report the lab (exit 1 if something the lab started is down, or the lab is not up)."""
    doc = control.status(_paths(lab_dir))
    if json_out:
        emit_json(doc)
    else:
        _print_status(doc)
    if not doc["ok"]:
        raise typer.Exit(1)


@app.command("down")
def down_cmd(lab_dir: Optional[str] = LabDirOpt) -> None:
    """Stop everything the lab started; leaves no process, mount, namespace or bridge."""
    require_root()
    res = control.down(_paths(lab_dir))
    if res["left"]:
        err.print(f"lab down: still present: {', '.join(res['left'])}", highlight=False)
        raise typer.Exit(1)
    err.print(f"lab down: stopped {res['stopped']} processes; nothing left", highlight=False)


@app.command("hello-context")
def hello_context_cmd(dest: str = typer.Argument(..., help="Folder to write the build context to."),
                      lab_dir: Optional[str] = LabDirOpt) -> None:
    """Write examples/hello's build context with rootfs-<arch><variant>/ for each lab platform."""
    from fleet.lab.hello import prepare_context
    made = prepare_context(_paths(lab_dir), dest)
    for platform, folder in made.items():
        out.print(f"{platform}\t{folder}", highlight=False)


def _print_status(doc: dict) -> None:
    rows = [(d["name"], d["profile"], d["address"], d["arch"], d["sshd"], d["engine"], d["state"]) for d in doc["devices"]]
    out.print(table(f"fleet lab ({doc['lab_dir']})", ["device", "profile", "address", "arch", "sshd", "engine", "state"], rows))
    r = doc["registry"]
    out.print(f"registry https://{r['address']}: {r['state']}  |  processes {doc['processes']}, RSS {doc['rss_mib']} MiB"
              f"  |  inventory {doc['inventory']}", highlight=False)
    if doc.get("sites", {}).get("configured"):
        _print_sites(doc["sites"])


def _print_sites(doc: dict) -> None:
    if not doc.get("configured"):
        out.print("sites: down (`fleet lab sites up --sites N`)", highlight=False)
        return
    rows = []
    for s in doc["sites"]:
        w = s["worker"]
        for d in s["devices"]:
            rows.append((s["name"], s["namespace"], w["node"], w["state"], d["name"], d["address"],
                         "up" if d["link"] else "missing", "answers" if d["ssh"] else "down"))
    out.print(table("fleet lab sites", ["site", "namespace", "worker", "worker state", "device", "site address",
                                        "link", "ssh"], rows))
    b, c = doc["broker"], doc["controller"]
    routed = ", ".join(c["reaches_devices"]) or "none"
    results = f", results redis://{doc['result_backend']['address']}: {doc['result_backend']['state']}" \
        if doc.get("result_backend") else ""
    out.print(f"broker {b['kind']} {b['address']} in {b['namespace']}: {b['state']}{results}  |  controller namespace "
              f"{c['namespace']}: {'present' if c['present'] else 'missing'}, registry route "
              f"{'yes' if c['registry_route'] else 'no'}, device addresses it routes to: {routed}  |  "
              f"processes {doc.get('processes', 0)}, RSS {doc.get('rss_mib', 0)} MiB\n"
              f"inventory {doc['inventory']}  |  controller settings {doc['controller_env']}", highlight=False)


sites_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                        help="The lab's devices split over site networks, each with its site worker (docs/lab.md, Sites).")
app.add_typer(sites_app, name="sites")


def _sites_json(json_out: bool, body) -> dict:
    """Run ``body()``; with ``--json`` a failure still prints one JSON document."""
    try:
        return body()
    except FleetError as exc:
        if json_out:
            emit_json({"error": str(exc), "exit_status": exc.exit_code})
        raise


@sites_app.command("up")
def sites_up_cmd(
    count: int = typer.Option(2, "--sites", metavar="N", help="How many sites (1-9): devices are split in address order."),
    no_workers: bool = typer.Option(False, "--no-workers", help="Network, broker and files only; start no site worker."),
    broker_kind: str = typer.Option("redis", "--broker", metavar="redis|rabbitmq",
                                    help="The broker: redis (default), or rabbitmq (results still through redis)."),
    lab_dir: Optional[str] = LabDirOpt,
    json_out: bool = typer.Option(False, "--json", help="Print the sites' status document as JSON."),
) -> None:
    """Split the running lab's devices over N site networks, start the broker and a worker per site (idempotent)."""
    require_root()
    paths = _paths(lab_dir)
    doc = _sites_json(json_out, lambda: sites.up(paths, count, workers=not no_workers, kind=broker_kind))
    if json_out:
        emit_json(doc)
        return
    _print_sites(doc)
    env = doc["controller_env"]
    out.print(
        f"\nFrom the controller's namespace (it reaches only the broker and the registry):\n"
        f"  set -a; . {env}; set +a\n"
        f"  ip netns exec fleetlab-ctl fleet probe -i {doc['inventory']} --executor celery\n"
        "Worker logs: LABDIR/sites/siteN/worker.log; stop it all with `fleet lab sites down`.", highlight=False)
    if not doc["ok"]:
        raise typer.Exit(1)


@sites_app.command("status")
def sites_status_cmd(lab_dir: Optional[str] = LabDirOpt,
                     json_out: bool = typer.Option(False, "--json", help="One JSON document on stdout.")) -> None:
    """Report the sites (exit 1 if a part of them is down, or they are not up)."""
    doc = sites.status(_paths(lab_dir))
    if json_out:
        emit_json(doc)
    else:
        _print_sites(doc)
    if not doc["ok"] or not doc["configured"]:
        raise typer.Exit(1)


@sites_app.command("down")
def sites_down_cmd(lab_dir: Optional[str] = LabDirOpt) -> None:
    """Stop the site workers and the broker; remove the site, broker and controller namespaces (the lab stays up)."""
    require_root()
    res = sites.down(_paths(lab_dir))
    if res["left"]:
        err.print(f"lab sites down: still present: {', '.join(res['left'])}", highlight=False)
        raise typer.Exit(1)
    err.print(f"lab sites down: stopped {res['stopped']} processes; nothing left", highlight=False)
