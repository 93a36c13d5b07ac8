"""``fleet worker``: run a site worker in the foreground (docs/sites.md)."""

from __future__ import annotations

from pathlib import Path

from fleet.errors import UsageError

__all__ = ["run_worker_command"]


def run_worker_command(*, broker: str | None, site: str, concurrency: int, key: str | None, cert: str | None,
                       cert_store: str | None, result_backend: str | None, known_hosts: list[Path] | None,
                       accept_new: bool, ssh_config: Path | None, timeout: float, max_deadline: float,
                       clock_skew: float = 10.0, name: str | None = None, verbose: int = 0) -> int:
    """Check the options, the signing identity and the broker, then consume the site's
    queue until SIGINT/SIGTERM. Returns the exit status: 0 after a clean stop. Raises
    UsageError/SigningError (exit 2) for bad options or identity, BrokerUnavailable (exit 1)
    when the broker or result backend does not answer."""
    import os

    from fleet.executor.app import ENV_BROKER, Signing, check_broker_url, result_backend_for
    from fleet.executor.work import check_site_name
    from fleet.executor.worker import WorkerSettings, default_node_name, run_worker
    from fleet.ssh import SSHSettings

    check_site_name(site, "--site")
    url = check_broker_url(broker or os.environ.get(ENV_BROKER))
    backend = result_backend_for(url, result_backend)
    if concurrency < 1:
        raise UsageError(f"--concurrency {concurrency}: must be at least 1")
    for p in known_hosts or ():
        if Path(p).is_dir():
            raise UsageError(f"--known-hosts {p}: is a directory (give a known_hosts file)")
    if ssh_config is not None and not Path(ssh_config).is_file():
        raise UsageError(f"--ssh-config {ssh_config}: no such file")
    signing = Signing.from_options(key, cert, cert_store)
    ssh = SSHSettings(known_hosts=tuple(Path(p) for p in known_hosts or ()), accept_new=accept_new,
                      connect_timeout=timeout, ssh_config=ssh_config)
    settings = WorkerSettings(site=site, node=name or default_node_name(site), ssh=ssh, max_deadline=max_deadline,
                              skew=clock_skew)
    return run_worker(url, backend, signing, settings, concurrency=concurrency, verbose=verbose)
