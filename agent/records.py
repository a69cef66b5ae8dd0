"""Billing records: their columns, their id, and their shaping into export rows.

What a record is, independent of where it is kept: the integer columns the
ledger sums (SUM_COLS) and maxes (MAX_COLS), a record's full row (REC_COLS),
the measured flags, the record id rule, and the conversion of a record (or of
summed records) into the export form with the field names of docs/billing.md
(record_dict, usage_row). The ledger writes records with these columns; the
exporters (CSV/JSON lines/FOCUS, the PostgreSQL sink) import this module and
never the ledger.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

from agent.pricing import money, unpriced_meters

HOUR = 3600
DAY = 86400

# Measured bits: which dimensions a sample of a period measured (the file
# exists on this host); a dimension no sample measured is null, unpriced.
MEAS_MEMORY, MEAS_SWAP, MEAS_IO, MEAS_PIDS = 1, 2, 4, 8
MEASURED_COLS = (("memory_measured", MEAS_MEMORY), ("swap_measured", MEAS_SWAP),
                 ("io_measured", MEAS_IO), ("pids_measured", MEAS_PIDS))
# disk (an image container's upper dir) and network (its own network
# namespace): added later; most containers have neither, so old records
# count as not measured
MEAS_DISK, MEAS_NET = 16, 32
LATER_MEASURED_COLS = (("disk_measured", MEAS_DISK), ("net_measured", MEAS_NET))
ALL_MEASURED_COLS = MEASURED_COLS + LATER_MEASURED_COLS

# Columns summed by rollups and queries, and those maxed.
SUM_COLS = (
    "running_usec", "frozen_usec", "cpu_usec", "cpu_user_usec", "cpu_system_usec",
    "cpu_throttled_usec", "memory_byte_seconds", "swap_byte_seconds",
    "io_read_bytes", "io_write_bytes", "io_read_ops", "io_write_ops",
    "reserved_cpu_usec", "reserved_memory_byte_seconds",
    "priced_cpu_usec", "priced_memory_byte_seconds",
    "cost_cpu_nanos", "cost_memory_nanos", "cost_io_read_nanos", "cost_io_write_nanos", "cost_nanos",
    # added later (existing ledgers get them by migration): bytes of log
    # output the container produced; per record 0/1 flags, summed by rollups
    # and groups into counts of records
    "log_bytes", "interpolated", *(c for c, _ in MEASURED_COLS),
    # added later still: disk byte-seconds, network bytes, their costs and
    # flags (measured; unpriced = not measured while the meter has a price)
    "disk_byte_seconds", "net_rx_bytes", "net_tx_bytes", "cost_disk_nanos", "cost_net_nanos",
    *(c for c, _ in LATER_MEASURED_COLS), "disk_unpriced", "net_unpriced",
)
# Default of a column added to an existing ledger: old records were all
# measured (their zeros cannot be told from real zeros) and never interpolated.
ADDED_DEFAULTS = {"log_bytes": 0, "interpolated": 0, **{c: 1 for c, _ in MEASURED_COLS},
                  "disk_byte_seconds": 0, "net_rx_bytes": 0, "net_tx_bytes": 0, "cost_disk_nanos": 0,
                  "cost_net_nanos": 0, **{c: 0 for c, _ in LATER_MEASURED_COLS}, "disk_unpriced": 0,
                  "net_unpriced": 0}
MAX_COLS = ("memory_peak_bytes", "pids_peak")
REC_COLS = (
    "record_id", "host", "container_id", "name", "labels", "cgroup_inode",
    "period_start", "period_end", *SUM_COLS, *MAX_COLS,
    "cpu_limit_cores", "memory_limit_bytes", "currency",
)


def record_id(host: str, container_id: str, inode: int, period_start: int) -> str:
    return hashlib.sha256(f"{host}|{container_id}|{inode}|{period_start}".encode()).hexdigest()[:32]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def labels_json(labels) -> str:
    return json.dumps(dict(labels or {}), sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------- closed hours

def grace_seconds(billing_period: float) -> int:
    """How long after an hour's end its last record may still be committed."""
    return int(billing_period) + 60


def hour_is_open(hour_start: int, now: float, grace: int) -> bool:
    """The rule for "closed": the hour's end plus the grace has passed."""
    return hour_start + HOUR + grace > now


# ---------------------------------------------------------------- export shaping

def record_dict(r: dict) -> dict:
    """A records row -> the export form with the issue's field names."""
    return {
        "record_id": r["record_id"], "host": r["host"], "container_id": r["container_id"],
        "name": r["name"], "labels": json.loads(r["labels"]), "cgroup_inode": r["cgroup_inode"],
        "period_start": iso(r["period_start"]), "period_end": iso(r["period_end"]),
        **meters(r),
        "cpu_limit_cores": r["cpu_limit_cores"], "memory_limit_bytes": r["memory_limit_bytes"],
        **_reserved_and_cost(r, r["currency"]),
        "log_bytes": r["log_bytes"], "interpolated": bool(r["interpolated"]),
        **later_meters(r),
    }


def measured(r, col: str) -> bool:
    """Whether any record behind r (a record, or summed records) measured it."""
    return bool(r.get(col, 1))


def meters(r) -> dict:
    """Usage columns (a record or summed records) in the issue's units, in its
    order; a dimension no record measured (the host has no such controller) is None."""
    mem, swap, io, pids = (measured(r, c) for c, _ in MEASURED_COLS)
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


def later_meters(r) -> dict:
    """Disk byte-seconds and network bytes (None: not measured by any record behind r)."""
    disk = bool(r.get("disk_measured", 0))
    net = bool(r.get("net_measured", 0))
    return {
        "disk_byte_seconds": r.get("disk_byte_seconds", 0) if disk else None,
        "net_rx_bytes": r.get("net_rx_bytes", 0) if net else None,
        "net_tx_bytes": r.get("net_tx_bytes", 0) if net else None,
    }


def _reserved_and_cost(r, currency: str) -> dict:
    n = r.get("n", 1)   # records behind r: a meter unmeasured in any of them is (partly) unpriced
    return {
        "reserved_cpu_seconds": r["reserved_cpu_usec"] / 1e6,
        "reserved_memory_byte_seconds": r["reserved_memory_byte_seconds"],
        "cost": money(r["cost_nanos"]), "currency": currency,
        "unpriced": unpriced_meters(r.get("memory_measured", n) < n, r.get("io_measured", n) < n,
                                    r.get("disk_unpriced", 0) > 0, r.get("net_unpriced", 0) > 0),
    }


RECORD_FIELDS = tuple(record_dict({c: (0 if c not in ("labels",) else "{}") for c in REC_COLS}))


def usage_row(sums: dict, currency: str) -> dict:
    """Summed integer columns -> an output row in the issue's units."""
    return {
        "records": sums["n"],
        **meters(sums),
        **_reserved_and_cost(sums, currency),
        "log_bytes": sums["log_bytes"], "interpolated_records": sums["interpolated"],
        **later_meters(sums),
    }


def zero_sums() -> dict:
    return {"n": 0, **{c: 0 for c in SUM_COLS}, **{c: 0 for c in MAX_COLS}}


def add_sums(total: dict, sums: dict) -> None:
    total["n"] += sums["n"]
    for c in SUM_COLS:
        total[c] += sums[c] or 0
    for c in MAX_COLS:
        total[c] = max(total[c], sums[c] or 0)
