"""The PostgreSQL sink against the real database of this machine (started by
scripts/services.sh; DSN in $CGROUP_AGENT_TEST_PG): ship in batches, stop
the database in the middle of a batch, start it again: exactly one row per
record, the collection side never blocked, a replay inserts nothing twice,
retention only drops shipped records."""
from __future__ import annotations

import threading
import time
import uuid
from decimal import Decimal
from types import SimpleNamespace

import psycopg
import pytest

from agent.config import load_config
from agent.ledger import Ledger
from agent.model import ContainerInfo
from exporters.postgres import PostgresSink
from runtime.stats import CgroupEvents, CgroupSample, CpuStat, IoStat

from helpers import PG_DSN as DSN, pg_exclusive, pg_online as _online, pg_ctl as _pg

T0 = 1_900_000_800


@pytest.fixture
def pg():
    with pg_exclusive():
        conn = psycopg.connect(DSN, autocommit=True, connect_timeout=5)
        table = f"usage_test_{uuid.uuid4().hex[:10]}"
        try:
            yield conn, table
        finally:
            try:
                conn.close()
            except Exception:
                pass
            if not _online():
                _pg("start")
            with psycopg.connect(DSN, autocommit=True) as c:
                c.execute(f"DROP TABLE IF EXISTS {table}")


class Feed:
    """Synthetic collector passes: n containers, 30 s apart, 60 s periods."""

    def __init__(self, ledger, n=40):
        self.ledger, self.step = ledger, 0
        self.infos = {f"{i:012x}": ContainerInfo(id=f"{i:012x}", name=f"c{i % 7}", cgroup=f"/cg/{i}",
                                                  limits=None, state="running", labels={"team": f"t{i % 3}"})
                      for i in range(n)}

    def passes(self, k):
        for _ in range(k):
            s = self.step
            samples = {info.cgroup: CgroupSample(inode=7, cpu=CpuStat(s * 1000 + i, s * 500, s * 500 + i, 0, 0, 0),
                                                 memory_current=1 << 20, io={(8, 0): IoStat(s, s, s, s, 0, 0)},
                                                 events=CgroupEvents(True, False))
                       for i, info in enumerate(self.infos.values())}
            self.ledger.observe(SimpleNamespace(taken_at=T0 + s * 30 + 0.5, monotonic=100.0 + s * 30,
                                                samples=samples, containers=self.infos))
            self.step += 1


def _ledger(tmp_path):
    cfg = load_config(None, {"billing.period": "60s", "agent.host": "fleet-1", "billing.retention": "1d",
                             "billing.price_cpu_core_hour": "0.036", "sink.postgres.dsn": DSN,
                             "sink.postgres.batch": 100, "sink.postgres.interval": "50ms"})
    return Ledger(cfg, str(tmp_path / "ledger.db"))


def _wait(cond, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_database_stopped_mid_batch_exactly_one_row_per_record(pg, tmp_path):
    conn, table = pg
    ledger = _ledger(tmp_path)
    feed = Feed(ledger)
    feed.passes(30)                      # 14 closed periods x 40 containers
    local = ledger.query({"format": "jsonl"})["rows"]
    assert len(local) >= 500
    sink = PostgresSink(ledger.config, ledger, table=table)
    assert sink.ship_once() == 100       # creates the table, ships one batch
    # hold the table so the next batch blocks half-way (its INSERT is waiting)
    blocker = psycopg.connect(DSN)
    blocker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    sink.start()
    _wait(lambda: conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                               "'cgroup-agent-sink' AND wait_event_type = 'Lock'").fetchone()[0] == 1,
          "the sink's batch to block on the lock")
    cursor_mid = ledger.shipped_cursor()
    conn.close()
    _pg("stop")                          # the database dies in the middle of that batch
    try:
        blocker.close()
    except Exception:
        pass
    # collection goes on while the database is down; records wait locally
    t = threading.Thread(target=feed.passes, args=(10,))
    t.start()
    t.join(60)
    assert not t.is_alive()
    assert ledger.shipped_cursor() == cursor_mid
    assert sink.lag_seconds(now=T0 + 10**6) > 0
    _wait(lambda: sink.last_error is not None, "a failed shipping attempt")
    _pg("start")
    total = len(ledger.query({"format": "jsonl"})["rows"])
    assert total > len(local)
    with psycopg.connect(DSN, autocommit=True) as c:
        _wait(lambda: c.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == total, "every record shipped")
    _wait(lambda: sink.lag_seconds(now=T0 + 10**6) == 0, "lag back to zero")
    sink.stop()

    # a replay (cursor lost after the remote commit) inserts nothing twice
    ledger.mark_shipped(0)
    while sink.ship_once():
        pass
    with psycopg.connect(DSN, autocommit=True) as c:
        n, distinct, cpu, cost = c.execute(
            f"SELECT count(*), count(DISTINCT record_id), sum(cpu_seconds), sum(cost) FROM {table}").fetchone()
    recs = ledger.query({"format": "jsonl"})["rows"]
    assert n == distinct == total == len(recs)
    assert cpu == sum(Decimal(round(r["cpu_seconds"] * 1e6)).scaleb(-6) for r in recs)
    assert cost == sum(Decimal(r["cost"]) for r in recs)
    ledger.close()


