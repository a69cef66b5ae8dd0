"""Property tests of the ledger: any sequence of samples, counter resets (new
cgroup inodes), gaps, wall-clock jumps, missing samples and crashes (the
in-memory Ledger discarded between passes or in the middle of a commit, then
reopened from the SQLite file) gives totals equal to the counters' true
increase, and never a duplicate or overlapping period."""
from __future__ import annotations

import sqlite3
from collections import defaultdict
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import load_config
from agent.ledger import Ledger
from agent.model import ContainerInfo
from runtime.stats import CgroupEvents, CgroupSample, CpuStat, IoStat

PERIOD = 10
T0 = 1_900_000_003.25


class Crash(Exception):
    pass


class Sim:
    """Two containers with kernel-like cumulative counters."""

    def __init__(self, path, checkpoint=0.0):
        self.path = path
        self.checkpoint = checkpoint
        self.cfg = load_config(None, {"billing.period": f"{PERIOD}s", "agent.host": "h",
                                      "billing.price_cpu_core_hour": "0.05",
                                      "billing.price_io_write_gib": "0.01"})
        self.ledger = Ledger(self.cfg, path, checkpoint_interval=checkpoint)
        self.wall, self.mono = T0, 1000.0
        self.inode = {"a": 1, "b": 100}
        self.cpu = {"a": 0, "b": 0}
        self.wb = {"a": 0, "b": 0}
        self.truth_cpu = defaultdict(int)   # (cid, inode) -> last counter value
        self.truth_wb = defaultdict(int)

    def info(self, c):
        return ContainerInfo(id=c, name=f"n{c}", cgroup=f"/cg/{c}", limits=None, state="running",
                             labels={"team": "x" if c == "a" else "y"})

    def sample(self, c, mem):
        return CgroupSample(inode=self.inode[c], cpu=CpuStat(self.cpu[c], self.cpu[c] // 2, self.cpu[c] - self.cpu[c] // 2, 0, 0, 0),
                            memory_current=mem, io={(8, 0): IoStat(0, self.wb[c], 0, self.wb[c] // 7, 0, 0)},
                            events=CgroupEvents(True, False))

    def note(self, c):
        key = (c, self.inode[c])
        self.truth_cpu[key] = self.cpu[c]
        self.truth_wb[key] = self.wb[c]

    def tick(self, dwall, dmono, incs, mem, skip=(), crash=False):
        self.wall += dwall
        self.mono += dmono
        samples, containers = {}, {}
        for c, (ci, wi) in zip("ab", incs):
            self.cpu[c] += ci
            self.wb[c] += wi
            containers[c] = self.info(c)
            if c not in skip:
                samples[f"/cg/{c}"] = self.sample(c, mem)
        snap = SimpleNamespace(taken_at=self.wall, monotonic=self.mono, samples=samples, containers=containers)
        if not crash:
            self.ledger.observe(snap)
            for c in "ab":
                if c not in skip:
                    self.note(c)
            return
        # die in the middle of the commit: statements ran, COMMIT never did
        led = self.ledger
        orig = led._tx

        def tx():
            t = orig()

            class Dying:
                def __enter__(self):
                    return t.__enter__()

                def __exit__(self, *exc):
                    raise Crash

            return Dying()

        led._tx = tx
        with pytest.raises(Crash):
            with led._lock:
                led._observe(snap)
        led._db.close()          # the process is gone: the open transaction is lost
        self.reopen()

    def reopen(self):
        try:
            self.ledger._db.close()
        except sqlite3.Error:
            pass
        self.ledger = Ledger(self.cfg, self.path, checkpoint_interval=self.checkpoint)

    def final_and_recreate(self, c, mem):
        # on the simulated clocks: the real ones are unrelated to them (a freshly
        # booted machine's monotonic clock is below the simulation's)
        self.ledger.final(self.info(c), self.sample(c, mem), wall=self.wall, mono=self.mono)
        self.note(c)
        self.inode[c] += 1
        self.cpu[c] = 0
        self.wb[c] = 0


incs = st.tuples(st.integers(0, 3_000_000), st.integers(0, 5_000_000))
ops = st.one_of(
    st.tuples(st.just("tick"), st.floats(0.05, 7.0), st.tuples(incs, incs), st.integers(0, 1 << 30),
              st.sampled_from([(), ("a",), ("b",)])),
    st.tuples(st.just("gap"), st.floats(20, 400), st.tuples(incs, incs)),
    st.tuples(st.just("jump"), st.floats(-300, 300)),
    st.tuples(st.just("crash_between")),
    st.tuples(st.just("crash_during"), st.tuples(incs, incs)),
    st.tuples(st.just("final"), st.sampled_from("ab"), st.integers(0, 1 << 28)),
)


def _check(sim: Sim):
    # one last clean pass so every counter value the truth knows was observed
    sim.tick(0.5, 0.5, ((0, 0), (0, 0)), 4096)
    led = sim.ledger
    led.flush()
    db = sqlite3.connect(sim.path)
    got_cpu, got_wb = defaultdict(int), defaultdict(int)
    for cid, inode, cpu, wb in db.execute(
            "SELECT container_id, cgroup_inode, cpu_usec, io_write_bytes FROM records"):
        got_cpu[(cid, inode)] += cpu
        got_wb[(cid, inode)] += wb
    for cid, inode, cpu, wb in db.execute("SELECT container_id, cgroup_inode, a_cpu, a_wbytes FROM instances"):
        got_cpu[(cid, inode)] += cpu
        got_wb[(cid, inode)] += wb
    truth_cpu = {k: v for k, v in sim.truth_cpu.items() if v}
    truth_wb = {k: v for k, v in sim.truth_wb.items() if v}
    assert {k: v for k, v in got_cpu.items() if v} == truth_cpu
    assert {k: v for k, v in got_wb.items() if v} == truth_wb
    # no duplicate / overlapping periods, aligned, nothing negative
    rows = db.execute("SELECT record_id, container_id, cgroup_inode, period_start, period_end, "
                      "cpu_usec, cpu_user_usec + cpu_system_usec, memory_byte_seconds, running_usec, cost_nanos "
                      "FROM records").fetchall()
    assert len({r[0] for r in rows}) == len(rows)
    assert len({(r[1], r[2], r[3]) for r in rows}) == len(rows)
    for r in rows:
        assert r[3] % PERIOD == 0 and r[4] == r[3] + PERIOD
        assert min(r[5], r[6], r[7], r[8], r[9]) >= 0
        assert r[5] == r[6]
    # the query's totals reconcile with the records, whatever the range
    total = sum(r[5] for r in rows)
    res = led.query({"group_by": "name"})
    assert round(res["totals"]["cpu_seconds"] * 1e6) == total
    assert sum(round(g["cpu_seconds"] * 1e6) for g in res["rows"]) == total
    if rows:
        lo = min(r[3] for r in rows)
        cut = lo + 4321
        a = led.query({"until": str(cut), "group_by": "label:team"})
        b = led.query({"since": str(cut), "group_by": "day"})
        assert round(a["totals"]["cpu_seconds"] * 1e6) + round(b["totals"]["cpu_seconds"] * 1e6) == total
        recs = led.query({"format": "jsonl"})["rows"]
        assert sum(round(x["cpu_seconds"] * 1e6) for x in recs) == total
    db.close()
    led.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(ops, max_size=40), st.sampled_from([0.0, 3.0]))
def test_totals_equal_true_increase(tmp_path_factory, seq, checkpoint):
    """checkpoint 0: state committed every pass; 3.0: every 3 s (and with every record)."""
    sim = Sim(str(tmp_path_factory.mktemp("ledger") / "ledger.db"), checkpoint)
    for op in seq:
        kind = op[0]
        if kind == "tick":
            sim.tick(op[1], op[1], op[2], op[3], skip=op[4])
        elif kind == "gap":
            sim.tick(op[1], op[1], op[2], 1 << 20)
        elif kind == "jump":
            sim.tick(op[1], 0.5, ((10, 10), (10, 10)), 1 << 20)
        elif kind == "crash_between":
            sim.reopen()
        elif kind == "crash_during":
            sim.tick(1.0, 1.0, op[1], 1 << 20, crash=True)
        elif kind == "final":
            sim.final_and_recreate(op[1], op[2])
    _check(sim)


def test_counter_decrease_counts_from_zero(tmp_path):
    sim = Sim(str(tmp_path / "l.db"))
    sim.tick(1, 1, ((500, 0), (0, 0)), 0)
    sim.cpu["a"] = 120     # the kernel counter went down: a reset
    sim.tick(1, 1, ((0, 0), (0, 0)), 0)
    sim.tick(PERIOD, PERIOD, ((0, 0), (0, 0)), 0)
    db = sqlite3.connect(sim.path)
    got = db.execute("SELECT SUM(cpu_usec) FROM records WHERE container_id='a'").fetchone()[0]
    assert got == 500 + 120


def test_gap_split_across_missed_periods(tmp_path):
    """agentd down for 10 periods: the usage measured across the gap is split
    in proportion to time, one interpolated record per period, exactly."""
    sim = Sim(str(tmp_path / "l.db"))
    sim.tick(0, 0, ((1000, 0), (0, 0)), 0)
    sim.tick(10 * PERIOD, 10 * PERIOD, ((7777, 0), (0, 0)), 0)   # agent down for 10 periods
    sim.tick(PERIOD, PERIOD, ((0, 0), (0, 0)), 0)
    db = sqlite3.connect(sim.path)
    rows = db.execute("SELECT period_start, cpu_usec, running_usec, interpolated FROM records "
                      "WHERE container_id='a' ORDER BY period_start").fetchall()
    starts = [r[0] for r in rows]
    assert starts == list(range(starts[0], starts[0] + len(rows) * PERIOD, PERIOD))   # no missing period
    assert len(rows) == 11
    assert sum(r[1] for r in rows) == 1000 + 7777
    # T0 is 3.25 s into its period: 6.75 s of the gap in the first, 10 s in each
    # of the nine missed ones, 3.25 s in the last (plus 6.75 s of the next
    # reading interval, which closes it); CPU in the same proportion
    assert [r[2] for r in rows] == [6_750_000] + [10_000_000] * 10
    exact = [1000 + 7777 * 0.0675] + [7777 * 0.1] * 9 + [7777 * 0.0325]
    assert all(abs(r[1] - x) < 1 for r, x in zip(rows, exact))
    assert [r[3] for r in rows] == [1] * 11


def test_wall_clock_back_never_reopens_a_period(tmp_path):
    sim = Sim(str(tmp_path / "l.db"))
    sim.tick(0, 0, ((1, 0), (0, 0)), 0)
    sim.tick(PERIOD, 1, ((2, 0), (0, 0)), 0)       # closes the first period
    sim.tick(-5 * PERIOD, 1, ((4, 0), (0, 0)), 0)  # clock set back five periods
    sim.tick(2 * PERIOD, 1, ((8, 0), (0, 0)), 0)
    sim.tick(5 * PERIOD, 1, ((16, 0), (0, 0)), 0)
    db = sqlite3.connect(sim.path)
    rows = db.execute("SELECT period_start, cpu_usec FROM records WHERE container_id='a' ORDER BY seq").fetchall()
    starts = [r[0] for r in rows]
    assert starts == sorted(set(starts))
    # while the clock is behind, the timeline goes on at the monotonic pace;
    # what is not in a record yet is in the open period
    open_cpu = db.execute("SELECT a_cpu FROM instances WHERE container_id='a'").fetchone()[0]
    assert sum(r[1] for r in rows) + open_cpu == 1 + 2 + 4 + 8 + 16


def test_memory_trapezoid_and_peak(tmp_path):
    sim = Sim(str(tmp_path / "l.db"))
    sim.tick(0, 0, ((0, 0), (0, 0)), 0)
    sim.tick(1, 2, ((0, 0), (0, 0)), 1000)        # 2 s from 0 to 1000 bytes: 1000 B*s
    sim.tick(1, 3, ((0, 0), (0, 0)), 1000)        # 3 s at 1000: 3000 B*s
    sim.tick(PERIOD, 1, ((0, 0), (0, 0)), 0)      # 1 s from 1000 to 0 (500 B*s), across a boundary
    db = sqlite3.connect(sim.path)
    mbs, peak = db.execute("SELECT memory_byte_seconds, memory_peak_bytes FROM records "
                           "WHERE container_id='a' ORDER BY period_start LIMIT 1").fetchone()
    # the last reading interval is 4.75/10 of its wall span in the first period
    assert (mbs, peak) == (round(4000 + 500 * 0.475), 1000)


def test_final_closes_the_period_at_once(tmp_path):
    sim = Sim(str(tmp_path / "l.db"))
    sim.cpu["a"] = 50_123
    sim.final_and_recreate("a", 0)
    db = sqlite3.connect(sim.path)
    assert db.execute("SELECT cpu_usec FROM records WHERE container_id='a'").fetchall() == [(50_123,)]
    sim.ledger.final(sim.info("a"), sim.sample("a", 0))   # a repeated final bills nothing twice
    assert db.execute("SELECT SUM(cpu_usec), COUNT(*) FROM records WHERE container_id='a'").fetchone()[0] == 50_123


def test_stale_snapshot_after_final_bills_nothing_twice(tmp_path):
    """A collector pass that started before the supervisor's final reading
    arrives after it: its older counters must not look like a reset."""
    import time as _time
    sim = Sim(str(tmp_path / "l.db"))
    old_mono = _time.monotonic() - 5          # the pass started before the final reading
    sim.cpu["a"] = 40_000
    stale = SimpleNamespace(taken_at=_time.time(), monotonic=old_mono,
                            samples={"/cg/a": sim.sample("a", 0)}, containers={"a": sim.info("a")})
    sim.cpu["a"] = 50_000
    sim.ledger.final(sim.info("a"), sim.sample("a", 0))
    sim.ledger.observe(stale)
    sim.ledger.observe(SimpleNamespace(taken_at=_time.time() + 2 * PERIOD, monotonic=_time.monotonic() + 1,
                                       samples={}, containers={}))
    db = sqlite3.connect(sim.path)
    assert db.execute("SELECT SUM(cpu_usec) FROM records WHERE container_id='a'").fetchone()[0] == 50_000
    assert db.execute("SELECT a_cpu FROM instances WHERE container_id='a'").fetchone()[0] == 0


def test_a_finished_instance_is_forgotten_seconds_later_not_a_day(tmp_path):
    """Churn must not grow the ledger: an instance whose final reading was taken is
    dropped from memory and from ledger.db once no racing pass can still arrive."""
    from agent.ledger import FINISHED_GC_AFTER
    sim = Sim(str(tmp_path / "l.db"))
    sim.tick(1, 1, ((1000, 0), (1000, 0)), 4096)
    sim.final_and_recreate("a", 0)
    db = sqlite3.connect(sim.path)
    billed = db.execute("SELECT SUM(cpu_usec) FROM records WHERE container_id='a'").fetchone()[0]
    sim.tick(5, 5, ((0, 0), (0, 0)), 4096)
    assert ("a", 1) in sim.ledger._instances              # still remembered shortly after
    sim.tick(FINISHED_GC_AFTER + 15, FINISHED_GC_AFTER + 15, ((0, 0), (0, 0)), 4096)
    assert ("a", 1) not in sim.ledger._instances
    assert db.execute("SELECT COUNT(*) FROM instances WHERE container_id='a' AND cgroup_inode=1").fetchone()[0] == 0
    assert db.execute("SELECT SUM(cpu_usec) FROM records WHERE container_id='a' AND cgroup_inode=1").fetchone()[0] \
        == billed
    assert ("b", 100) in sim.ledger._instances             # a live one stays


CPUS = 2   # CPUs available to the simulated containers (no cpuset, no cpu.max)


class LifeSim(Sim):
    """Containers started at T0 that burn at most CPUS cores, sampled by an
    agent that may be down for a while (no readings), killed between passes or
    in the middle of a commit: wall and monotonic clocks advance together."""

    def info(self, c):
        return ContainerInfo(id=c, name=f"n{c}", cgroup=f"/cg/{c}", limits=None, state="running",
                             labels={}, started_at=T0)

    def advance(self, dt, rates, sample=True, crash=False):
        incs = tuple((int(r * CPUS * dt * 1e6), 0) for r in rates)   # never more than CPUS x dt
        if sample:
            self.tick(dt, dt, incs, 1 << 20, crash=crash)
        else:       # agentd is down: time passes, counters grow, nobody reads them
            self.wall += dt
            self.mono += dt
            for c, (ci, _) in zip("ab", incs):
                self.cpu[c] += ci


rates = st.tuples(st.floats(0, 1), st.floats(0, 1))
life_ops = st.one_of(
    st.tuples(st.just("tick"), st.floats(0.05, 4.0), rates),
    st.tuples(st.just("down"), st.floats(0.0, 45.0), rates),        # a kill at a random point, down 0-45 s
    st.tuples(st.just("crash_between")),
    st.tuples(st.just("crash_during"), st.floats(0.05, 4.0), rates),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(life_ops, min_size=1, max_size=40), st.sampled_from([0.0, 3.0]))
def test_records_fit_their_periods_and_cover_the_life(tmp_path_factory, seq, checkpoint):
    """Over simulated clocks and random kill points: no record claims more
    running seconds than its period nor more CPU-seconds than period x CPUs;
    the CPU totals equal the counters exactly; every wall-clock second of a
    container's life is in exactly one record (periods unique and contiguous,
    every inner period's running seconds equal to the period)."""
    sim = LifeSim(str(tmp_path_factory.mktemp("ledger") / "ledger.db"), checkpoint)
    sim.tick(0.01, 0.01, ((0, 0), (0, 0)), 1 << 20)
    for op in seq:
        if op[0] == "tick":
            sim.advance(op[1], op[2])
        elif op[0] == "down":
            sim.advance(op[1], op[2], sample=False)
            sim.reopen()                        # agentd comes back from its state file
        elif op[0] == "crash_between":
            sim.reopen()
        else:
            sim.advance(op[1], op[2], crash=True)
    sim.advance(0.5, (0.5, 0.5))
    end = sim.wall
    for c in "ab":                              # the containers end: final readings close their periods
        sim.ledger.final(sim.info(c), sim.sample(c, 1 << 20), wall=sim.wall, mono=sim.mono)
        sim.note(c)
    db = sqlite3.connect(sim.path)
    first, last = int(T0 // PERIOD * PERIOD), int(end // PERIOD * PERIOD)
    for c in "ab":
        rows = db.execute("SELECT period_start, period_end, running_usec, frozen_usec, cpu_usec FROM records "
                          "WHERE container_id=? ORDER BY period_start", (c,)).fetchall()
        assert sum(r[4] for r in rows) == sim.truth_cpu[(c, sim.inode[c])]
        for start, stop, running, frozen, cpu in rows:
            assert running + frozen <= (stop - start) * 1_000_000
            assert cpu <= (stop - start) * 1_000_000 * CPUS
        # no second in two records or in none
        assert [r[0] for r in rows] == list(range(first, last + PERIOD, PERIOD))
        for r in rows[1:-1]:
            assert abs(r[2] - PERIOD * 1_000_000) <= 1
        assert abs(sum(r[2] for r in rows) - (end - T0) * 1e6) <= len(rows) + 1
    sim.ledger.close()
    db.close()


def test_an_older_ledger_opens_and_goes_on(tmp_path):
    """An old ledger.db (no log_bytes, interpolated, *_measured columns) is
    migrated when opened: its records keep their numbers (measured, not
    interpolated), its open period continues, its rollups still reconcile."""
    import os
    path = str(tmp_path / "ledger.db")
    fixture = os.path.join(os.path.dirname(__file__), "fixtures", "ledger-v1.sql")
    with open(fixture) as f:
        old = sqlite3.connect(path)
        old.executescript(f.read())
        old.close()
    cfg = load_config(None, {"billing.period": "10s", "agent.host": "h", "billing.price_cpu_core_hour": "0.05"})
    led = Ledger(cfg, path)
    info = ContainerInfo(id="old1", name="web", cgroup="/cg/old1", limits=None, state="running",
                         labels={"team": "x"})
    for i in range(8, 16):   # the same container goes on where the old ledger stopped
        u = i * 1_000_000
        s = CgroupSample(inode=7, cpu=CpuStat(u, u // 2, u - u // 2, 0, 0, 0), memory_current=1 << 20,
                         io={(8, 0): IoStat(0, i * 4096, 0, i, 0, 0)}, events=CgroupEvents(True, False))
        led.observe(SimpleNamespace(taken_at=1_900_000_000.5 + 3 * i, monotonic=200.0 + 3 * i,
                                    samples={"/cg/old1": s}, containers={"old1": info}))
    recs = led.query({"format": "jsonl"})["rows"]
    from agent.ledger import iso
    assert [r["period_start"] for r in recs[:2]] == [iso(1_900_000_000), iso(1_900_000_010)]
    assert recs[0]["memory_byte_seconds"] == 9437184 and recs[0]["interpolated"] is False
    assert recs[0]["unpriced"] == [] and recs[0]["log_bytes"] == 0
    assert len(recs) >= 4
    db = sqlite3.connect(path)
    open_cpu = db.execute("SELECT a_cpu FROM instances").fetchone()[0]
    assert sum(round(r["cpu_seconds"] * 1e6) for r in recs) + open_cpu == 15_000_000
    grouped = led.query({"group_by": "day"})
    assert grouped["totals"]["cpu_seconds"] == sum(r["cpu_seconds"] for r in recs)
    assert grouped["totals"]["memory_byte_seconds"] == sum(r["memory_byte_seconds"] for r in recs)
    assert grouped["totals"]["unpriced"] == []
    led.close()
    Ledger(cfg, path).close()    # opening a migrated ledger again changes nothing
