"""The ledger's SQLite schema: the committed per-instance state, the records,
their day and hour rollups (one definition, two tables), the statements that
write them, migration of a ledger written by an older version, and the
connection settings."""
from __future__ import annotations

import sqlite3

import structlog

from agent.records import ADDED_DEFAULTS, DAY, HOUR, MAX_COLS, REC_COLS, SUM_COLS

log = structlog.get_logger("agentd.ledger")

STATE_COLS = (
    "container_id", "cgroup_inode", "name", "labels", "open_start", "next_min",
    "last_wall", "last_mono", "last_state",
    "c_usage", "c_user", "c_system", "c_throttled", "c_io",
    "last_mem", "last_swap", "last_mem_peak",
    "a_samples", "a_running", "a_frozen", "a_cpu", "a_user", "a_system", "a_throttled",
    "a_mem_bs", "a_swap_bs", "a_mem_peak", "a_pids_peak",
    "a_rbytes", "a_wbytes", "a_rios", "a_wios",
    "a_res_cpu", "a_res_mem", "cpu_limit", "mem_limit", "finished",
    "c_log", "a_log", "a_meas", "a_interp",
    "last_disk", "c_net_rx", "c_net_tx", "a_disk_bs", "a_net_rx", "a_net_tx",
)
# the open period's accumulators, as they are when a period (re)starts
ACC_ZERO = {
    "a_samples": 0, "a_running": 0.0, "a_frozen": 0.0, "a_cpu": 0, "a_user": 0, "a_system": 0,
    "a_throttled": 0, "a_mem_bs": 0.0, "a_swap_bs": 0.0, "a_mem_peak": 0, "a_pids_peak": 0,
    "a_rbytes": 0, "a_wbytes": 0, "a_rios": 0, "a_wios": 0, "a_res_cpu": 0.0, "a_res_mem": 0.0,
    "a_log": 0, "a_meas": 0, "a_interp": 0,
    "a_disk_bs": 0.0, "a_net_rx": 0, "a_net_tx": 0,
}

# Rollups: (table, bucket seconds). A record belongs to the bucket of its period_start.
ROLLUPS = (("rollups_day", DAY), ("rollups_hour", HOUR))
_ROLLUP_KEY = ("start", "container_id", "cgroup_inode", "name", "labels")


def _int_cols(cols) -> str:
    return ", ".join(c + " INTEGER NOT NULL" + (f" DEFAULT {ADDED_DEFAULTS[c]}" if c in ADDED_DEFAULTS else "")
                     for c in cols)


def _rollup_table(table: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS {table} (
    start INTEGER NOT NULL, container_id TEXT NOT NULL, cgroup_inode INTEGER NOT NULL,
    name TEXT NOT NULL, labels TEXT NOT NULL, n INTEGER NOT NULL,
    {_int_cols(SUM_COLS)},
    {_int_cols(MAX_COLS)},
    PRIMARY KEY ({", ".join(_ROLLUP_KEY)})
) WITHOUT ROWID;"""


SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
    {", ".join(STATE_COLS)},
    PRIMARY KEY (container_id, cgroup_inode)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id TEXT NOT NULL UNIQUE,
    host TEXT NOT NULL, container_id TEXT NOT NULL, name TEXT NOT NULL,
    labels TEXT NOT NULL, cgroup_inode INTEGER NOT NULL,
    period_start INTEGER NOT NULL, period_end INTEGER NOT NULL,
    {_int_cols(SUM_COLS)},
    {_int_cols(MAX_COLS)},
    cpu_limit_cores REAL, memory_limit_bytes INTEGER, currency TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_period ON records (period_start);
{"".join(_rollup_table(t) for t, _ in ROLLUPS)}
"""

INSERT_RECORD = (f"INSERT OR IGNORE INTO records ({', '.join(REC_COLS)}) "
                 f"VALUES ({', '.join('?' * len(REC_COLS))})")


def _upsert_rollup(table: str) -> str:
    return (
        f"INSERT INTO {table} ({', '.join(_ROLLUP_KEY)}, n, {', '.join(SUM_COLS)}, {', '.join(MAX_COLS)}) "
        f"VALUES ({', '.join('?' * (len(_ROLLUP_KEY) + 1 + len(SUM_COLS) + len(MAX_COLS)))}) "
        f"ON CONFLICT ({', '.join(_ROLLUP_KEY)}) DO UPDATE SET n = n + 1, "
        + ", ".join(f"{c} = {c} + excluded.{c}" for c in SUM_COLS) + ", "
        + ", ".join(f"{c} = max({c}, excluded.{c})" for c in MAX_COLS))


UPSERTS = tuple((_upsert_rollup(t), size) for t, size in ROLLUPS)
SAVE_STATE = (f"INSERT OR REPLACE INTO instances ({', '.join(STATE_COLS)}) "
              f"VALUES ({', '.join('?' * len(STATE_COLS))})")
DELETE_STATE = "DELETE FROM instances WHERE container_id=? AND cgroup_inode=?"


def connect(path: str) -> sqlite3.Connection:
    """The ledger's read-write connection."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    # NORMAL: in WAL mode a transaction is durable against a process crash
    # (SIGKILL) at any instant; only an OS crash/power loss can lose the
    # last transactions, and then atomically (state and records together).
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def reader(path: str) -> sqlite3.Connection:
    """A read-only connection of its own (queries, the shipping thread)."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    db.execute("PRAGMA query_only=1")
    return db


class Transaction:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        return False


def create(db: sqlite3.Connection) -> None:
    """Create what is missing and bring an older ledger up to date."""
    db.executescript(SCHEMA)
    migrate(db)


def migrate(db: sqlite3.Connection) -> None:
    """Bring a ledger written by an older version up to SCHEMA: add the
    columns it lacks (ALTER TABLE ... ADD COLUMN with their defaults), in one
    transaction. A rollup row stands for n records, so its added record-flag
    counts start at n, not 1."""
    want = {"records": (*SUM_COLS, *MAX_COLS), "rollups_hour": (*SUM_COLS, *MAX_COLS),
            "rollups_day": (*SUM_COLS, *MAX_COLS), "instances": STATE_COLS}
    missing = {}
    for table, cols in want.items():
        have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        missing[table] = [c for c in cols if c not in have]
    if not any(missing.values()):
        return
    with Transaction(db):
        for table, cols in missing.items():
            for c in cols:
                if table == "instances":
                    default = ACC_ZERO.get(c)
                    db.execute(f"ALTER TABLE instances ADD COLUMN {c}"
                               + ("" if default is None else f" DEFAULT {default!r}"))
                else:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {c} INTEGER NOT NULL DEFAULT {ADDED_DEFAULTS[c]}")
                    if table != "records" and ADDED_DEFAULTS[c] == 1:
                        db.execute(f"UPDATE {table} SET {c} = n")
    log.info("ledger.migrated", added={t: c for t, c in missing.items() if c})
