"""Billing ledger: per container instance and wall-clock period, one record,
exactly once, in its own SQLite file (state_dir/ledger.db, WAL).

Model (see docs/billing.md for the reasoning):

- A container instance is (container id, cgroup inode). For each instance the
  ledger keeps one row of *committed state*: the raw kernel counters at the
  last sample it accounted for (cpu usage/user/system/throttled µs, io.stat
  per device), the last memory/swap readings and times (for the trapezoid),
  and the accumulators of the open period [open_start, open_start + period).
- observe(snapshot): for every container sample, the counter deltas since the
  committed counters (a decrease or a new inode counts from zero, like
  Prometheus increase()) go into the period that contains the sample's wall
  time; a period is closed (a record written) when a sample of a later period
  arrives. Records, day/hour rollups and the new state of every instance are
  written in ONE transaction per pass, so a SIGKILL at any instant leaves
  either the state before or after the pass: what the records plus the open
  accumulators hold is always exactly the committed counters' increase.
- Deltas over a gap (agent down) land in the first period after the gap.
  The open period of an instance only moves forward (max of the sample's
  period and the period after the last closed one): a wall clock going back
  never re-opens a closed period; durations come from CLOCK_MONOTONIC.
- record_id = sha256(host|container_id|cgroup_inode|period_start)[:32]:
  a replay can only hit INSERT OR IGNORE on the same id.
"""
from __future__ import annotations

import hashlib
import json
import math
import operator
import os
import re
import sqlite3
import threading
import time
from datetime import datetime, timezone
from typing import NamedTuple

from agent.pricing import RateCard, money, unpriced_meters

try:  # structlog is a dependency of the daemon; the ledger also runs in tests
    import structlog
    log = structlog.get_logger("agentd.ledger")
except ImportError:  # pragma: no cover
    import logging
    log = logging.getLogger("agentd.ledger")

IDLE, RUNNING, FROZEN = 0, 1, 2
HOUR = 3600
DAY = 86400
FOREVER = 1 << 62
GC_AFTER = DAY            # forget idle, unseen instances after this long
FINISHED_GC_AFTER = 30.0  # a finished instance (final reading taken) is remembered only so that
                          # a collector pass that raced the final reading is recognised as older
                          # (_advance) instead of billing the container again; such a pass arrives
                          # within seconds (the supervisor forgets the container right after its
                          # final reading). Longer grew RSS under churn by ~1.5 kB per container.
MAINTAIN_EVERY = 60.0     # seconds between retention passes
SINK_CURSOR_KEY = "sink.postgres.cursor"
RETENTION_CHUNK = 20000   # records deleted per retention transaction

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
)
ACC_ZERO = {
    "a_samples": 0, "a_running": 0.0, "a_frozen": 0.0, "a_cpu": 0, "a_user": 0, "a_system": 0,
    "a_throttled": 0, "a_mem_bs": 0.0, "a_swap_bs": 0.0, "a_mem_peak": 0, "a_pids_peak": 0,
    "a_rbytes": 0, "a_wbytes": 0, "a_rios": 0, "a_wios": 0, "a_res_cpu": 0.0, "a_res_mem": 0.0,
    "a_log": 0, "a_meas": 0, "a_interp": 0,
}
# a_meas bits: which dimensions a sample of the open period measured (the
# file exists on this host); a dimension no sample measured is null, unpriced
MEAS_MEMORY, MEAS_SWAP, MEAS_IO, MEAS_PIDS = 1, 2, 4, 8
MEASURED_COLS = (("memory_measured", MEAS_MEMORY), ("swap_measured", MEAS_SWAP),
                 ("io_measured", MEAS_IO), ("pids_measured", MEAS_PIDS))

# Columns summed by rollups and queries, and those maxed.
SUM_COLS = (
    "running_usec", "frozen_usec", "cpu_usec", "cpu_user_usec", "cpu_system_usec",
    "cpu_throttled_usec", "memory_byte_seconds", "swap_byte_seconds",
    "io_read_bytes", "io_write_bytes", "io_read_ops", "io_write_ops",
    "reserved_cpu_usec", "reserved_memory_byte_seconds",
    "priced_cpu_usec", "priced_memory_byte_seconds",
    "cost_cpu_nanos", "cost_memory_nanos", "cost_io_read_nanos", "cost_io_write_nanos", "cost_nanos",
    # added later (existing ledgers get them by _migrate): bytes of log
    # output the container produced; per record 0/1 flags, summed by rollups
    # and groups into counts of records
    "log_bytes", "interpolated", *(c for c, _ in MEASURED_COLS),
)
# Default of a column added to an existing ledger: old records were all
# measured (their zeros cannot be told from real zeros) and never interpolated.
ADDED_DEFAULTS = {"log_bytes": 0, "interpolated": 0, **{c: 1 for c, _ in MEASURED_COLS}}
MAX_COLS = ("memory_peak_bytes", "pids_peak")
REC_COLS = (
    "record_id", "host", "container_id", "name", "labels", "cgroup_inode",
    "period_start", "period_end", *SUM_COLS, *MAX_COLS,
    "cpu_limit_cores", "memory_limit_bytes", "currency",
)

