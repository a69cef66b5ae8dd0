"""The Ledger: exactly-once usage records, one per container instance and
wall-clock period, in its own SQLite file (state_dir/ledger.db, WAL).

Model (see docs/billing.md for the reasoning):

- A container instance is (container id, cgroup inode). For each instance the
  ledger keeps one row of *committed state*: the raw kernel counters at the
  last sample it accounted for, the last memory/swap readings and times (for
  the trapezoid), and the accumulators of the open period (agent.ledger.instance).
- observe(snapshot): every container sample is accounted (agent.ledger.accounting);
  records, day/hour rollups and the new state of every instance are written in
  ONE transaction per pass, so a SIGKILL at any instant leaves either the state
  before or after the pass: what the records plus the open accumulators hold is
  always exactly the committed counters' increase.
- record_id = sha256(host|container_id|cgroup_inode|period_start)[:32]:
  a replay can only hit INSERT OR IGNORE on the same id.

This module holds the passes, their transactions and the recovery after a
failed one; the schema, accounting, retention, shipping cursor and queries
are modules of their own. The ledger imports no exporter: the daemon builds
the PostgreSQL sink over ``Ledger.cursor`` and hands the FOCUS row shaping in
(``focus_rows``).
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time

import structlog

from agent.errors import UserError
from agent.ledger import schema
from agent.ledger.accounting import LAST_DISK, Accounting
from agent.ledger.cursor import ShippingCursor
from agent.ledger.errors import count_error
from agent.ledger.instance import Instance
from agent.ledger.query import run_query, spend_rows
from agent.ledger.retention import Retention
from agent.pricing import RateCard
from agent.records import MAX_COLS, REC_COLS, SUM_COLS
from agent.usage_query import parse_usage_params

log = structlog.get_logger("agentd.ledger")


class Ledger:
    """Exactly-once usage records. Thread-safe: observe() (collector thread),
    final() (supervisor), query() (API threads) and the sink may run at once.

    ``focus_rows``: the FOCUS exporter's shaping of hourly per-instance sums
    (exporters.focus.focus_rows), for query(format=focus); without it that
    format is refused."""

    def __init__(self, config, db_path: str, rate_card: RateCard | None = None,
                 checkpoint_interval: float = 0.0, focus_rows=None):
        period = float(config.billing.period)
        if period < 1 or period != int(period):
            raise ValueError(f"billing.period: {period:g}s is not a whole number of seconds >= 1")
        self.period = int(period)
        # a reading interval longer than this is a gap (agentd down or stalled):
        # the records it is split into are flagged interpolated
        interval = float(getattr(getattr(config, "collector", None), "interval", 1.0) or 1.0)
        self.gap = 2 * interval + 1.0
        self.retention = float(config.billing.retention)
        self.host = config.agent.host
        self.card = rate_card or RateCard.from_config(config.billing)
        self.config = config
        self.db_path = db_path
        self.sink_configured = getattr(config, "sink_postgres", None) is not None
        self.focus_rows = focus_rows
        self._lock = threading.RLock()
        self._closed = False
        self._failures = 0
        self._last_failure_log = -1e18
        # 0: commit every instance's counters and partial accumulators on every
        # pass. N > 0: only every N seconds (and always for an instance whose
        # period closes, in the records' transaction). Either way the committed
        # (counters, accumulators) pair is consistent: CPU and IO stay exact
        # after a crash; only memory byte-seconds of the last N seconds before
        # a crash become a trapezoid across the gap.
        self.checkpoint_interval = float(checkpoint_interval)
        self._last_checkpoint = -1e18
        self._unsaved: dict[tuple, Instance] = {}
        os.makedirs(os.path.dirname(os.path.abspath(db_path)), exist_ok=True)
        self._db = schema.connect(db_path)
        schema.create(self._db)
        self._instances: dict[tuple, Instance] = {}
        self.accounting = Accounting(self.period, self.gap, self.host, self.card, self._instances)
        self.cursor = ShippingCursor(self._db, self._lock, db_path)
        self._retention = Retention(self)
        self._load()

    # ------------------------------------------------------------ plumbing

    def _load(self) -> None:
        self._instances.clear()
        cur = self._db.execute(f"SELECT {', '.join(schema.STATE_COLS)} FROM instances")
        for row in cur:
            inst = Instance(**dict(zip(schema.STATE_COLS, row)))
            self._instances[inst.key] = inst
        boot = _boot_id()
        row = self._db.execute("SELECT value FROM meta WHERE key='boot_id'").fetchone()
        if row is None or row[0] != boot:
            # CLOCK_MONOTONIC restarted: no duration may span the reboot.
            for inst in self._instances.values():
                inst.last_mono = None
            with self._tx():
                self._db.execute("UPDATE instances SET last_mono = NULL")
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('boot_id', ?)", (boot,))

    def _tx(self):
        return schema.Transaction(self._db)

    def flush(self) -> None:
        """Commit every instance's state now (checkpoint_interval > 0)."""
        with self._lock:
            if self._unsaved:
                self._commit([], list(self._unsaved.values()), [])
                self._unsaved.clear()

    def close(self) -> None:
        """Flush and close (a sink over ``cursor`` is stopped first by its owner)."""
        try:
            self.flush()
        except Exception as exc:
            log.error("ledger.flush_failed", error=str(exc))
        with self._lock:
            self._closed = True
            try:
                self._db.close()
            except sqlite3.Error:
                pass

    # ------------------------------------------------------------ accounting passes

    def observe(self, snapshot) -> None:
        """Account one collector Snapshot (subscriber callback; never raises)."""
        try:
            with self._lock:
                if self._closed:
                    return
                self._observe(snapshot)
        except Exception as exc:  # the collector must keep going
            count_error("observe")
            self._failures += 1
            now = time.monotonic()
            if now - self._last_failure_log >= 60:   # a full disk fails every pass: log once a minute
                log.error("ledger.observe_failed", error=str(exc), exc_type=type(exc).__name__,
                          failures_since_last_log=self._failures)
                self._failures = 0
                self._last_failure_log = now
            self._recover()
        self._retention.maybe_run()

    def _observe(self, snapshot) -> None:
        wall = float(snapshot.taken_at)
        mono = float(snapshot.monotonic)
        acc = self.accounting
        records: list[tuple] = []
        seen: set = set()
        closed: dict[tuple, Instance] = {}
        unsaved = self._unsaved
        samples = snapshot.samples
        fs_usage = getattr(snapshot, "fs_usage", None) or {}
        for info in _containers(snapshot):
            sample = _lookup(samples, info.cgroup)
            if sample is None:
                continue
            n = len(records)
            inst = acc.advance(info, sample, wall, mono, records, disk=_disk(fs_usage, info.id))
            key = (inst.container_id, inst.cgroup_inode)
            seen.add(key)
            unsaved[key] = inst
            if len(records) != n:
                closed[key] = inst
        gone = acc.close_unseen(seen, wall, acc.period_of(wall), records, closed)
        if self.checkpoint_interval <= 0 or mono - self._last_checkpoint >= self.checkpoint_interval \
                or mono < self._last_checkpoint:
            save = list(unsaved.values()) + [i for k, i in closed.items() if k not in unsaved]
            self._commit(records, save, gone)
            unsaved.clear()
            self._last_checkpoint = mono
        else:
            self._commit(records, closed.values(), gone)
            for key in closed:
                unsaved.pop(key, None)
        for key in gone:
            unsaved.pop(key, None)

    def final(self, info, sample, wall: float | None = None, mono: float | None = None) -> None:
        """The supervisor's last reading before it removes the cgroup: account
        it and close the instance's open period now (never raises). wall/mono:
        when the reading was taken (default: now, as the supervisor calls it)."""
        try:
            with self._lock:
                if self._closed:
                    log.warning("ledger.final_after_close", container_id=getattr(info, "id", None))
                    return
                wall = time.time() if wall is None else wall
                mono = time.monotonic() if mono is None else mono
                records: list[tuple] = []
                if sample is None:
                    inst = self._find(info)
                    if inst is None:
                        return
                else:
                    inst = self.accounting.advance(info, sample, wall, mono, records, final=True, disk=LAST_DISK)
                self.accounting.finish(inst, records)
                self._commit(records, [inst], [])
                self._unsaved.pop(inst.key, None)
        except Exception as exc:
            count_error("final")
            log.error("ledger.final_failed", container_id=getattr(info, "id", None), error=str(exc))
            self._recover()

    def _find(self, info):
        found = [i for i in self._instances.values() if i.container_id == info.id]
        return max(found, key=lambda i: i.last_wall or 0) if found else None

    def _commit(self, records, instances, gone) -> None:
        """Records, their rollups and the instances' state in one transaction."""
        with self._tx():
            cur = self._db.cursor()
            for row in records:
                if row is None:
                    continue
                cur.execute(schema.INSERT_RECORD, row)
                if cur.rowcount == 1:
                    r = dict(zip(REC_COLS, row))
                    vals = (r["container_id"], r["cgroup_inode"], r["name"], r["labels"], 1,
                            *(r[c] for c in SUM_COLS), *(r[c] for c in MAX_COLS))
                    for sql, size in schema.UPSERTS:
                        cur.execute(sql, (r["period_start"] // size * size, *vals))
            cur.executemany(schema.SAVE_STATE, [i.row() for i in instances])
            if gone:
                cur.executemany(schema.DELETE_STATE, gone)
        for key in gone:
            self._instances.pop(key, None)

    def _recover(self) -> None:
        """After a failed transaction the in-memory state may be ahead of the
        database: reload the committed state (the next sample recounts from it)."""
        with self._lock:
            try:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._unsaved.clear()
                self._load()
            except Exception as exc:  # pragma: no cover - database gone
                log.error("ledger.reload_failed", error=str(exc))

    # ------------------------------------------------------------ retention

    def maintain(self, now: float | None = None) -> int:
        """Delete records (and their rollups) older than [billing] retention;
        with a sink, only records already shipped. Whole UTC days only, so
        rollups and records always reconcile. Returns the number of records deleted."""
        return self._retention.run(now)

    # ------------------------------------------------------------ shipping cursor (agent.ledger.cursor)

    def shipped_cursor(self) -> int:
        return self.cursor.shipped_cursor()

    def unshipped(self, after_seq: int, limit: int) -> list[tuple[int, dict]]:
        return self.cursor.unshipped(after_seq, limit)

    def mark_shipped(self, seq: int) -> None:
        self.cursor.mark_shipped(seq)

    def oldest_unshipped_end(self, after_seq: int) -> int | None:
        return self.cursor.oldest_unshipped_end(after_seq)

    def unshipped_count(self, after_seq: int) -> int:
        return self.cursor.unshipped_count(after_seq)

    # ------------------------------------------------------------ budgets

    def spend_since(self, since: int) -> list[tuple[str, str, dict, int]]:
        """Cost accrued since ``since`` (records with period_start >= since,
        from day/hour rollups where whole, plus every open period), as
        [(container_id, name, labels, nano-units)] (agent.budgets)."""
        db = schema.reader(self.db_path)
        try:
            db.execute("BEGIN")
            out = spend_rows(db, since)
        finally:
            db.close()
        with self._lock:
            for inst in self._instances.values():
                if inst.open_start is not None and inst.open_start >= since:
                    out.append((inst.container_id, inst.name, json.loads(inst.labels),
                                self.accounting.open_cost(inst)))
        return out

    # ------------------------------------------------------------ queries

    def records(self, since: float | None = None, until: float | None = None) -> list[dict]:
        """Every record with period_start in [since, until), as export dicts."""
        return self.query({"since": since, "until": until, "format": "jsonl"})["rows"]

    def query(self, params: dict) -> dict:
        """GET /v1/usage. params (strings, as from a query string): since, until
        (ISO 8601, epoch seconds or a duration ago such as 24h), name, label
        (K=V, repeatable), group_by (name|label:K|hour|day), format
        (table|csv|jsonl|focus). Raises agent.errors.UserError on bad input."""
        q = parse_usage_params(params, time.time())
        if q.format == "focus" and self.focus_rows is None:
            raise UserError("format: focus is not available here (no FOCUS exporter wired); "
                            "use table, csv or jsonl")
        db = schema.reader(self.db_path)
        try:
            db.execute("BEGIN")  # one consistent snapshot for rows and totals
            return run_query(db, q, self.host, self.card, self.period, self.focus_rows, time.time())
        finally:
            db.close()


def _containers(snapshot):
    c = snapshot.containers
    return c.values() if hasattr(c, "values") else c   # a Mapping (dict, MappingProxyType) or a list


def _lookup(samples, cgroup: str):
    s = samples.get(cgroup)
    if s is None and cgroup:
        s = samples.get(cgroup.rstrip("/"))
    return s


def _disk(fs_usage, container_id: str) -> int | None:
    """Bytes in an image container's upper dir (Snapshot.fs_usage: id -> (device, bytes));
    None: no upper dir of its own, or no walk completed yet."""
    v = fs_usage.get(container_id)
    return None if v is None else v[1]


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:  # pragma: no cover
        return "unknown"
