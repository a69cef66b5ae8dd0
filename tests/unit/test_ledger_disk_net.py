"""Disk byte-seconds and network bytes through the ledger (simulated clocks,
real SQLite): the trapezoid of Snapshot.fs_usage, the increase of
CgroupSample.net_rx_bytes / net_tx_bytes (a new network namespace counts
from zero), null when unmeasured (never 0), priced per GiB-hour / per GiB
transmitted, in groups, CSV, FOCUS and the PostgreSQL row; an older ledger
opens with those columns null for its records."""
from __future__ import annotations

import csv
import io
import os
import sqlite3
from decimal import Decimal
from types import SimpleNamespace

from agent.config import load_config
from agent.ledger import Ledger
from agent.model import ContainerInfo
from exporters.billing import render
from exporters.focus import focus_rows
from exporters.postgres import COLUMNS, remote_row
from runtime.stats import CgroupEvents, CgroupSample, CpuStat, IoStat

T0 = 1_900_000_800   # an hour boundary
GIB = 1 << 30


def _ledger(tmp_path, **prices):
    cfg = load_config(None, {"billing.period": "10s", "agent.host": "h",
                             **{f"billing.{k}": v for k, v in prices.items()}})
    return Ledger(cfg, str(tmp_path / "ledger.db"), focus_rows=focus_rows)


def _info(c):
    return ContainerInfo(id=c, name=f"n{c}", cgroup=f"/cg/{c}", limits=None, state="running", labels={})


def _pass(led, i, disk=None, rx=None, tx=None, inode=1):
    """Pass i (1 s apart); disk/rx/tx: {container: value} (absent: not measured)."""
    infos = {c: _info(c) for c in "ab"}
    samples = {f"/cg/{c}": CgroupSample(inode=inode, cpu=CpuStat(i * 1000, 500 * i, 500 * i, 0, 0, 0),
                                        memory_current=1 << 20, memory_swap_current=0,
                                        io={(8, 0): IoStat(0, 0, 0, 0, 0, 0)}, pids_current=1,
                                        events=CgroupEvents(True, False),
                                        net_rx_bytes=(rx or {}).get(c), net_tx_bytes=(tx or {}).get(c))
               for c in "ab"}
    fs = {c: ("/dev/sda1", v) for c, v in (disk or {}).items()}
    led.observe(SimpleNamespace(taken_at=T0 + i + 0.5, monotonic=1000.0 + i, samples=samples, containers=infos,
                                fs_usage=fs))


def test_disk_is_the_trapezoid_of_the_upper_dir_and_null_without_one(tmp_path):
    led = _ledger(tmp_path, price_disk_gib_hour="3.6")
    for i in range(25):        # a: 1 GiB growing by 1 MiB a second; b: no upper dir of its own
        _pass(led, i, disk={"a": GIB + i * (1 << 20)})
    recs = {(r["container_id"], r["period_start"]): r for r in led.records()}
    a = [r for (c, _), r in sorted(recs.items()) if c == "a"]
    b = [r for (c, _), r in sorted(recs.items()) if c == "b"]
    # the two closed periods hold [T0+0.5, T0+20): 19 whole intervals of 1 s
    # (each the mean of its two ends) and half of the interval (19.5, 20.5],
    # split across the boundary in proportion to time
    want = sum(GIB + (i + 0.5) * (1 << 20) for i in range(19)) + 0.5 * (GIB + 19.5 * (1 << 20))
    assert sum(r["disk_byte_seconds"] for r in a[:2]) == round(want)
    assert all(r["disk_byte_seconds"] is None for r in b)            # never 0: unmeasured
    # priced: 3.6 per GiB-hour = 0.001 per GiB-second
    r = a[1]
    assert Decimal(r["cost"]) == (Decimal(r["disk_byte_seconds"]) / GIB / 1000).quantize(Decimal("1e-9"))
    assert r["unpriced"] == [] and b[0]["unpriced"] == ["disk"]       # priced, yet not measured: named
    g = {x["group"]: x for x in led.query({"group_by": "name"})["rows"]}
    assert g["na"]["disk_byte_seconds"] == sum(x["disk_byte_seconds"] for x in a)
    assert g["nb"]["disk_byte_seconds"] is None and g["nb"]["unpriced"] == ["disk"]
    led.close()