def _int_cols(cols) -> str:
    return ", ".join(c + " INTEGER NOT NULL" + (f" DEFAULT {ADDED_DEFAULTS[c]}" if c in ADDED_DEFAULTS else "")
                     for c in cols)


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
CREATE TABLE IF NOT EXISTS rollups_hour (
    start INTEGER NOT NULL, container_id TEXT NOT NULL, cgroup_inode INTEGER NOT NULL,
    name TEXT NOT NULL, labels TEXT NOT NULL, n INTEGER NOT NULL,
    {_int_cols(SUM_COLS)},
    {_int_cols(MAX_COLS)},
    PRIMARY KEY (start, container_id, cgroup_inode, name, labels)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollups_day (
    start INTEGER NOT NULL, container_id TEXT NOT NULL, cgroup_inode INTEGER NOT NULL,
    name TEXT NOT NULL, labels TEXT NOT NULL, n INTEGER NOT NULL,
    {_int_cols(SUM_COLS)},
    {_int_cols(MAX_COLS)},
    PRIMARY KEY (start, container_id, cgroup_inode, name, labels)
) WITHOUT ROWID;
"""

# Rollups: (table, bucket seconds). A record belongs to the bucket of its period_start.
ROLLUPS = (("rollups_day", DAY), ("rollups_hour", HOUR))
_INSERT_RECORD = (f"INSERT OR IGNORE INTO records ({', '.join(REC_COLS)}) "
                  f"VALUES ({', '.join('?' * len(REC_COLS))})")
_ROLLUP_KEY = ("start", "container_id", "cgroup_inode", "name", "labels")


def _upsert_rollup(table: str) -> str:
    return (
        f"INSERT INTO {table} ({', '.join(_ROLLUP_KEY)}, n, {', '.join(SUM_COLS)}, {', '.join(MAX_COLS)}) "
        f"VALUES ({', '.join('?' * (len(_ROLLUP_KEY) + 1 + len(SUM_COLS) + len(MAX_COLS)))}) "
        f"ON CONFLICT ({', '.join(_ROLLUP_KEY)}) DO UPDATE SET n = n + 1, "
        + ", ".join(f"{c} = {c} + excluded.{c}" for c in SUM_COLS) + ", "
        + ", ".join(f"{c} = max({c}, excluded.{c})" for c in MAX_COLS))


_UPSERTS = tuple((_upsert_rollup(t), size) for t, size in ROLLUPS)
_SAVE_STATE = (f"INSERT OR REPLACE INTO instances ({', '.join(STATE_COLS)}) "
               f"VALUES ({', '.join('?' * len(STATE_COLS))})")


def _migrate(db: sqlite3.Connection) -> None:
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
    with _Transaction(db):
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


class Instance:
    """Committed (or about to be committed) state of one container instance.
    ``io`` (per-device counters) and ``labels_src`` are in-memory helpers:
    ``c_io`` is their persisted form."""

    __slots__ = STATE_COLS + ("io", "labels_src")

    def __init__(self, **values):
        for c in STATE_COLS:
            setattr(self, c, values.get(c))
        self.io = _io_decode(self.c_io)
        self.labels_src = None

    @classmethod
    def new(cls, container_id: str, inode: int, name: str, labels: str) -> "Instance":
        return cls(container_id=container_id, cgroup_inode=inode, name=name, labels=labels,
                   open_start=None, next_min=0, last_state=IDLE, c_io="", finished=0, **ACC_ZERO)

    def row(self) -> tuple:
        return _STATE_ROW(self)

    @property
    def key(self) -> tuple:
        return (self.container_id, self.cgroup_inode)


_STATE_ROW = operator.attrgetter(*STATE_COLS)


def _io_decode(text) -> dict:
    """"8:0=rbytes,wbytes,rios,wios;..." -> {"8:0": [..4 ints or None..]}."""
    out = {}
    for part in (text or "").split(";"):
        if part:
            dev, _, vals = part.partition("=")
            out[dev] = [int(v) if v else None for v in vals.split(",")]
    return out


def _io_encode(io: dict) -> str:
    return ";".join(dev + "=" + ",".join("" if v is None else str(v) for v in vals)
                    for dev, vals in io.items())


def record_id(host: str, container_id: str, inode: int, period_start: int) -> str:
    return hashlib.sha256(f"{host}|{container_id}|{inode}|{period_start}".encode()).hexdigest()[:32]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def labels_json(labels) -> str:
    return json.dumps(dict(labels or {}), sort_keys=True, separators=(",", ":"))


def _delta(cur, last):
    """(increase, new last) of a cumulative counter; decrease = reset, count from zero."""
    if cur is None:
        return 0, last
    if last is None or cur < last:
        return cur, cur
    return cur - last, cur


_INT_ACC = ("a_cpu", "a_user", "a_system", "a_throttled", "a_rbytes", "a_wbytes", "a_rios", "a_wios", "a_log")


def _overlaps(w0: float, w1: float, first: int, n: int, period: int) -> list[int]:
    """Microseconds of (w0, w1] in each of the n periods from ``first`` on; the
    first period also takes what lies before it, the last what lies after it."""
    a, b = round(w0 * 1e6), round(w1 * 1e6)
    out = []
    for k in range(n):
        lo = a if k == 0 else max(a, (first + k * period) * 1_000_000)
        hi = b if k == n - 1 else min(b, (first + (k + 1) * period) * 1_000_000)
        out.append(max(0, hi - lo))
    if not any(out):
        out[-1] = 1
    return out


def _split_int(total: int, weights: list[int], wsum: int) -> list[int]:
    """Split an integer in proportion to weights, exactly: floors, then the
    remainder one by one to the largest fractional parts (ties: the earlier)."""
    if not total:
        return [0] * len(weights)
    if len(weights) == 1:
        return [total]
    q = [total * w // wsum for w in weights]
    rem = total - sum(q)
    if rem:
        order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % wsum), i))
        for i in order[:rem]:
            q[i] += 1
    return q


def _limit_cores(limits) -> float | None:
    """cpu.max quota/period in cores; None when unlimited ("max") or unset."""
    quota = getattr(limits, "cpu_quota_us", None)
    if not isinstance(quota, int) or isinstance(quota, bool) or quota <= 0:
        return None
    period = getattr(limits, "cpu_period_us", None)
    if not isinstance(period, int) or period <= 0:
        period = 100000
    return quota / period


def _limit_bytes(limits) -> int | None:
    """memory.max in bytes; None when unlimited ("max") or unset."""
    v = getattr(limits, "memory_max", None)
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def _sample_state(info, sample) -> int:
    ev = getattr(sample, "events", None)
    if ev is not None:
        if not ev.populated:
            return IDLE
        return FROZEN if ev.frozen else RUNNING
    state = getattr(info, "state", "")
    return RUNNING if state == "running" else FROZEN if state == "paused" else IDLE


class Ledger:
    """Exactly-once usage records. Thread-safe: observe() (collector thread),
    final() (supervisor), query() (API threads) and the sink may run at once."""

    def __init__(self, config, db_path: str, rate_card: RateCard | None = None,
                 checkpoint_interval: float = 0.0):
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
        self._lock = threading.RLock()
        self._closed = False
        self._failures = 0
        self._last_failure_log = -1e18
        self._maintainer: threading.Thread | None = None
        self._sink = None
        self._last_maintain = time.monotonic()
        # 0: commit every instance's counters and partial accumulators on every
        # pass. N > 0: only every N seconds (and always for an instance whose
        # period closes, in the records' transaction). Either way the committed
        # (counters, accumulators) pair is consistent: CPU and IO stay exact
        # after a crash; only memory byte-seconds of the last N seconds before
        # a crash become a trapezoid across the gap.
        self.checkpoint_interval = float(checkpoint_interval)
        self._last_checkpoint = -1e18
        self._unsaved: dict[tuple, Instance] = {}
        d = os.path.dirname(os.path.abspath(db_path))
        os.makedirs(d, exist_ok=True)
        self._db = self._connect()
        self._db.executescript(SCHEMA)
        _migrate(self._db)
        self._instances: dict[tuple, Instance] = {}
        self._load()

    # ------------------------------------------------------------ plumbing

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: in WAL mode a transaction is durable against a process crash
        # (SIGKILL) at any instant; only an OS crash/power loss can lose the
        # last transactions, and then atomically (state and records together).
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _load(self) -> None:
        self._instances = {}
        cur = self._db.execute(f"SELECT {', '.join(STATE_COLS)} FROM instances")
        for row in cur:
            inst = Instance(**dict(zip(STATE_COLS, row)))
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
        return _Transaction(self._db)

    def start(self) -> None:
        """Start the PostgreSQL shipping thread when [sink.postgres] is configured."""
        if self.sink_configured and self._sink is None:
            from exporters.postgres import PostgresSink
            self._sink = PostgresSink(self.config, self)
            self._sink.start()

    def flush(self) -> None:
        """Commit every instance's state now (checkpoint_interval > 0)."""
        with self._lock:
            if self._unsaved:
                self._commit([], list(self._unsaved.values()), [])
                self._unsaved.clear()

    def close(self) -> None:
        if self._sink is not None:
            self._sink.stop()
            self._sink = None
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

    @property
    def sink(self):
        return self._sink

    # ------------------------------------------------------------ accounting

    def observe(self, snapshot) -> None:
        """Account one collector Snapshot (subscriber callback; never raises)."""
        try:
            with self._lock:
                if self._closed:
                    return
                self._observe(snapshot)
        except Exception as exc:  # the collector must keep going
            _count_error("observe")
            self._failures += 1
            now = time.monotonic()
            if now - self._last_failure_log >= 60:   # a full disk fails every pass: log once a minute
                log.error("ledger.observe_failed", error=str(exc), exc_type=type(exc).__name__,
                          failures_since_last_log=self._failures)
                self._failures = 0
                self._last_failure_log = now
            self._recover()
        self._maybe_maintain()

    def _observe(self, snapshot) -> None:
        wall = float(snapshot.taken_at)
        mono = float(snapshot.monotonic)
        pw = self._period_of(wall)
        records: list[tuple] = []
        seen: set = set()
        closed: dict[tuple, Instance] = {}
        unsaved = self._unsaved
        samples = snapshot.samples
        for info in _containers(snapshot):
            sample = _lookup(samples, info.cgroup)
            if sample is None:
                continue
            n = len(records)
            inst = self._advance(info, sample, wall, mono, pw, records)
            key = (inst.container_id, inst.cgroup_inode)
            seen.add(key)
            unsaved[key] = inst
            if len(records) != n:
                closed[key] = inst
        gone = []
        for key, inst in self._instances.items():
            if key in seen:
                continue
            if inst.open_start is not None and pw > inst.open_start:
                records.append(self._close(inst))
                closed[key] = inst
            elif inst.open_start is None and \
                    (inst.last_wall or 0) < wall - (FINISHED_GC_AFTER if inst.finished else GC_AFTER):
                gone.append(key)
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
                    inst = self._advance(info, sample, wall, mono, self._period_of(wall), records,
                                         final=True)
                if inst.finished and not (inst.a_cpu or inst.a_rbytes or inst.a_wbytes
                                          or inst.a_rios or inst.a_wios or inst.a_log):
                    # a repeated final reading with nothing new: no empty record
                    for k, v in ACC_ZERO.items():
                        setattr(inst, k, v)
                    inst.open_start = None
                elif inst.open_start is not None:
                    records.append(self._close(inst))
                inst.finished = 1
                self._commit(records, [inst], [])
                self._unsaved.pop(inst.key, None)
        except Exception as exc:
            _count_error("final")
            log.error("ledger.final_failed", container_id=getattr(info, "id", None), error=str(exc))
            self._recover()

    def _find(self, info):
        found = [i for i in self._instances.values() if i.container_id == info.id]
        return max(found, key=lambda i: i.last_wall or 0) if found else None

    def _period_of(self, wall: float) -> int:
        return int(math.floor(wall / self.period)) * self.period

    def _advance(self, info, sample, wall, mono, pw, records, final=False) -> Instance:
        """Account one reading of one container. The reading interval (from the
        last accounted reading to this one) is split across the wall-clock
        periods it covers in proportion to time: every dimension, so that no
        record holds more than its own period's share. A period the interval
        passes without any reading of its own (agentd was down) gets its
        share as a record of its own; the records made from an interval longer
        than ``self.gap`` are flagged interpolated."""
        inode = sample.inode or 0
        key = (info.id, inode)
        inst = self._instances.get(key)
        new = inst is None
        if new:
            inst = Instance.new(info.id, inode, info.name, labels_json(info.labels))
            self._instances[key] = inst
        elif inst.last_mono is not None and mono < inst.last_mono:
            # a sample older than what is already accounted for (a collector pass
            # that started before the supervisor's final reading): its counters
            # would look like a reset. Ignore it.
            return inst
        inst.name = info.name
        if info.labels is not inst.labels_src:
            inst.labels = labels_json(info.labels)
            inst.labels_src = info.labels

        state = _sample_state(info, sample)
        limits = info.limits
        cores = _limit_cores(limits) if limits is not None else None
        mem_limit = _limit_bytes(limits) if limits is not None else None
        # the reading interval (w0, wall]: wall-clock positions, dt its CLOCK_MONOTONIC length
        last_mono = inst.last_mono
        if last_mono is not None:
            dt = max(0.0, mono - last_mono)
            prev = inst.last_state
        else:
            dt, prev = 0.0, IDLE
        if inst.last_wall is not None and wall < inst.last_wall:
            # the wall clock was set back: this instance's timeline goes on from
            # its last reading at the monotonic pace (no period is re-opened)
            wall = inst.last_wall + dt
        w0 = inst.last_wall if inst.last_wall is not None else wall
        if last_mono is None:
            started = info.started_at
            if new and started:
                end = info.finished_at if final else None
                dt = max(0.0, (end or wall) - started)
                prev = FROZEN if state == FROZEN else RUNNING
                w0 = min(started, wall)

        # counter increases since the committed counters
        inc = [0] * len(_INT_ACC)     # in _INT_ACC order
        cpu = sample.cpu
        if cpu is not None:
            inc[0], inst.c_usage = _delta(cpu.usage_usec, inst.c_usage)
            inc[1], inst.c_user = _delta(cpu.user_usec, inst.c_user)
            inc[2], inst.c_system = _delta(cpu.system_usec, inst.c_system)
            inc[3], inst.c_throttled = _delta(cpu.throttled_usec, inst.c_throttled)
        io = sample.io
        if io:
            last_io = inst.io
            for dev, st in io.items():
                dkey = f"{dev[0]}:{dev[1]}" if isinstance(dev, tuple) else str(dev)
                last = last_io.get(dkey)
                if last is None:
                    last = last_io[dkey] = [None, None, None, None]
                for i, cur in enumerate((st.rbytes, st.wbytes, st.rios, st.wios)):
                    d, last[i] = _delta(cur, last[i])
                    inc[4 + i] += d
            inst.c_io = _io_encode(last_io)
        log_bytes = getattr(info, "log_bytes", None)
        if log_bytes is not None:
            inc[8], inst.c_log = _delta(log_bytes, inst.c_log)

        # memory and pids of a cgroup with no process (an exited container whose
        # cgroup is kept for a restart) are not billed: no time, no peak
        active = prev != IDLE or state != IDLE
        mem = sample.memory_current
        swap = sample.memory_swap_current
        mem_bs = swap_bs = 0.0
        if dt > 0 and last_mono is not None and active:
            if mem is not None and inst.last_mem is not None:
                mem_bs = (inst.last_mem + mem) / 2.0 * dt
            if swap is not None and inst.last_swap is not None:
                swap_bs = (inst.last_swap + swap) / 2.0 * dt
        meas = ((MEAS_MEMORY if mem is not None else 0) | (MEAS_SWAP if swap is not None else 0)
                | (MEAS_IO if io is not None else 0)
                | (MEAS_PIDS if sample.pids_current is not None else 0))

        # the periods the interval covers: from the open one (or the first one
        # not closed yet) to the one of this reading
        first = inst.open_start if inst.open_start is not None else max(self._period_of(w0), inst.next_min)
        last_p = max(first, self._period_of(wall))
        n = (last_p - first) // self.period + 1
        if n > 1 and (dt > 0 or any(inc)):
            weights = _overlaps(w0, wall, first, n, self.period)
        else:
            if inst.open_start is not None and last_p > inst.open_start:
                records.append(self._close(inst))
            weights, first, n = [1], last_p, 1
        wsum = sum(weights)
        gap = dt > self.gap
        line = n > 1 and mem is not None and inst.last_mem is not None and active
        if n == 1:      # the common case: the whole increase goes to one period
            parts = [(acc, (v,)) for acc, v in zip(_INT_ACC, inc) if v]
        else:
            parts = [_split_int(v, weights, wsum) for v in inc]
            if inc[1] + inc[2] == inc[0] and inc[0]:
                # keep user + system = usage in every record when the kernel's do
                parts[1] = _split_int(inc[1], parts[0], inc[0])
                parts[2] = [c - u for c, u in zip(parts[0], parts[1])]
            parts = [(acc, vals) for acc, vals, v in zip(_INT_ACC, parts, inc) if v]
        for k in range(n):
            if inst.open_start is None:
                inst.open_start = max(first + k * self.period, inst.next_min)
            f = weights[k] / wsum
            share = dt * f
            if prev == RUNNING:
                inst.a_running += share
            elif prev == FROZEN:
                inst.a_frozen += share
            if prev != IDLE:
                if cores:
                    inst.a_res_cpu += cores * share
                if mem_limit:
                    inst.a_res_mem += mem_limit * share
            for acc, vals in parts:
                setattr(inst, acc, getattr(inst, acc) + vals[k])
            inst.a_mem_bs += mem_bs * f
            inst.a_swap_bs += swap_bs * f
            inst.a_meas |= meas
            if gap:
                inst.a_interp = 1
            if line:
                # a period's peak within the interval: the straight line between
                # the two readings, at the period's start and end
                for t in (first + k * self.period, first + (k + 1) * self.period):
                    if w0 < t < wall:
                        v = round(inst.last_mem + (mem - inst.last_mem) * (t - w0) / (wall - w0))
                        if v > inst.a_mem_peak:
                            inst.a_mem_peak = v
            if k < n - 1:
                records.append(self._close(inst))

        if mem is not None and active and mem > inst.a_mem_peak:
            inst.a_mem_peak = mem
        peak = sample.memory_peak
        if peak is not None:
            if peak != inst.last_mem_peak and active:  # a new lifetime peak (or a reset) since the last sample
                if peak > inst.a_mem_peak:
                    inst.a_mem_peak = peak
            inst.last_mem_peak = peak
        pids = sample.pids_current
        if pids is not None and pids > inst.a_pids_peak:
            inst.a_pids_peak = pids

        inst.last_mem = mem
        inst.last_swap = swap
        inst.last_wall = wall
        inst.last_mono = mono
        inst.last_state = state
        inst.cpu_limit = cores
        inst.mem_limit = mem_limit
        inst.a_samples += 1
        return inst

    def _close(self, inst: Instance) -> tuple:
        """Turn the open accumulators into a record row; reset them."""
        start = inst.open_start
        period_us = self.period * 1_000_000
        # durations come from CLOCK_MONOTONIC, the period from the wall clock:
        # a slewed clock must not make a record longer than its period
        running = min(round(inst.a_running * 1e6), period_us)
        frozen = min(round(inst.a_frozen * 1e6), period_us - running)
        res_cpu = round(inst.a_res_cpu * 1e6)
        mem_bs = round(inst.a_mem_bs)
        res_mem = round(inst.a_res_mem)
        meas = inst.a_meas or 0
        mem_measured = bool(meas & MEAS_MEMORY)
        priced = self.card.priced(inst.a_cpu, res_cpu, inst.cpu_limit is not None,
                                  mem_bs, res_mem, inst.mem_limit is not None)
        costs = self.card.costs(priced, inst.a_rbytes, inst.a_wbytes,
                                memory_measured=mem_measured, io_measured=bool(meas & MEAS_IO))
        sums = {
            "running_usec": running, "frozen_usec": frozen,
            "cpu_usec": inst.a_cpu, "cpu_user_usec": inst.a_user, "cpu_system_usec": inst.a_system,
            "cpu_throttled_usec": inst.a_throttled, "memory_byte_seconds": mem_bs,
            "swap_byte_seconds": round(inst.a_swap_bs),
            "io_read_bytes": inst.a_rbytes, "io_write_bytes": inst.a_wbytes,
            "io_read_ops": inst.a_rios, "io_write_ops": inst.a_wios,
            "reserved_cpu_usec": res_cpu, "reserved_memory_byte_seconds": res_mem,
            "priced_cpu_usec": priced.cpu_usec, "priced_memory_byte_seconds": priced.memory_byte_seconds,
            "cost_cpu_nanos": costs.cpu, "cost_memory_nanos": costs.memory,
            "cost_io_read_nanos": costs.io_read, "cost_io_write_nanos": costs.io_write,
            "cost_nanos": costs.total, "log_bytes": inst.a_log or 0,
        }
        flags = {"interpolated": 1 if inst.a_interp else 0,
                 **{c: 1 if meas & bit else 0 for c, bit in MEASURED_COLS}}
        peaks = (inst.a_mem_peak, inst.a_pids_peak)
        for k, v in ACC_ZERO.items():
            setattr(inst, k, v)
        inst.next_min = start + self.period
        inst.open_start = None
        if not any(sums.values()) and not any(peaks):
            return None   # an idle period (e.g. an exited container's cgroup): no record
        sums.update(flags)
        row = (record_id(self.host, inst.container_id, inst.cgroup_inode, start), self.host,
               inst.container_id, inst.name, inst.labels, inst.cgroup_inode, start, start + self.period,
               *(sums[c] for c in SUM_COLS), *peaks,
               inst.cpu_limit, inst.mem_limit, self.card.currency)
        return row

    def _commit(self, records, instances, gone) -> None:
        with self._tx():
            cur = self._db.cursor()
            for row in records:
                if row is None:
                    continue
                cur.execute(_INSERT_RECORD, row)
                if cur.rowcount == 1:
                    r = dict(zip(REC_COLS, row))
                    vals = (r["container_id"], r["cgroup_inode"], r["name"], r["labels"], 1,
                            *(r[c] for c in SUM_COLS), *(r[c] for c in MAX_COLS))
                    for sql, size in _UPSERTS:
                        cur.execute(sql, (r["period_start"] // size * size, *vals))
            cur.executemany(_SAVE_STATE, [i.row() for i in instances])
            if gone:
                cur.executemany("DELETE FROM instances WHERE container_id=? AND cgroup_inode=?", gone)
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

    def _maybe_maintain(self) -> None:
        """Retention runs in its own short-lived thread, never in the collector's."""
        now = time.monotonic()
        if now - self._last_maintain < MAINTAIN_EVERY:
            return
        self._last_maintain = now
        t = self._maintainer
        if t is not None and t.is_alive():
            return

        def run():
            try:
                n = self.maintain()
                if n:
                    log.info("ledger.retention", deleted=n)
            except Exception as exc:
                _count_error("retention")
                log.error("ledger.retention_failed", error=str(exc))

        self._maintainer = threading.Thread(target=run, name="ledger-retention", daemon=True)
        self._maintainer.start()

    def maintain(self, now: float | None = None) -> int:
        """Delete records (and their rollups) older than [billing] retention;
        with a sink, only records already shipped. Whole UTC days only, so
        rollups and records always reconcile. Returns the number of records deleted."""
        now = time.time() if now is None else now
        cutoff = int(now - self.retention) // DAY * DAY
        with self._lock:
            if self._closed:
                return 0
            limit = cutoff
            if self.sink_configured:
                cursor = self.shipped_cursor()
                row = self._db.execute("SELECT MIN(period_start) FROM records WHERE seq > ?",
                                       (cursor,)).fetchone()
                if row[0] is not None:
                    limit = min(limit, row[0] // DAY * DAY)
            with self._tx():   # rollups first: queries stop using those days at once
                for table, _ in ROLLUPS:
                    self._db.execute(f"DELETE FROM {table} WHERE start < ?", (limit,))
        n = 0
        while True:   # then the records, in chunks, so collection is never held up for long
            with self._lock:
                if self._closed:
                    return n
                with self._tx():
                    k = self._db.execute(
                        "DELETE FROM records WHERE seq IN (SELECT seq FROM records WHERE period_start < ? "
                        "LIMIT ?)", (limit, RETENTION_CHUNK)).rowcount
            n += k
            if k < RETENTION_CHUNK:
                return n

    # ------------------------------------------------------------ shipping support

    def shipped_cursor(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (SINK_CURSOR_KEY,)).fetchone()
        return int(row[0]) if row else 0

    def unshipped(self, after_seq: int, limit: int) -> list[tuple[int, dict]]:
        """Records with seq > after_seq in seq order, as (seq, raw row dict with
        the REC_COLS integer columns: µs, byte-seconds, nano-units)."""
        db = self._reader()
        try:
            rows = db.execute(f"SELECT seq, {', '.join(REC_COLS)} FROM records WHERE seq > ? "
                              f"ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()
        finally:
            db.close()
        return [(r[0], dict(zip(REC_COLS, r[1:]))) for r in rows]

    def mark_shipped(self, seq: int) -> None:
        """Advance the shipping cursor (after the remote commit succeeded)."""
        with self._lock, self._tx():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (SINK_CURSOR_KEY, str(int(seq))))

    def oldest_unshipped_end(self, after_seq: int) -> int | None:
        db = self._reader()
        try:
            row = db.execute("SELECT period_end FROM records WHERE seq > ? ORDER BY seq LIMIT 1",
                             (after_seq,)).fetchone()
        finally:
            db.close()
        return row[0] if row else None

    def unshipped_count(self, after_seq: int) -> int:
        """How many records wait after the shipping cursor (the sink's backlog)."""
        db = self._reader()
        try:
            return db.execute("SELECT count(*) FROM records WHERE seq > ?", (after_seq,)).fetchone()[0]
        finally:
            db.close()

    # ------------------------------------------------------------ budgets

    def spend_since(self, since: int) -> list[tuple[str, str, dict, int]]:
        """Cost accrued since ``since`` (records with period_start >= since,
        from day/hour rollups where whole, plus every open period), as
        [(container_id, name, labels, nano-units)] (agent.budgets)."""
        q = UsageQuery(int(since), FOREVER, None, (), "container", "table")
        db = self._reader()
        try:
            db.execute("BEGIN")
            rows = _grouped(db, q, "container")
        finally:
            db.close()
        ci = 3 + 1 + SUM_COLS.index("cost_nanos")
        out = [(r[0], r[1], json.loads(r[2]), r[ci]) for r in rows]
        with self._lock:
            for inst in self._instances.values():
                if inst.open_start is not None and inst.open_start >= since:
                    out.append((inst.container_id, inst.name, json.loads(inst.labels), _open_cost(self.card, inst)))
        return out

    # ------------------------------------------------------------ queries

    def _reader(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA query_only=1")
        return db

    def records(self, since: float | None = None, until: float | None = None) -> list[dict]:
        """Every record with period_start in [since, until), as export dicts."""
        return self.query({"since": since, "until": until, "format": "jsonl"})["rows"]

    def query(self, params: dict) -> dict:
        """GET /v1/usage. params (strings, as from a query string): since, until
        (ISO 8601, epoch seconds or a duration ago such as 24h), name, label
        (K=V, repeatable), group_by (name|label:K|hour|day), format
        (table|csv|jsonl|focus). Raises agent.errors.UserError on bad input."""
        q = parse_usage_params(params, time.time())
        db = self._reader()
        try:
            db.execute("BEGIN")  # one consistent snapshot for rows and totals
            return _run_query(db, q, self)
        finally:
            db.close()


def _open_cost(card, inst: "Instance") -> int:
    """Nano-units the open period of ``inst`` would cost if it closed now."""
    meas = inst.a_meas or 0
    priced = card.priced(inst.a_cpu, round(inst.a_res_cpu * 1e6), inst.cpu_limit is not None,
                         round(inst.a_mem_bs), round(inst.a_res_mem), inst.mem_limit is not None)
    return card.costs(priced, inst.a_rbytes, inst.a_wbytes, memory_measured=bool(meas & MEAS_MEMORY),
                      io_measured=bool(meas & MEAS_IO)).total


class _Transaction:
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


def record_dict(r: dict) -> dict:
    """A records row -> the export form with the issue's field names."""
    return {
        "record_id": r["record_id"], "host": r["host"], "container_id": r["container_id"],
        "name": r["name"], "labels": json.loads(r["labels"]), "cgroup_inode": r["cgroup_inode"],
        "period_start": iso(r["period_start"]), "period_end": iso(r["period_end"]),
        **_meters(r),
        "cpu_limit_cores": r["cpu_limit_cores"], "memory_limit_bytes": r["memory_limit_bytes"],
        **_reserved_and_cost(r, r["currency"]),
        "log_bytes": r["log_bytes"], "interpolated": bool(r["interpolated"]),
    }


def _measured(r, col: str) -> bool:
    """Whether any record behind r (a record, or summed records) measured it."""
    return bool(r.get(col, 1))


def _meters(r) -> dict:
    """Usage columns (a record or summed records) in the issue's units, in its
    order; a dimension no record measured (the host has no such controller) is None."""
    mem, swap, io, pids = (_measured(r, c) for c, _ in MEASURED_COLS)
    return {
        "running_seconds": r["running_usec"] / 1e6, "frozen_seconds": r["frozen_usec"] / 1e6,
        "cpu_seconds": r["cpu_usec"] / 1e6, "cpu_user_seconds": r["cpu_user_usec"] / 1e6,
        "cpu_system_seconds": r["cpu_system_usec"] / 1e6,
        "cpu_throttled_seconds": r["cpu_throttled_usec"] / 1e6,
        "memory_byte_seconds": r["memory_byte_seconds"] if mem else None,
        "memory_peak_bytes": r["memory_peak_bytes"] if mem else None,
        "swap_byte_seconds": r["swap_byte_seconds"] if swap else None,
        "io_read_bytes": r["io_read_bytes"] if io else None, "io_write_bytes": r["io_write_bytes"] if io else None,
        "io_read_ops": r["io_read_ops"] if io else None, "io_write_ops": r["io_write_ops"] if io else None,
        "pids_peak": r["pids_peak"] if pids else None,
    }


def _reserved_and_cost(r, currency: str) -> dict:
    n = r.get("n", 1)   # records behind r: a meter unmeasured in any of them is (partly) unpriced
    return {
        "reserved_cpu_seconds": r["reserved_cpu_usec"] / 1e6,
        "reserved_memory_byte_seconds": r["reserved_memory_byte_seconds"],
        "cost": money(r["cost_nanos"]), "currency": currency,
        "unpriced": unpriced_meters(r.get("memory_measured", n) < n, r.get("io_measured", n) < n),
    }


RECORD_FIELDS = tuple(record_dict({c: (0 if c not in ("labels",) else "{}") for c in REC_COLS}))


def _containers(snapshot):
    c = snapshot.containers
    return c.values() if hasattr(c, "values") else c   # a Mapping (dict, MappingProxyType) or a list


def _lookup(samples, cgroup: str):
    s = samples.get(cgroup)
    if s is None and cgroup:
        s = samples.get(cgroup.rstrip("/"))
    return s


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:  # pragma: no cover
        return "unknown"


def _declare_metrics() -> None:
    try:
        from agent import selfmetrics
        selfmetrics.declare("ledger_errors_total", "counter",
                            "Billing ledger transactions that failed (the committed state is reloaded).", ("stage",))
    except Exception:  # pragma: no cover
        pass


_declare_metrics()


def _count_error(where: str) -> None:
    try:
        from agent import selfmetrics
        selfmetrics.inc("ledger_errors_total", stage=where)
    except Exception:  # pragma: no cover
        pass



# ---------------------------------------------------------------- usage queries

GROUPS = ("name", "hour", "day")
QUERY_KEYS = ("since", "until", "name", "label", "group_by", "format", "open")
FORMATS = ("table", "csv", "jsonl", "focus")
_AGO_RE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_AGO_UNITS = {"s": 1, "m": 60, "h": HOUR, "d": DAY, "w": 7 * DAY}
_LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-/]{1,128}$")
_TIME_HELP = "use ISO 8601 (2026-11-01 or 2026-11-01T00:00:00Z), epoch seconds or a duration ago (90m, 24h, 7d)"


class UsageQuery(NamedTuple):
    since: int
    until: int
    name: str | None
    labels: tuple          # ((key, value), ...)
    group_by: str | None   # None, "name", "hour", "day", "label:K"
    format: str
    open: bool = False     # focus: include the open (current) hour, marked


def _user_error(msg: str):
    from agent.errors import UserError
    return UserError(msg)


def _one(params: dict, key: str):
    v = params.get(key)
    if isinstance(v, (list, tuple)):
        v = v[-1] if v else None
    return None if v is None or v == "" else v


def parse_time(field: str, value, now: float) -> int:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(math.floor(value))
    s = str(value).strip()
    try:
        return int(math.floor(float(s)))
    except ValueError:
        pass
    m = _AGO_RE.match(s)
    if m:
        return int(math.floor(now - float(m.group(1)) * _AGO_UNITS[m.group(2)]))
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise _user_error(f"{field}: {s!r} is not a time; {_TIME_HELP}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(math.floor(dt.timestamp()))


def parse_usage_params(params: dict, now: float) -> UsageQuery:
    params = params or {}
    unknown = sorted(set(params) - set(QUERY_KEYS))
    if unknown:
        raise _user_error(f"{unknown[0]}: is not a usage query parameter; accepted: {', '.join(QUERY_KEYS)}")
    since = _one(params, "since")
    until = _one(params, "until")
    since = 0 if since is None else parse_time("since", since, now)
    until = FOREVER if until is None else parse_time("until", until, now)
    if until <= since:
        raise _user_error("until: must be later than since")
    labels = params.get("label") or ()
    if isinstance(labels, str):
        labels = labels.split(",")     # K=V[,K=V...]: one query parameter
    elif isinstance(labels, dict):
        labels = [f"{k}={v}" for k, v in labels.items()]
    pairs = []
    for item in labels:
        k, sep, v = str(item).partition("=")
        if not sep or not _LABEL_KEY_RE.match(k):
            raise _user_error(f"label: {item!r} is not KEY=VALUE (key: letters, digits, _ . - /)")
        pairs.append((k, v))
    group = _one(params, "group_by")
    if group is not None:
        group = str(group)
        if group.startswith("label:"):
            if not _LABEL_KEY_RE.match(group[6:]):
                raise _user_error(f"group_by: {group!r} needs a label key, e.g. label:team")
        elif group not in GROUPS:
            raise _user_error(f"group_by: {group!r} is not one of name, label:KEY, hour, day")
    fmt = str(_one(params, "format") or "table")
    if fmt not in FORMATS:
        raise _user_error(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    name = _one(params, "name")
    open_ = str(_one(params, "open") or "0").lower()
    if open_ not in ("0", "1", "true", "false"):
        raise _user_error(f"open: {open_!r} is not a boolean; use 1 or 0 (true or false)")
    return UsageQuery(since, until, None if name is None else str(name), tuple(pairs), group, fmt,
                      open_ in ("1", "true"))


def _json_path(key: str) -> str:
    return "'$.\"" + key + "\"'"   # key validated by _LABEL_KEY_RE: no quotes


def _filters(q: UsageQuery) -> tuple[str, list]:
    sql, args = [], []
    if q.name is not None:
        sql.append("name = ?")
        args.append(q.name)
    for k, v in q.labels:
        sql.append(f"json_extract(labels, {_json_path(k)}) = ?")
        args.append(v)
    return "".join(" AND " + s for s in sql), args


def _key_exprs(group: str, ts: str) -> list[str]:
    """SQL expressions of the group key columns; ``ts`` is the bucket start
    column (records: period_start, rollups: start)."""
    if group == "name":
        return ["name"]
    if group == "hour":
        return [f"{ts} / {HOUR} * {HOUR}"]
    if group == "day":
        return [f"{ts} / {DAY} * {DAY}"]
    if group == "instance-hour":
        return [f"{ts} / {HOUR} * {HOUR}", "container_id", "cgroup_inode", "name", "labels"]
    if group == "container":
        return ["container_id", "name", "labels"]
    return [f"COALESCE(json_extract(labels, {_json_path(group[6:])}), '')"]


def _split(since: int, until: int, levels) -> list[tuple[str, str, int, int]]:
    """Cover [since, until) with the coarsest buckets that fit entirely:
    [(table, start column, lo, hi), ...]; what no bucket covers comes from records."""
    if not levels:
        return [("records", "period_start", since, until)]
    (table, size), rest = levels[0], levels[1:]
    lo = -(-since // size) * size
    hi = until // size * size
    if lo >= hi:
        return _split(since, until, rest)
    return [*_split(since, lo, rest), (table, "start", lo, hi), *_split(hi, until, rest)]


def _grouped(db, q: UsageQuery, group: str) -> list[tuple]:
    """Rows (key..., n, sums..., maxes...) from day rollups for whole days,
    hour rollups for whole hours and records for the rest of [since, until).
    Every record is in exactly one part (by its period_start)."""
    levels = ROLLUPS if group not in ("hour", "instance-hour") else ROLLUPS[1:]
    filt, fargs = _filters(q)
    cols = ", ".join((*SUM_COLS, *MAX_COLS))
    parts, args = [], []
    for table, ts, lo, hi in _split(q.since, q.until, levels):
        if lo >= hi:
            continue
        keys = ", ".join(f"{e} AS k{i}" for i, e in enumerate(_key_exprs(group, ts)))
        n = "1 AS n" if table == "records" else "n"
        parts.append(f"SELECT {keys}, {n}, {cols} FROM {table} WHERE {ts} >= ? AND {ts} < ?{filt}")
        args += [lo, hi, *fargs]
    nk = len(_key_exprs(group, "x"))
    ks = ", ".join(f"k{i}" for i in range(nk))
    outer = (f"SELECT {ks}, SUM(n), " + ", ".join(f"SUM({c})" for c in SUM_COLS) + ", "
             + ", ".join(f"MAX({c})" for c in MAX_COLS))
    sql = f"{outer} FROM ({' UNION ALL '.join(parts)}) GROUP BY {ks} ORDER BY {ks}"
    return db.execute(sql, args).fetchall()


def usage_row(sums: dict, currency: str) -> dict:
    """Summed integer columns -> an output row in the issue's units."""
    return {
        "records": sums["n"],
        **_meters(sums),
        **_reserved_and_cost(sums, currency),
        "log_bytes": sums["log_bytes"], "interpolated_records": sums["interpolated"],
    }


def _zero_sums() -> dict:
    return {"n": 0, **{c: 0 for c in SUM_COLS}, **{c: 0 for c in MAX_COLS}}


def _add(total: dict, sums: dict) -> None:
    total["n"] += sums["n"]
    for c in SUM_COLS:
        total[c] += sums[c] or 0
    for c in MAX_COLS:
        total[c] = max(total[c], sums[c] or 0)


def _run_query(db, q: UsageQuery, ledger: "Ledger") -> dict:
    currency = ledger.card.currency
    total = _zero_sums()
    out = {"since": iso(q.since) if q.since > 0 else None,
           "until": iso(q.until) if q.until < FOREVER else None,
           "host": ledger.host, "currency": currency, "basis": ledger.card.basis,
           "group_by": q.group_by, "format": q.format}
    if q.format in ("csv", "jsonl") and q.group_by is None:
        filt, fargs = _filters(q)
        cur = db.execute(f"SELECT {', '.join(REC_COLS)} FROM records WHERE period_start >= ? "
                         f"AND period_start < ?{filt} ORDER BY period_start, container_id, cgroup_inode",
                         [q.since, q.until, *fargs])
        rows = []
        for r in cur:
            d = dict(zip(REC_COLS, r))
            _add(total, {"n": 1, **d})
            rows.append(record_dict(d))
        out.update(kind="records", rows=rows, totals=usage_row(total, currency))
        return out
    if q.format == "focus":
        from exporters.focus import focus_rows, grace_seconds, hour_is_open
        hourly = []
        now, grace = time.time(), grace_seconds(ledger.period)
        for r in _grouped(db, q, "instance-hour"):
            if not q.open and hour_is_open(r[0], now, grace):
                continue                      # closed periods only unless asked (totals too)
            sums = dict(zip(("n", *SUM_COLS, *MAX_COLS), r[5:]))
            _add(total, sums)
            hourly.append({"hour": r[0], "container_id": r[1], "cgroup_inode": r[2], "name": r[3],
                           "labels": json.loads(r[4]), **sums})
        out.update(kind="focus", rows=focus_rows(hourly, ledger.host, ledger.card, now, grace, q.open),
                   totals=usage_row(total, currency))
        return out
    group = q.group_by or "name"
    rows = []
    for r in _grouped(db, q, group):
        sums = dict(zip(("n", *SUM_COLS, *MAX_COLS), r[1:]))
        _add(total, sums)
        key = r[0]
        if group in ("hour", "day"):
            key = iso(key)
        rows.append({"group": key, **usage_row(sums, currency)})
    out.update(kind="groups", group_by=group, rows=rows, totals=usage_row(total, currency))
    return out
