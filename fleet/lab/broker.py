"""The sites' broker, in namespace ``fleetlab-broker`` on 198.18.9.1 only (sitenet.py).

Always a Debian ``redis-server`` on 198.18.9.1:6379 with a generated password
(``requirepass``), no persistence, as user ``redis`` when that account exists: the broker
with ``--broker redis`` (the default), the result backend with either. With ``--broker
rabbitmq`` also a Debian RabbitMQ node (user ``rabbitmq``), AMQP on 198.18.9.1:5672 with
user ``fleet`` and the same password, its Erlang port mapper and distribution port on the
namespace's own loopback, a fresh database at every start, ``consumer_timeout`` above the
workers' ``--max-deadline`` (docs/sites.md: RabbitMQ closes the channel of a job running
longer). RabbitMQ re-queues the jobs of a worker whose connection dropped at once, so a
worker killed mid-job and started again gets its job back within the run (Redis only
after its visibility timeout).

Files under ``LABDIR/sites/broker/`` (user redis, 0700): ``password`` (0600),
``redis.conf`` (0600: it holds the password, so the password never appears in a process
argument), ``redis.log``, ``data/``; under ``LABDIR/sites/rabbitmq/`` (user rabbitmq,
0700): ``rabbitmq.conf`` (0600), ``log/``, ``mnesia/``. ``set-proc-title no`` keeps
redis' config path in its command line, and RabbitMQ gets ``-fleetlab_broker DIR`` on
its command line, which is what their process records check (state.py).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path

from fleet.lab import sitenet
from fleet.lab.state import LabPaths, ProcRecord, find_processes, terminate
from fleet.lab.util import LabError, progress, wait_for, write_file

REDIS_SERVER = "/usr/bin/redis-server"
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
EPMD = "/usr/bin/epmd"
KINDS = ("redis", "rabbitmq")
AMQP_PORT = 5672
#: RabbitMQ's Erlang port mapper and node distribution: on the broker namespace's loopback.
EPMD_PORT = 4369
DIST_PORT = 25672
RABBITMQ_USER = "fleet"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def broker_dir(paths: LabPaths) -> Path:
    return paths.root / "sites" / "broker"


def rabbitmq_dir(paths: LabPaths) -> Path:
    return paths.root / "sites" / "rabbitmq"


def _mkdir(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    os.chmod(path, mode)
    return path


def _user(name: str) -> tuple[int, int] | None:
    try:
        pw = pwd.getpwnam(name)
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        return None


def _drop(name: str) -> list[str]:
    owner = _user(name)
    return ["setpriv", f"--reuid={owner[0]}", f"--regid={owner[1]}", "--init-groups", "--"] if owner else []


def _chown(owner: tuple[int, int] | None, *files: Path) -> None:
    if owner:
        for p in files:
            if p.exists():
                os.chown(p, *owner)


def _nsenter() -> list[str]:
    return ["nsenter", f"--net={sitenet.ns_path(sitenet.BROKER_NS)}", "--"]


def broker_password(paths: LabPaths) -> str:
    f = broker_dir(paths) / "password"
    if f.exists():
        return f.read_text().strip()
    _mkdir(broker_dir(paths))
    pw = secrets.token_urlsafe(24)
    write_file(f, pw + "\n", 0o600)
    return pw


def redis_url(paths: LabPaths) -> str:
    """``redis://:PASSWORD@198.18.9.1:6379/0`` (a secret: never in a process argument)."""
    return f"redis://:{broker_password(paths)}@{sitenet.BROKER_ADDRESS}:{sitenet.BROKER_PORT}/0"


def broker_url(paths: LabPaths, kind: str = "redis") -> str:
    """The broker URL of ``kind``: :func:`redis_url` or ``amqp://fleet:PASSWORD@198.18.9.1:5672//``."""
    if kind == "rabbitmq":
        return f"amqp://{RABBITMQ_USER}:{broker_password(paths)}@{sitenet.BROKER_ADDRESS}:{AMQP_PORT}//"
    return redis_url(paths)


# -- redis ------------------------------------------------------------------------------------------

def _redis_conf(paths: LabPaths) -> Path:
    d = broker_dir(paths)
    data = _mkdir(d / "data")
    conf = d / "redis.conf"
    text = (f"# fleet lab broker: written by `fleet lab sites up`\n"
            f"bind {sitenet.BROKER_ADDRESS}\nport {sitenet.BROKER_PORT}\nprotected-mode yes\n"
            f"requirepass {broker_password(paths)}\n"
            f"save \"\"\nappendonly no\ndaemonize no\ndatabases 4\nset-proc-title no\n"
            f"dir {data}\nlogfile {d / 'redis.log'}\n")
    if not conf.exists() or conf.read_text() != text:
        write_file(conf, text, 0o600)
    _chown(_user("redis"), d, data, conf, d / "redis.log")
    return conf


def redis_answers(paths: LabPaths, ns: str = sitenet.CTL_NS) -> bool:
    """True if the lab's redis answers PING (authenticated) from namespace ``ns``."""
    import redis

    def ping() -> bool:
        c = redis.Redis(host=sitenet.BROKER_ADDRESS, port=sitenet.BROKER_PORT, password=broker_password(paths),
                        socket_timeout=2, socket_connect_timeout=2)
        try:
            return bool(c.ping())
        finally:
            c.close()

    try:
        return sitenet.in_netns(ns, ping)
    except Exception:  # noqa: BLE001 - unreachable, refused, namespace gone: not answering
        return False


