"""Ship billing records to a central PostgreSQL (the fleet store).

At-least-once delivery with idempotent inserts: a shipping thread reads
records after the local cursor (agent.ledger.cursor: records.seq, a
never-reused AUTOINCREMENT key; the daemon hands the sink that cursor), inserts them in batches with
``INSERT ... ON CONFLICT (record_id) DO NOTHING`` in one remote transaction,
and only after the remote COMMIT succeeded advances the cursor in the local
ledger. A crash or a lost acknowledgement between the two re-sends the batch,
which the primary key turns into a no-op: exactly one row per record.

The thread never holds the ledger's lock while talking to the network, so a
dead or slow database never blocks collection; records wait in the local
ledger (retention never deletes unshipped records) and the backlog is exported:
``cgroup_agent_sink_lag_seconds{sink="postgres"}`` (age of the oldest
unshipped record's period end; 0 when everything is shipped),
``cgroup_agent_sink_backlog_records`` (records waiting), plus
``cgroup_agent_sink_rows_total`` and ``cgroup_agent_sink_errors_total`` (one per
failed attempt).

A failed attempt is retried after an exponential backoff (0.5 s, doubling, up
to 12 intervals and at most 60 s, each wait +-20 % jitter; 60 s with the
default 5 s interval): a dead database sees about one attempt a minute, never
a busy loop, and a revived one is used again within that cap. The lag and
backlog gauges are refreshed at every attempt. An outage logs ``sink.down`` once
(its first error) and ``sink.recovered`` once when a batch goes through again
(how long, how many failed attempts); the retries in between log only at
debug level.

psycopg 3 is imported only when a sink is configured (optional extra
``cgroup-agent[postgres]``).
"""
from __future__ import annotations

import random
import re
import threading
import time
from datetime import datetime, timezone
from decimal import Decimal

import structlog

from agent import selfmetrics
from agent.pricing import unpriced_meters
from agent.records import MEASURED_COLS, later_meters

log = structlog.get_logger("agentd.sink")

DEFAULT_TABLE = "cgroup_agent_usage"
_TABLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
BACKOFF_MIN, BACKOFF_MAX = 0.5, 60.0

COLUMNS = (
    ("record_id", "text PRIMARY KEY"), ("host", "text NOT NULL"), ("container_id", "text NOT NULL"),
    ("name", "text NOT NULL"), ("labels", "jsonb NOT NULL"), ("cgroup_inode", "bigint NOT NULL"),
    ("period_start", "timestamptz NOT NULL"), ("period_end", "timestamptz NOT NULL"),
    ("running_seconds", "numeric NOT NULL"), ("frozen_seconds", "numeric NOT NULL"),
    ("cpu_seconds", "numeric NOT NULL"), ("cpu_user_seconds", "numeric NOT NULL"),
    ("cpu_system_seconds", "numeric NOT NULL"), ("cpu_throttled_seconds", "numeric NOT NULL"),
    # NULL = the host could not measure it (no such controller): see docs/billing.md
    ("memory_byte_seconds", "numeric"), ("memory_peak_bytes", "bigint"),
    ("swap_byte_seconds", "numeric"),
    ("io_read_bytes", "bigint"), ("io_write_bytes", "bigint"),
    ("io_read_ops", "bigint"), ("io_write_ops", "bigint"), ("pids_peak", "bigint"),
    ("cpu_limit_cores", "double precision"), ("memory_limit_bytes", "bigint"),
    ("reserved_cpu_seconds", "numeric NOT NULL"), ("reserved_memory_byte_seconds", "numeric NOT NULL"),
    ("cost", "numeric(30,9) NOT NULL"), ("currency", "text NOT NULL"),
    ("log_bytes", "bigint NOT NULL DEFAULT 0"), ("interpolated", "boolean NOT NULL DEFAULT false"),
    ("unpriced", "text[] NOT NULL DEFAULT '{}'"),
    # v3: NULL = not measured (no upper dir of its own / host network)
    ("disk_byte_seconds", "numeric"), ("net_rx_bytes", "bigint"), ("net_tx_bytes", "bigint"),
)
# columns that were NOT NULL before unmeasured dimensions became NULL (v2)
NULLABLE_SINCE_V2 = ("memory_byte_seconds", "memory_peak_bytes", "swap_byte_seconds", "io_read_bytes",
                           "io_write_bytes", "io_read_ops", "io_write_ops", "pids_peak")
ADDED_SINCE_V2 = ("log_bytes", "interpolated", "unpriced")
ADDED_SINCE_V3 = ("disk_byte_seconds", "net_rx_bytes", "net_tx_bytes")

