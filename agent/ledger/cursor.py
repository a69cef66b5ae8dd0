"""The shipping cursor: what a sink needs of the ledger, and nothing else.

Records have a never-reused AUTOINCREMENT ``seq``; the cursor is the last seq
a sink shipped (kept in the ledger's meta table, moved only after the remote
commit). A sink (exporters/postgres.py) is handed this object by the daemon.
"""
from __future__ import annotations

from agent.ledger.schema import Transaction, reader
from agent.records import REC_COLS

SINK_CURSOR_KEY = "sink.postgres.cursor"


class ShippingCursor:
    def __init__(self, db, lock, db_path: str):
        self._db = db            # the ledger's connection (writes go under its lock)
        self._lock = lock
        self._path = db_path     # reads use connections of their own

    def shipped_cursor(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (SINK_CURSOR_KEY,)).fetchone()
        return int(row[0]) if row else 0

    def unshipped(self, after_seq: int, limit: int) -> list[tuple[int, dict]]:
        """Records with seq > after_seq in seq order, as (seq, raw row dict with
        the REC_COLS integer columns: µs, byte-seconds, nano-units)."""
        db = reader(self._path)
        try:
            rows = db.execute(f"SELECT seq, {', '.join(REC_COLS)} FROM records WHERE seq > ? "
                              f"ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()
        finally:
            db.close()
        return [(r[0], dict(zip(REC_COLS, r[1:]))) for r in rows]

    def mark_shipped(self, seq: int) -> None:
        """Advance the shipping cursor (after the remote commit succeeded)."""
        with self._lock, Transaction(self._db):
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (SINK_CURSOR_KEY, str(int(seq))))

    def oldest_unshipped_end(self, after_seq: int) -> int | None:
        db = reader(self._path)
        try:
            row = db.execute("SELECT period_end FROM records WHERE seq > ? ORDER BY seq LIMIT 1",
                             (after_seq,)).fetchone()
        finally:
            db.close()
        return row[0] if row else None

    def unshipped_count(self, after_seq: int) -> int:
        """How many records wait after the shipping cursor (the sink's backlog)."""
        db = reader(self._path)
        try:
            return db.execute("SELECT count(*) FROM records WHERE seq > ?", (after_seq,)).fetchone()[0]
        finally:
            db.close()
