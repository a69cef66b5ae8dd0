"""Exports from a real ledger file: JSON lines field names, CSV, FOCUS rows
that add up to the records, and query parameter errors naming the field."""
import csv
import io
import json
from decimal import Decimal
from types import SimpleNamespace

import pytest

from agent.config import load_config
from agent.errors import UserError
from agent.ledger import RECORD_FIELDS, Ledger
from agent.model import ContainerInfo
from exporters.billing import FOCUS_COLUMNS, render
from exporters.focus import focus_rows
from runtime.stats import CgroupEvents, CgroupSample, CpuStat, IoStat

ISSUE_FIELDS = ("record_id host container_id name labels cgroup_inode period_start period_end running_seconds "
                "frozen_seconds cpu_seconds cpu_user_seconds cpu_system_seconds cpu_throttled_seconds "
                "memory_byte_seconds memory_peak_bytes swap_byte_seconds io_read_bytes io_write_bytes io_read_ops "
                "io_write_ops pids_peak cpu_limit_cores memory_limit_bytes reserved_cpu_seconds "
                "reserved_memory_byte_seconds cost currency unpriced log_bytes interpolated "
                "disk_byte_seconds net_rx_bytes net_tx_bytes").split()
T0 = 1_900_000_800  # an hour boundary


@pytest.fixture
def ledger(tmp_path):
    cfg = load_config(None, {"billing.period": "60s", "agent.host": "h1", "billing.price_cpu_core_hour": "0.036",
                             "billing.price_memory_gib_hour": "0.0045", "billing.price_io_write_gib": "0.02"})
    led = Ledger(cfg, str(tmp_path / "ledger.db"), focus_rows=focus_rows)
    infos = [ContainerInfo(id=f"c{i}", name=f"svc{i % 2}", cgroup=f"/cg/c{i}", limits=None, state="running",
                           labels={"team": "red" if i < 2 else "blue"}) for i in range(3)]
    for step in range(0, 2 * 3600 + 120, 30):   # two hours and a bit, 30 s samples
        samples = {}
        for i, info in enumerate(infos):
            u = step * 1000 * (i + 1) + 7
            samples[info.cgroup] = CgroupSample(inode=10 + i, cpu=CpuStat(u, u // 3, u - u // 3, 0, 0, 0),
                                                memory_current=(i + 1) << 24,
                                                io={(8, 0): IoStat(step, step * 4096, step, step, 0, 0)},
                                                events=CgroupEvents(True, False))
        led.observe(SimpleNamespace(taken_at=T0 + step + 0.5, monotonic=50.0 + step, samples=samples,
                                    containers={i.id: i for i in infos}))
    yield led
    led.close()


def test_jsonl_has_the_issue_field_names(ledger):
    out = render(ledger.query({"format": "jsonl"}), "jsonl")
    recs = [json.loads(line) for line in out.splitlines()]
    assert len(recs) > 200
    assert tuple(recs[0]) == tuple(ISSUE_FIELDS) == RECORD_FIELDS
    assert recs[0]["period_start"].endswith("Z") and recs[0]["labels"]["team"] in ("red", "blue")


def test_csv_records_and_groups(ledger):
    rows = list(csv.DictReader(io.StringIO(render(ledger.query({"format": "csv"}), "csv"))))
    assert list(rows[0]) == ISSUE_FIELDS
    total = sum(Decimal(r["cost"]) for r in rows)
    grouped = ledger.query({"format": "csv", "group_by": "label:team"})
    assert {r["group"] for r in grouped["rows"]} == {"red", "blue"}
    assert Decimal(grouped["totals"]["cost"]) == total
    assert sum(Decimal(r["cost"]) for r in grouped["rows"]) == total


def test_focus_rows_match_the_records(ledger):
    # T0 lies in the future: its hours are open, exported on request ("open")
    assert ledger.query({"format": "focus", "since": str(T0 + 1800)})["rows"] == []
    res = ledger.query({"format": "focus", "since": str(T0 + 1800), "until": str(T0 + 5400 + 37), "open": "1"})
    rows = list(csv.DictReader(io.StringIO(render(res, "focus"))))
    assert tuple(rows[0]) == FOCUS_COLUMNS
    recs = ledger.query({"format": "jsonl", "since": str(T0 + 1800), "until": str(T0 + 5400 + 37)})["rows"]
    # a row's cost is exact (its quantity priced once); the records, each rounded on its
    # own, add up to it within half a nano-unit per record and meter (docs/billing.md)
    diff = abs(sum(Decimal(r["BilledCost"]) for r in rows) - sum(Decimal(r["cost"]) for r in recs))
    assert sum(Decimal(r["cost"]) for r in recs) > 0 and diff <= Decimal("0.5e-9") * 4 * len(recs)
    cpu_hours = sum(Decimal(r["ConsumedQuantity"]) for r in rows if r["x_Meter"] == "cpu")
    cpu_us = sum(round(r["cpu_seconds"] * 1e6) for r in recs)
    assert abs(cpu_hours * 3_600_000_000 - cpu_us) < 3_600_000_000 * Decimal("1e-12") * len(rows)
    assert {r["ChargeCategory"] for r in rows} == {"Usage"}
    assert {(r["ChargePeriodStart"][-6:], r["ChargePeriodEnd"][-6:]) for r in rows} == {("00:00Z", "00:00Z")}
    # one row per container instance, meter and hour
    keys = [(r["ResourceId"], r["x_Meter"], r["ChargePeriodStart"]) for r in rows]
    assert len(keys) == len(set(keys))


def test_group_by_hour_and_filters(ledger):
    by_hour = ledger.query({"group_by": "hour"})
    assert all(r["group"].endswith(":00:00Z") for r in by_hour["rows"])
    assert len(by_hour["rows"]) == 3
    assert sum(r["records"] for r in by_hour["rows"]) == by_hour["totals"]["records"]
    everything = ledger.query({})["totals"]
    red = ledger.query({"label": "team=red"})["totals"]
    blue = ledger.query({"label": ["team=blue"]})["totals"]
    assert red["records"] + blue["records"] == everything["records"]
    assert Decimal(red["cost"]) + Decimal(blue["cost"]) == Decimal(everything["cost"])
    only = ledger.query({"name": "svc1"})
    assert [r["group"] for r in only["rows"]] == ["svc1"]
    assert "TOTAL" in render(only, "table")


@pytest.mark.parametrize("params, field", [
    ({"since": "yesterday"}, "since"), ({"until": "2026-13-01"}, "until"),
    ({"group_by": "team"}, "group_by"), ({"format": "xml"}, "format"), ({"label": "team"}, "label"),
    ({"since": "2026-11-02", "until": "2026-11-01"}, "until"),
])
def test_bad_params_name_the_field(ledger, params, field):
    with pytest.raises(UserError, match=f"^{field}: "):
        ledger.query(params)


def test_reserved_and_max_bases_from_real_limits(tmp_path):
    from runtime.limits import Limits
    cfg = load_config(None, {"billing.period": "60s", "agent.host": "h1", "billing.basis": "max",
                             "billing.price_cpu_core_hour": "1", "billing.price_memory_gib_hour": "1"})
    led = Ledger(cfg, str(tmp_path / "ledger.db"))
    limited = ContainerInfo(id="l", name="limited", cgroup="/cg/l", state="running",
                            limits=Limits(cpu_quota_us=50000, cpu_period_us=100000, memory_max=1 << 30))
    unlimited = ContainerInfo(id="u", name="unlimited", cgroup="/cg/u", state="running",
                              limits=Limits(cpu_quota_us="max", memory_max="max"))
    infos = {"l": limited, "u": unlimited}
    for step in range(11):   # 10 s running, 0.1 core used, 256 MiB held
        samples = {i.cgroup: CgroupSample(inode=1, cpu=CpuStat(step * 100_000, 0, step * 100_000, 0, 0, 0),
                                          memory_current=1 << 28, events=CgroupEvents(True, False))
                   for i in infos.values()}
        led.observe(SimpleNamespace(taken_at=T0 + step, monotonic=10.0 + step, samples=samples, containers=infos))
    led.observe(SimpleNamespace(taken_at=T0 + 61, monotonic=71.0, samples={}, containers={}))
    recs = {r["name"]: r for r in led.query({"format": "jsonl"})["rows"]}
    lim, unl = recs["limited"], recs["unlimited"]
    assert lim["cpu_limit_cores"] == 0.5 and lim["memory_limit_bytes"] == 1 << 30
    assert lim["reserved_cpu_seconds"] == 5.0 and lim["reserved_memory_byte_seconds"] == 10 << 30
    assert unl["cpu_limit_cores"] is None and unl["reserved_cpu_seconds"] == 0.0
    # max basis: reserved for the limited one (5 core-s, 10 GiB-s), usage for the other (1 core-s, 2.5 GiB-s)
    assert Decimal(lim["cost"]) == (Decimal(5) / 3600 + Decimal(10) / 3600).quantize(Decimal("1e-9"))
    assert Decimal(unl["cost"]) == (Decimal(1) / 3600 + Decimal("2.5") / 3600).quantize(Decimal("1e-9"))
    led.close()


def test_any_range_reconciles_across_days_hours_and_edges(tmp_path):
    """Whole days from day rollups, hours from hour rollups, edges from records:
    every range and grouping gives exactly the sum of its records."""
    import random
    import sqlite3
    cfg = load_config(None, {"billing.period": "60s", "agent.host": "h1", "billing.price_cpu_core_hour": "0.036"})
    led = Ledger(cfg, str(tmp_path / "ledger.db"))
    infos = {c: ContainerInfo(id=c, name=f"n{c}", cgroup=f"/cg/{c}", limits=None, state="running",
                              labels={"team": c}) for c in ("a", "b")}
    for step in range(0, 4 * 86400, 1170):          # four days, a sample every 19.5 minutes
        samples = {i.cgroup: CgroupSample(inode=1, cpu=CpuStat(step * (7 if c == "a" else 3), 0, 0, 0, 0, 0),
                                          events=CgroupEvents(True, False)) for c, i in infos.items()}
        led.observe(SimpleNamespace(taken_at=T0 + 1000 + step, monotonic=float(step), samples=samples,
                                    containers=infos))
    db = sqlite3.connect(led.db_path)
    rng = random.Random(7)
    for _ in range(40):
        a, b = sorted(rng.sample(range(T0 - 3600, T0 + 5 * 86400), 2))
        want = db.execute("SELECT COUNT(*), COALESCE(SUM(cpu_usec), 0), COALESCE(SUM(cost_nanos), 0) FROM records "
                          "WHERE period_start >= ? AND period_start < ?", (a, b)).fetchone()
        for group in ("name", "day", "hour", "label:team"):
            res = led.query({"since": str(a), "until": str(b), "group_by": group})
            tot = res["totals"]
            assert (tot["records"], round(tot["cpu_seconds"] * 1e6), round(Decimal(tot["cost"]) * 10**9)) == want
            assert sum(r["records"] for r in res["rows"]) == want[0]
    led.close()


def test_unmeasured_is_null_empty_dash_and_unpriced(tmp_path):
    """A container whose host has no memory/io/pids controller (samples carry
    None) gets null in JSON lines, empty CSV cells, '-' in the table, cost
    without those meters and `unpriced` naming them; a group with one measured
    and one unmeasured container sums what was measured and says unpriced."""
    cfg = load_config(None, {"billing.period": "60s", "agent.host": "h1", "billing.price_cpu_core_hour": "0.036",
                             "billing.price_memory_gib_hour": "100", "billing.price_io_write_gib": "100"})
    led = Ledger(cfg, str(tmp_path / "ledger.db"))
    infos = [ContainerInfo(id=f"c{i}", name=f"svc{i}", cgroup=f"/cg/c{i}", limits=None, state="running",
                           labels={"team": "red"}) for i in range(2)]
    for step in range(0, 150, 30):
        u = step * 1000
        samples = {"/cg/c0": CgroupSample(inode=10, cpu=CpuStat(u, u, 0, 0, 0, 0), events=CgroupEvents(True, False)),
                   "/cg/c1": CgroupSample(inode=11, cpu=CpuStat(u, u, 0, 0, 0, 0), memory_current=1 << 30,
                                          io={(8, 0): IoStat(0, step << 20, 0, step, 0, 0)}, pids_current=3,
                                          events=CgroupEvents(True, False))}
        led.observe(SimpleNamespace(taken_at=T0 + step + 0.5, monotonic=50.0 + step, samples=samples,
                                    containers={i.id: i for i in infos}))
    recs = led.query({"format": "jsonl", "name": "svc0"})["rows"]
    assert recs and all(r["memory_byte_seconds"] is None and r["io_write_bytes"] is None
                        and r["pids_peak"] is None and r["swap_byte_seconds"] is None for r in recs)
    assert all(r["unpriced"] == ["memory", "io_read", "io_write"] and r["cpu_seconds"] > 0 for r in recs)
    assert all(Decimal(r["cost"]) == Decimal(r["cpu_seconds"]) * Decimal("0.036") / 3600 for r in recs
               if r["cpu_seconds"] in (30.0, 60.0))
    rows = list(csv.DictReader(io.StringIO(render(led.query({"format": "csv", "name": "svc0"}), "csv"))))
    assert {r["memory_byte_seconds"] for r in rows} == {""} and {r["pids_peak"] for r in rows} == {""}
    measured = led.query({"format": "jsonl", "name": "svc1"})["rows"]
    assert all(r["memory_byte_seconds"] > 0 and r["unpriced"] == [] and r["pids_peak"] == 3 for r in measured)
    table = render(led.query({"group_by": "name"}), "table").splitlines()
    head = table[0].split()
    svc0 = next(line.split() for line in table if line.startswith("svc0"))
    svc1 = next(line.split() for line in table if line.startswith("svc1"))
    assert svc0[head.index("MEM_GIB_H")] == "-" and svc0[head.index("PEAK_MIB")] == "-"
    assert svc1[head.index("MEM_GIB_H")] != "-"
    team = led.query({"group_by": "label:team"})["rows"][0]
    assert team["memory_byte_seconds"] == sum(r["memory_byte_seconds"] for r in measured)
    assert team["unpriced"] == ["memory", "io_read", "io_write"]
    led.close()
