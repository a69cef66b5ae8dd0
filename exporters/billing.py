"""Billing exports: CSV, JSON lines, FOCUS 1.2 rows and a terminal table.

Pure functions over what agent.ledger.Ledger.query() returns (records shaped
by agent.records); nothing here
touches the database or the kernel. FOCUS rows are built by exporters.focus
(its columns, values and rounding rule); here they are only written out.
"""
from __future__ import annotations

import csv
import io
import json

from agent.pricing import GIB, GIB_SECONDS_PER_GIB_HOUR
from agent.records import RECORD_FIELDS
from exporters import focus

FOCUS_COLUMNS = focus.FOCUS_COLUMNS


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
    header = ("GROUP", "RECORDS", "CPU_S", "MEM_GIB_H", "PEAK_MIB", "READ_GIB", "WRITE_GIB",
              "DISK_GIB_H", "NET_RX_GIB", "NET_TX_GIB", "COST")
    lines = []
    for r in [*result.get("rows", []), {"group": "TOTAL", **result.get("totals", {})}]:
        lines.append((str(r.get("group", "")), str(r.get("records", 0)),
                      f"{r.get('cpu_seconds', 0):.6f}", _gib_hours(r.get("memory_byte_seconds")),
                      _mib(r.get("memory_peak_bytes")),
                      _gib(r.get("io_read_bytes")), _gib(r.get("io_write_bytes")),
                      _gib_hours(r.get("disk_byte_seconds")), _gib(r.get("net_rx_bytes")),
                      _gib(r.get("net_tx_bytes")),
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
            return to_csv(rows, RECORD_FIELDS)
        return to_csv(rows)
    raise ValueError(f"format: {fmt!r} is not one of table, csv, jsonl, focus")
