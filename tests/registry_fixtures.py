"""Real registries for tests: Debian's ``docker-registry serve`` (distribution 2.8) processes
on loopback 127.0.0.x with free ports, plus a small Bearer-token server.

* :func:`start_registry` starts one registry: plain HTTP, TLS (trustme CA), htpasswd
  (bcrypt) or token auth (distribution ``docs/configuration.md`` "auth: token").
* :class:`TokenServer` issues JWTs the way distribution's ``registry/auth/token`` verifies
  them (``docs/spec/auth/jwt.md``): ES256, header ``kid`` = libtrust fingerprint of the
  signing key (SHA-256 of the DER public key, truncated to 240 bits, base32 in 12 groups),
  whose certificate is the registry's ``rootcertbundle``; ``iss``/``aud`` must equal the
  configured issuer/service. It records every token request for assertions.

Every process started here is stopped by PID in the fixture teardown.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import random
import socket
import ssl
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import bcrypt
import jwt
import pytest
import requests
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REGISTRY_BIN = "/usr/bin/docker-registry"


def loopback_address() -> str:
    """A random 127.0.0.x (x in 100..249) so concurrent test sessions rarely share one."""
    return f"127.0.0.{random.randint(100, 249)}"


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


@dataclass
class RegistryServer:
    """A running registry. ``host`` is ``address:port`` (the registry name in references)."""

    address: str
    port: int
    tls: bool
    ca_file: Path | None
    users: dict[str, str]
    proc: subprocess.Popen
    root: Path
    token_server: "TokenServer | None" = None

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def log(self) -> str:
        return (self.root / "registry.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_registry(root: Path, *, ca: trustme.CA | None = None, users: dict[str, str] | None = None,
                   token: "TokenServer | None" = None, address: str | None = None) -> RegistryServer:
    """Start ``docker-registry serve`` in ``root``. ``ca``: serve TLS with a leaf issued
    by it; ``users``: htpasswd auth (bcrypt); ``token``: token auth against that server."""
    root.mkdir(parents=True, exist_ok=True)
    address = address or loopback_address()
    port = free_port(address)
    http: dict = {"addr": f"{address}:{port}", "secret": uuid.uuid4().hex}
    ca_file = None
    if ca is not None:
        leaf = ca.issue_cert(address, "localhost")
        leaf.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
        leaf.private_key_pem.write_to_path(str(root / "key.pem"))
        ca_file = root / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        http["tls"] = {"certificate": str(root / "cert.pem"), "key": str(root / "key.pem")}
    config: dict = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")},
                    "delete": {"enabled": True}},
        "http": http,
    }
    if users:
        lines = [f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=4)).decode()}"
                 for u, p in users.items()]
        (root / "htpasswd").write_text("\n".join(lines) + "\n")
        config["auth"] = {"htpasswd": {"realm": "fleet-test", "path": str(root / "htpasswd")}}
    if token is not None:
        config["auth"] = {"token": {"realm": token.realm, "service": token.service,
                                    "issuer": token.issuer,
                                    "rootcertbundle": str(token.cert_file)}}
    cfg = root / "config.yml"
    cfg.write_text(json.dumps(config))  # JSON is YAML
    log = open(root / "registry.log", "wb")
    proc = subprocess.Popen([REGISTRY_BIN, "serve", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    log.close()
    server = RegistryServer(address, port, ca is not None, ca_file, dict(users or {}), proc, root, token)
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited {proc.returncode}: {server.log()[-2000:]}")
        try:
            with socket.create_connection((address, port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"docker-registry not listening on {server.host}: {server.log()[-2000:]}")
            time.sleep(0.05)
    return server


def libtrust_key_id(public_key) -> str:
    """distribution/libtrust ``keyIDFromCryptoKey``: the JWT ``kid`` the registry expects."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i:i + 4] for i in range(0, len(b32), 4))


@dataclass
class TokenRequest:
    method: str
    user: str | None
    scopes: list[str]
    service: str | None
    outcome: int


@dataclass
class TokenServer:
    """Bearer-token service on https://ADDRESS:PORT/token (GET with Basic auth, or POST
    refresh-token grant). Authenticated users get every action they ask for; anonymous
    clients get nothing (so the registry refuses them)."""

    address: str
    port: int
    users: dict[str, str]
    refresh_tokens: dict[str, str]  # token -> user
    cert_file: Path
    service: str = "fleet-test-registry"
    issuer: str = "fleet-test-issuer"
    expires_in: int = 300
    requests: list[TokenRequest] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)  # every token handed out (leak checks)
    _httpd: ThreadingHTTPServer | None = None
    _key: ec.EllipticCurvePrivateKey | None = None

    @property
    def realm(self) -> str:
        return f"https://{self.address}:{self.port}/token"

    def issue(self, user: str, scopes: list[str]) -> str:
        access = []
        for s in scopes:
            parts = s.split(":")
            if len(parts) >= 3:
                access.append({"type": parts[0], "name": ":".join(parts[1:-1]),
                               "actions": parts[-1].split(",")})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user, "aud": self.service, "exp": now + self.expires_in,
                  "nbf": now - 5, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        token = jwt.encode(claims, self._key, algorithm="ES256",
                           headers={"kid": libtrust_key_id(self._key.public_key())})
        self.issued.append(token)
        return token

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()


