"""Usage queries over the ledger's tables: filters, group keys, and the cover
of a time range by day rollups, hour rollups and records (every record is
counted in exactly one of them, by its period_start)."""
from __future__ import annotations

import json

from agent.ledger.schema import ROLLUPS
from agent.records import (DAY, HOUR, MAX_COLS, REC_COLS, SUM_COLS, add_sums, grace_seconds, hour_is_open, iso,
                           record_dict, usage_row, zero_sums)
from agent.usage_query import FOREVER, UsageQuery

_SUMS_KEYS = ("n", *SUM_COLS, *MAX_COLS)


def _json_path(key: str) -> str:
    return "'$.\"" + key + "\"'"   # key validated by agent.usage_query: no quotes


def _filters(q: UsageQuery) -> tuple[str, list]:
    sql, args = [], []
    if q.name is not None:
        sql.append("name = ?")
        args.append(q.name)
    for k, v in q.labels:
        sql.append(f"json_extract(labels, {_json_path(k)}) = ?")
        args.append(v)
    return "".join(" AND " + s for s in sql), args


def _key_exprs(group: str, ts: str) -> list[str]:
    """SQL expressions of the group key columns; ``ts`` is the bucket start
    column (records: period_start, rollups: start)."""
    if group == "name":
        return ["name"]
    if group == "hour":
        return [f"{ts} / {HOUR} * {HOUR}"]
    if group == "day":
        return [f"{ts} / {DAY} * {DAY}"]
    if group == "instance-hour":
        return [f"{ts} / {HOUR} * {HOUR}", "container_id", "cgroup_inode", "name", "labels"]
    if group == "container":
        return ["container_id", "name", "labels"]
    return [f"COALESCE(json_extract(labels, {_json_path(group[6:])}), '')"]


def _split(since: int, until: int, levels) -> list[tuple[str, str, int, int]]:
    """Cover [since, until) with the coarsest buckets that fit entirely:
    [(table, start column, lo, hi), ...]; what no bucket covers comes from records."""
    if not levels:
        return [("records", "period_start", since, until)]
    (table, size), rest = levels[0], levels[1:]
    lo = -(-since // size) * size
    hi = until // size * size
    if lo >= hi:
        return _split(since, until, rest)
    return [*_split(since, lo, rest), (table, "start", lo, hi), *_split(hi, until, rest)]


def grouped(db, q: UsageQuery, group: str) -> list[tuple]:
    """Rows (key..., n, sums..., maxes...) from day rollups for whole days,
    hour rollups for whole hours and records for the rest of [since, until).
    Every record is in exactly one part (by its period_start)."""
    levels = ROLLUPS if group not in ("hour", "instance-hour") else ROLLUPS[1:]
    filt, fargs = _filters(q)
    cols = ", ".join((*SUM_COLS, *MAX_COLS))
    parts, args = [], []
    for table, ts, lo, hi in _split(q.since, q.until, levels):
        if lo >= hi:
            continue
        keys = ", ".join(f"{e} AS k{i}" for i, e in enumerate(_key_exprs(group, ts)))
        n = "1 AS n" if table == "records" else "n"
        parts.append(f"SELECT {keys}, {n}, {cols} FROM {table} WHERE {ts} >= ? AND {ts} < ?{filt}")
        args += [lo, hi, *fargs]
    nk = len(_key_exprs(group, "x"))
    ks = ", ".join(f"k{i}" for i in range(nk))
    outer = (f"SELECT {ks}, SUM(n), " + ", ".join(f"SUM({c})" for c in SUM_COLS) + ", "
             + ", ".join(f"MAX({c})" for c in MAX_COLS))
    sql = f"{outer} FROM ({' UNION ALL '.join(parts)}) GROUP BY {ks} ORDER BY {ks}"
    return db.execute(sql, args).fetchall()


def spend_rows(db, since: int) -> list[tuple[str, str, dict, int]]:
    """Closed records' cost since ``since`` per container: [(id, name, labels, nano-units)]."""
    rows = grouped(db, UsageQuery(int(since), FOREVER, None, (), "container", "table"), "container")
    ci = 3 + 1 + SUM_COLS.index("cost_nanos")
    return [(r[0], r[1], json.loads(r[2]), r[ci]) for r in rows]


def run_query(db, q: UsageQuery, host: str, card, period: int, focus_rows, now: float) -> dict:
    """The result of GET /v1/usage: records (csv/jsonl without group_by),
    FOCUS rows (``focus_rows``: the FOCUS exporter's shaping of hourly
    per-instance sums) or groups, with totals."""
    out = {"since": iso(q.since) if q.since > 0 else None,
           "until": iso(q.until) if q.until < FOREVER else None,
           "host": host, "currency": card.currency, "basis": card.basis,
           "group_by": q.group_by, "format": q.format}
    if q.format in ("csv", "jsonl") and q.group_by is None:
        out.update(kind="records", **_records(db, q, card.currency))
    elif q.format == "focus":
        out.update(kind="focus", **_focus(db, q, host, card, period, focus_rows, now))
    else:
        group = q.group_by or "name"
        out.update(kind="groups", group_by=group, **_groups(db, q, group, card.currency))
    return out


def _records(db, q: UsageQuery, currency: str) -> dict:
    total = zero_sums()
    filt, fargs = _filters(q)
    cur = db.execute(f"SELECT {', '.join(REC_COLS)} FROM records WHERE period_start >= ? "
                     f"AND period_start < ?{filt} ORDER BY period_start, container_id, cgroup_inode",
                     [q.since, q.until, *fargs])
    rows = []
    for r in cur:
        d = dict(zip(REC_COLS, r))
        add_sums(total, {"n": 1, **d})
        rows.append(record_dict(d))
    return {"rows": rows, "totals": usage_row(total, currency)}


def _focus(db, q: UsageQuery, host: str, card, period: int, focus_rows, now: float) -> dict:
    total = zero_sums()
    hourly = []
    grace = grace_seconds(period)
    for r in grouped(db, q, "instance-hour"):
        if not q.open and hour_is_open(r[0], now, grace):
            continue                      # closed periods only unless asked (totals too)
        sums = dict(zip(_SUMS_KEYS, r[5:]))
        add_sums(total, sums)
        hourly.append({"hour": r[0], "container_id": r[1], "cgroup_inode": r[2], "name": r[3],
                       "labels": json.loads(r[4]), **sums})
    return {"rows": focus_rows(hourly, host, card, now, grace, q.open), "totals": usage_row(total, card.currency)}


def _groups(db, q: UsageQuery, group: str, currency: str) -> dict:
    total = zero_sums()
    rows = []
    for r in grouped(db, q, group):
        sums = dict(zip(_SUMS_KEYS, r[1:]))
        add_sums(total, sums)
        key = r[0]
        if group in ("hour", "day"):
            key = iso(key)
        rows.append({"group": key, **usage_row(sums, currency)})
    return {"rows": rows, "totals": usage_row(total, currency)}
