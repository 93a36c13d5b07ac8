"""ApiEngine end to end: a real OpenSSH sshd (tests/sshd.py) on loopback, the host's real
Docker engine behind it, a real TLS + htpasswd registry (tests/registry_fixtures.py).

Logins. sshd opens a ``direct-streamlocal`` socket AS THE LOGIN USER, so the login must be
allowed to connect to ``/var/run/docker.sock`` (root:docker 0660). The shared test login
``fleettest`` is deliberately NOT given that right: other tests rely on it being refused
by the engine (tests/test_facts.py's permission-denied probe). These tests create two
system users of their own, once, as tests/sshd.py creates ``fleettest``:

* ``fleettest-dock`` - member of the ``docker`` group: the streamlocal path works;
* ``fleettest-sudo`` - no socket access; a sudoers drop-in (created by the one test that
  needs it, removed after) lets it run exactly ``docker system dial-stdio`` through
  ``sudo -n``: the become path.

The servers accept these logins through an extra ``AllowUsers`` line (sshd adds up
``AllowUsers`` lines). Every container and image made here carries a unique name and is
removed by the test that made it; nothing else on the host engine is touched.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from fleet.registry import Credentials
from fleet.engine import EngineError, PullAuth
from fleet.engine.cli import CliEngine
from fleet.engine.api import ApiEngine
from fleet.engine.probe import gather_with_api
from fleet.engine.transport import socket_path_from_docker_host, tcp_nodelay
from fleet.facts import gather
from fleet.log import configure
from fleet.platform import Platform
from fleet.playbook import ContainerSpec
from fleet.registry import RegistryClient
from fleet.ssh import CommandTimeout, SSHSettings, Target, connect
from tests.busybox_cache import fetch_busybox
from tests.registry_fixtures import REGISTRY_PASSWORD, REGISTRY_USER
from tests.sshd import start_sshd

ENGINE_SOCKET = "/var/run/docker.sock"
DOCK_USER = "fleettest-dock"
SUDO_USER = "fleettest-sudo"
SUDOERS_DROPIN = Path(f"/etc/sudoers.d/fleettest-dial-stdio-{uuid.uuid4().hex[:8]}")  # sudo skips names with a dot

pytestmark = pytest.mark.skipif(not Path(ENGINE_SOCKET).is_socket(), reason="no Docker engine on this host")


# ------------------------------------------------------------------------- host helpers


class _UnixAdapter(requests.adapters.HTTPAdapter):
    """requests to the HOST engine's socket: the ground truth the device view is compared with."""

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        import urllib3

        class Conn(urllib3.connection.HTTPConnection):
            def connect(self):
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(ENGINE_SOCKET)

        pool = urllib3.HTTPConnectionPool("localhost")
        pool.ConnectionCls = Conn
        return pool


def host_api(path: str, method: str = "GET", **kw):
    with requests.Session() as s:
        s.trust_env = False
        s.mount("http://engine", _UnixAdapter())
        r = s.request(method, "http://engine" + path, timeout=60, **kw)
        return r


def ensure_user(name: str, groups: tuple[str, ...] = ()) -> None:
    """A system login like tests/sshd.py's ``fleettest`` (shell /bin/sh, password ``*``)."""
    with open("/tmp/fleet-test-user.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if subprocess.run(["getent", "passwd", name], capture_output=True).returncode != 0:
            cmd = ["useradd", "--system", "--create-home", "--home-dir", f"/var/lib/{name}", "--shell", "/bin/sh"]
            if groups:
                cmd += ["-G", ",".join(groups)]
            subprocess.run(cmd + [name], check=True, capture_output=True)
            subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)


