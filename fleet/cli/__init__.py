"""The ``fleet`` command line (typer). Parses options, calls :mod:`fleet.pipeline`, renders.

Conventions: a human table on stdout and progress on stderr; with ``--json`` stdout holds
exactly one JSON document, also when the command fails (then ``{"error", "kind",
"exit_status"}``). Exit status 0 all good, 1 a device or check failed, 2 bad input or
usage (a message naming the file/line, device or reference; never a traceback), 130 when
interrupted by Ctrl-C (what was gathered is still printed and saved). ``-v``/``-vv``/
``-vvv`` send diagnostics to stderr (:mod:`fleet.log`); ``-h`` is ``--help``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Optional

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
    PlatformOpt,
    ReportDirOpt,
    TimeoutOpt,
    VerboseOpt,
    BrokerOpt,
    CertStoreOpt,
    ExecutorOpt,
    LocalFallbackOpt,
    MaxDeadlineOpt,
    ResultBackendOpt,
    SignCertOpt,
    SignKeyOpt,
    executor_options,
    selection,
)
from fleet.errors import FleetError
from fleet.executor.work import DEFAULT_MAX_DEADLINE
from fleet.fanout import DEFAULT_FORKS, INTERRUPTED_EXIT
from fleet.output import emit_json, error

CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="fleet",
    help="Deploy containerized apps to mixed-architecture IoT fleets, each device on its own platform's image.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings=CONTEXT,
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


def _kind(exc: FleetError) -> str:
    """``usage`` (exit 2), ``interrupted`` (130) or ``failure`` (1), plus the error type."""
    label = {2: "usage", INTERRUPTED_EXIT: "interrupted"}.get(exc.exit_code, "failure")
    return f"{label}:{type(exc).__name__}"


def _run(command: Callable[[], int], as_json: bool = False, verbose: int = 0) -> None:
    """Run a command body with diagnostics at ``verbose``; map FleetError to its message
    (and with ``as_json`` an error document on stdout) and exit status, never a traceback."""
    from fleet.log import configure

    configure(verbose)
    try:
        code = command()
    except FleetError as exc:
        if as_json:
            emit_json({"error": str(exc), "kind": _kind(exc), "exit_status": exc.exit_code})
        error(str(exc))
        raise typer.Exit(exc.exit_code)
    except KeyboardInterrupt:
        if as_json:
            emit_json({"error": "interrupted (Ctrl-C)", "kind": "interrupted", "exit_status": INTERRUPTED_EXIT})
        error("interrupted (Ctrl-C)")
        raise typer.Exit(INTERRUPTED_EXIT)
    raise typer.Exit(code)


@app.command("detect", context_settings=CONTEXT)
def detect_cmd(
    file: str = typer.Argument(..., metavar="FILE", help="JSON or YAML: a facts object, {host, facts}, or a list of either."),
    as_json: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Decide each device's OCI platform from recorded facts (exit 1 if any is undecided)."""
    from fleet.cli.detect import run_detect

    _run(lambda: run_detect(file, as_json), as_json, verbose)


