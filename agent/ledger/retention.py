"""Retention: delete records (and their rollups) older than [billing]
retention, in whole UTC days; with a sink, only records already shipped.
Runs in its own short-lived thread, never in the collector's."""
from __future__ import annotations

import threading
import time

import structlog

from agent.ledger.errors import count_error
from agent.ledger.schema import ROLLUPS, Transaction
from agent.records import DAY

log = structlog.get_logger("agentd.ledger")

MAINTAIN_EVERY = 60.0     # seconds between retention passes
RETENTION_CHUNK = 20000   # records deleted per retention transaction


class Retention:
    """``ledger``: what retention uses of it: ``_lock``, ``_db``, ``_closed``,
    ``retention`` (seconds), ``sink_configured`` and ``cursor``."""

    def __init__(self, ledger):
        self.ledger = ledger
        self._thread: threading.Thread | None = None
        self._last = time.monotonic()

    def maybe_run(self) -> None:
        """Start a retention pass in its own thread once every MAINTAIN_EVERY seconds."""
        now = time.monotonic()
        if now - self._last < MAINTAIN_EVERY:
            return
        self._last = now
        t = self._thread
        if t is not None and t.is_alive():
            return
        self._thread = threading.Thread(target=self._run, name="ledger-retention", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            n = self.run()
            if n:
                log.info("ledger.retention", deleted=n)
        except Exception as exc:
            count_error("retention")
            log.error("ledger.retention_failed", error=str(exc))

    def _limit(self, now: float) -> int:
        """Records with period_start below this go (a whole UTC day)."""
        led = self.ledger
        limit = int(now - led.retention) // DAY * DAY
        if led.sink_configured:
            row = led._db.execute("SELECT MIN(period_start) FROM records WHERE seq > ?",
                                  (led.cursor.shipped_cursor(),)).fetchone()
            if row[0] is not None:
                limit = min(limit, row[0] // DAY * DAY)
        return limit

    def run(self, now: float | None = None) -> int:
        """One retention pass; returns the number of records deleted. Rollups
        go first (queries stop using those days at once), then the records in
        chunks, so collection is never held up for long."""
        led = self.ledger
        now = time.time() if now is None else now
        with led._lock:
            if led._closed:
                return 0
            limit = self._limit(now)
            with Transaction(led._db):
                for table, _ in ROLLUPS:
                    led._db.execute(f"DELETE FROM {table} WHERE start < ?", (limit,))
        n = 0
        while True:
            with led._lock:
                if led._closed:
                    return n
                with Transaction(led._db):
                    k = led._db.execute(
                        "DELETE FROM records WHERE seq IN (SELECT seq FROM records WHERE period_start < ? "
                        "LIMIT ?)", (limit, RETENTION_CHUNK)).rowcount
            n += k
            if k < RETENTION_CHUNK:
                return n