def start_token_server(root: Path, ca: trustme.CA, users: dict[str, str],
                       refresh_tokens: dict[str, str] | None = None,
                       address: str | None = None) -> TokenServer:
    root.mkdir(parents=True, exist_ok=True)
    address = address or loopback_address()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleet-test token signer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    cert_file = root / "token-signer.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    server = TokenServer(address, 0, dict(users), dict(refresh_tokens or {}), cert_file)
    server._key = key

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urlsplit(self.path)
            q = parse_qs(url.query)
            scopes = q.get("scope", [])
            user = None
            header = self.headers.get("Authorization", "")
            if header.startswith("Basic "):
                u, _, p = base64.b64decode(header[6:]).decode().partition(":")
                if server.users.get(u) != p:
                    server.requests.append(TokenRequest("GET", u, scopes, None, 401))
                    return self._reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
                user = u
            server.requests.append(TokenRequest("GET", user, scopes, (q.get("service") or [None])[0], 200))
            token = server.issue(user or "", scopes if user else [])
            self._reply(200, {"token": token, "expires_in": server.expires_in,
                              "issued_at": datetime.datetime.now(datetime.timezone.utc).isoformat()})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            scopes = " ".join(form.get("scope", [])).split()
            user = server.refresh_tokens.get((form.get("refresh_token") or [""])[0])
            if (form.get("grant_type") or [""])[0] != "refresh_token" or user is None:
                server.requests.append(TokenRequest("POST", None, scopes, None, 401))
                return self._reply(401, {"error": "invalid_grant"})
            server.requests.append(TokenRequest("POST", user, scopes, (form.get("service") or [None])[0], 200))
            self._reply(200, {"access_token": server.issue(user, scopes), "expires_in": server.expires_in})

    leaf = ca.issue_cert(address, "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(ctx)
    httpd = ThreadingHTTPServer((address, 0), Handler)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    httpd.daemon_threads = True
    server.port = httpd.server_address[1]
    server._httpd = httpd
    threading.Thread(target=httpd.serve_forever, name="token-server", daemon=True).start()
    return server


class FlakyServer:
    """A plain-HTTP server on loopback that answers ``GET /v2/`` with a scripted list of
    statuses (then 200 forever), counting hits: for retry tests."""

    def __init__(self, statuses: list[tuple[int, dict[str, str]]]):
        self.statuses = list(statuses)
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, body: bool):
                outer.hits += 1
                status, headers = outer.statuses.pop(0) if outer.statuses else (200, {})
                data = b"{}" if status == 200 else json.dumps(
                    {"errors": [{"code": "UNAVAILABLE" if status >= 500 else "TOOMANYREQUESTS"
                                 if status == 429 else "NAME_UNKNOWN", "message": "scripted"}]}).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_GET(self):
                self._answer(True)

            def do_HEAD(self):
                self._answer(False)

        self.address = loopback_address()
        self._httpd = ThreadingHTTPServer((self.address, 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


# --------------------------------------------------------------------------- fixtures

REGISTRY_USER = "fleet-ci"
REGISTRY_PASSWORD = "s3cr3t-Pa55-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def registry_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory, registry_ca):
    """TLS + htpasswd registry (user REGISTRY_USER / REGISTRY_PASSWORD)."""
    server = start_registry(tmp_path_factory.mktemp("registry-tls"), ca=registry_ca,
                            users={REGISTRY_USER: REGISTRY_PASSWORD})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tls_registry_2(tmp_path_factory, registry_ca):
    """A second TLS + htpasswd registry on another address (copy between registries)."""
    server = start_registry(tmp_path_factory.mktemp("registry-tls2"), ca=registry_ca,
                            users={REGISTRY_USER: REGISTRY_PASSWORD})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory, registry_ca):
    """TLS registry with token auth, and its token server (``.token_server``)."""
    root = tmp_path_factory.mktemp("registry-token")
    token = start_token_server(root / "auth", registry_ca, {REGISTRY_USER: REGISTRY_PASSWORD},
                               refresh_tokens={"refresh-" + uuid.uuid4().hex: REGISTRY_USER})
    server = start_registry(root / "reg", ca=registry_ca, token=token)
    yield server
    server.stop()
    token.stop()


@pytest.fixture(scope="session")
def plain_registry(tmp_path_factory):
    """Plain-HTTP registry without auth."""
    server = start_registry(tmp_path_factory.mktemp("registry-plain"))
    yield server
    server.stop()
