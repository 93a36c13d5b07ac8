"""The ``fleet`` command line (typer).

Conventions (DEVELOPERS.md): a human table on stdout and progress on stderr; with
``--json`` stdout holds exactly one JSON document. Exit status 0 all good, 1 a device or
check failed, 2 bad input or usage (a message naming the file/line, device or reference;
never a traceback).
"""

from __future__ import annotations

import sys
from typing import Callable

import typer

from fleet import __version__
from fleet.cli.options import (
    DEFAULT_TIMEOUT,
    AcceptNewOpt,
    ForksOpt,
    InventoryOpt,
    JsonOpt,
    KnownHostsOpt,
    LimitOpt,
    TimeoutOpt,
    selection,
)
from fleet.errors import FleetError
from fleet.fanout import DEFAULT_FORKS
from fleet.output import error

app = typer.Typer(
    name="fleet",
    help="Deploy containerized apps to mixed-architecture IoT fleets, each device on its own platform's image.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

from fleet.lab.cli import app as lab_app  # noqa: E402

app.add_typer(lab_app, name="lab", help="Simulated fleet of boards on this machine (root): setup, up, status, down.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fleet {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """fleet: probe, publish, deploy and verify multi-arch images on device fleets."""


@app.command("detect")
def detect_cmd(
    file: str = typer.Argument(..., metavar="FILE", help="JSON or YAML: a facts object, {host, facts}, or a list of either."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON list of {host, detection} objects."),
) -> None:
    """Decide each device's OCI platform from recorded facts (exit 1 if any is undecided)."""
    from fleet.cli.detect import run_detect

    try:
        code = run_detect(file, as_json)
    except FleetError as exc:
        error(str(exc))
        raise typer.Exit(exc.exit_code)
    raise typer.Exit(code)


@app.command("probe")
def probe_cmd(
    inventory: InventoryOpt = [],
    limit: LimitOpt = None,
    forks: ForksOpt = DEFAULT_FORKS,
    known_hosts: KnownHostsOpt = None,
    accept_new: AcceptNewOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    as_json: JsonOpt = False,
) -> None:
    """Probe devices over SSH and decide each one's OCI platform (exit 1 if any device failed or is undecided)."""
    from fleet.cli.probe import run_probe

    _run(lambda: run_probe(selection(inventory, limit, forks, known_hosts, accept_new, timeout), as_json))


@app.command("facts")
def facts_cmd(
    inventory: InventoryOpt = [],
    limit: LimitOpt = None,
    forks: ForksOpt = DEFAULT_FORKS,
    known_hosts: KnownHostsOpt = None,
    accept_new: AcceptNewOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    as_json: JsonOpt = False,
) -> None:
    """Print each device's raw platform facts (--json: the input of `fleet detect FILE`)."""
    from fleet.cli.probe import run_facts

    _run(lambda: run_facts(selection(inventory, limit, forks, known_hosts, accept_new, timeout), as_json))


PlatformOpt = typer.Option(None, "--platform", metavar="PLATFORM",
                           help="Publish exactly these platforms (repeatable, e.g. linux/arm/v7), instead of the playbook's list or 'auto'.")


def _optional_selection(inventory, limit, forks, known_hosts, accept_new, timeout):
    return selection(inventory, limit, forks, known_hosts, accept_new, timeout) if inventory else None


@app.command("plan")
def plan_cmd(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook YAML file."),
    inventory: InventoryOpt = [],
    limit: LimitOpt = None,
    forks: ForksOpt = DEFAULT_FORKS,
    known_hosts: KnownHostsOpt = None,
    accept_new: AcceptNewOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    platform: list[str] = PlatformOpt,
    as_json: JsonOpt = False,
) -> None:
    """Show which platforms the tag will hold, who provides each, and which entry every device receives (exit 1 on any problem)."""
    from fleet.cli.plan import run_plan

    _run(lambda: run_plan(playbook, _optional_selection(inventory, limit, forks, known_hosts, accept_new, timeout),
                          platform, as_json))


@app.command("publish")
def publish_cmd(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook YAML file."),
    inventory: InventoryOpt = [],
    limit: LimitOpt = None,
    forks: ForksOpt = DEFAULT_FORKS,
    known_hosts: KnownHostsOpt = None,
    accept_new: AcceptNewOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    platform: list[str] = PlatformOpt,
    media_type: str = typer.Option(None, "--media-type", metavar="TYPE",
                                   help="Index media type (default: follows the children): application/vnd.oci.image.index.v1+json or application/vnd.docker.distribution.manifest.list.v2+json."),
    as_json: JsonOpt = False,
) -> None:
    """Build or pick each platform's image, check it, and push ONE multi-arch tag (index)."""
    from fleet.cli.plan import run_publish

    _run(lambda: run_publish(playbook, _optional_selection(inventory, limit, forks, known_hosts, accept_new, timeout),
                             platform, media_type, as_json))


# ============================================================ deploy / verify (deploy helper)
ReportDirOpt = typer.Option(None, "--report-dir", metavar="DIR",
                            help="Save the JSON report here (default $FLEET_REPORT_DIR, else $XDG_STATE_HOME/fleet/reports, i.e. ~/.local/state/fleet/reports).")


@app.command("deploy")
def deploy_cmd(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook YAML file."),
    inventory: InventoryOpt = [],
    limit: LimitOpt = None,
    forks: ForksOpt = DEFAULT_FORKS,
    known_hosts: KnownHostsOpt = None,
    accept_new: AcceptNewOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    check: bool = typer.Option(False, "--check", help="Dry run: probe, plan and show what would be pulled and replaced where; publish nothing, change nothing."),
    min_free: float = typer.Option(32.0, "--min-free", metavar="MIB", help="Free MiB that must remain on a device's data root after the pull (the pull needs 3x the child's compressed size on top)."),
    report_directory: str = ReportDirOpt,
    as_json: JsonOpt = False,
) -> None:
    """Probe, plan, publish ONE tag, then on every device: pull it by digest, verify the child is its own platform's, run it, health-check it, roll back on failure (exit 0 only if every device verified)."""
    from fleet.cli.deploy import run_deploy

    _run(lambda: run_deploy(playbook, selection(inventory, limit, forks, known_hosts, accept_new, timeout),
                            check=check, as_json=as_json, min_free_mib=min_free, report_directory=report_directory))


@app.command("verify")
def verify_cmd(
    what: str = typer.Argument(..., metavar="PLAYBOOK|REF", help="Playbook file (its image tag), or an image reference (tag or repo@digest)."),
    inventory: InventoryOpt = [],
    limit: LimitOpt = None,
    forks: ForksOpt = DEFAULT_FORKS,
    known_hosts: KnownHostsOpt = None,
    accept_new: AcceptNewOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    name: str = typer.Option(None, "--name", metavar="CONTAINER", help="Container to check (default: the playbook's container.name, else the repository's last path component)."),
    report_directory: str = ReportDirOpt,
    as_json: JsonOpt = False,
) -> None:
    """Check that every device runs the index entry planned for its platform: config digest, platform, layers, running container (exit 0 only if all verified)."""
    from fleet.cli.deploy import run_verify

    _run(lambda: run_verify(what, selection(inventory, limit, forks, known_hosts, accept_new, timeout),
                            name=name, as_json=as_json, report_directory=report_directory))
# ======================================================== end deploy / verify ============


def _run(command: Callable[[], int]) -> None:
    """Run a command body; map FleetError to its message and exit status (never a traceback)."""
    try:
        code = command()
    except FleetError as exc:
        error(str(exc))
        raise typer.Exit(exc.exit_code)
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point: runs the app and maps FleetError to its exit status."""
    try:
        app(standalone_mode=True)
    except FleetError as exc:  # raised outside a command body (e.g. in a callback)
        error(str(exc))
        sys.exit(exc.exit_code)
