"""The sites' broker: Debian ``redis-server`` in namespace ``fleetlab-broker``, bound to
198.18.9.1:6379 only (sitenet.py), with a generated password (``requirepass``), no
persistence, run as user ``redis`` when that account exists.

Files under ``LABDIR/sites/broker/`` (0700): ``password`` (0600), ``redis.conf`` (0600: it
holds the password, so it never appears in a process argument), ``redis.log``, ``data/``.
``set-proc-title no`` keeps the config path in the server's command line, which is what
its process record checks (state.py).
"""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
from pathlib import Path

from fleet.lab import sitenet
from fleet.lab.state import LabPaths, ProcRecord, find_processes, terminate
from fleet.lab.util import LabError, progress, wait_for, write_file

REDIS_SERVER = "/usr/bin/redis-server"


def broker_dir(paths: LabPaths) -> Path:
    return paths.root / "sites" / "broker"


def _mkdir(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    os.chmod(path, mode)
    return path


def broker_password(paths: LabPaths) -> str:
    f = broker_dir(paths) / "password"
    if f.exists():
        return f.read_text().strip()
    _mkdir(broker_dir(paths))
    pw = secrets.token_urlsafe(24)
    write_file(f, pw + "\n", 0o600)
    return pw


def broker_url(paths: LabPaths) -> str:
    """``redis://:PASSWORD@198.18.9.1:6379/0`` (a secret: never in a process argument)."""
    return f"redis://:{broker_password(paths)}@{sitenet.BROKER_ADDRESS}:{sitenet.BROKER_PORT}/0"


def _redis_user() -> tuple[int, int] | None:
    try:
        pw = pwd.getpwnam("redis")
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        return None


def _broker_conf(paths: LabPaths) -> Path:
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
    owner = _redis_user()
    if owner:
        for p in (d, data, conf):
            os.chown(p, *owner)
        if (d / "redis.log").exists():
            os.chown(d / "redis.log", *owner)
    return conf


def broker_answers(paths: LabPaths, ns: str = sitenet.CTL_NS) -> bool:
    """True if the broker answers PING (authenticated) from namespace ``ns``."""
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


def start_broker(paths: LabPaths, rec: ProcRecord | None) -> ProcRecord:
    conf = _broker_conf(paths)
    if rec and rec.alive() and broker_answers(paths):
        return rec
    # a broker this lab started but did not record (a crash between start and save) holds the port
    stale = find_processes(markers=[str(conf)])
    if stale:
        terminate(stale, 5)
    progress(f"sites: starting the broker (redis-server) on {sitenet.BROKER_ADDRESS}:{sitenet.BROKER_PORT}")
    drop: list[str] = []
    owner = _redis_user()
    if owner:
        drop = ["setpriv", f"--reuid={owner[0]}", f"--regid={owner[1]}", "--init-groups", "--"]
    argv = ["nsenter", f"--net={sitenet.ns_path(sitenet.BROKER_NS)}", "--", *drop, REDIS_SERVER, str(conf)]
    with open(broker_dir(paths) / "redis.out", "ab") as out:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, start_new_session=True, close_fds=True)
    rec = ProcRecord.of(p.pid, str(conf))
    if not wait_for(lambda: broker_answers(paths), 20, 0.2) or not rec.alive():
        raise LabError(f"the lab broker did not answer on {sitenet.BROKER_ADDRESS}:{sitenet.BROKER_PORT} "
                       f"within 20 s; see {broker_dir(paths) / 'redis.log'}")
    return rec
