"""The files of the lab's sites (`fleet lab sites`): where they live, the signing
identities (docs/sites.md's openssl command), the controller's settings and each site
box's own known_hosts, HOME, SSH key copy and registry credentials. Layout: sites.py."""

from __future__ import annotations

import base64
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from fleet.lab import labregistry, sitenet
from fleet.lab.broker import broker_url, redis_url
from fleet.lab.devices import Device
from fleet.lab.profiles import PROFILES
from fleet.lab.state import LabPaths
from fleet.lab.util import progress, run, write_file

SITE_KEY_BITS = 3072


# -- layout ------------------------------------------------------------------------------------

def root(paths: LabPaths) -> Path:
    return paths.root / "sites"


def inventory_path(paths: LabPaths) -> Path:
    return paths.root / "inventory-sites.yaml"


def site_dir(paths: LabPaths, site: str) -> Path:
    return root(paths) / site


def controller_dir(paths: LabPaths) -> Path:
    return root(paths) / "controller"


def controller_env(paths: LabPaths) -> Path:
    return controller_dir(paths) / "env"


def worker_log(paths: LabPaths, site: str) -> Path:
    return site_dir(paths, site) / "worker.log"


def node_name(site: str) -> str:
    """The Celery node name of the lab's worker of ``site``: ``fleet-SITE@fleetlab-SITE``."""
    return f"fleet-{site}@fleetlab-{site}"


def make_dir(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    os.chmod(path, mode)
    return path


def site_number(site: str) -> int:
    return int(site.removeprefix("site"))


def site_address(site: str, device: str) -> str:
    return sitenet.site_device_address(site_number(site), PROFILES[device].octet)



# -- signing identities --------------------------------------------------------------------------

def _cert_valid_days(cert: Path) -> float:
    from cryptography import x509

    c = x509.load_pem_x509_certificate(cert.read_bytes())
    return (c.not_valid_after_utc - datetime.now(timezone.utc)) / timedelta(days=1)


def ensure_identity(directory: Path, stem: str, cn: str) -> tuple[Path, Path]:
    """``stem.key`` (RSA, 0600) and ``stem.pem`` (self-signed, 825 days) in ``directory``,
    made with docs/sites.md's openssl command; remade within 30 days of expiry."""
    key, cert = directory / f"{stem}.key", directory / f"{stem}.pem"
    if key.exists() and cert.exists():
        try:
            if _cert_valid_days(cert) > 30:
                os.chmod(key, 0o600)
                return key, cert
        except ValueError:
            pass
    progress(f"sites: making the signing identity {cn} (openssl)")
    make_dir(directory)
    run(["openssl", "req", "-x509", "-newkey", f"rsa:{SITE_KEY_BITS}", "-nodes", "-days", "825",
         "-subj", f"/CN={cn}", "-keyout", key, "-out", cert], what=f"openssl ({cn})")
    os.chmod(key, 0o600)
    os.chmod(cert, 0o644)
    return key, cert


def _store(directory: Path, certs: dict[str, Path]) -> Path:
    """A certificate store holding exactly ``certs`` (file name -> certificate)."""
    make_dir(directory, 0o755)
    for p in directory.iterdir():
        if p.name not in certs:
            p.unlink()
    for name, cert in certs.items():
        if not (directory / name).exists() or (directory / name).read_bytes() != cert.read_bytes():
            write_file(directory / name, cert.read_bytes(), 0o644)
    return directory


# -- the controller's and the sites' files --------------------------------------------------------

def _env_text(values: dict[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in values.items())


def connection_env(paths: LabPaths, kind: str) -> dict[str, str]:
    """``FLEET_BROKER_URL`` (and with RabbitMQ ``FLEET_RESULT_BACKEND``, the lab's redis)."""
    env = {"FLEET_BROKER_URL": broker_url(paths, kind)}
    if kind == "rabbitmq":
        env["FLEET_RESULT_BACKEND"] = redis_url(paths)
    return env


def write_controller_files(paths: LabPaths, sites: list[str], site_certs: dict[str, Path], kind: str) -> None:
    d = make_dir(controller_dir(paths))
    key, cert = ensure_identity(d, "controller", "fleet-lab-controller")
    store = _store(d / "trusted", {f"{s}.pem": site_certs[s] for s in sites})
    write_file(controller_env(paths), "# source with: set -a; . THIS_FILE; set +a\n" + _env_text({
        **connection_env(paths, kind), "FLEET_CELERY_KEY": str(key), "FLEET_CELERY_CERT": str(cert),
        "FLEET_CELERY_CERT_STORE": str(store)}), 0o600)


def write_site_files(paths: LabPaths, site: str, devices: list[str], controller_cert: Path) -> None:
    d = site_dir(paths, site)
    _store(d / "trusted", {"controller.pem": controller_cert})
    home = make_dir(d / "home")
    ssh = make_dir(home / ".ssh")
    if not (ssh / "id_ed25519").exists() or (ssh / "id_ed25519").read_bytes() != paths.key.read_bytes():
        write_file(ssh / "id_ed25519", paths.key.read_bytes(), 0o600)
    lines = []
    for name in devices:
        dev = Device(paths, PROFILES[name])
        kind, blob = dev.host_key.with_suffix(".pub").read_text().split()[:2]
        lines.append(f"{site_address(site, name)} {kind} {blob}\n")
    write_file(d / "known_hosts", "".join(lines), 0o644)
    creds = labregistry.credentials(paths)
    auth = base64.b64encode(f"{creds['username']}:{creds['password']}".encode()).decode()
    make_dir(home / ".docker")
    write_file(home / ".docker" / "config.json",
               json.dumps({"auths": {labregistry.ADDRESS: {"auth": auth}}}, indent=2) + "\n", 0o600)
