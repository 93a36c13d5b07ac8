"""What every deploy, rollback and verify did, kept on the controller in one SQLite file.

``STATE/history.sqlite`` (``$XDG_STATE_HOME/fleet``, else ``~/.local/state/fleet``; the
folder is private, the file 0600), in WAL mode with a busy timeout, so two fleet commands
writing at once both land (SQLite serializes the writers; readers never block). A run is
written when it starts and each device's result as its batch ends, so a controller killed
mid-rollout still leaves what it did.

Tables: ``runs`` (one row per command run: id, kind, playbook, app, reference, index digest,
who, where, when, summary, ok, why it stopped, the published index's entries and every
image of the app as JSON) and
``devices`` (one row per device and run: result, reason, batch, platforms, the index, child
and config digests it was aimed at, what it ran before, and who did the work: ``worker``,
``site``). A rollback has no one index: each device goes back to its own previous release,
so the index is kept per device.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from fleet.errors import UsageError
from fleet.reports import check_private_dir, state_dir
from fleet.results import DeviceReport

__all__ = ["History", "history_path", "ENV_HISTORY"]

#: Environment variable naming another history file (tests, several fleets).
ENV_HISTORY = "FLEET_HISTORY"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  playbook TEXT,
  app TEXT,
  reference TEXT,
  index_digest TEXT,
  user TEXT,
  controller TEXT,
  started TEXT,
  finished TEXT,
  summary TEXT,
  ok INTEGER,
  stopped TEXT,
  publish TEXT,
  images TEXT
);
CREATE TABLE IF NOT EXISTS devices (
  run_id TEXT NOT NULL REFERENCES runs(id),
  host TEXT NOT NULL,
  batch INTEGER,
  result TEXT,
  reason TEXT,
  platform TEXT,
  entry_platform TEXT,
  manifest_digest TEXT,
  config_digest TEXT,
  previous_deployment TEXT,
  seconds REAL,
  index_digest TEXT,
  PRIMARY KEY (run_id, host)
);
CREATE INDEX IF NOT EXISTS devices_host ON devices(host);
CREATE INDEX IF NOT EXISTS runs_app ON runs(app, started);
"""


#: Columns added after the first release, in order: (table -> [(name, declaration)]).
_COLUMNS = {"runs": [("publish", "TEXT"), ("images", "TEXT")],
            # who did each device's work: "local" (this controller) or a site worker's
            # Celery node name, and its site (docs/sites.md); the index each device was
            # aimed at (a rollback has no one index)
            "devices": [("worker", "TEXT"), ("site", "TEXT"), ("index_digest", "TEXT")]}


def history_path() -> Path:
    """``$FLEET_HISTORY``, else ``state_dir()/history.sqlite``."""
    env = os.environ.get(ENV_HISTORY)
    return Path(env) if env else state_dir() / "history.sqlite"