def start_redis(paths: LabPaths, rec: ProcRecord | None) -> ProcRecord:
    """Start the lab's redis unless ``rec`` runs and answers; returns its record. Raises
    LabError (its log named) when it does not answer within 20 s."""
    conf = _redis_conf(paths)
    if rec and rec.alive() and redis_answers(paths):
        return rec
    # one this lab started but did not record (a crash between start and save) holds the port
    stale = find_processes(markers=[str(conf)])
    if stale:
        terminate(stale, 5)
    progress(f"sites: starting redis-server on {sitenet.BROKER_ADDRESS}:{sitenet.BROKER_PORT}")
    argv = [*_nsenter(), *_drop("redis"), REDIS_SERVER, str(conf)]
    with open(broker_dir(paths) / "redis.out", "ab") as out:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             env={"PATH": SYSTEM_PATH}, start_new_session=True, close_fds=True)
    rec = ProcRecord.of(p.pid, str(conf))
    if not wait_for(lambda: redis_answers(paths), 20, 0.2) or not rec.alive():
        raise LabError(f"the lab's redis did not answer on {sitenet.BROKER_ADDRESS}:{sitenet.BROKER_PORT} "
                       f"within 20 s; see {broker_dir(paths) / 'redis.log'}")
    return rec


# -- rabbitmq -----------------------------------------------------------------------------------------

def rabbitmq_available() -> bool:
    return Path(RABBITMQ_SERVER).exists() and Path(EPMD).exists() and _user("rabbitmq") is not None


def rabbitmq_answers(paths: LabPaths, ns: str = sitenet.CTL_NS) -> bool:
    """True if the lab's RabbitMQ accepts an AMQP login from namespace ``ns``."""
    from kombu import Connection

    def login() -> bool:
        with Connection(broker_url(paths, "rabbitmq"), connect_timeout=3) as c:
            c.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)
            return True

    try:
        return sitenet.in_netns(ns, login)
    except Exception:  # noqa: BLE001 - refused, booting, namespace gone: not answering
        return False


def _rabbitmq_env(d: Path) -> dict[str, str]:
    return {
        "PATH": SYSTEM_PATH, "HOME": str(d), "LANG": "C.UTF-8",
        "RABBITMQ_NODENAME": "fleetlab@localhost", "RABBITMQ_NODE_IP_ADDRESS": sitenet.BROKER_ADDRESS,
        "RABBITMQ_NODE_PORT": str(AMQP_PORT), "RABBITMQ_DIST_PORT": str(DIST_PORT),
        "ERL_EPMD_ADDRESS": "127.0.0.1", "ERL_EPMD_PORT": str(EPMD_PORT),
        "RABBITMQ_MNESIA_BASE": str(d / "mnesia"), "RABBITMQ_LOG_BASE": str(d / "log"),
        "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq"), "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(d / "pid"),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }


def start_rabbitmq(paths: LabPaths, recs: dict, consumer_timeout_s: float) -> dict:
    """Start the lab's RabbitMQ (and its epmd) unless ``recs`` (``{"rabbitmq", "epmd"}``
    process records) run and it answers; returns the records. Raises LabError (its log
    named) when it does not answer within 120 s."""
    d = _mkdir(rabbitmq_dir(paths))
    rabbit, epmd = ProcRecord.load(recs.get("rabbitmq")), ProcRecord.load(recs.get("epmd"))
    if rabbit and rabbit.alive() and rabbitmq_answers(paths):
        return recs
    stale = find_processes(markers=[str(d)]) + [r.pid for r in (rabbit, epmd) if r and r.alive()]
    if stale:
        terminate(stale, 15)
    owner = _user("rabbitmq")
    shutil.rmtree(d / "mnesia", ignore_errors=True)  # a fresh broker, as the redis one (no persistence)
    conf = d / "rabbitmq.conf"
    write_file(conf, f"listeners.tcp.default = {sitenet.BROKER_ADDRESS}:{AMQP_PORT}\n"
                     f"default_user = {RABBITMQ_USER}\ndefault_pass = {broker_password(paths)}\n"
                     "default_vhost = /\nloopback_users = none\n"
                     f"consumer_timeout = {int(consumer_timeout_s * 1000)}\n", 0o600)
    write_file(d / "enabled_plugins", "[].\n", 0o644)
    _chown(owner, d, conf, d / "enabled_plugins")
    env = _rabbitmq_env(d)
    progress(f"sites: starting RabbitMQ on {sitenet.BROKER_ADDRESS}:{AMQP_PORT}")
    e = subprocess.Popen([*_nsenter(), *_drop("rabbitmq"), EPMD, "-address", "127.0.0.1", "-port", str(EPMD_PORT)],
                         env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    with open(d / "server.out", "ab") as out:
        os.chmod(d / "server.out", 0o600)
        p = subprocess.Popen([*_nsenter(), *_drop("rabbitmq"), RABBITMQ_SERVER, "-fleetlab_broker", str(d)], env=env,
                             cwd=d, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True, close_fds=True)
    recs = {"rabbitmq": ProcRecord.of(p.pid, str(d)), "epmd": ProcRecord.of(e.pid, EPMD)}
    if not wait_for(lambda: rabbitmq_answers(paths) or not recs["rabbitmq"].alive(), 120, 0.5) \
            or not recs["rabbitmq"].alive():
        raise LabError(f"the lab's RabbitMQ did not answer on {sitenet.BROKER_ADDRESS}:{AMQP_PORT} within 120 s; "
                       f"see {d / 'server.out'} and {d / 'log'}")
    return recs
