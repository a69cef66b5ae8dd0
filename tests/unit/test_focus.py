"""FOCUS 1.2 export checked against the specification's own column table.

The checker reads tests/unit/fixtures/focus12_columns.tsv (the spec's column
table: feature level, data type, nullability) and focus12_allowed_values.tsv
(the spec's allowed-values tables), both copied from the FOCUS_Spec repository
at tag v1.2 with their provenance on the first line, and validates every row
of a real ledger's export: every mandatory column, allowed values, ISO 8601
UTC times, exact money, and rows of closed periods that do not change between
two exports.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from datetime import datetime, timezone
from decimal import Decimal
from types import SimpleNamespace

import pytest

from agent.config import load_config
from agent.ledger import Ledger
from agent.model import ContainerInfo
from agent.pricing import RateCard
from exporters import focus
from exporters.billing import FOCUS_COLUMNS, render
from runtime.stats import CgroupEvents, CgroupSample, CpuStat, IoStat

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
DECIMAL = re.compile(r"-?\d+(\.\d+)?")
NANO = Decimal("1e-9")


def _tsv(name: str) -> list[list[str]]:
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("# FOCUS 1.2") and "FOCUS_Spec" in lines[0] and "v1.2" in lines[0]
    return [ln.split("\t") for ln in lines[1:] if ln.strip()]


COLUMNS = {r[0]: {"level": r[1], "type": r[2], "nulls": r[3] == "True", "format": r[4]}
           for r in _tsv("focus12_columns.tsv")}
ALLOWED: dict[str, set] = {}
PARENT: dict[str, str] = {}
for _col, _val, *_rest in _tsv("focus12_allowed_values.tsv"):
    ALLOWED.setdefault(_col, set()).add(_val)
    if _col == "ServiceSubcategory":
        PARENT[_val] = _rest[0]


def test_the_column_table_is_the_specs():
    assert len(COLUMNS) == 57
    assert sum(c["level"] == "Mandatory" for c in COLUMNS.values()) == 21


def _when(s: str) -> datetime:
    assert ISO_UTC.fullmatch(s), s
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def check_focus(text: str, now: float) -> list[dict]:
    """Validate a FOCUS CSV export; returns its rows."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    assert len(header) == len(set(header))
    missing = [c for c, d in COLUMNS.items() if d["level"] == "Mandatory" and c not in header]
    assert not missing, f"mandatory columns missing: {missing}"
    for c in header:
        assert c in COLUMNS or c.startswith("x_"), f"{c}: neither a FOCUS column nor x_ custom"
    rows = list(reader)
    for r in rows:
        for c in header:
            if c not in COLUMNS:
                continue
            spec, v = COLUMNS[c], r[c]
            if v == "":
                assert spec["nulls"], f"{c} must not be null"
                continue
            if spec["type"] == "Decimal":
                assert DECIMAL.fullmatch(v), (c, v)          # plain decimal: no exponent, no float noise
            elif spec["type"] == "Date/Time":
                _when(v)
            elif spec["type"] == "JSON":
                assert isinstance(json.loads(v), dict), (c, v)
            if c in ALLOWED:
                assert v in ALLOWED[c], (c, v)
        if r.get("ServiceSubcategory"):
            assert PARENT[r["ServiceSubcategory"]] == r["ServiceCategory"], r
        assert re.fullmatch(r"[A-Z]{3}", r["BillingCurrency"])
        cs, ce = _when(r["ChargePeriodStart"]), _when(r["ChargePeriodEnd"])
        bs, be = _when(r["BillingPeriodStart"]), _when(r["BillingPeriodEnd"])
        assert bs <= cs < ce <= be
        # usage rows, no corrections: what the spec requires non-null then
        assert r["ChargeCategory"] == "Usage" and r["ChargeClass"] == ""
        for c in ("PricingCategory", "SkuPriceId", "ListUnitPrice", "ContractedUnitPrice", "PricingQuantity",
                  "ConsumedQuantity", "ConsumedUnit", "PricingUnit", "SkuMeter", "ResourceType"):
            assert r[c] != "", f"{c} must not be null on a usage row"
        # money exact: 9 places, the four costs one figure, unit price x quantity = cost
        costs = {r[c] for c in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost")}
        assert len(costs) == 1 and re.fullmatch(r"\d+\.\d{9}", r["BilledCost"]), r
        lup, pq, cost = Decimal(r["ListUnitPrice"]), Decimal(r["PricingQuantity"]), Decimal(r["ListCost"])
        assert abs(lup * pq - cost) <= NANO / 2 + lup * Decimal("0.5e-12"), r
        assert r["ContractedUnitPrice"] == r["ListUnitPrice"]
        if r["x_Meter"].startswith("io_"):
            assert r["ServiceCategory"] == "Storage"
        if r["x_ChargePeriodStatus"] == "Closed":
            assert ce.timestamp() <= now
        else:
            assert r["x_ChargePeriodStatus"] == "Open"
    return rows


PRICES = {"billing.price_cpu_core_hour": "0.036", "billing.price_memory_gib_hour": "0.0045",
          "billing.price_io_read_gib": "0.01", "billing.price_io_write_gib": "0.0255"}


def _ledger(tmp_path, **extra):
    cfg = load_config(None, {"billing.period": "60s", "agent.host": "h1", **PRICES, **extra})
    return Ledger(cfg, str(tmp_path / "ledger.db"), focus_rows=focus.focus_rows)


def _feed(led, infos, start, stop, step=30):
    for t in range(start, stop, step):
        samples = {}
        for i, info in enumerate(infos):
            u = (t - start) * 1000 * (i + 1) + 7
            samples[info.cgroup] = CgroupSample(inode=10 + i, cpu=CpuStat(u, u // 3, u - u // 3, 0, 0, 0),
                                                memory_current=(i + 1) << 24,
                                                io={(8, 0): IoStat(t - start, (t - start) * 4096, 1, 1, 0, 0)},
                                                events=CgroupEvents(True, False))
        led.observe(SimpleNamespace(taken_at=t + 0.5, monotonic=float(t - start), samples=samples,
                                    containers={i.id: i for i in infos}))


@pytest.fixture
def fed(tmp_path):
    """Three containers sampled every 30 s from three hours ago until now: closed hours and the open one."""
    now = int(time.time())
    t0 = now // 3600 * 3600 - 3 * 3600
    led = _ledger(tmp_path)
    infos = [ContainerInfo(id=f"c{i}", name=f"svc{i}", cgroup=f"/cg/c{i}", limits=None, state="running",
                           labels={"team": "red" if i else "blue"}) for i in range(3)]
    _feed(led, infos, t0, now - 1)
    yield led, infos, now
    led.close()


def test_export_passes_the_checker_and_closed_periods_do_not_change(fed):
    led, infos, now = fed
    first = render(led.query({"format": "focus"}), "focus")
    rows = check_focus(first, time.time())
    assert rows and {r["x_ChargePeriodStatus"] for r in rows} == {"Closed"}
    assert {r["x_Meter"] for r in rows} == {"cpu", "memory", "io_read", "io_write"}
    # more usage arrives in the open hour; the closed hours export the same bytes
    _feed(led, infos, now - 1, now + 1, step=1)
    assert render(led.query({"format": "focus"}), "focus") == first
    # the open hour on request, marked
    with_open = check_focus(render(led.query({"format": "focus", "open": "1"}), "focus"), time.time())
    opened = [r for r in with_open if r["x_ChargePeriodStatus"] == "Open"]
    # open: the hour's end plus the grace (period + 60 s) not yet passed; in
    # the first two minutes of an hour that is also the hour before
    assert opened and all(_when(r["ChargePeriodEnd"]).timestamp() + 120 > now for r in opened)
    assert [r for r in with_open if r["x_ChargePeriodStatus"] == "Closed"] == rows


def test_rounding_rule_a_rows_cost_is_exact_and_records_add_up_within_half_a_nano_each(fed):
    led, _infos, _now = fed
    rows = check_focus(render(led.query({"format": "focus"}), "focus"), time.time())
    recs = led.query({"format": "jsonl"})["rows"]
    card = led.card
    for r in rows:
        meter = r["x_Meter"]
        used_col, priced_col, per_unit, price_field, _c, _s = focus.METER_COLUMNS[meter]
        mine = [x for x in recs if x["period_start"] >= r["ChargePeriodStart"]
                and x["period_start"] < r["ChargePeriodEnd"] and f"h1/{x['container_id']}/{x['cgroup_inode']}" ==
                r["ResourceId"]]
        assert mine
        # the row's cost: its exact quantity priced once (PricingQuantity is exact to 12 places here)
        want = Decimal(r["PricingQuantity"]) * getattr(card, price_field)
        assert Decimal(r["BilledCost"]) == want.quantize(NANO, rounding="ROUND_HALF_EVEN") or \
            abs(Decimal(r["BilledCost"]) - want) <= NANO / 2
        # each record was rounded on its own: their sum is within half a nano per record
        meter_cost = sum(_record_meter_cost(x, meter, card) for x in mine)
        assert abs(meter_cost - Decimal(r["BilledCost"])) <= NANO / 2 * len(mine)


def _record_meter_cost(rec: dict, meter: str, card) -> Decimal:
    q = {"cpu": Decimal(str(rec["cpu_seconds"])) / 3600 * card.cpu_core_hour,
         "memory": Decimal(rec["memory_byte_seconds"]) / (3600 << 30) * card.memory_gib_hour,
         "io_read": Decimal(rec["io_read_bytes"]) / (1 << 30) * card.io_read_gib,
         "io_write": Decimal(rec["io_write_bytes"]) / (1 << 30) * card.io_write_gib}[meter]
    return q.quantize(NANO, rounding="ROUND_HALF_EVEN")


def _hourly(hour, **sums):
    base = {"hour": hour, "container_id": "c", "cgroup_inode": 1, "name": "n", "labels": {}, "n": 3,
            "cpu_usec": 0, "priced_cpu_usec": 0, "memory_byte_seconds": 0, "priced_memory_byte_seconds": 0,
            "io_read_bytes": 0, "io_write_bytes": 0}
    base.update(sums)
    return base


def test_the_issue_example_stays_exact():
    """0.78125 GiB written at 0.0255 per GiB is 0.019921875; records that each round
    on their own can add up to 0.019921874: the row does not inherit that."""
    card = RateCard(currency="EUR", io_write_gib=Decimal("0.0255"))
    rows = focus.focus_rows([_hourly(3600 * 100, io_write_bytes=838860800)], "h", card, now=1e12, grace=120)
    (r,) = rows
    assert r["BilledCost"] == r["ListCost"] == "0.019921875" and r["PricingQuantity"] == "0.781250000000"
    assert r["ServiceCategory"] == "Storage" and r["ServiceSubcategory"] == "Block Storage"
    assert r["SkuPriceId"] == "io-write-gib/EUR/0.0255" and r["ListUnitPrice"] == "0.0255"
    # the same bytes as three records each priced and rounded on its own: one nano off
    parts = (634746161, 27441394, 176673245)
    assert sum(parts) == 838860800
    per_record = sum(focus.row_cost_nanos(b, card.io_write_gib, 1 << 30) for b in parts)
    assert per_record == 19921874
    text = render({"rows": rows}, "focus")
    assert check_focus(text, 1e12)[0]["BilledCost"] == "0.019921875"


def test_an_unmeasured_quantity_has_no_cost_row():
    card = RateCard(cpu_core_hour=Decimal("1"), memory_gib_hour=Decimal("1"), io_read_gib=Decimal("1"))
    h = _hourly(0, cpu_usec=3_600_000_000, priced_cpu_usec=3_600_000_000,
                memory_byte_seconds=None, priced_memory_byte_seconds=None, io_read_bytes=None)
    rows = focus.focus_rows([h], "h", card, now=1e12, grace=120)
    assert [r["x_Meter"] for r in rows] == ["cpu"]
    assert rows[0]["BilledCost"] == "1.000000000"


def test_open_hour_only_on_request():
    card = RateCard(cpu_core_hour=Decimal("1"))
    h = _hourly(7200, cpu_usec=1000, priced_cpu_usec=1000)
    assert focus.focus_rows([h], "h", card, now=7200 + 3600 + 119, grace=120) == []
    (r,) = focus.focus_rows([h], "h", card, now=7200 + 3600 + 119, grace=120, include_open=True)
    assert r["x_ChargePeriodStatus"] == "Open"
    (r,) = focus.focus_rows([h], "h", card, now=7200 + 3600 + 120, grace=120)
    assert r["x_ChargePeriodStatus"] == "Closed"


def test_header_is_printed_even_without_rows(tmp_path):
    led = _ledger(tmp_path)
    try:
        text = render(led.query({"format": "focus"}), "focus")
    finally:
        led.close()
    assert text.splitlines() == [",".join(FOCUS_COLUMNS)]
    assert check_focus(text, time.time()) == []


@pytest.mark.parametrize("value", ["yes", "2"])
def test_open_parameter_must_be_a_boolean(tmp_path, value):
    from agent.errors import UserError
    led = _ledger(tmp_path)
    try:
        with pytest.raises(UserError, match="^open: "):
            led.query({"format": "focus", "open": value})
    finally:
        led.close()
