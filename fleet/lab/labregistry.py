"""The lab's own registry: Debian ``docker-registry`` (CNCF distribution 2.8) over TLS with
htpasswd (bcrypt) authentication, on the bridge's host address 198.18.0.1, port 5443.

Port 5443, not 5000: Debian's docker-registry package starts its own service on ``:5000``
on machines with systemd, which would block the bind.

Files under ``LABDIR/registry/``: ``ca.crt``/``ca.key`` (lab CA, made with openssl),
``server.crt``/``server.key`` (leaf with subjectAltName IP:198.18.0.1), ``htpasswd``,
``credentials`` (0600 JSON ``{"registry", "username", "password"}``), ``config.yml``,
``data/``, ``registry.log``. The CA is copied to
``/etc/docker/certs.d/198.18.0.1:5443/ca.crt``, which the running host engine and the
device engines read per connection (no restart). The credentials are merged into the
Docker config (``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``,
``auths[ADDR].auth`` = base64 ``user:pass``), keeping every other entry. The password
never appears in a process argument or a log line.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import ssl
import subprocess
from pathlib import Path

import bcrypt
import yaml

from fleet.lab.net import HOST_ADDRESS
from fleet.lab.state import LabPaths, ProcRecord
from fleet.lab.util import LabError, progress, run, wait_for, write_file

PORT = 5443
ADDRESS = f"{HOST_ADDRESS}:{PORT}"
USERNAME = "fleet"
CERTS_D = Path("/etc/docker/certs.d")


def files(paths: LabPaths) -> dict[str, Path]:
    d = paths.registry_dir
    return {
        "dir": d, "ca": d / "ca.crt", "ca_key": d / "ca.key", "cert": d / "server.crt",
        "key": d / "server.key", "htpasswd": d / "htpasswd", "credentials": d / "credentials",
        "config": d / "config.yml", "data": d / "data", "log": d / "registry.log",
    }


def docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _make_certs(f: dict[str, Path]) -> None:
    if not (f["ca"].exists() and f["ca_key"].exists()):
        progress("registry: making the lab CA (openssl)")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f["ca_key"], "-out", f["ca"], "-days", "3650", "-subj", "/CN=fleet lab CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"], what="openssl CA")
        os.chmod(f["ca_key"], 0o600)
        f["cert"].unlink(missing_ok=True)
    if not (f["cert"].exists() and f["key"].exists()):
        csr = f["dir"] / "server.csr"
        ext = f["dir"] / "server.ext"
        ext.write_text(f"subjectAltName=IP:{HOST_ADDRESS}\nextendedKeyUsage=serverAuth\n"
                       "keyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n")
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f["key"], "-out", csr, "-subj", f"/CN={HOST_ADDRESS}"], what="openssl leaf key")
        os.chmod(f["key"], 0o600)
        run(["openssl", "x509", "-req", "-in", csr, "-CA", f["ca"], "-CAkey", f["ca_key"], "-CAcreateserial",
             "-out", f["cert"], "-days", "825", "-extfile", ext], what="openssl sign leaf")
        csr.unlink(missing_ok=True)


def credentials(paths: LabPaths) -> dict[str, str]:
    """The lab registry's ``{"registry", "username", "password"}`` (created on first use)."""
    f = files(paths)
    try:
        return json.loads(f["credentials"].read_text())
    except (OSError, ValueError):
        pass
    doc = {"registry": ADDRESS, "username": USERNAME, "password": secrets.token_urlsafe(24)}
    write_file(f["credentials"], json.dumps(doc, indent=2) + "\n", 0o600)
    f["htpasswd"].unlink(missing_ok=True)
    return doc


BCRYPT_ROUNDS = 5


