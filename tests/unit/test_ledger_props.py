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


def test_gap_billed_in_first_period_after(tmp_path):
    sim = Sim(str(tmp_path / "l.db"))
    sim.tick(0, 0, ((1000, 0), (0, 0)), 0)
    sim.tick(10 * PERIOD, 10 * PERIOD, ((7777, 0), (0, 0)), 0)   # agent down for 10 periods
    sim.tick(PERIOD, PERIOD, ((0, 0), (0, 0)), 0)
    db = sqlite3.connect(sim.path)
    rows = db.execute("SELECT period_start, cpu_usec FROM records WHERE container_id='a' ORDER BY period_start").fetchall()
    assert [r[1] for r in rows] == [1000, 7777]
    assert rows[1][0] - rows[0][0] == 10 * PERIOD


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
    assert sum(r[1] for r in rows) == 1 + 2 + 4 + 8


def test_memory_trapezoid_and_peak(tmp_path):
    sim = Sim(str(tmp_path / "l.db"))
    sim.tick(0, 0, ((0, 0), (0, 0)), 0)
    sim.tick(1, 2, ((0, 0), (0, 0)), 1000)        # 2 s from 0 to 1000 bytes: 1000 B*s
    sim.tick(1, 3, ((0, 0), (0, 0)), 1000)        # 3 s at 1000: 3000 B*s
    sim.tick(PERIOD, 1, ((0, 0), (0, 0)), 0)
    db = sqlite3.connect(sim.path)
    mbs, peak = db.execute("SELECT memory_byte_seconds, memory_peak_bytes FROM records "
                           "WHERE container_id='a' ORDER BY period_start LIMIT 1").fetchone()
    assert (mbs, peak) == (4000, 1000)


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