def processes(user: str | None = None) -> list[str]:
    """Command lines of every process on the host (the device), optionally of one user."""
    cmd = ["ps", "-eo", "user:32,args", "--no-headers"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()
    rows = [ln.split(None, 1) for ln in out if ln.strip()]
    return [r[1] if len(r) > 1 else "" for r in rows if user is None or r[0] == user]


@contextlib.contextmanager
def watch_processes(interval: float = 0.02):
    """Sample every process's command line while the block runs."""
    seen: set[str] = set()
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            seen.update(processes())
            stop.wait(interval)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield seen
    finally:
        stop.set()
        t.join()
        seen.update(processes())


# ------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def engine_users():
    ensure_user(DOCK_USER, ("docker",))
    ensure_user(SUDO_USER)


@pytest.fixture(scope="module")
def docker_wrapper():
    """A ``docker`` first on the logins' PATH (sshd ``SetEnv PATH=``) that logs each start,
    then runs the real CLI: proves which paths start no CLI at all."""
    d = Path(tempfile.mkdtemp(prefix="fleet-dockwrap-", dir="/tmp"))
    d.chmod(0o755)
    log = d / "starts.log"
    log.touch()
    log.chmod(0o666)
    real = shutil.which("docker") or "/usr/bin/docker"
    (d / "docker").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\nexec {real} "$@"\n')
    (d / "docker").chmod(0o755)
    yield d, log
    shutil.rmtree(d, ignore_errors=True)


def _sshd(tmp_path_factory, docker_wrapper, extra: str = ""):
    wrap, _ = docker_wrapper
    return start_sshd(tmp_path_factory.mktemp("sshd"), extra_config=(
        f"AllowUsers {DOCK_USER} {SUDO_USER}\nSetEnv PATH={wrap}:/usr/local/bin:/usr/bin:/bin\n" + extra))


@pytest.fixture(scope="module")
def api_sshd(tmp_path_factory, engine_users, docker_wrapper):
    server = _sshd(tmp_path_factory, docker_wrapper)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def nosl_sshd(tmp_path_factory, engine_users, docker_wrapper):
    server = _sshd(tmp_path_factory, docker_wrapper, "AllowStreamLocalForwarding no\n")
    yield server
    server.stop()


@contextlib.contextmanager
def session(server, user: str, become: bool = False):
    kh = server.workdir / f"known_hosts_{uuid.uuid4().hex[:6]}"
    kh.write_text(server.known_hosts_line + "\n")
    t = Target(name="dev", hostname=server.address, port=server.port, user=user,
               key_files=(server.user_key_path,), known_hosts_files=(kh,), become=become)
    s = connect(t, SSHSettings(retries=1, command_timeout=120))
    try:
        yield s
    finally:
        s.close()


def _tar_layer(busybox: Path, marker: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        m = tarfile.TarInfo("marker")
        m.size = len(marker.encode())
        tar.addfile(m, io.BytesIO(marker.encode()))
        d = tarfile.TarInfo("bin")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(d)
        data = busybox.read_bytes()
        f = tarfile.TarInfo("bin/busybox")
        f.size, f.mode = len(data), 0o755
        tar.addfile(f, io.BytesIO(data))
        for applet in ("sh", "sleep", "echo", "cat"):
            ln = tarfile.TarInfo(f"bin/{applet}")
            ln.type, ln.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(ln)
    return buf.getvalue()


def push_test_image(registry, repo: str, tag: str = "1", marker: str = "") -> dict:
    """Push a one-layer image (the host's static busybox, and a file ``/marker`` that makes
    the layer unique) to ``registry``; returns ``{"ref", "repo", "digest", "arch",
    "layer"}``. Built with fleet's own registry client: the host engine's image store is
    not used to make it."""
    arch = host_api("/version").json()["Arch"]
    debian = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    layer = _tar_layer(fetch_busybox((debian,))[debian], marker or f"{repo}:{tag}")
    gz = gzip.compress(layer, mtime=0)
    config = json.dumps({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh", "-c",
                   'trap "exit 0" TERM; echo "started $GREETING"; echo to-stderr >&2; '
                   'while :; do sleep 1; done']},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }, sort_keys=True).encode()
    with RegistryClient(registry.host, ca=registry.ca_file, credentials=(REGISTRY_USER, REGISTRY_PASSWORD)) as c:
        cfg = c.push_blob(repo, config)
        lay = c.push_blob(repo, gz)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cfg.digest,
                       "size": cfg.size},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": lay.digest,
                        "size": lay.size}],
        }).encode()
        digest = c.put_manifest(repo, tag, manifest, "application/vnd.docker.distribution.manifest.v2+json")
    return {"ref": f"{registry.host}/{repo}:{tag}", "digest": digest, "arch": arch, "repo": f"{registry.host}/{repo}",
            "layer": lay.digest}