for _name, _kind, _help, _labels in (
        ("sink_lag_seconds", "gauge", "Age of the oldest billing record not yet shipped (0 = all shipped).", ("sink",)),
        ("sink_backlog_records", "gauge", "Billing records waiting to be shipped.", ("sink",)),
        ("sink_rows_total", "counter", "Billing records shipped to a sink.", ("sink",)),
        ("sink_errors_total", "counter", "Failed shipping attempts (retried with backoff).", ("sink",))):
    try:
        selfmetrics.declare(_name, _kind, _help, _labels)
    except ValueError:  # pragma: no cover - declared elsewhere with other labels
        pass


def _usec(v: int) -> Decimal:
    return Decimal(int(v)).scaleb(-6)


def remote_row(r: dict) -> tuple:
    """A ledger row (integer µs, byte-seconds, nano-units) -> the remote columns,
    exactly; a dimension the host did not measure is NULL."""
    ts = lambda t: datetime.fromtimestamp(t, timezone.utc)  # noqa: E731
    mem, swap, io, pids = (bool(r.get(c, 1)) for c, _ in MEASURED_COLS)
    opt = lambda ok, v: v if ok else None  # noqa: E731
    return (
        r["record_id"], r["host"], r["container_id"], r["name"], r["labels"], r["cgroup_inode"],
        ts(r["period_start"]), ts(r["period_end"]),
        _usec(r["running_usec"]), _usec(r["frozen_usec"]), _usec(r["cpu_usec"]), _usec(r["cpu_user_usec"]),
        _usec(r["cpu_system_usec"]), _usec(r["cpu_throttled_usec"]),
        opt(mem, Decimal(r["memory_byte_seconds"])), opt(mem, r["memory_peak_bytes"]),
        opt(swap, Decimal(r["swap_byte_seconds"])),
        opt(io, r["io_read_bytes"]), opt(io, r["io_write_bytes"]), opt(io, r["io_read_ops"]),
        opt(io, r["io_write_ops"]), opt(pids, r["pids_peak"]),
        r["cpu_limit_cores"], r["memory_limit_bytes"],
        _usec(r["reserved_cpu_usec"]), Decimal(r["reserved_memory_byte_seconds"]),
        Decimal(int(r["cost_nanos"])).scaleb(-9), r["currency"],
        r.get("log_bytes", 0), bool(r.get("interpolated", 0)),
        unpriced_meters(not mem, not io, bool(r.get("disk_unpriced", 0)), bool(r.get("net_unpriced", 0))),
        *((None if v is None else Decimal(v) if k == "disk_byte_seconds" else v)
          for k, v in later_meters(r).items()),
    )


def create_table_sql(table: str) -> list[str]:
    cols = ",\n  ".join(f"{n} {t}" for n, t in COLUMNS)
    return [
        f"CREATE TABLE IF NOT EXISTS {table} (\n  {cols}\n)",
        f"CREATE INDEX IF NOT EXISTS {table}_period ON {table} (period_start)",
        f"CREATE INDEX IF NOT EXISTS {table}_labels ON {table} USING gin (labels)",
        # a table created by an older agent: add the new columns, let unmeasured be NULL
        # (checked first, so a fleet reconnecting takes no table lock once it is done)
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = "
        f"current_schema() AND table_name = '{table}' AND column_name = 'log_bytes') THEN "
        f"ALTER TABLE {table} "
        + ", ".join([f"ADD COLUMN {n} {t}" for n, t in COLUMNS if n in ADDED_SINCE_V2]
                    + [f"ALTER COLUMN {n} DROP NOT NULL" for n in NULLABLE_SINCE_V2])
        + "; END IF; END $$",
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = "
        f"current_schema() AND table_name = '{table}' AND column_name = 'disk_byte_seconds') THEN "
        f"ALTER TABLE {table} "
        + ", ".join(f"ADD COLUMN {n} {t}" for n, t in COLUMNS if n in ADDED_SINCE_V3)
        + "; END IF; END $$",
    ]


def _sink_section(config, table: str):
    """config's [sink.postgres] section, once `table` is known to be a plain SQL identifier."""
    sec = config.sink_postgres
    if sec is None:
        raise ValueError("sink.postgres: not configured")
    if not _TABLE_RE.match(table):
        raise ValueError(f"table: {table!r} is not a plain lower-case SQL identifier")
    return sec


