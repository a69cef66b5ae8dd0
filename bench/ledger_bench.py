#!/usr/bin/env python3
"""Ledger benchmarks, as ratios against peers measured in the same run.

1. Ledger cost per container-period at 1000 containers: Ledger.observe()
   fed 1 s collector passes with 60 s periods (60 passes per period; each
   period boundary writes 1000 records + rollups in the same transaction as
   the state), with the state committed every pass (the default) and every
   10 s (checkpoint_interval=10). Peer: a plain
   executemany INSERT of the same 1000-row record batches into a bare
   SQLite table (WAL, synchronous=NORMAL), one transaction per batch.

2. `agentctl usage --group-by name` over 30 days of 100 containers at 60 s
   periods (4.32 million records): Ledger.query() + the table rendering
   (what agentctl prints; the socket round trip adds a constant few ms).
   Peer: the same totals computed by scanning the records table
   (SELECT name, SUM(...) ... GROUP BY name), i.e. without the day and hour
   rollups. Also timed: a range that is not day-aligned (hour rollups and
   records at the edges) and --group-by day.
   Goal: under 1 s.

    python3 bench/ledger_bench.py [--containers 1000] [--days 30] [--keep]

The 4.3 M-record database is built with SQL (not through observe(): that is
what part 1 measures) under /tmp and reused with --keep.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.config import load_config  # noqa: E402
from agent.ledger import MAX_COLS, REC_COLS, ROLLUPS, SUM_COLS, Ledger  # noqa: E402
from agent.model import ContainerInfo  # noqa: E402
from exporters.billing import render  # noqa: E402
from runtime.stats import CgroupEvents, CgroupSample, CpuStat, IoStat  # noqa: E402

T0 = 1_900_000_800  # an hour boundary


def _cfg(period="60s"):
    return load_config(None, {"billing.period": period, "agent.host": "bench", "billing.price_cpu_core_hour": "0.036",
                              "billing.price_memory_gib_hour": "0.0045", "billing.price_io_write_gib": "0.02"})


def bench_observe(n: int, periods: int, tmp: str, checkpoint: float = 0.0) -> dict:
    led = Ledger(_cfg(), os.path.join(tmp, f"observe-{checkpoint:g}.db"), checkpoint_interval=checkpoint)
    infos = {f"{i:012x}": ContainerInfo(id=f"{i:012x}", name=f"c{i}", cgroup=f"/cg/{i}", limits=None,
                                        state="running", labels={"team": f"t{i % 10}"}) for i in range(n)}
    paths = [(i, info.cgroup) for i, info in enumerate(infos.values())]

    def snap(step):
        samples = {p: CgroupSample(inode=1, cpu=CpuStat(step * 1000 + i, step * 600, step * 400 + i, 0, 0, 0),
                                   memory_current=(1 << 24) + step, memory_peak=(1 << 25),
                                   io={(8, 0): IoStat(step * 4096, step * 8192, step, step * 2, 0, 0)},
                                   pids_current=3, events=CgroupEvents(True, False))
                   for i, p in paths}
        return SimpleNamespace(taken_at=T0 + step + 0.5, monotonic=1000.0 + step, samples=samples, containers=infos)

    # warm-up: one full period (instances created), not measured
    for step in range(60):
        led.observe(snap(step))
    snaps = [snap(step) for step in range(60, 60 + 60 * periods + 1)]   # built outside the clock
    t = time.perf_counter()
    for s in snaps:
        led.observe(s)
    ledger_s = time.perf_counter() - t
    passes = len(snaps)
    records = sqlite3.connect(led.db_path).execute("SELECT COUNT(*) FROM records").fetchone()[0]
    rows = sqlite3.connect(led.db_path).execute(
        f"SELECT {', '.join(REC_COLS)} FROM records ORDER BY seq LIMIT ?", (n * periods,)).fetchall()
    led.close()

    # peer: plain INSERT of the same record rows, one transaction per period batch
    peer = sqlite3.connect(os.path.join(tmp, f"peer-{checkpoint:g}.db"), isolation_level=None)
    peer.execute("PRAGMA journal_mode=WAL")
    peer.execute("PRAGMA synchronous=NORMAL")
    peer.execute(f"CREATE TABLE r ({', '.join(REC_COLS)})")
    ins = f"INSERT INTO r VALUES ({', '.join('?' * len(REC_COLS))})"
    t = time.perf_counter()
    for k in range(0, len(rows), n):
        peer.execute("BEGIN")
        peer.executemany(ins, rows[k:k + n])
        peer.execute("COMMIT")
    peer_s = time.perf_counter() - t
    peer.close()
    cp = n * periods
    return {"containers": n, "passes": passes, "records": records,
            "pass_ms": ledger_s / passes * 1e3,
            "ledger_us_per_container_period": ledger_s / cp * 1e6,
            "insert_us_per_row": peer_s / len(rows) * 1e6,
            "ratio": (ledger_s / cp) / (peer_s / len(rows))}


def build_month(path: str, containers: int, days: int) -> int:
    n_periods = days * 86400 // 60
    led = Ledger(_cfg(), path)   # creates the schema
    led.close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    sums = ", ".join(SUM_COLS)
    vals = ", ".join({
        "running_usec": "60000000", "frozen_usec": "0", "cpu_usec": "(p.i * 7919 + c.j * 104729) % 60000000",
        "cpu_user_usec": "(p.i * 7919 + c.j * 104729) % 60000000 / 2",
        "cpu_system_usec": "(p.i * 7919 + c.j * 104729) % 60000000 - (p.i * 7919 + c.j * 104729) % 60000000 / 2",
        "cpu_throttled_usec": "0", "memory_byte_seconds": "(c.j + 1) * 60 * 16777216", "swap_byte_seconds": "0",
        "io_read_bytes": "p.i % 4096 * 512", "io_write_bytes": "p.i % 1024 * 4096", "io_read_ops": "p.i % 64",
        "io_write_ops": "p.i % 32", "reserved_cpu_usec": "0", "reserved_memory_byte_seconds": "0",
        "priced_cpu_usec": "(p.i * 7919 + c.j * 104729) % 60000000",
        "priced_memory_byte_seconds": "(c.j + 1) * 60 * 16777216",
        "cost_cpu_nanos": "(p.i * 7919 + c.j * 104729) % 60000000 / 100", "cost_memory_nanos": "(c.j + 1) * 1000",
        "cost_io_read_nanos": "0", "cost_io_write_nanos": "p.i % 1024 * 76",
        "cost_nanos": "(p.i * 7919 + c.j * 104729) % 60000000 / 100 + (c.j + 1) * 1000 + p.i % 1024 * 76",
    }.get(c, "1" if c.endswith("_measured") else "0") for c in SUM_COLS)   # flags: measured, not interpolated
    db.execute("BEGIN")
    db.execute(
        f"WITH RECURSIVE p(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM p WHERE i < {n_periods - 1}), "
        f"c(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM c WHERE j < {containers - 1}) "
        f"INSERT INTO records (record_id, host, container_id, name, labels, cgroup_inode, period_start, period_end, "
        f"{sums}, {', '.join(MAX_COLS)}, cpu_limit_cores, memory_limit_bytes, currency) "
        f"SELECT printf('%016x%016x', c.j, p.i), 'bench', printf('%012x', c.j), 'svc-' || c.j, "
        f"'{{\"team\":\"t' || (c.j % 10) || '\"}}', 1, {T0} + p.i * 60, {T0} + p.i * 60 + 60, "
        f"{vals}, (c.j + 1) * 16777216, 3, NULL, NULL, 'USD' FROM p, c")
    for table, size in ROLLUPS:
        db.execute(
            f"INSERT INTO {table} (start, container_id, cgroup_inode, name, labels, n, {sums}, "
            f"{', '.join(MAX_COLS)}) SELECT period_start / {size} * {size}, container_id, cgroup_inode, name, "
            f"labels, COUNT(*), " + ", ".join(f"SUM({c})" for c in SUM_COLS) + ", "
            + ", ".join(f"MAX({c})" for c in MAX_COLS) + " FROM records GROUP BY 1, 2, 3, 4, 5")
    db.execute("COMMIT")
    n = db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    db.close()
    return n


def bench_query(path: str, repeat: int = 3) -> dict:
    led = Ledger(_cfg(), path)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = render(led.query({"group_by": "name"}), "table")
        best = min(best, time.perf_counter() - t)
    groups = out.count("\n") - 2
    t = time.perf_counter()
    led.query({"group_by": "name", "since": str(T0 + 3 * 86400 + 1234), "until": str(T0 + 20 * 86400 + 4321)})
    unaligned = time.perf_counter() - t
    t = time.perf_counter()
    led.query({"group_by": "day"})
    by_day = time.perf_counter() - t
    db = sqlite3.connect(path)
    t = time.perf_counter()
    raw = db.execute("SELECT name, COUNT(*), " + ", ".join(f"SUM({c})" for c in SUM_COLS) + ", "
                     + ", ".join(f"MAX({c})" for c in MAX_COLS) + " FROM records GROUP BY name").fetchall()
    peer = time.perf_counter() - t
    res = led.query({"group_by": "name"})
    assert sum(r["records"] for r in res["rows"]) == sum(r[1] for r in raw), "rollups do not reconcile"
    led.close()
    return {"groups": groups, "query_s": best, "scan_s": peer, "speedup": peer / best,
            "unaligned_s": unaligned, "by_day_s": by_day}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--containers", type=int, default=1000, help="containers for the observe benchmark")
    ap.add_argument("--periods", type=int, default=3, help="measured periods for the observe benchmark")
    ap.add_argument("--month-containers", type=int, default=100)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--keep", action="store_true", help="keep and reuse the month database under /tmp")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="cga-ledger-bench-")
    try:
        for cp in (0.0, 10.0):
            r = bench_observe(args.containers, args.periods, tmp, cp)
            what = "state committed every pass" if cp == 0 else f"state committed every {cp:g} s"
            print(f"observe ({what}): {r['containers']} containers, {r['passes']} passes of 1 s, "
                  f"60 s periods: {r['pass_ms']:.2f} ms per pass")
            print(f"  ledger {r['ledger_us_per_container_period']:.1f} us per container-period; "
                  f"plain INSERT {r['insert_us_per_row']:.2f} us per row; ratio {r['ratio']:.1f}x")
        month = f"/tmp/cga-ledger-bench-{args.month_containers}x{args.days}d.db"
        if not (args.keep and os.path.exists(month)):
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(month + suffix):
                    os.unlink(month + suffix)
            t = time.perf_counter()
            n = build_month(month, args.month_containers, args.days)
            print(f"built {n} records in {time.perf_counter() - t:.1f} s ({os.path.getsize(month) >> 20} MiB)")
        q = bench_query(month)
        print(f"usage --group-by name over {args.days} days x {args.month_containers} containers: "
              f"{q['query_s'] * 1e3:.1f} ms ({q['groups']} groups); raw records scan {q['scan_s'] * 1e3:.0f} ms; "
              f"rollups are {q['speedup']:.0f}x faster; goal < 1 s: {'met' if q['query_s'] < 1 else 'MISSED'}")
        print(f"  unaligned 17-day range: {q['unaligned_s'] * 1e3:.1f} ms; --group-by day: {q['by_day_s'] * 1e3:.1f} ms")
        if not args.keep:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(month + suffix):
                    os.unlink(month + suffix)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
