"""`fleet lab ...`: a simulated fleet of boards on this machine (needs root).

    fleet lab setup  [--profiles ...]     packages, foreign engine files, binfmt_misc, host engine
    fleet lab up     [--profiles a,b]     registry + devices (idempotent; repairs after a crash/reboot)
    fleet lab status [--json]             exit 1 if something the lab started is down
    fleet lab down                        stop all of it; no process, mount, netns or bridge left
    fleet lab hello-context DIR           build context of examples/hello for every lab platform

The lab directory is ``--lab-dir``, else ``$FLEET_LAB_DIR``, else ``/var/lib/fleet-lab``; it
must be root-owned and not group/world-writable on every path component (sshd's
ChrootDirectory rule), so not under /tmp.
"""

from __future__ import annotations

from typing import Optional

import typer

from fleet.lab import control, labregistry
from fleet.lab.profiles import PROFILES, parse_profiles
from fleet.lab.setup import require_root
from fleet.lab.setup import setup as run_setup
from fleet.lab.state import DEFAULT_LAB_DIR, ENV_LAB_DIR, LabPaths, resolve_lab_dir
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
           json_out: bool = typer.Option(False, "--json", help="Print the status document as JSON.")) -> None:
    """Start the lab registry and devices (reuses what runs; recovers from a crash or reboot)."""
    require_root()
    paths = _paths(lab_dir)
    doc = control.up(paths, parse_profiles(profiles))
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