class PostgresSink:
    """The shipping thread. ``start()``, ``stop()``, ``ship_once()`` (one batch,
    for tests and tools), ``lag_seconds()``."""

    def __init__(self, config, ledger, table: str = DEFAULT_TABLE):
        sec = _sink_section(config, table)
        try:
            import psycopg  # noqa: F401  (optional dependency: only when a sink is configured)
        except ImportError:
            raise RuntimeError("sink.postgres: psycopg 3 is not installed; "
                               "pip install 'cgroup-agent[postgres]' or remove [sink.postgres]") from None
        self.dsn = sec.dsn
        self.batch = int(sec.batch)
        self.interval = float(sec.interval)
        self.backoff_max = min(BACKOFF_MAX, max(BACKOFF_MIN, 12 * self.interval))
        self.ledger = ledger
        self.table = table
        self._insert = (f"INSERT INTO {table} ({', '.join(n for n, _ in COLUMNS)}) "
                        f"VALUES ({', '.join(['%s'] * len(COLUMNS))}) ON CONFLICT (record_id) DO NOTHING")
        self._conn = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    # -- thread ------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="sink-postgres", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._drop()

    def _run(self) -> None:
        backoff, down_since, failures = BACKOFF_MIN, None, 0
        while not self._stop.is_set():
            try:
                n = self.ship_once()
            except Exception as exc:  # network, server, anything: retry later
                self._drop()
                self.last_error = f"{type(exc).__name__}: {exc}".strip()
                selfmetrics.inc("sink_errors_total", sink="postgres")
                failures += 1
                wait = backoff * random.uniform(0.8, 1.2)
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("sink.down", sink="postgres", error=self.last_error, retry_in=round(wait, 2))
                else:
                    log.debug("sink.retry_failed", sink="postgres", error=self.last_error, retry_in=round(wait, 2))
                self._update_gauges()
                self._stop.wait(wait)
                backoff = min(backoff * 2, self.backoff_max)
                continue
            backoff = BACKOFF_MIN
            backlog = self._update_gauges()
            if down_since is not None:
                log.info("sink.recovered", sink="postgres", down_seconds=round(time.monotonic() - down_since, 1),
                         failed_attempts=failures, backlog_records=backlog)
                down_since, failures = None, 0
            if n < self.batch:   # drained: wait for the next interval
                self._stop.wait(self.interval)

    # -- one batch ---------------------------------------------------------

    def _connection(self):
        if self._conn is None or self._conn.closed:
            import psycopg  # optional dependency: only when a sink is configured

            conn = psycopg.connect(self.dsn, connect_timeout=10, application_name="cgroup-agent-sink")
            with conn.transaction():
                for sql in create_table_sql(self.table):
                    conn.execute(sql)
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def ship_once(self) -> int:
        """Ship up to ``batch`` records after the cursor; returns how many.
        The cursor moves only after the remote COMMIT returned."""
        cursor = self.ledger.shipped_cursor()
        rows = self.ledger.unshipped(cursor, self.batch)
        if not rows:
            return 0
        conn = self._connection()
        with conn.transaction():
            with conn.cursor() as cur:
                cur.executemany(self._insert, [remote_row(r) for _, r in rows])
        self.ledger.mark_shipped(rows[-1][0])
        selfmetrics.inc("sink_rows_total", len(rows), sink="postgres")
        return len(rows)

    # -- backlog -----------------------------------------------------------

    def lag_seconds(self, now: float | None = None) -> float:
        end = self.ledger.oldest_unshipped_end(self.ledger.shipped_cursor())
        if end is None:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - end)

    def backlog_records(self) -> int:
        return self.ledger.unshipped_count(self.ledger.shipped_cursor())

    def _update_gauges(self) -> int | None:
        try:
            lag, backlog = self.lag_seconds(), self.backlog_records()
        except Exception:  # the ledger closing under us
            return None
        selfmetrics.set_gauge("sink_lag_seconds", lag, sink="postgres")
        selfmetrics.set_gauge("sink_backlog_records", backlog, sink="postgres")
        return backlog


class FleetSpend:
    """Read side of the central table for fleet-wide budgets (agent/budgets.py):
    what the other hosts' shipped records cost since a time. Built by the
    daemon next to the sink and handed to the budgets as a callable; its own
    connection, short timeouts, never the sink's thread."""

    def __init__(self, config, table: str = DEFAULT_TABLE):
        sec = _sink_section(config, table)
        self.dsn = sec.dsn
        self.interval = float(sec.interval)
        self._sql = (f"SELECT host, name, labels::text, sum(cost) FROM {table} "
                     f"WHERE period_start >= to_timestamp(%s) AND host <> %s "
                     f"GROUP BY host, container_id, name, labels::text")
        self._conn = None

    def since(self, start: int, exclude_host: str) -> list[tuple[str, str, dict, int]]:
        """[(host, name, labels, nano-units)] of every other host's records with
        period_start >= start; raises on any database error (the caller keeps
        its last answer)."""
        import json

        import psycopg  # optional dependency: only when a sink is configured
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, connect_timeout=5, autocommit=True,
                                         application_name="cgroup-agent-budgets")
        try:
            rows = self._conn.execute(self._sql, (start, exclude_host)).fetchall()
        except Exception:
            self.close()
            raise
        return [(h, n, json.loads(lab), int(Decimal(c).scaleb(9))) for h, n, lab, c in rows]

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