def _write_config(paths: LabPaths) -> None:
    f = files(paths)
    creds = credentials(paths)
    # The registry checks the bcrypt hash on EVERY request with Basic auth: at bcrypt's
    # default cost (12) that is ~0.3 s of CPU per request here, which dominated publish and
    # pull times. The password is 192 random bits, so a low cost loses no strength.
    current = f["htpasswd"].read_text() if f["htpasswd"].exists() else ""
    if f":$2b${BCRYPT_ROUNDS:02d}$" not in current:
        h = bcrypt.hashpw(creds["password"].encode(), bcrypt.gensalt(rounds=BCRYPT_ROUNDS)).decode()
        write_file(f["htpasswd"], f"{creds['username']}:{h}\n", 0o600)
    cfg = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(f["data"])}, "delete": {"enabled": True}},
        "http": {"addr": ADDRESS, "tls": {"certificate": str(f["cert"]), "key": str(f["key"])}},
        "auth": {"htpasswd": {"realm": "fleet-lab", "path": str(f["htpasswd"])}},
    }
    write_file(f["config"], yaml.safe_dump(cfg, sort_keys=False), 0o600)


def trust_ca(paths: LabPaths) -> Path:
    """Copy the lab CA to /etc/docker/certs.d/ADDR/ca.crt (engines read it per connection)."""
    dst = CERTS_D / ADDRESS / "ca.crt"
    data = files(paths)["ca"].read_bytes()
    if not dst.exists() or dst.read_bytes() != data:
        write_file(dst, data, 0o644)
    return dst


def merge_docker_config(paths: LabPaths, config: Path | None = None) -> Path:
    """Write/merge ``auths[ADDR]`` into the Docker config, keeping other entries (0600)."""
    config = config or docker_config_path()
    creds = credentials(paths)
    try:
        doc = json.loads(config.read_text())
    except (OSError, ValueError):
        doc = {}
    auth = base64.b64encode(f"{creds['username']}:{creds['password']}".encode()).decode()
    auths = doc.setdefault("auths", {})
    if auths.get(ADDRESS, {}).get("auth") != auth:
        auths[ADDRESS] = {"auth": auth}
        config.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_file(config, json.dumps(doc, indent=2) + "\n", 0o600)
    if doc.get("credsStore"):
        from fleet.output import warn
        warn(f"{config} sets credsStore={doc['credsStore']!r}: the docker CLI asks that helper, not the auths entry")
    return config


def answers(paths: LabPaths, timeout: float = 2.0) -> bool:
    """True if the registry answers ``GET /v2/`` over TLS (any HTTP status: 401 expected)."""
    import socket
    ctx = ssl.create_default_context(cafile=str(files(paths)["ca"]))
    try:
        with socket.create_connection((HOST_ADDRESS, PORT), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=HOST_ADDRESS) as s:
                s.sendall(f"GET /v2/ HTTP/1.0\r\nHost: {ADDRESS}\r\n\r\n".encode())
                return s.recv(12).startswith(b"HTTP/1.")
    except (OSError, ssl.SSLError):
        return False


def marker(paths: LabPaths) -> str:
    return str(files(paths)["config"])


def start(paths: LabPaths, rec: ProcRecord | None) -> ProcRecord:
    """Start the registry unless ``rec`` is still alive; returns its record."""
    f = files(paths)
    f["dir"].mkdir(parents=True, exist_ok=True, mode=0o700)
    f["data"].mkdir(exist_ok=True)
    _make_certs(f)
    _write_config(paths)
    trust_ca(paths)
    merge_docker_config(paths)
    if rec and rec.alive() and answers(paths):
        return rec
    if rec and rec.alive():
        from fleet.lab.state import terminate
        terminate([rec.pid], 5)
    progress(f"registry: starting on https://{ADDRESS}")
    with open(f["log"], "ab") as log:
        p = subprocess.Popen(["docker-registry", "serve", str(f["config"])], stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    rec = ProcRecord.of(p.pid, marker(paths))
    if not wait_for(lambda: answers(paths), 20, 0.1):
        raise LabError(f"the lab registry did not answer on {ADDRESS} within 20 s; see {f['log']}")
    return rec
