"""agentd's durable state: SQLite in WAL mode at state_dir/state.db.

Two tables: `containers` (one row per container: spec, state, pid, cgroup,
exit status, restart count, ...; deleted when the container is removed) and
`events` (an append-only history holding the newest `events_max` rows: older
ones are deleted in chunks as new ones arrive, so the file stops growing
under churn and SQLite reuses the freed pages).
One connection guarded by a lock, so any thread may call any method.
synchronous=NORMAL: WAL survives a crash of agentd at any instant (not a
power loss); container state can be rebuilt from the kernel anyway.
"""
from __future__ import annotations

import errno
import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterator

import structlog

from agent import selfmetrics
from agent.errors import Conflict, KindedError
from agent.model import ContainerRecord

log = structlog.get_logger("agentd.store")

SQLITE_FULL = 13

selfmetrics.declare("state_write_errors_total", "counter",
                    "Writes to the state store (state_dir/state.db) that failed, by reason.", ("reason",))


class StoreFull(KindedError):
    """The state dir has no room left: nothing was written (the API answers 507)."""

    kind = "storage_full"


def _is_full(err: BaseException) -> bool:
    if isinstance(err, sqlite3.Error):
        code = getattr(err, "sqlite_errorcode", None)
        return (code is not None and code & 0xFF == SQLITE_FULL) or "full" in str(err).lower()
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


def full_error(path: str, err: BaseException) -> StoreFull:
    """Count and log a write refused for lack of space; the StoreFull to raise."""
    selfmetrics.inc("state_write_errors_total", reason="disk_full")
    log.error("store.disk_full", path=path, error=str(err))
    return StoreFull(f"state dir full: cannot write {path} ({err}); nothing was changed, "
                     f"free space in {os.path.dirname(path) or '.'} and retry")

SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    spec          TEXT NOT NULL,
    state         TEXT NOT NULL,
    pid           INTEGER,
    cgroup        TEXT NOT NULL,
    cgroup_inode  INTEGER,
    limits        TEXT NOT NULL DEFAULT '{}',
    created_at    REAL NOT NULL,
    started_at    REAL,
    finished_at   REAL,
    exit_code     INTEGER,
    exit_signal   INTEGER,
    oom_killed    INTEGER NOT NULL DEFAULT 0,
    oom_kills     INTEGER NOT NULL DEFAULT 0,
    restart_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    at           REAL NOT NULL,
    container_id TEXT,
    name         TEXT,
    kind         TEXT NOT NULL,
    detail       TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_container ON events(container_id, seq);