def test_retention_keeps_unshipped_records(pg, tmp_path):
    conn, table = pg
    ledger = _ledger(tmp_path)
    Feed(ledger, n=5).passes(20)
    n = len(ledger.query({"format": "jsonl"})["rows"])
    later = T0 + 3 * 86400               # every record is past the 1 d retention
    assert ledger.maintain(now=later) == 0          # nothing shipped yet: nothing deleted
    sink = PostgresSink(ledger.config, ledger, table=table)
    while sink.ship_once():
        pass
    sink.stop()
    assert ledger.maintain(now=later) == n
    res = ledger.query({})
    assert res["rows"] == [] and res["totals"]["records"] == 0
    assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == n
    ledger.close()


def test_a_table_of_an_older_agent_is_migrated_and_unmeasured_ships_as_null(pg, tmp_path):
    """The central table created by an older agent (no log_bytes, interpolated,
    unpriced; memory/io/pids NOT NULL) is altered on connect; a record whose
    host measured no memory, io or pids arrives with NULLs there, its
    unpriced meters and its log bytes."""
    from exporters.postgres import ADDED_SINCE_V2, COLUMNS, NULLABLE_SINCE_V2
    conn, table = pg
    old = ", ".join(f"{n} {t}{' NOT NULL' if n in NULLABLE_SINCE_V2 else ''}"
                    for n, t in COLUMNS if n not in ADDED_SINCE_V2)
    conn.execute(f"CREATE TABLE {table} ({old})")
    ledger = _ledger(tmp_path)
    for s in range(5):
        info = ContainerInfo(id="0000000000aa", name="hybrid", cgroup="/cg/h", limits=None, state="running",
                             labels={}, log_bytes=s * 1000)
        ledger.observe(SimpleNamespace(taken_at=T0 + s * 30 + 0.5, monotonic=100.0 + s * 30,
                                       samples={"/cg/h": CgroupSample(inode=3, cpu=CpuStat(s * 10**6, 0, 0, 0, 0, 0),
                                                                      events=CgroupEvents(True, False))},
                                       containers={info.id: info}))
    sink = PostgresSink(ledger.config, ledger, table=table)
    shipped = 0
    while (n := sink.ship_once()):
        shipped += n
    assert shipped >= 2
    rows = conn.execute(f"SELECT memory_byte_seconds, io_write_bytes, pids_peak, unpriced, log_bytes, cpu_seconds "
                        f"FROM {table} ORDER BY period_start").fetchall()
    assert len(rows) == shipped
    assert all(r[0] is None and r[1] is None and r[2] is None for r in rows)
    assert all(r[3] == ["memory", "io_read", "io_write"] for r in rows)
    local = ledger.query({"format": "jsonl"})["rows"]
    assert sum(r[4] for r in rows) == sum(r["log_bytes"] for r in local) > 0
    sink.stop()
    ledger.close()