class History:
    """The history database (a context manager). Raises UsageError when its folder is not
    private or the file cannot be opened."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else history_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise UsageError(f"{self.path.parent}: cannot create the history folder: {exc.strerror or exc}") from None
        check_private_dir(self.path.parent, "history folder")
        if not self.path.exists():
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
            os.close(fd)
        if self.path.is_symlink():
            raise UsageError(f"{self.path}: the history file is a symlink; refusing to write through it")
        try:
            self.db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA busy_timeout=30000")
            self.db.executescript(_SCHEMA)  # idempotent; SQLite serializes concurrent creators
            self._add_missing_columns()
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"{self.path}: cannot open the history database: {exc}") from None
        self.db.row_factory = sqlite3.Row

    def _add_missing_columns(self) -> None:
        """A file written by an older fleet gains the columns added since (``ALTER TABLE ADD
        COLUMN``; old rows read NULL there). Two fleets upgrading at once: the loser's
        "duplicate column" is ignored."""
        for table, columns in _COLUMNS.items():
            have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            for name, decl in columns:
                if name not in have:
                    try:
                        self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
                    except sqlite3.OperationalError as exc:
                        if "duplicate column" not in str(exc):
                            raise

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _write(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- writing --------------------------------------------------------------------------

    def start_run(self, run_id: str, kind: str, *, playbook: str = "", app: str = "", reference: str = "",
                  index_digest: str | None = None, started: str = "", publish: dict[str, Any] | None = None) -> None:
        """Record the start of a command run."""
        try:
            user = getpass.getuser()
        except Exception:  # no passwd entry in a container
            user = str(os.getuid())
        with self._write():
            self.db.execute(
                "INSERT OR REPLACE INTO runs (id, kind, playbook, app, reference, index_digest, user, controller, "
                "started, publish) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (run_id, kind, playbook, app, reference, index_digest, user, socket.gethostname(), started,
                 json.dumps(publish) if publish is not None else None))

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Set ``index_digest``, ``reference``, ``finished``, ``summary``, ``ok``, ``stopped``,
        ``publish`` (a dict) or ``images`` (a list: every image of the app and its index
        digest) of a run."""
        allowed = {"index_digest", "reference", "finished", "summary", "ok", "stopped", "publish", "images"}
        cols = {k: (json.dumps(v) if k in ("publish", "images") and v is not None else v)
                for k, v in fields.items() if k in allowed}
        if not cols:
            return
        with self._write():
            self.db.execute(f"UPDATE runs SET {', '.join(f'{k}=?' for k in cols)} WHERE id=?",
                            (*cols.values(), run_id))

    def add_devices(self, run_id: str, reports: Sequence[DeviceReport], batch: int | None = None) -> None:
        """Record each device's result in run ``run_id`` (again: replaces)."""
        rows = [(run_id, r.host, batch, str(r.result), r.reason, r.platform, r.entry_platform, r.pulled,
                 r.config_digest, (r.previous or {}).get("deployment"), r.seconds, r.worker, r.site,
                 r.index_digest) for r in reports]
        with self._write():
            self.db.executemany(
                "INSERT OR REPLACE INTO devices (run_id, host, batch, result, reason, platform, entry_platform, "
                "manifest_digest, config_digest, previous_deployment, seconds, worker, site, index_digest) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)

    # -- reading --------------------------------------------------------------------------

    def runs(self, *, device: str | None = None, run_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Runs, newest first, each with its ``devices`` (only ``device``'s when given)."""
        q = "SELECT * FROM runs"
        args: list[Any] = []
        where = []
        if run_id:
            where.append("id = ?")
            args.append(run_id)
        if device:
            where.append("id IN (SELECT run_id FROM devices WHERE host = ?)")
            args.append(device)
        if where:
            q += " WHERE " + " AND ".join(where)
        q += " ORDER BY started DESC, id DESC LIMIT ?"
        args.append(limit)
        out = []
        for row in self.db.execute(q, args).fetchall():
            run = dict(row)
            run["ok"] = None if run["ok"] is None else bool(run["ok"])
            run["publish"] = json.loads(run["publish"]) if run["publish"] else None
            run["images"] = json.loads(run["images"]) if run.get("images") else []
            dq = "SELECT * FROM devices WHERE run_id = ?" + (" AND host = ?" if device else "") + " ORDER BY batch, host"
            run["devices"] = [dict(d) for d in self.db.execute(dq, (run["id"], device) if device else (run["id"],))]
            out.append(run)
        return out

    def run(self, run_id: str) -> dict[str, Any] | None:
        """One run (with its devices), or None."""
        found = self.runs(run_id=run_id, limit=1)
        return found[0] if found else None

    def intended(self, app: str, host: str) -> dict[str, Any] | None:
        """What the last deploy or rollback of ``app`` that reached ``host`` meant it to run:
        the run's row plus the device's (``result``, ``manifest_digest``,
        ``config_digest``, ``entry_platform``), or None. ``index_digest`` is the device's
        own (a rollback's devices each go back to their own release), else the run's."""
        row = self.db.execute(
            "SELECT r.id, r.kind, r.reference, COALESCE(d.index_digest, r.index_digest) AS index_digest, "
            "r.started, d.result, d.manifest_digest, "
            "d.config_digest, d.entry_platform FROM runs r JOIN devices d ON d.run_id = r.id "
            "WHERE r.app = ? AND d.host = ? AND r.kind IN ('deploy', 'rollback') AND d.result != 'skipped' "
            "ORDER BY r.started DESC, r.id DESC LIMIT 1", (app, host)).fetchone()
        return dict(row) if row else None