"""


@dataclass(frozen=True)
class ContainerRow(ContainerRecord):
    """One row of the containers table: the record, its spec and its limits (as JSON)."""

    spec: dict
    limits: dict | None = None


_COLUMNS = [f.name for f in fields(ContainerRow)]
_JSON_COLUMNS = {"spec", "limits"}


def _encode(name: str, value: Any) -> Any:
    if name in _JSON_COLUMNS:
        return json.dumps(value if value is not None else {}, sort_keys=True)
    if name == "oom_killed":
        return int(bool(value))
    return value


def _decode(row: sqlite3.Row) -> ContainerRow:
    values = {}
    for name in _COLUMNS:
        v = row[name]
        if name in _JSON_COLUMNS:
            v = json.loads(v) if v else {}
        elif name == "oom_killed":
            v = bool(v)
        values[name] = v
    return ContainerRow(**values)


class Store:
    def __init__(self, path: str, events_max: int = 100_000):
        self.path = path
        self.events_max = events_max
        # prune once per chunk of inserts: at most events_max + chunk - 1 rows
        self._prune_every = max(100, events_max // 10)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        try:
            self._prune_events()  # a lowered events_max applies at once
        except StoreFull:  # counted and logged; agentd still starts, the next chunk retries
            pass

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A write that fails for lack of space raises StoreFull (counted, logged);
        other write errors are counted too."""
        try:
            yield
        except sqlite3.Error as err:
            if _is_full(err):
                raise full_error(self.path, err) from None
            selfmetrics.inc("state_write_errors_total", reason="other")
            raise

    def _rollback(self) -> None:
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error as err:  # SQLite may already have rolled back
                log.warning("store.rollback_failed", error=str(err))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several writes into one commit (nested use joins the outer one).
        All or nothing: a failed COMMIT (e.g. disk full) rolls back, so a later
        transaction never silently joins a half-open one."""
        with self._lock:
            if self._db.in_transaction:
                yield
                return
            with self._writing():
                self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._rollback()
                raise
            try:
                with self._writing():
                    self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    # -- containers ----------------------------------------------------------

    def insert(self, row: ContainerRow) -> None:
        values = asdict(row)
        cols = ", ".join(_COLUMNS)
        marks = ", ".join("?" for _ in _COLUMNS)
        with self._lock, self._writing():
            try:
                self._db.execute(f"INSERT INTO containers ({cols}) VALUES ({marks})",
                                 [_encode(c, values[c]) for c in _COLUMNS])
            except sqlite3.IntegrityError:
                raise Conflict(f"name: a container named {row.name!r} already exists") from None

    def update(self, container_id: str, **changes) -> None:
        if not changes:
            return
        for key in changes:
            if key not in _COLUMNS or key == "id":
                raise KeyError(key)
        sets = ", ".join(f"{k} = ?" for k in changes)
        with self._lock, self._writing():
            self._db.execute(f"UPDATE containers SET {sets} WHERE id = ?",
                             [_encode(k, v) for k, v in changes.items()] + [container_id])

    def delete(self, container_id: str) -> None:
        with self._lock, self._writing():
            self._db.execute("DELETE FROM containers WHERE id = ?", (container_id,))

    def get(self, container_id: str) -> ContainerRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM containers WHERE id = ?", (container_id,)).fetchone()
        return _decode(row) if row else None

    def by_name(self, name: str) -> ContainerRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM containers WHERE name = ?", (name,)).fetchone()
        return _decode(row) if row else None

    def all(self) -> list[ContainerRow]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM containers ORDER BY created_at, id").fetchall()
        return [_decode(r) for r in rows]

    # -- events ----------------------------------------------------------------

    def add_event(self, container_id: str | None, name: str | None, kind: str, **detail) -> int:
        """Append an event; its seq (AUTOINCREMENT: increasing, never reused).
        Every _prune_every-th seq also deletes the rows older than the newest
        events_max in the same transaction: both are written or neither."""
        with self.transaction():
            with self._writing():
                seq = self._db.execute(
                    "INSERT INTO events (at, container_id, name, kind, detail) VALUES (?, ?, ?, ?, ?)",
                    (time.time(), container_id, name, kind, json.dumps(detail, sort_keys=True, default=str))).lastrowid
            if seq % self._prune_every == 0:
                self._prune_events(seq)
            return seq

    def _prune_events(self, newest: int | None = None) -> None:
        """Delete events older than the newest events_max (a range delete on the rowid)."""
        with self._lock, self._writing():
            if newest is None:
                newest = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
            self._db.execute("DELETE FROM events WHERE seq <= ?", (newest - self.events_max,))

    def events(self, container_id: str | None = None, since: int = 0, limit: int = 1000) -> list[dict]:
        """Events with seq > since, oldest first. Only the newest events_max are
        kept: a `since` older than the oldest kept row starts from that row."""
        q = "SELECT * FROM events WHERE seq > ?"
        args: list[Any] = [since]
        if container_id is not None:
            q += " AND container_id = ?"
            args.append(container_id)
        q += " ORDER BY seq LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(q, args).fetchall()
        return [{"seq": r["seq"], "at": r["at"], "id": r["container_id"], "name": r["name"],
                 "kind": r["kind"], **json.loads(r["detail"])} for r in rows]

    def last_event(self, container_id: str, kind: str) -> dict | None:
        """The newest kept event of `kind` for a container (as events() gives it), or None."""
        with self._lock:
            r = self._db.execute("SELECT * FROM events WHERE container_id = ? AND kind = ? ORDER BY seq DESC LIMIT 1",
                                 (container_id, kind)).fetchone()
        if r is None:
            return None
        return {"seq": r["seq"], "at": r["at"], "id": r["container_id"], "name": r["name"],
                "kind": r["kind"], **json.loads(r["detail"])}