@pytest.fixture(scope="module")
def test_image(tls_registry):
    img = push_test_image(tls_registry, f"fleet-test/engine-api-{uuid.uuid4().hex[:8]}")
    yield img
    # remove what the tests pulled into the host engine (this repository only)
    for tagged in (img["ref"], f"{img['repo']}@{img['digest']}"):
        host_api(f"/v1.41/images/{tagged}", "DELETE", params={"force": 1})


@pytest.fixture
def container_name():
    name = f"fleet-apitest-{uuid.uuid4().hex[:8]}"
    yield name
    for n in (name, name + ".old"):
        host_api(f"/v1.41/containers/{n}", "DELETE", params={"force": 1})


def creds(img: dict, user: str = REGISTRY_USER, password: str = REGISTRY_PASSWORD) -> PullAuth:
    return PullAuth(img["ref"].split("/")[0], Credentials(user, password))


def pulled(eng: ApiEngine, img: dict, ref: str | None = None) -> None:
    eng.pull(ref or img["ref"], auth=creds(img))


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# ------------------------------------------------------------------------- streamlocal


def test_streamlocal_full_cycle(api_sshd, test_image, container_name, tmp_path):
    host_version = host_api("/version").json()
    host_info = host_api("/v1.41/info").json()
    name = container_name
    volume = Path(tempfile.mkdtemp(prefix="fleet-apitest-vol-", dir="/tmp"))
    try:
        with session(api_sshd, DOCK_USER) as s, ApiEngine(s, "dev") as eng:
            v = eng.version()
            assert (v.server_version, v.api_version, v.os, v.arch) == (
                host_version["Version"], host_version["ApiVersion"], host_version["Os"], host_version["Arch"])
            assert eng.api_version == host_version["ApiVersion"]
            info = eng.info()
            assert (info.architecture, info.docker_root_dir, info.driver) == (
                host_info["Architecture"], host_info["DockerRootDir"], host_info["Driver"])

            assert eng.image(test_image["ref"]) is None
            with trace_log() as log:
                assert eng.pull(test_image["ref"], platform=Platform.parse(f"linux/{test_image['arch']}"),
                                auth=creds(test_image)) is None
            assert f"Digest: {test_image['digest']}" in log.getvalue()  # the last progress lines, at DEBUG
            img = eng.image(test_image["ref"])
            assert f"{test_image['repo']}@{test_image['digest']}" in img.repo_digests
            assert img.platform_text == f"linux/{test_image['arch']}"
            assert eng.image(f"{test_image['repo']}@{test_image['digest']}").id == img.id  # by digest too
            with pytest.raises(EngineError, match="needs Engine API 1.49; this engine speaks 1.41"):
                eng.image(test_image["ref"], platform=Platform.parse("linux/arm64"))

            spec = ContainerSpec(name=name, env={"GREETING": "hi there", "EMPTY": ""},
                                 ports=("127.0.0.1::8080", "18080-18081:8080-8081/udp"),
                                 volumes=(f"{volume}:/data:ro",), devices=("/dev/null:/dev/fleet-null:r",),
                                 restart="on-failure:2", labels={"app": "x"})
            cid = eng.create_container(name, test_image["ref"], spec, {"io.fleet.test": "1"},
                                       platform=Platform.parse(f"linux/{test_image['arch']}"))
            truth = host_api(f"/v1.41/containers/{name}/json").json()
            assert truth["Id"] == cid
            assert {"GREETING=hi there", "EMPTY="} <= set(truth["Config"]["Env"])
            assert truth["Config"]["Labels"] == {"app": "x", "io.fleet.test": "1"}
            hc = truth["HostConfig"]
            assert hc["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
                                          "8080/udp": [{"HostIp": "", "HostPort": "18080"}],
                                          "8081/udp": [{"HostIp": "", "HostPort": "18081"}]}
            assert hc["Binds"] == [f"{volume}:/data:ro"]
            assert hc["Devices"] == [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/fleet-null",
                                      "CgroupPermissions": "r"}]
            assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}

            eng.start(name)
            assert wait_for(lambda: "started hi there" in eng.logs(name), what="the container's output")
            logs = eng.logs(name, tail=50)
            assert "to-stderr" in logs  # stdout and stderr both, frames removed
            c = eng.container(name)
            assert c.running and c.image_id == img.id and c.labels["io.fleet.test"] == "1"
            code, text = eng.exec(name, ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"])
            assert code == 3 and sorted(text.split()) == ["err", "out"]
            assert eng.exec(name, ["/no/such/tool"])[0] in (126, 127)
            with pytest.raises(CommandTimeout):
                eng.exec(name, ["/bin/sh", "-c", "sleep 30"], timeout=1)
            assert eng.names(name[:-3]) == [name]
            eng.stop(name, 5)
            assert eng.container(name).status == "exited"
            eng.rename(name, name + ".old")
            assert eng.container(name) is None and eng.container(name + ".old") is not None
            eng.remove(name + ".old")
            assert eng.container(name + ".old") is None
            with pytest.raises(EngineError, match="No such container") as err:
                eng.start(name)
            assert err.value.exit_status == 404
            assert eng.remove_image(test_image["ref"]) is True
            assert eng.image(test_image["ref"]) is None
            assert eng.remove_image(test_image["ref"]) is False  # absent: refused, not raised

            counters = eng.counters.to_dict()
        assert counters["path"] == "streamlocal"
        assert counters["remote_processes"] == 0
        # one kept connection, plus one for each exec (the engine ends the connection
        # an exec's output stream ran on; a timed-out one is closed by fleet)
        assert counters["channels_opened"] == 4
        assert counters["api_calls"]["POST /images/create"] == 1
        assert counters["api_calls"]["POST /exec/{id}/start"] == 3
        assert counters["api_call_total"] == sum(counters["api_calls"].values()) >= 24
        assert counters["bytes_sent"] > 2000 and counters["bytes_received"] > 10000
    finally:
        shutil.rmtree(volume, ignore_errors=True)


def test_steps_without_an_api_take_one_process_each(api_sshd):
    """free_space (df) and http_check (wget/curl on the device) have no Engine API: one
    exec channel each, counted."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Ok(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer((api_sshd.address, 0), Ok)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with session(api_sshd, DOCK_USER) as s, ApiEngine(s, "dev") as eng:
            root = eng.info().docker_root_dir
            space = eng.free_space(root)
            assert space.path == root and space.available_kib > 0
            ok, detail = eng.http_check(f"http://{api_sshd.address}:{httpd.server_address[1]}/health")
            assert ok, detail
            assert eng.counters.remote_processes == 2 and eng.counters.channels_opened == 3
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_socket_path_of_a_declared_docker_host(api_sshd, nosl_sshd):
    """DOCKER_HOST=unix://PATH is honoured on both paths (a symlink to the engine's socket
    stands in for a rootless or relocated engine)."""
    link = Path(tempfile.mkdtemp(prefix="fleet-dockhost-", dir="/tmp"))
    link.chmod(0o755)
    try:
        (link / "engine.sock").symlink_to(ENGINE_SOCKET)
        path = socket_path_from_docker_host(f"unix://{link}/engine.sock")
        assert path == f"{link}/engine.sock"
        for server, via in ((api_sshd, "streamlocal"), (nosl_sshd, "dial-stdio")):
            with session(server, DOCK_USER) as s, ApiEngine(s, "dev", socket_path=path) as eng:
                assert eng.version().api_version
                assert eng.path == via
                assert path in eng.path_reason or via == "dial-stdio"
        with session(api_sshd, DOCK_USER) as s, ApiEngine(s, "dev", socket_path="/nonexistent/docker.sock") as eng:
            with pytest.raises(EngineError, match="exited 1: .*nonexistent/docker.sock"):
                eng.version()  # streamlocal refused, and dial-stdio to the same path fails too
    finally:
        shutil.rmtree(link, ignore_errors=True)


# ------------------------------------------------------------------------- dial-stdio


def test_dial_stdio_fallback_one_process_for_many_calls(nosl_sshd, test_image, container_name, caplog,
                                                       docker_wrapper):
    _, starts = docker_wrapper
    name = container_name
    with session(nosl_sshd, DOCK_USER) as s, ApiEngine(s, "dev", api_version="1.41") as eng:
        before = starts.read_text().count("system dial-stdio")
        assert eng.version().arch
        assert eng.info().architecture
        # deploy pulls by REPO:TAG@DIGEST (the digest decides; as with the CLI, no tag is made)
        ref = f"{test_image['ref']}@{test_image['digest']}"
        pulled(eng, test_image, ref)
        for _ in range(10):
            assert eng.image(ref) is not None
            assert eng.container(name) is None
        eng.create_container(name, ref, ContainerSpec(name=name), {"io.fleet.test": "1"})
        eng.start(name)
        wait_for(lambda: "started" in eng.logs(name), what="the container's output")
        assert name in eng.names("fleet-apitest-")
        # the one dial-stdio process is alive on the device, as the login user
        assert [p for p in processes(DOCK_USER) if p.endswith("docker system dial-stdio")]
        c = eng.counters
        assert c.path == "dial-stdio"
        assert "refused a direct-streamlocal@openssh.com channel to /var/run/docker.sock" in c.path_reason
        assert c.api_call_total >= 25
        assert c.remote_processes == 1 and c.channels_opened == 1
        assert starts.read_text().count("system dial-stdio") == before + 1
        # an exec's output stream ends its connection: the next call starts a second process
        assert eng.exec(name, ["/bin/sh", "-c", "echo hi"]) == (0, "hi")
        eng.stop(name, 5)
        eng.rename(name, name + ".old")
        eng.remove(name + ".old")
        assert c.remote_processes == 2 and c.channels_opened == 2
    # paramiko's "Secsh channel N open FAILED" ERROR line is an expected decision here
    assert "open FAILED" not in caplog.text


def test_become_through_sudo_dial_stdio(api_sshd):
    docker_cli = shutil.which("docker", path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    assert shutil.which("sudo") and docker_cli, "needs sudo and a docker CLI on the host (.ci/run installs them)"
    SUDOERS_DROPIN.write_text(f"{SUDO_USER} ALL=(root) NOPASSWD: {docker_cli} system dial-stdio\n")
    SUDOERS_DROPIN.chmod(0o440)
    try:
        assert subprocess.run(["visudo", "-cq", "-f", str(SUDOERS_DROPIN)]).returncode == 0
        with session(api_sshd, SUDO_USER, become=True) as s:
            eng = ApiEngine(s, "dev", become=True)
            assert eng.version().server_version
            assert eng.info().docker_root_dir
            assert eng.path == "dial-stdio" and "through sudo -n" in eng.path_reason
            assert eng.counters.remote_processes == 1
            assert [p for p in processes("root") if "docker system dial-stdio" in p]
            eng.close()
    finally:
        SUDOERS_DROPIN.unlink(missing_ok=True)
    # without the drop-in sudo refuses, and the error says so in sudo's own words
    with session(api_sshd, SUDO_USER, become=True) as s, ApiEngine(s, "dev", become=True) as eng:
        with pytest.raises(EngineError, match="sudo -n docker system dial-stdio` exited 1: .*password is required"):
            eng.version()


# ------------------------------------------------------------------------- credentials


@contextlib.contextmanager
def trace_log():
    """fleet's -vvv logging into a buffer; the loggers' previous state restored after."""
    saved = [(lg, lg.level, lg.propagate, list(lg.handlers)) for lg in
             (logging.getLogger("fleet"), logging.getLogger("paramiko"))]
    buf = io.StringIO()
    configure(3, buf)
    try:
        yield buf
    finally:
        for lg, level, propagate, handlers in saved:
            lg.setLevel(level)
            lg.propagate = propagate
            lg.handlers[:] = handlers


@pytest.mark.parametrize("server", ["api_sshd", "nosl_sshd"])
def test_wrong_credentials_clear_error_and_no_secret_anywhere(server, request, test_image):
    srv = request.getfixturevalue(server)
    secret = "wr0ng-" + uuid.uuid4().hex
    registry = test_image["ref"].split("/")[0]
    auth = PullAuth(registry, Credentials("fleet-intruder", secret))
    forms = {secret, base64.b64encode(f"fleet-intruder:{secret}".encode()).decode(),
             base64.urlsafe_b64encode(json.dumps({"username": "fleet-intruder", "password": secret,
                                                  "serveraddress": registry}).encode()).decode()}
    with trace_log() as log:
        with session(srv, DOCK_USER) as s, ApiEngine(s, "dev") as eng:
            with watch_processes() as seen, pytest.raises(EngineError) as err:
                eng.pull(test_image["ref"], auth=auth, timeout=120)
            path = eng.path
    message = str(err.value)
    assert f"registry {registry}" in message and "user 'fleet-intruder'" in message
    assert "unauthorized" in message.lower() or "authentication required" in message.lower()
    text = log.getvalue()
    assert "engine API POST /v1.41/images/create" in text  # the -vv/-vvv log was on
    assert "'X-Registry-Auth': '<redacted>'" in text
    for form in forms:
        assert form not in message and form not in text
        assert not [p for p in seen if form in p], "a secret was in a process's arguments"
    if path == "dial-stdio":
        assert [p for p in seen if p.endswith("docker system dial-stdio")]  # the sampler did see processes


def test_pull_error_inside_the_progress_stream(api_sshd, tls_registry):
    """The registry serves the manifest, then loses the layer: the engine reports that in
    the 200 progress stream (``errorDetail``), not as an HTTP status."""
    img = push_test_image(tls_registry, f"fleet-test/engine-api-broken-{uuid.uuid4().hex[:8]}")
    repo = img["repo"].split("/", 1)[1]
    r = requests.delete(f"{tls_registry.url}/v2/{repo}/blobs/{img['layer']}", verify=str(tls_registry.ca_file),
                        auth=(REGISTRY_USER, REGISTRY_PASSWORD), timeout=30)
    assert r.status_code == 202, r.text
    try:
        with session(api_sshd, DOCK_USER) as s, ApiEngine(s, "dev") as eng:
            with pytest.raises(EngineError) as err:
                pulled(eng, img)
            assert eng.image(img["ref"]) is None
        e = err.value
        assert e.exit_status == 1 and e.command == f"pull {img['ref']}"
        assert f"registry {tls_registry.host}, user '{REGISTRY_USER}'" in str(e)
        assert "unknown blob" in str(e) or "blob unknown" in str(e)
    finally:
        host_api(f"/v1.41/images/{img['ref']}", "DELETE", params={"force": 1})


# ------------------------------------------------------------------------- probe


def test_probe_reads_the_engine_through_the_api_without_the_cli(api_sshd, docker_wrapper):
    _, starts = docker_wrapper
    with session(api_sshd, DOCK_USER) as s:
        cli_facts = gather(s, False)
        before = starts.read_text().count("\n")
        probe = gather_with_api(s, False)
        assert starts.read_text().count("\n") == before, "the API probe started the docker CLI"
        assert probe.engine_via == "api"
        assert probe.facts == cli_facts  # same keys, same text: detection is unchanged
        assert {"engine_arch", "engine_os", "engine_version", "engine_info_arch"} <= probe.facts.keys()
        c = probe.counters.to_dict()
        assert c["remote_processes"] == 1 and c["channels_opened"] == 2
        assert c["api_calls"] == {"GET /info": 1, "GET /version": 1}
        # the engine handed back is ready: version known, connection open
        assert probe.engine.version() is probe.version
        assert probe.engine.image("fleet-test/no-such-image:0") is None
        assert probe.engine.counters.channels_opened == 2
        probe.engine.close()


def test_probe_falls_back_to_the_cli_when_the_socket_is_refused(api_sshd, nosl_sshd, docker_wrapper):
    _, starts = docker_wrapper
    for server, user in ((nosl_sshd, DOCK_USER), (api_sshd, SUDO_USER)):
        with session(server, user) as s:
            before = starts.read_text().count("\n")
            probe = gather_with_api(s, False)
            assert probe.engine_via == "cli" and probe.engine is None
            assert "refused" in probe.reason
            assert starts.read_text().count("\n") > before  # the script's docker section ran
            assert probe.facts == gather(s, False)
            if user == SUDO_USER:
                assert "permission denied" in probe.facts["engine_error"]


def test_probe_reports_an_engine_that_accepts_but_does_not_answer(api_sshd):
    """A socket that accepts and answers garbage (a wedged or foreign daemon): the facts say
    so in ``engine_error``, as the CLI path does for an engine it cannot reach."""
    d = Path(tempfile.mkdtemp(prefix="fleet-badsock-", dir="/tmp"))
    d.chmod(0o755)
    path = str(d / "not-an-engine.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o777)
    srv.listen(4)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(b"SSH-2.0-not-docker\r\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with session(api_sshd, DOCK_USER) as s:
            probe = gather_with_api(s, False, socket_path=path)
        assert probe.engine_via == "api" and probe.engine is None
        assert "did not answer" in probe.reason
        assert probe.facts["engine_error"].startswith("engine API call GET /version failed")
        assert not {"engine_arch", "engine_os", "engine_version", "engine_info_arch"} & probe.facts.keys()
        assert probe.facts["uname_s"] == "Linux"
    finally:
        stop.set()
        t.join()
        srv.close()
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------- measurement


class _CountingSession:
    """A session whose ``run`` calls (one exec channel, one remote process each) are counted."""

    def __init__(self, session):
        self._s, self.runs = session, 0

    def run(self, command, **kw):
        self.runs += 1
        return self._s.run(command, **kw)


def _time_ops(eng, name: str, ref: str, n: int, mix: str) -> float:
    """Wall time of ``n`` sequential operations: ``mix`` "mixed" cycles version, info,
    image, container, names, logs; "inspect" is ``container(name)`` only."""
    ops = [lambda: eng.container(name)] if mix == "inspect" else [
        lambda: eng.version(), lambda: eng.info(), lambda: eng.image(ref), lambda: eng.container(name),
        lambda: eng.names("fleet-apitest-"), lambda: eng.logs(name, 5)]
    t0 = time.perf_counter()
    for i in range(n):
        ops[i % len(ops)]()
    return time.perf_counter() - t0


@pytest.fixture(scope="module")
def plain_sshds(tmp_path_factory, engine_users):
    """Servers without the PATH wrapper (its extra sh start would tilt the CLI's timings)."""
    servers = [start_sshd(tmp_path_factory.mktemp("sshd"), extra_config=f"AllowUsers {DOCK_USER}\n" + extra)
               for extra in ("", "AllowStreamLocalForwarding no\n")]
    yield servers
    for server in servers:
        server.stop()


def _children_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid``'s waited-for descendants: for an sshd
    listener, everything its connections ran on the device once they have ended."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def _has_children(pid: int) -> bool:
    return any(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def _measured(server, user: str, work) -> tuple[float, float, Any]:
    """Run ``work(session)`` on a fresh session; returns (wall seconds of work, device CPU
    seconds of the whole connection, work's result)."""
    pid = server.proc.pid
    cpu0 = _children_cpu(pid)
    with session(server, user) as s:
        t0 = time.perf_counter()
        result = work(s)
        wall = time.perf_counter() - t0
    wait_for(lambda: not _has_children(pid), 10, "the connection's sshd to exit")
    cpu = _children_cpu(pid)
    for _ in range(20):  # the listener adds a child's times when it reaps it
        time.sleep(0.1)
        cpu, before = _children_cpu(pid), cpu
        if cpu == before:
            break
    return wall, cpu - cpu0, result


def test_measure_cli_vs_api(plain_sshds, test_image, container_name, capsys):
    """N=20 sequential engine operations through the docker CLI (fleet.engine.cli.CliEngine) and
    through the API (streamlocal; dial-stdio), one SSH connection each, and the probe both
    ways: wall time on the controller and CPU time on the device (the test sshd's
    descendants, SSH crypto included). "+NODELAY" rows: the CLI path with TCP_NODELAY on
    the SSH socket, which the API path sets (fleet.engine.transport.tcp_nodelay). Times
    are printed, not asserted; the number of remote processes is asserted."""
    n, ref, name = 20, test_image["ref"], container_name
    sl, nosl = plain_sshds
    with session(sl, DOCK_USER) as s, ApiEngine(s, "dev") as eng:
        pulled(eng, test_image)
        eng.create_container(name, ref, ContainerSpec(name=name), {})

    def cli(mix, nodelay=False):
        def work(s):
            if nodelay:
                assert tcp_nodelay(s.transport)
            counting = _CountingSession(s)
            wall = _time_ops(CliEngine(counting, "dev"), name, ref, n, mix)
            return wall, counting.runs, None
        return work

    def api(mix):
        def work(s):
            with ApiEngine(s, "dev", api_version="1.41") as eng:
                wall = _time_ops(eng, name, ref, n, mix)
                return wall, eng.counters.remote_processes, eng.counters.to_dict()
        return work

    rows = []
    for mix in ("mixed", "inspect"):
        for label, server, work in ((f"docker CLI, {mix}", sl, cli(mix)),
                                    (f"docker CLI+NODELAY, {mix}", sl, cli(mix, True)),
                                    (f"API streamlocal, {mix}", sl, api(mix)),
                                    (f"API dial-stdio, {mix}", nosl, api(mix))):
            _, cpu, (wall, procs, counters) = _measured(server, DOCK_USER, work)
            rows.append((label, wall, cpu, procs, counters))

    def probe_cli(s):
        gather(s, False)

    def probe_cli_nodelay(s):
        assert tcp_nodelay(s.transport)
        gather(s, False)

    def probe_api(s):
        p = gather_with_api(s, False)
        assert p.engine_via == "api"
        p.engine.close()

    probes = {"probe, CLI": [], "probe, CLI+NODELAY": [], "probe, API": []}
    for _ in range(5):
        for label, work in (("probe, CLI", probe_cli), ("probe, CLI+NODELAY", probe_cli_nodelay),
                            ("probe, API", probe_api)):
            probes[label].append(_measured(sl, DOCK_USER, work)[:2])
    with capsys.disabled():
        print(f"\nN={n} sequential engine operations on one SSH connection (loopback sshd, host engine 20.10);"
              f" device CPU = the connection's sshd and everything it ran")
        for label, wall, cpu, procs, counters in rows:
            extra = "" if counters is None else (f"; {counters['channels_opened']} channel(s), "
                                                 f"{counters['bytes_sent']} B sent, "
                                                 f"{counters['bytes_received']} B received")
            print(f"  {label:27s} wall {wall * 1000:7.1f} ms ({wall * 1000 / n:6.2f} ms/op), device CPU "
                  f"{cpu * 1000:6.0f} ms; remote processes {procs}{extra}")
        for label, runs in probes.items():
            wall = sorted(r[0] for r in runs)[len(runs) // 2]
            cpu = sorted(r[1] for r in runs)[len(runs) // 2]
            print(f"  {label:27s} median of {len(runs)}: wall {wall * 1000:6.1f} ms, device CPU {cpu * 1000:4.0f} ms")
    assert {r[0]: r[3] for r in rows} == {
        "docker CLI, mixed": n, "docker CLI+NODELAY, mixed": n, "API streamlocal, mixed": 0,
        "API dial-stdio, mixed": 1, "docker CLI, inspect": n, "docker CLI+NODELAY, inspect": n,
        "API streamlocal, inspect": 0, "API dial-stdio, inspect": 1}
