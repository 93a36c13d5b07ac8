"""Command-line options shared by every command that works on devices of an inventory.

Every fan-out command takes the same selection and SSH options, spelled as in Ansible
where Ansible has them::

    -i/--inventory PATH (repeatable)   --limit/-l PATTERN   --forks/-f N
    --known-hosts PATH (repeatable)    --accept-new         --timeout S

and where each device's work runs (docs/sites.md)::

    --executor local|celery   --broker URL   --result-backend URL   --local-fallback
    --key PEM   --cert PEM   --cert-store DIR   --max-deadline S

A command declares them with the ``Annotated`` aliases below and turns the values into a
:class:`fleet.selection.DeviceSelection` with :func:`selection` and a
:class:`fleet.executor.ExecutorOptions` with :func:`executor_options`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fleet.fanout import DEFAULT_FORKS
from fleet.selection import DeviceSelection

__all__ = [
    "InventoryOpt",
    "LimitOpt",
    "ForksOpt",
    "KnownHostsOpt",
    "AcceptNewOpt",
    "TimeoutOpt",
    "JsonOpt",
    "VerboseOpt",
    "PlatformOpt",
    "ReportDirOpt",
    "selection",
    "ExecutorOpt",
    "BrokerOpt",
    "ResultBackendOpt",
    "LocalFallbackOpt",
    "SignKeyOpt",
    "SignCertOpt",
    "CertStoreOpt",
    "MaxDeadlineOpt",
    "executor_options",
]

InventoryOpt = Annotated[
    list[str],
    typer.Option(
        "--inventory",
        "-i",
        metavar="INVENTORY",
        help="Ansible inventory: INI, YAML, TOML file, inventory script or directory; repeat to merge several.",
    ),
]
LimitOpt = Annotated[
    Optional[str],
    typer.Option("--limit", "-l", metavar="PATTERN", help="Ansible host pattern: only these hosts/groups (@FILE: the names in FILE, one per line)."),
]
ForksOpt = Annotated[
    int,
    typer.Option("--forks", "-f", min=1, metavar="N", help="Devices worked on at once."),
]
KnownHostsOpt = Annotated[
    Optional[list[Path]],
    typer.Option(
        "--known-hosts",
        metavar="PATH",
        help="known_hosts file(s) to verify host keys against, instead of ~/.ssh/known_hosts.",
    ),
]
AcceptNewOpt = Annotated[
    bool,
    typer.Option("--accept-new", help="Record host keys of devices not yet known (never changed keys)."),
]
TimeoutOpt = Annotated[
    float,
    typer.Option("--timeout", min=0.1, metavar="S", help="SSH connection timeout in seconds (TCP, key exchange, each auth step)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document (a list of per-device objects), also when the command fails.")]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True,
                                         help="Diagnostics on stderr: -v connections and decisions, -vv remote commands "
                                              "and registry requests, -vvv the wire (secrets always masked).")]
PlatformOpt = Annotated[Optional[list[str]], typer.Option(
    "--platform", metavar="PLATFORM",
    help="Publish exactly these platforms (repeatable or a comma list, e.g. linux/arm/v6,linux/arm64), "
         "instead of the playbook's list or 'auto'.")]
ReportDirOpt = Annotated[Optional[str], typer.Option(
    "--report-dir", metavar="DIR",
    help="Save the JSON report here (default $FLEET_REPORT_DIR, else $XDG_STATE_HOME/fleet/reports, "
         "i.e. ~/.local/state/fleet/reports).")]

DEFAULT_TIMEOUT = 10.0


def selection(
    inventory: list[str],
    limit: str | None,
    forks: int = DEFAULT_FORKS,
    known_hosts: list[Path] | None = None,
    accept_new: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> DeviceSelection:
    """Build a :class:`DeviceSelection` from the shared options' values.

    Raises :class:`fleet.errors.UsageError` when no ``-i/--inventory`` is given.
    """
    from fleet.errors import UsageError
    from fleet.ssh import SSHSettings

    if not inventory:
        raise UsageError("no inventory: give at least one -i/--inventory PATH")
    for p in known_hosts or ():
        if Path(p).is_dir():
            raise UsageError(f"--known-hosts {p}: is a directory (give a known_hosts file)")
    settings = SSHSettings(
        known_hosts=tuple(Path(p) for p in known_hosts or ()),
        accept_new=accept_new,
        connect_timeout=timeout,
    )
    return DeviceSelection(tuple(inventory), limit or None, forks, settings)


# ------------------------------------------------------------------------- executor
# Where each device's work runs (docs/sites.md): this machine, or the Celery workers of the
# devices' sites. Shared by every fan-out command (probe, facts, plan, publish, deploy,
# rollback, verify, status, prune).

ExecutorOpt = Annotated[Optional[str], typer.Option(
    "--executor", metavar="local|celery", show_default=False,
    help="Where each device's work runs: local (this machine's SSH sessions, the default) or celery (the "
         "site worker of each device's fleet_site, through --broker).")]
BrokerOpt = Annotated[Optional[str], typer.Option(
    "--broker", metavar="URL", show_default=False,
    help="Broker of the site workers (redis://, rediss://, amqp://...); alone it means --executor celery. "
         "Default $FLEET_BROKER_URL (keep a password out of the command line: use the variable).")]
ResultBackendOpt = Annotated[Optional[str], typer.Option(
    "--result-backend", metavar="URL", envvar="FLEET_RESULT_BACKEND", show_default=False,
    help="Redis URL results come back through (default: the broker's, when it is Redis).")]
LocalFallbackOpt = Annotated[bool, typer.Option(
    "--local-fallback", help="With celery: devices without fleet_site are worked on from this machine "
                             "instead of being an error.")]
SignKeyOpt = Annotated[Optional[str], typer.Option(
    "--key", metavar="PEM", show_default=False,
    help="With celery: this controller's RSA key that signs the jobs (default $FLEET_CELERY_KEY).")]
SignCertOpt = Annotated[Optional[str], typer.Option(
    "--cert", metavar="PEM", show_default=False, help="Its certificate (default $FLEET_CELERY_CERT).")]
CertStoreOpt = Annotated[Optional[str], typer.Option(
    "--cert-store", metavar="DIR", show_default=False,
    help="Certificates of the site workers whose results are accepted (default $FLEET_CELERY_CERT_STORE).")]
MaxDeadlineOpt = Annotated[float, typer.Option(
    "--max-deadline", min=1.0, metavar="S",
    help="With celery: the longest job deadline the site workers accept (their --max-deadline); a device "
         "whose work may take longer is a usage error before anything is sent.")]


def executor_options(executor: str | None = None, broker: str | None = None, result_backend: str | None = None,
                     local_fallback: bool = False, key: str | None = None, cert: str | None = None,
                     cert_store: str | None = None, max_deadline: float | None = None):
    """The executor the shared options ask for (:class:`fleet.executor.ExecutorOptions`):
    ``--executor`` (default ``local``; ``--broker`` alone means ``celery``). Raises
    UsageError (exit 2) for an unknown executor or celery-only options with ``local``;
    the broker URL and the signing identity are checked when the run starts."""
    from fleet.errors import UsageError
    from fleet.executor import DEFAULT_MAX_DEADLINE, EXECUTORS, ExecutorOptions

    chosen = executor or ("celery" if broker else "local")
    if chosen not in EXECUTORS:
        raise UsageError(f"--executor {chosen!r}: choose one of {', '.join(EXECUTORS)}")
    if chosen == "local":
        extra = [flag for flag, v in (("--broker", broker), ("--local-fallback", local_fallback), ("--key", key),
                                      ("--cert", cert), ("--cert-store", cert_store)) if v]
        if extra:
            raise UsageError(f"{', '.join(extra)}: for --executor celery (work runs on this machine with "
                             f"--executor local)")
    return ExecutorOptions(chosen, broker, result_backend if chosen == "celery" else None, local_fallback, key, cert,
                           cert_store, DEFAULT_MAX_DEADLINE if max_deadline is None else float(max_deadline))


def make_executor(executor):
    """What :class:`fleet.pipeline.Run` takes for ``executor`` (an
    :class:`fleet.executor.ExecutorOptions`, or None: this machine's thread pool)."""
    return executor.make if executor is not None else None