@app.command("probe", context_settings=CONTEXT)
def probe_cmd(
    inventory: InventoryOpt = [],
    limit: LimitOpt = None,
    forks: ForksOpt = DEFAULT_FORKS,
    known_hosts: KnownHostsOpt = None,
    accept_new: AcceptNewOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    executor: ExecutorOpt = None,
    broker: BrokerOpt = None,
    result_backend: ResultBackendOpt = None,
    local_fallback: LocalFallbackOpt = False,
    key: SignKeyOpt = None,
    cert: SignCertOpt = None,
    cert_store: CertStoreOpt = None,
    max_deadline: MaxDeadlineOpt = DEFAULT_MAX_DEADLINE,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Probe devices over SSH and decide each one's OCI platform (exit 1 if any device failed or is undecided)."""
    from fleet.cli.probe import run_probe

    _run(lambda: run_probe(selection(inventory, limit, forks, known_hosts, accept_new, timeout), as_json,
                 executor=executor_options(executor, broker, result_backend, local_fallback, key, cert, cert_store, max_deadline)),
         as_json, verbose)


@app.command("facts", context_settings=CONTEXT)
def facts_cmd(
    inventory: InventoryOpt = [],
    limit: LimitOpt = None,
    forks: ForksOpt = DEFAULT_FORKS,
    known_hosts: KnownHostsOpt = None,
    accept_new: AcceptNewOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    executor: ExecutorOpt = None,
    broker: BrokerOpt = None,
    result_backend: ResultBackendOpt = None,
    local_fallback: LocalFallbackOpt = False,
    key: SignKeyOpt = None,
    cert: SignCertOpt = None,
    cert_store: CertStoreOpt = None,
    max_deadline: MaxDeadlineOpt = DEFAULT_MAX_DEADLINE,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Print each device's raw platform facts (--json: the input of `fleet detect FILE` and `fleet plan --facts FILE`)."""
    from fleet.cli.probe import run_facts

    _run(lambda: run_facts(selection(inventory, limit, forks, known_hosts, accept_new, timeout), as_json,
                 executor=executor_options(executor, broker, result_backend, local_fallback, key, cert, cert_store, max_deadline)),
         as_json, verbose)


MinFreeOpt = typer.Option(32.0, "--min-free", metavar="MIB", help="Free MiB that must remain on a device's data root after the pull (the pull needs 3x the child's compressed size on top).")
BatchOpt = typer.Option(None, "--batch", metavar="SIZES", help="Batches instead of the playbook's rollout.batches: counts and percentages, e.g. 1,10%,100% (Ansible serial: the last repeats).")


def _optional_selection(inventory, limit, forks, known_hosts, accept_new, timeout):
    return selection(inventory, limit, forks, known_hosts, accept_new, timeout) if inventory else None


@app.command("plan", context_settings=CONTEXT)
def plan_cmd(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook YAML file."),
    inventory: InventoryOpt = [],
    limit: LimitOpt = None,
    forks: ForksOpt = DEFAULT_FORKS,
    known_hosts: KnownHostsOpt = None,
    accept_new: AcceptNewOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    executor: ExecutorOpt = None,
    broker: BrokerOpt = None,
    result_backend: ResultBackendOpt = None,
    local_fallback: LocalFallbackOpt = False,
    key: SignKeyOpt = None,
    cert: SignCertOpt = None,
    cert_store: CertStoreOpt = None,
    max_deadline: MaxDeadlineOpt = DEFAULT_MAX_DEADLINE,
    platform: PlatformOpt = None,
    facts: Optional[str] = typer.Option(None, "--facts", metavar="FILE",
                                        help="Plan from saved facts (`fleet facts --json`) instead of probing: no SSH."),
    as_json: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Show which platforms the tag will hold, who provides each, and which entry every device receives (exit 1 on any problem)."""
    from fleet.cli.plan import run_plan

    _run(lambda: run_plan(playbook, _optional_selection(inventory, limit, forks, known_hosts, accept_new, timeout),
                          platform, as_json, facts=facts,
                 executor=executor_options(executor, broker, result_backend, local_fallback, key, cert, cert_store, max_deadline)), as_json, verbose)


@app.command("publish", context_settings=CONTEXT)
def publish_cmd(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook YAML file."),
    inventory: InventoryOpt = [],
    limit: LimitOpt = None,
    forks: ForksOpt = DEFAULT_FORKS,
    known_hosts: KnownHostsOpt = None,
    accept_new: AcceptNewOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    executor: ExecutorOpt = None,
    broker: BrokerOpt = None,
    result_backend: ResultBackendOpt = None,
    local_fallback: LocalFallbackOpt = False,
    key: SignKeyOpt = None,
    cert: SignCertOpt = None,
    cert_store: CertStoreOpt = None,
    max_deadline: MaxDeadlineOpt = DEFAULT_MAX_DEADLINE,
    platform: PlatformOpt = None,
    media_type: Optional[str] = typer.Option(None, "--media-type", metavar="TYPE",
                                             help="Index media type (default: follows the children): application/vnd.oci.image.index.v1+json or application/vnd.docker.distribution.manifest.list.v2+json."),
    as_json: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Build or pick each platform's image, check it, and push ONE multi-arch tag (index)."""
    from fleet.cli.plan import run_publish

    _run(lambda: run_publish(playbook, _optional_selection(inventory, limit, forks, known_hosts, accept_new, timeout),
                             platform, media_type, as_json,
                 executor=executor_options(executor, broker, result_backend, local_fallback, key, cert, cert_store, max_deadline)), as_json, verbose)


@app.command("deploy", context_settings=CONTEXT)
def deploy_cmd(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook YAML file."),
    inventory: InventoryOpt = [],
    limit: LimitOpt = None,
    forks: ForksOpt = DEFAULT_FORKS,
    known_hosts: KnownHostsOpt = None,
    accept_new: AcceptNewOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    executor: ExecutorOpt = None,
    broker: BrokerOpt = None,
    result_backend: ResultBackendOpt = None,
    local_fallback: LocalFallbackOpt = False,
    key: SignKeyOpt = None,
    cert: SignCertOpt = None,
    cert_store: CertStoreOpt = None,
    max_deadline: MaxDeadlineOpt = DEFAULT_MAX_DEADLINE,
    check: bool = typer.Option(False, "--check", help="Dry run: probe, plan and show what would be pulled and replaced where; publish nothing, change nothing."),
    min_free: float = MinFreeOpt,
    batch: Optional[str] = BatchOpt,
    report_directory: ReportDirOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Probe, plan, publish ONE tag, then batch by batch on every device: pull it by digest, verify the child is its own platform's, swap, health-check, commit or roll back on the device itself (exit 0 only if every device verified)."""
    from fleet.cli.deploy import run_deploy

    _run(lambda: run_deploy(playbook, selection(inventory, limit, forks, known_hosts, accept_new, timeout),
                            check=check, as_json=as_json, min_free_mib=min_free, report_directory=report_directory,
                            batch=batch,
                 executor=executor_options(executor, broker, result_backend, local_fallback, key, cert, cert_store, max_deadline)),
         as_json, verbose)


@app.command("rollback", context_settings=CONTEXT)
def rollback_cmd(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook YAML file (its container settings)."),
    inventory: InventoryOpt = [],
    limit: LimitOpt = None,
    forks: ForksOpt = DEFAULT_FORKS,
    known_hosts: KnownHostsOpt = None,
    accept_new: AcceptNewOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    executor: ExecutorOpt = None,
    broker: BrokerOpt = None,
    result_backend: ResultBackendOpt = None,
    local_fallback: LocalFallbackOpt = False,
    key: SignKeyOpt = None,
    cert: SignCertOpt = None,
    cert_store: CertStoreOpt = None,
    max_deadline: MaxDeadlineOpt = DEFAULT_MAX_DEADLINE,
    to: Optional[str] = typer.Option(None, "--to", metavar="DEPLOYMENT",
                                     help="Go back to this deployment of the history instead of each device's previous release."),
    min_free: float = MinFreeOpt,
    batch: Optional[str] = BatchOpt,
    report_directory: ReportDirOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Return devices to what they ran before their current deployment (or --to DEPLOYMENT), with the image still on the device, through the same device-side transaction, verified like a deploy."""
    from fleet.cli.deploy import run_rollback

    _run(lambda: run_rollback(playbook, selection(inventory, limit, forks, known_hosts, accept_new, timeout),
                              to=to, as_json=as_json, min_free_mib=min_free, report_directory=report_directory,
                              batch=batch,
                 executor=executor_options(executor, broker, result_backend, local_fallback, key, cert, cert_store, max_deadline)),
         as_json, verbose)


@app.command("history", context_settings=CONTEXT)
def history_cmd(
    device: Optional[str] = typer.Option(None, "--device", metavar="HOST", help="Only runs that reached this device."),
    deployment: Optional[str] = typer.Option(None, "--deployment", metavar="ID", help="Only this run."),
    limit_runs: int = typer.Option(50, "--last", min=1, metavar="N", help="The N newest runs."),
    as_json: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Every deploy, rollback and verify recorded on this controller, newest first, with each device's result."""
    from fleet.cli.history import run_history

    _run(lambda: run_history(device=device, deployment=deployment, limit=limit_runs, as_json=as_json),
         as_json, verbose)


@app.command("status", context_settings=CONTEXT)
def status_cmd(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook YAML file."),
    inventory: InventoryOpt = [],
    limit: LimitOpt = None,
    forks: ForksOpt = DEFAULT_FORKS,
    known_hosts: KnownHostsOpt = None,
    accept_new: AcceptNewOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    executor: ExecutorOpt = None,
    broker: BrokerOpt = None,
    result_backend: ResultBackendOpt = None,
    local_fallback: LocalFallbackOpt = False,
    key: SignKeyOpt = None,
    cert: SignCertOpt = None,
    cert_store: CertStoreOpt = None,
    max_deadline: MaxDeadlineOpt = DEFAULT_MAX_DEADLINE,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Per device, what runs now against what the last rollout intended (drift); changes nothing (exit 0 only if all as intended)."""
    from fleet.cli.history import run_status

    _run(lambda: run_status(playbook, selection(inventory, limit, forks, known_hosts, accept_new, timeout), as_json,
                 executor=executor_options(executor, broker, result_backend, local_fallback, key, cert, cert_store, max_deadline)),
         as_json, verbose)


@app.command("prune", context_settings=CONTEXT)
def prune_cmd(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook YAML file."),
    inventory: InventoryOpt = [],
    limit: LimitOpt = None,
    forks: ForksOpt = DEFAULT_FORKS,
    known_hosts: KnownHostsOpt = None,
    accept_new: AcceptNewOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    executor: ExecutorOpt = None,
    broker: BrokerOpt = None,
    result_backend: ResultBackendOpt = None,
    local_fallback: LocalFallbackOpt = False,
    key: SignKeyOpt = None,
    cert: SignCertOpt = None,
    cert_store: CertStoreOpt = None,
    max_deadline: MaxDeadlineOpt = DEFAULT_MAX_DEADLINE,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Remove images of the app older than the previous release on every device (rollout.keep_images)."""
    from fleet.cli.history import run_prune

    _run(lambda: run_prune(playbook, selection(inventory, limit, forks, known_hosts, accept_new, timeout), as_json,
                 executor=executor_options(executor, broker, result_backend, local_fallback, key, cert, cert_store, max_deadline)),
         as_json, verbose)


@app.command("verify", context_settings=CONTEXT)
def verify_cmd(
    what: str = typer.Argument(..., metavar="PLAYBOOK|REF", help="Playbook file (its image tag), or an image reference (tag or repo@digest)."),
    inventory: InventoryOpt = [],
    limit: LimitOpt = None,
    forks: ForksOpt = DEFAULT_FORKS,
    known_hosts: KnownHostsOpt = None,
    accept_new: AcceptNewOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    executor: ExecutorOpt = None,
    broker: BrokerOpt = None,
    result_backend: ResultBackendOpt = None,
    local_fallback: LocalFallbackOpt = False,
    key: SignKeyOpt = None,
    cert: SignCertOpt = None,
    cert_store: CertStoreOpt = None,
    max_deadline: MaxDeadlineOpt = DEFAULT_MAX_DEADLINE,
    name: Optional[str] = typer.Option(None, "--name", metavar="CONTAINER", help="Container to check (default: the playbook's container.name, else the repository's last path component)."),
    report_directory: ReportDirOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Check that every device runs the index entry planned for its platform: config digest, platform, layers, running container (exit 0 only if all verified)."""
    from fleet.cli.verify import run_verify

    _run(lambda: run_verify(what, selection(inventory, limit, forks, known_hosts, accept_new, timeout),
                            name=name, as_json=as_json, report_directory=report_directory,
                 executor=executor_options(executor, broker, result_backend, local_fallback, key, cert, cert_store, max_deadline)), as_json, verbose)


@app.command("worker", context_settings=CONTEXT)
def worker_cmd(
    site: str = typer.Option(..., "--site", envvar="FLEET_SITE", metavar="NAME",
                             help="The site this worker serves: it runs the jobs of the devices whose inventory fleet_site is NAME (queue fleet.site.NAME)."),
    broker: Optional[str] = typer.Option(None, "--broker", metavar="URL", show_default=False,
                                         help="Broker URL: redis://HOST:6379/0, rediss://..., amqp://... (default $FLEET_BROKER_URL; keep a password out of the command line: use the variable)."),
    result_backend: Optional[str] = typer.Option(None, "--result-backend", envvar="FLEET_RESULT_BACKEND", metavar="URL",
                                                 help="Redis URL results go back through (default: the broker's, when it is Redis)."),
    concurrency: int = typer.Option(50, "--concurrency", "-c", min=1, metavar="N", help="Jobs (devices) worked on at once."),
    key: Optional[str] = typer.Option(None, "--key", metavar="PEM", help="This worker's RSA signing key, for its results (default $FLEET_CELERY_KEY)."),
    cert: Optional[str] = typer.Option(None, "--cert", metavar="PEM", help="Its certificate (default $FLEET_CELERY_CERT)."),
    cert_store: Optional[str] = typer.Option(None, "--cert-store", metavar="DIR", help="Certificates of the controllers whose jobs it runs (default $FLEET_CELERY_CERT_STORE)."),
    known_hosts: KnownHostsOpt = None,
    accept_new: AcceptNewOpt = False,
    ssh_config: Optional[Path] = typer.Option(None, "--ssh-config", metavar="PATH", help="ssh config file (default ~/.ssh/config if it exists)."),
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    max_deadline: float = typer.Option(3600.0, "--max-deadline", min=1.0, metavar="S",
                                       help="Longest job deadline accepted; sizes the Redis visibility timeout (use the same value on every worker of a broker)."),
    clock_skew: float = typer.Option(10.0, "--clock-skew", min=0.0, metavar="S",
                                     help="Clock difference tolerated between the controller and this worker: a job is refused once its deadline plus S has passed."),
    name: Optional[str] = typer.Option(None, "--name", metavar="NODE", help="Celery node name (default fleet-SITE@HOSTNAME)."),
    verbose: VerboseOpt = 0,
) -> None:
    """Run a site worker in the foreground: the Celery worker that reaches this site's devices over SSH for the controller (signed jobs only; Ctrl-C stops it)."""
    from fleet.cli.worker import run_worker_command

    _run(lambda: run_worker_command(broker=broker, site=site, concurrency=concurrency, key=key, cert=cert,
                                    cert_store=cert_store, result_backend=result_backend, known_hosts=known_hosts,
                                    accept_new=accept_new, ssh_config=ssh_config, timeout=timeout,
                                    max_deadline=max_deadline, clock_skew=clock_skew, name=name,
                                    verbose=verbose), False, verbose)


def main() -> None:
    """Console-script entry point: runs the app; a usage error found by the option parser
    (exit 2) also gives the ``--json`` error document."""
    try:  # typer 0.29 vendors click; older typers use click itself
        from typer._click.exceptions import ClickException
    except ImportError:  # pragma: no cover
        from click import ClickException

    try:
        code = app(standalone_mode=False)
    except ClickException as exc:
        if "--json" in sys.argv[1:]:
            emit_json({"error": exc.format_message(), "kind": f"usage:{type(exc).__name__}",
                       "exit_status": exc.exit_code})
        exc.show()
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        error("interrupted (Ctrl-C)")
        sys.exit(INTERRUPTED_EXIT)
    except FleetError as exc:  # raised outside a command body (e.g. in a callback)
        error(str(exc))
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
