"""Billing exports: CSV, JSON lines, FOCUS 1.2 rows and a terminal table.

Pure functions over what agent.ledger.Ledger.query() returns; nothing here
touches the database or the kernel.

FOCUS (FinOps Open Cost and Usage Specification) 1.2: one row per container
instance, meter and UTC hour; meters are cpu (Core-Hours), memory
(GiB-Hours), io_read and io_write (GiB). A meter row is emitted when its
consumed quantity or its cost is non-zero. There are no discounts or
commitments, so BilledCost = EffectiveCost = ListCost = ContractedCost; the
billing account is the host, the billing period the UTC calendar month of the
charge period. Costs are the sums of
the records' rounded meter costs, so the rows of an hour add up exactly to
the records of that hour.
"""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone

from agent.pricing import GIB, GIB_SECONDS_PER_GIB_HOUR, METERS, USEC_PER_HOUR, money, quantity

SERVICE_NAME = "cgroup-agent"

FOCUS_COLUMNS = (
    "BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "BillingCurrency",
    "BillingAccountId", "BillingPeriodStart", "BillingPeriodEnd",
    "ChargePeriodStart", "ChargePeriodEnd", "ChargeCategory", "ChargeFrequency", "ChargeDescription",
    "ConsumedQuantity", "ConsumedUnit", "PricingQuantity", "PricingUnit",
    "ResourceId", "ResourceName", "ServiceName", "ServiceCategory", "SkuId", "Tags",
    "ProviderName", "PublisherName", "InvoiceIssuerName",
    "x_Host", "x_ContainerId", "x_CgroupInode", "x_Meter", "x_PricingBasis",
)


def _month(ts: int) -> tuple[str, str]:
    d = datetime.fromtimestamp(ts, timezone.utc)
    start = d.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ")

# meter -> (consumed column, priced column, units per pricing unit, cost column)
_METER_COLS = {
    "cpu": ("cpu_usec", "priced_cpu_usec", USEC_PER_HOUR, "cost_cpu_nanos"),
    "memory": ("memory_byte_seconds", "priced_memory_byte_seconds", GIB_SECONDS_PER_GIB_HOUR,
               "cost_memory_nanos"),
    "io_read": ("io_read_bytes", "io_read_bytes", GIB, "cost_io_read_nanos"),
    "io_write": ("io_write_bytes", "io_write_bytes", GIB, "cost_io_write_nanos"),
}


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def focus_rows(hourly: list[dict], host: str, currency: str, basis: str) -> list[dict]:
    """Hourly per-instance sums (hour, container_id, cgroup_inode, name,
    labels, and the ledger's summed integer columns) -> FOCUS rows."""
    rows = []
    for h in hourly:
        tags = json.dumps(h["labels"], sort_keys=True, separators=(",", ":"))
        for meter, (used_col, priced_col, per_unit, cost_col) in _METER_COLS.items():
            used, cost = h[used_col] or 0, h[cost_col] or 0
            if not used and not cost:
                continue
            unit, sku, what = METERS[meter]
            c = money(cost)
            bp_start, bp_end = _month(h["hour"])
            rows.append({
                "BilledCost": c, "EffectiveCost": c, "ListCost": c, "ContractedCost": c,
                "BillingCurrency": currency, "BillingAccountId": host,
                "BillingPeriodStart": bp_start, "BillingPeriodEnd": bp_end,
                "ChargePeriodStart": _iso(h["hour"]), "ChargePeriodEnd": _iso(h["hour"] + 3600),
                "ChargeCategory": "Usage", "ChargeFrequency": "Usage-Based",
                "ChargeDescription": f"{what} of container {h['name']} on {host}",
                "ConsumedQuantity": quantity(used, per_unit), "ConsumedUnit": unit,
                "PricingQuantity": quantity(h[priced_col] or 0, per_unit), "PricingUnit": unit,
                "ResourceId": f"{host}/{h['container_id']}/{h['cgroup_inode']}",
                "ResourceName": h["name"], "ServiceName": SERVICE_NAME, "ServiceCategory": "Compute",
                "SkuId": sku, "Tags": tags,
                "ProviderName": SERVICE_NAME, "PublisherName": SERVICE_NAME, "InvoiceIssuerName": SERVICE_NAME,
                "x_Host": host, "x_ContainerId": h["container_id"], "x_CgroupInode": h["cgroup_inode"],
                "x_Meter": meter, "x_PricingBasis": basis,
            })
    return rows


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, separators=(",", ":"))
    return str(v)


def to_csv(rows: list[dict], columns: tuple | list | None = None) -> str:
    """RFC 4180 CSV with a header line (labels/tags as compact JSON)."""
    if columns is None:
        columns = list(rows[0]) if rows else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])
    return buf.getvalue()


def to_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, sort_keys=False, separators=(",", ":")) + "\n" for r in rows)


UNMEASURED = "-"   # a table cell of a dimension this host cannot measure (null in JSON, empty in CSV)


def _gib_hours(byte_seconds) -> str:
    return UNMEASURED if byte_seconds is None else f"{byte_seconds / GIB_SECONDS_PER_GIB_HOUR:.6f}"


def _gib(n) -> str:
    return UNMEASURED if n is None else f"{n / GIB:.6f}"


def _mib(n) -> str:
    return UNMEASURED if n is None else f"{n / (1 << 20):.1f}"


def to_table(result: dict) -> str:
    """Grouped usage as an aligned table with a TOTAL line."""
    header = ("GROUP", "RECORDS", "CPU_S", "MEM_GIB_H", "PEAK_MIB", "READ_GIB", "WRITE_GIB", "COST")
    lines = []
    for r in [*result.get("rows", []), {"group": "TOTAL", **result.get("totals", {})}]:
        lines.append((str(r.get("group", "")), str(r.get("records", 0)),
                      f"{r.get('cpu_seconds', 0):.6f}", _gib_hours(r.get("memory_byte_seconds")),
                      _mib(r.get("memory_peak_bytes")),
                      _gib(r.get("io_read_bytes")), _gib(r.get("io_write_bytes")),
                      f"{r.get('cost', '0')} {r.get('currency', '')}".strip()))
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*x) for x in [header, *lines]) + "\n"


def render(result: dict, fmt: str) -> str:
    """The text agentctl prints for a Ledger.query() result."""
    rows = result.get("rows", [])
    if fmt == "table":
        return to_table(result)
    if fmt == "jsonl":
        return to_jsonl(rows)
    if fmt == "focus":
        return to_csv(rows, FOCUS_COLUMNS)
    if fmt == "csv":
        if result.get("kind") == "records":
            from agent.ledger import RECORD_FIELDS
            return to_csv(rows, RECORD_FIELDS)
        return to_csv(rows)
    raise ValueError(f"format: {fmt!r} is not one of table, csv, jsonl, focus")