def test_network_bytes_are_counter_increases_and_a_new_namespace_counts_from_zero(tmp_path):
    led = _ledger(tmp_path, price_net_gib="0.09")
    tx_total = 0
    for i in range(12):
        rx, tx = 1000 * i, (GIB // 8) * i
        _pass(led, i, rx={"a": rx}, tx={"a": tx})
    for i in range(12, 25):    # a restart: a new namespace whose counters start again
        rx, tx = 10 * (i - 12), 100 * (i - 12)
        _pass(led, i, rx={"a": rx}, tx={"a": tx})
    recs = [r for r in led.records() if r["container_id"] == "a"]
    nb = [r for r in led.records() if r["container_id"] == "b"]
    tx_total = sum(r["net_tx_bytes"] for r in recs)
    rx_total = sum(r["net_rx_bytes"] for r in recs)
    # closed periods hold [T0+0.5, T0+20): passes 1..11 (the first namespace),
    # pass 12 (a new namespace at 0: a counter reset counts from zero, here 0),
    # passes 13..19 and half of pass 20's interval
    assert rx_total == 11000 + 10 * 7 + 5 and tx_total == (GIB // 8) * 11 + 100 * 7 + 50
    assert all(r["net_rx_bytes"] is None and r["net_tx_bytes"] is None for r in nb)   # host network
    priced = [r for r in recs if r["net_tx_bytes"]]
    for r in priced:
        assert Decimal(r["cost"]) == (Decimal(r["net_tx_bytes"]) * Decimal("0.09") / GIB).quantize(Decimal("1e-9"))
    assert nb[0]["unpriced"] == ["net_tx"]
    led.close()


def test_no_metering_at_all_is_null_everywhere(tmp_path):
    led = _ledger(tmp_path)            # no prices: nothing named unpriced
    for i in range(25):
        _pass(led, i)                  # CgroupSample.net_* None, fs_usage empty
    recs = led.records()
    assert recs and all(r["disk_byte_seconds"] is None and r["net_rx_bytes"] is None
                        and r["net_tx_bytes"] is None and r["unpriced"] == [] for r in recs)
    rows = list(csv.DictReader(io.StringIO(render(led.query({"format": "csv"}), "csv"))))
    assert rows and all(x["disk_byte_seconds"] == x["net_rx_bytes"] == x["net_tx_bytes"] == "" for x in rows)
    led.close()


def test_focus_rows_and_the_remote_row_carry_them(tmp_path):
    led = _ledger(tmp_path, price_disk_gib_hour="0.5", price_net_gib="0.09")
    for i in range(25):
        _pass(led, i, disk={"a": GIB}, rx={"a": 7 * i}, tx={"a": GIB * i})
    res = led.query({"format": "focus", "open": "1", "since": str(T0), "until": str(T0 + 3600)})
    meters = {(r["x_ContainerId"], r["x_Meter"]): r for r in res["rows"]}
    assert ("a", "disk") in meters and ("a", "net_tx") in meters
    assert ("b", "disk") not in meters and ("b", "net_tx") not in meters     # not measured: no row
    assert meters[("a", "net_tx")]["ServiceCategory"] == "Networking"
    assert meters[("a", "disk")]["PricingUnit"] == "GiB-Hours"
    cur = sqlite3.connect(led.db_path).execute("SELECT * FROM records WHERE container_id='b' LIMIT 1")
    b_row = dict(zip([d[0] for d in cur.description], cur.fetchone()))
    remote = dict(zip([n for n, _ in COLUMNS], remote_row(b_row)))
    assert remote["disk_byte_seconds"] is None and remote["net_rx_bytes"] is None and remote["net_tx_bytes"] is None
    assert remote["unpriced"] == ["disk", "net_tx"]
    cur = sqlite3.connect(led.db_path).execute("SELECT * FROM records WHERE container_id='a' LIMIT 1")
    a_row = dict(zip([d[0] for d in cur.description], cur.fetchone()))
    remote = dict(zip([n for n, _ in COLUMNS], remote_row(a_row)))
    assert remote["disk_byte_seconds"] == Decimal(a_row["disk_byte_seconds"]) and remote["net_tx_bytes"] == a_row["net_tx_bytes"]
    led.close()


def test_an_older_ledger_gets_the_columns_null_for_its_records(tmp_path):
    path = str(tmp_path / "ledger.db")
    fixture = os.path.join(os.path.dirname(__file__), "fixtures", "ledger-v1.sql")
    with open(fixture) as f:
        old = sqlite3.connect(path)
        old.executescript(f.read())
        old.close()
    cfg = load_config(None, {"billing.period": "10s", "agent.host": "h"})
    led = Ledger(cfg, path)
    recs = led.records()
    assert recs and all(r["disk_byte_seconds"] is None and r["net_tx_bytes"] is None for r in recs)
    day = led.query({"group_by": "day"})["totals"]
    assert day["disk_byte_seconds"] is None and day["net_rx_bytes"] is None
    led.close()
