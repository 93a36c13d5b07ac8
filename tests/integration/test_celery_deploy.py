"""Deploy, verify and rollback through site workers: the same commands, the same reports.

Real parts: two real sshd "devices", each in its own mount namespace where
``/var/run/docker.sock`` is its OWN real Docker engine (a private ``dockerd`` started here
in a network namespace of its own: own data root, no bridge, no iptables), logged into as ``fleettest-dock`` (docker group)
with its own device-side state folder (sshd ``SetEnv FLEET_STATE_DIR``); a real registry
with htpasswd auth; a real Redis; two real ``fleet worker --site`` processes (sites a and
b), whose environment holds the registry credentials; the ``fleet`` CLI as a subprocess.

The same sequence (deploy v1, verify, deploy v2, rollback) runs once with ``--executor
celery --broker ...`` and once locally, each on freshly emptied engines: the ``--json``
documents are equal except who ran the work (``worker``/``site``) and what a run measures
(times, the device's free space, the connection counters); the history rows name the
worker and site. Then the deploy of v1 is delivered again with its deployment id (what a
broker does when a worker dies mid-job): the device reports it, never swaps twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.busybox_cache import fetch_busybox
from tests.celery_fixtures import FLEET, redis_server, signers, worker  # noqa: F401
from tests.integration.test_engine_api import DOCK_USER, ENGINE_SOCKET, ensure_user
from tests.registry_fixtures import start_registry
from tests.sshd import in_netns, keygen, netns, start_sshd

pytestmark = pytest.mark.skipif(not Path(ENGINE_SOCKET).is_socket() or not shutil.which("dockerd"),
                                reason="no Docker engine on this host")

REG_USER = "fleet-site"
REG_PASS = "Pw-site-" + uuid.uuid4().hex[:10]
APP = f"cdep{uuid.uuid4().hex[:6]}"
SITES = {"dev-a": "a", "dev-b": "b"}


class Forwarder:
    """TCP from ``address:port`` inside network namespace ``ns`` to the same address and
    port on this machine's loopback: how an engine in its own namespace reaches the
    test's registry under the very name the controller pushes to."""

    def __init__(self, ns: str, address: str, port: int):
        def listen():
            s = socket.socket()
            s.bind((address, port))
            s.listen(16)
            return s

        self.target = (address, port)
        self.listener = in_netns(ns, listen)  # the socket stays in ns; this process does not
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                inside, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                outside = socket.create_connection(self.target, timeout=10)
            except OSError:
                inside.close()
                continue
            for a, b in ((inside, outside), (outside, inside)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


class PrivateEngine:
    """A real dockerd of its own, in its own network namespace (loopback only; so its
    ``--bridge=none``, which deletes a ``docker0`` interface, touches nothing of this
    machine's), its socket, data root and exec root in a short /tmp folder (socket paths
    are limited to 107 bytes), socket group ``docker``; the test registry forwarded into
    its namespace under its own address."""

    def __init__(self, registry):
        self.dir = Path(tempfile.mkdtemp(prefix="fdk-", dir="/tmp"))
        self.socket = self.dir / "docker.sock"
        self._ns = contextlib.ExitStack()
        self.ns = self._ns.enter_context(netns())
        self.forwarder = Forwarder(self.ns, registry.address, registry.port)
        self.log = open(self.dir / "dockerd.log", "ab")
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.ns}", "--", shutil.which("dockerd"), "--host", f"unix://{self.socket}",
             "--data-root", str(self.dir / "data"), "--exec-root", str(self.dir / "x"),
             "--pidfile", str(self.dir / "docker.pid"), "--bridge=none", "--iptables=false", "--ip6tables=false",
             "--ip-masq=false", "--ip-forward=false", "--userland-proxy=false", "--group", "docker",
             "--log-level", "warn"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while self.docker("version", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("private dockerd did not start: "
                                   + (self.dir / "dockerd.log").read_text(errors="replace")[-2000:])
            time.sleep(0.2)

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "-H", f"unix://{self.socket}", *args], capture_output=True, text=True,
                              check=check, timeout=120)

    def empty(self) -> None:
        """No container, no image: as a device that never ran the app."""
        ids = self.docker("ps", "-aq").stdout.split()
        if ids:
            self.docker("rm", "-f", *ids)
        images = self.docker("images", "-aq").stdout.split()
        if images:
            self.docker("rmi", "-f", *sorted(set(images)))

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.empty()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()
        self.forwarder.close()
        self._ns.close()
        subprocess.run(["umount", "-R", "-l", str(self.dir / "data")], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    server = start_registry(tmp_path_factory.mktemp("cdeploy-registry"), users={REG_USER: REG_PASS})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def engines(registry):
    made: list[PrivateEngine] = []
    try:
        for _ in SITES:
            made.append(PrivateEngine(registry))
        yield dict(zip(SITES, made))
    finally:
        for e in made:
            e.stop()


@pytest.fixture(scope="module")
def devices(tmp_path_factory, engines):
    """One sshd per device in its own mount namespace, its engine's socket bound over
    /var/run/docker.sock there; an inventory naming each device's site."""
    ensure_user(DOCK_USER, ("docker",))
    base = tmp_path_factory.mktemp("cdeploy-devices")
    key = base / "login_ed25519"
    keygen(key, "fleet-celery-deploy")
    servers = {}
    states = {}
    try:
        for host, engine in engines.items():
            state = Path(tempfile.mkdtemp(prefix=f"fleet-state-{host}-", dir="/tmp"))
            shutil.chown(state, DOCK_USER)
            states[host] = state
            wrap = ["unshare", "-m", "--propagation", "private", "--", "sh", "-c",
                    f'mount --bind "$0" /run/docker.sock && exec "$@"', str(engine.socket)]
            servers[host] = start_sshd(base / host, user_key_path=key, wrap=wrap,
                                       extra_config=f"AllowUsers {DOCK_USER}\nSetEnv FLEET_STATE_DIR={state}\n")
        hosts = {h: {"ansible_host": s.address, "ansible_port": s.port, "ansible_user": DOCK_USER,
                     "ansible_ssh_private_key_file": str(key), "fleet_site": SITES[h]} for h, s in servers.items()}
        inv = base / "inventory.yml"
        inv.write_text(yaml.safe_dump({"all": {"children": {"boards": {"hosts": hosts}}}}, sort_keys=False))
        kh = base / "known_hosts"
        kh.write_text("".join(s.known_hosts_line + "\n" for s in servers.values()))
        yield {"inventory": inv, "known_hosts": kh, "states": states, "servers": servers}
    finally:
        for s in servers.values():
            s.stop()
        for d in states.values():
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def playbooks(tmp_path_factory, registry):
    """v1 and v2 of a tiny app built from static busybox (its command traps SIGTERM so a
    swap does not wait out the stop timeout); v2 differs by a label only."""
    base = tmp_path_factory.mktemp("cdeploy-app")
    ctx = base / "ctx"
    ctx.mkdir()
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    shutil.copy(fetch_busybox((arch,))[arch], ctx / "busybox")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY busybox /bin/busybox\nARG V\nLABEL io.example.version=$V\n")
    out = {}
    for v in ("1", "2"):
        doc = {"name": APP, "image": f"{registry.host}/fleettest/{APP}:{v}",
               "source": {"build": {"context": "ctx", "args": {"V": v}}}, "platforms": "auto",
               "registry": {"username_env": "FLEET_TEST_REG_USER", "password_env": "FLEET_TEST_REG_PASS",
                            "insecure": True},
               "container": {"name": APP, "network_mode": "none",
                             "command": ["/bin/busybox", "sh", "-c",
                                         "trap 'exit 0' TERM; /bin/busybox sleep 3600 & wait"]},
               "health": {"running": 1, "timeout": 30, "interval": 1}}
        p = base / f"v{v}.yaml"
        p.write_text(yaml.safe_dump(doc, sort_keys=False))
        out[v] = p
    yield out
    ids = subprocess.run(["docker", "image", "ls", "-q", f"{registry.host}/fleettest/{APP}"], capture_output=True,
                         text=True).stdout.split()
    if ids:  # the host engine built them
        subprocess.run(["docker", "rmi", "-f", *sorted(set(ids))], capture_output=True)


@pytest.fixture(scope="module")
def workers(tmp_path_factory, redis_server, signers, devices):
    """A worker for each site, with the registry credentials in ITS environment."""
    tmp = tmp_path_factory.mktemp("cdeploy-workers")
    env = {"FLEET_TEST_REG_USER": REG_USER, "FLEET_TEST_REG_PASS": REG_PASS}
    ws = [worker(tmp, s, redis_server.url, signers, known_hosts=devices["known_hosts"], env=env, max_deadline=3600)
          for s in ("a", "b")]
    try:
        for w in ws:
            w.start(ready=False)
        for w in ws:
            w.wait_for(" ready", 60)
        yield {w.site: w for w in ws}
    finally:
        for w in ws:
            w.stop()


def fleet(args: list[str], *, home: Path, history: Path, extra_env: dict[str, str] | None = None) -> tuple[int, list]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
           "FLEET_HISTORY": str(history), "FLEET_REPORT_DIR": str(home / "reports"),
           "FLEET_TEST_REG_USER": REG_USER, "FLEET_TEST_REG_PASS": REG_PASS, "COLUMNS": "200"}
    env.update(extra_env or {})
    r = subprocess.run([FLEET, *args, "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert r.stdout.strip(), r.stderr
    return r.returncode, json.loads(r.stdout)


MEASURED = ("worker", "site", "seconds", "cost", "free_bytes")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")
# the device transaction reports how long the app had run when it was judged healthy:
# "running 1 s without a restart" on a quiet machine, 2 s when the check loop was slowed
RAN = re.compile(r"\brunning \d+ s without a restart")


def normalized(docs: list[dict], ids: dict[str, str]) -> list[dict]:
    """The documents without what differs from run to run by nature (who ran it, times and
    timestamps, how long the app had run when judged healthy, free space, connection
    counters) and with each run's deployment ids named by order."""
    text = json.dumps([{k: v for k, v in d.items() if k not in MEASURED} for d in docs], sort_keys=True)
    for real, name in ids.items():
        text = text.replace(real, name)
    return json.loads(RAN.sub("running N s without a restart", TIMESTAMP.sub("TIME", text)))


def sequence(pbs: dict[str, Path], devices, home: Path, history: Path, executor: list[str],
             extra_env: dict[str, str] | None = None) -> tuple[list, dict[str, str]]:
    """deploy v1, verify v1, deploy v2, rollback: each command's exit status and JSON."""
    common = ["-i", str(devices["inventory"]), "--known-hosts", str(devices["known_hosts"]), *executor]
    steps = []
    ids: dict[str, str] = {}
    for args in (["deploy", str(pbs["1"])], ["verify", str(pbs["1"])], ["deploy", str(pbs["2"])],
                 ["rollback", str(pbs["2"])]):
        code, docs = fleet([*args, *common], home=home, history=history, extra_env=extra_env)
        steps.append((args[0], code, docs))
        for d in docs:
            if d.get("deployment") and d["deployment"] not in ids:
                ids[d["deployment"]] = f"DEPLOYMENT-{len(ids) + 1}"
    return steps, ids


def test_deploy_verify_rollback_through_site_workers_report_as_a_local_run(
        engines, devices, playbooks, workers, redis_server, signers, tmp_path):
    def reset():
        for host, e in engines.items():
            e.empty()
            for child in devices["states"][host].iterdir():
                shutil.rmtree(child, ignore_errors=True)

    celery_home, local_home = tmp_path / "celery", tmp_path / "local"
    for h in (celery_home, local_home):
        (h / ".ssh").mkdir(parents=True)
    sign = {"FLEET_CELERY_KEY": str(signers.controller.key), "FLEET_CELERY_CERT": str(signers.controller.cert),
            "FLEET_CELERY_CERT_STORE": str(signers.controller_store), "FLEET_BROKER_URL": redis_server.url}
    reset()
    remote, remote_ids = sequence(playbooks, devices, celery_home, tmp_path / "celery.sqlite", ["--executor", "celery"],
                                  sign)
    for name, code, docs in remote:
        assert code == 0, (name, [(d["host"], d["result"], d["reason"], d["actions"]) for d in docs])
        assert {(d["host"], d["worker"], d["site"]) for d in docs} == {
            ("dev-a", "fleet-a@test", "a"), ("dev-b", "fleet-b@test", "b")}, name
    deploy1, verify1, deploy2, back = (docs for _, _, docs in remote)
    assert {d["result"] for d in deploy1 + deploy2} == {"verified"}
    assert {d["result"] for d in verify1} == {"verified"}
    assert {d["result"] for d in back} == {"verified"}
    assert {d["config_digest"] for d in back} == {d["config_digest"] for d in deploy1}  # v1 again
    assert any(a.startswith("pull ") for d in deploy1 for a in d["actions"])  # pulled with the site's credentials

    delivered_again(back[0]["deployment"], playbooks["1"], devices, engines, redis_server, signers)

    reset()
    local, local_ids = sequence(playbooks, devices, local_home, tmp_path / "local.sqlite", [])
    for (name, code, docs), (_, rcode, rdocs) in zip(local, remote):
        assert code == rcode == 0
        assert {(d["worker"], d["site"]) for d in docs} == {("local", None)}
        assert normalized(docs, local_ids) == normalized(rdocs, remote_ids), name

    # the history of the Celery run names who did each device's work; the local one says local
    import sqlite3

    with sqlite3.connect(tmp_path / "celery.sqlite") as db:
        rows = set(db.execute("SELECT host, worker, site FROM devices"))
    assert rows == {("dev-a", "fleet-a@test", "a"), ("dev-b", "fleet-b@test", "b")}
    with sqlite3.connect(tmp_path / "local.sqlite") as db:
        assert set(db.execute("SELECT worker, site FROM devices")) == {("local", None)}


def delivered_again(deployment: str, playbook: Path, devices, engines, redis_server, signers) -> None:
    """The deploy job of ``deployment`` (which the devices run) delivered a second time, as
    a broker does after its worker died mid-job: each device reports that this deployment
    was already applied and verifies it; no container is replaced, no second transaction."""
    from fleet import pipeline
    from fleet.deploy import DeployOptions
    from fleet.executor import CeleryExecutor
    from fleet.playbook import load_playbook
    from fleet.publish import read_published
    from fleet.selection import DeviceSelection
    from fleet.ssh import SSHSettings
    from tests.celery_fixtures import controller_signing

    before = {h: e.docker("inspect", "-f", "{{.Id}}", APP).stdout.strip() for h, e in engines.items()}
    audits = {h: (devices["states"][h] / "apps" / APP / "audit.log").read_text() for h in engines}
    pb = load_playbook(playbook)
    sel = DeviceSelection((str(devices["inventory"]),), None, 5, SSHSettings(known_hosts=(devices["known_hosts"],)))
    ex = CeleryExecutor(redis_server.url, signing=controller_signing(signers))
    old = {k: os.environ.get(k) for k in ("FLEET_TEST_REG_USER", "FLEET_TEST_REG_PASS")}
    os.environ.update(FLEET_TEST_REG_USER=REG_USER, FLEET_TEST_REG_PASS=REG_PASS)
    try:
        with pipeline.Run(sel, ex) as run:
            out = pipeline.deploy(run, pb, options=DeployOptions(deployment=deployment, forks=5),
                                  published=read_published(pb.image, pb.registry))
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    for rep in out.devices:
        assert rep.result.value == "verified", (rep.host, rep.reason, rep.actions)
        assert rep.worker == f"fleet-{SITES[rep.host]}@test"
        assert any("already applied on the device by an earlier delivery" in a for a in rep.actions), rep.actions
        assert not any(a.startswith(("pull ", "create ")) for a in rep.actions), rep.actions
    assert {h: e.docker("inspect", "-f", "{{.Id}}", APP).stdout.strip() for h, e in engines.items()} == before
    assert {h: (devices["states"][h] / "apps" / APP / "audit.log").read_text() for h in engines} == audits


def test_a_deadline_above_the_workers_is_a_usage_error_before_anything(devices, playbooks, workers, redis_server,
                                                                         signers, engines, tmp_path):
    """A deploy whose jobs may take longer than the site workers accept stops before the
    publish and before any device is touched: exit 2, naming the values."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    sign = {"FLEET_CELERY_KEY": str(signers.controller.key), "FLEET_CELERY_CERT": str(signers.controller.cert),
            "FLEET_CELERY_CERT_STORE": str(signers.controller_store), "FLEET_BROKER_URL": redis_server.url}
    before = {h: e.docker("ps", "-aq").stdout for h, e in engines.items()}
    code, doc = fleet(["deploy", str(playbooks["2"]), "-i", str(devices["inventory"]), "--known-hosts",
                       str(devices["known_hosts"]), "--executor", "celery", "--max-deadline", "600"],
                      home=home, history=tmp_path / "h.sqlite", extra_env=sign)
    assert code == 2 and doc["exit_status"] == 2, doc
    assert re.search(r"dev-a: its deploy job may take up to \d+ s, more than the site workers accept "
                     r"\(--max-deadline 600 s\)", doc["error"]), doc["error"]
    assert {h: e.docker("ps", "-aq").stdout for h, e in engines.items()} == before


def test_broker_down_or_a_device_without_site_stops_before_anything(devices, playbooks, engines, signers, tmp_path):
    """With the broker down: exit 1 and the --json error document, nothing sent, no device
    touched, no run in the history. A device without fleet_site: exit 2 naming it (the
    inventory is fine for --local-fallback)."""
    import sqlite3

    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    sign = {"FLEET_CELERY_KEY": str(signers.controller.key), "FLEET_CELERY_CERT": str(signers.controller.cert),
            "FLEET_CELERY_CERT_STORE": str(signers.controller_store)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"redis://127.0.0.1:{s.getsockname()[1]}/0"  # nothing listens there once closed
    before = {h: e.docker("ps", "-aq").stdout for h, e in engines.items()}
    common = ["-i", str(devices["inventory"]), "--known-hosts", str(devices["known_hosts"])]
    for args in (["probe"], ["deploy", str(playbooks["1"])], ["verify", str(playbooks["1"])]):
        code, doc = fleet([*args, *common, "--broker", down], home=home, history=tmp_path / "h.sqlite",
                          extra_env=sign)
        assert code == 1 and doc["exit_status"] == 1 and doc["kind"] == "failure:BrokerUnavailable", doc
        assert "is not reachable" in doc["error"] and "nothing was sent" in doc["error"], doc
    assert {h: e.docker("ps", "-aq").stdout for h, e in engines.items()} == before
    with sqlite3.connect(tmp_path / "h.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone() == (0,)

    inv = yaml.safe_load(devices["inventory"].read_text())
    del inv["all"]["children"]["boards"]["hosts"]["dev-b"]["fleet_site"]
    siteless = tmp_path / "siteless.yml"
    siteless.write_text(yaml.safe_dump(inv))
    code, doc = fleet(["deploy", str(playbooks["1"]), "-i", str(siteless), "--known-hosts", str(devices["known_hosts"]),
                       "--broker", down], home=home, history=tmp_path / "h.sqlite", extra_env=sign)
    assert code == 2, doc
    assert doc["error"].startswith("dev-b: no fleet_site in the inventory") and "--local-fallback" in doc["error"]
