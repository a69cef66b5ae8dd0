"""`agentctl stats`: turn two /v1/stats answers into a top-like table.

The API serves cumulative counters from the collector's latest snapshot
(cpu usage in µs, io bytes, throttled periods) with the time they were
taken; rates are differences between two snapshots divided by the time
between them. A counter that went down (the cgroup was recreated) or a
container seen only once shows "-" instead of a made-up rate.

    rows(prev, cur) -> list[Row]          pure, unit-tested
    render(rows) -> str                    the table
    run(fetch, stream, as_json, out)       the refresh loop (fetch() -> the API's JSON)

On a terminal, streaming redraws in place (ANSI home + clear to the end of
the screen before each table); piped, it prints one table per tick followed
by a blank line. --json streams one JSON document per line and tick.
"""
from __future__ import annotations

import json
import time
from typing import Callable, NamedTuple

from agent.cli.format import table, with_rfc3339  # JSON times in RFC 3339 UTC

HEADERS = ["NAME", "STATE", "CPU %", "MEM USAGE / LIMIT", "MEM %", "IO READ/s", "IO WRITE/s", "PIDS", "THROTTLED"]
REFRESH = 1.0  # seconds between table refreshes


class Row(NamedTuple):
    name: str
    state: str
    cpu_percent: float | None  # 100 = one core busy
    memory: int | None
    memory_limit: int | None
    memory_percent: float | None
    io_read_rate: float | None  # bytes/s
    io_write_rate: float | None
    pids: int | None
    pids_limit: int | None
    throttled_percent: float | None  # share of CPU periods throttled in the interval


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}TiB"  # pragma: no cover


def _delta(cur, prev):
    if cur is None or prev is None or cur < prev:
        return None
    return cur - prev


def _number(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def rows(prev: dict | None, cur: dict) -> list[Row]:
    """Rows for the containers of `cur` (rates against `prev`, the previous answer)."""
    dt = None
    if prev is not None and cur.get("taken_at") is not None and prev.get("taken_at") is not None:
        dt = cur["taken_at"] - prev["taken_at"]
        if dt <= 0:
            dt = None
    before = {c["id"]: c for c in (prev or {}).get("containers", [])}
    out = []
    for c in cur.get("containers", []):
        p = before.get(c["id"]) if dt else None
        cpu = io_r = io_w = thr = None
        if p is not None:
            d = _delta(c.get("cpu_usage_usec"), p.get("cpu_usage_usec"))
            cpu = None if d is None else d / (dt * 1e6) * 100
            d = _delta(c.get("io_read_bytes"), p.get("io_read_bytes"))
            io_r = None if d is None else d / dt
            d = _delta(c.get("io_write_bytes"), p.get("io_write_bytes"))
            io_w = None if d is None else d / dt
            periods = _delta(c.get("cpu_nr_periods"), p.get("cpu_nr_periods"))
            throttled = _delta(c.get("cpu_nr_throttled"), p.get("cpu_nr_throttled"))
            if periods and throttled is not None:
                thr = throttled / periods * 100
            elif periods == 0 and c.get("cpu_limit"):
                thr = 0.0
        mem, limit = c.get("memory_current"), _number(c.get("memory_limit"))
        out.append(Row(
            name=c["name"], state=c.get("state") or "-", cpu_percent=cpu, memory=mem, memory_limit=limit,
            memory_percent=(mem / limit * 100) if (mem is not None and limit) else None,
            io_read_rate=io_r, io_write_rate=io_w, pids=c.get("pids_current"),
            pids_limit=_number(c.get("pids_limit")), throttled_percent=thr))
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}%"


def _rate(v: float | None) -> str:
    return "-" if v is None else human_bytes(v) + "/s"


def render(table_rows: list[Row]) -> str:
    cells = []
    for r in table_rows:
        mem = f"{human_bytes(r.memory)} / {human_bytes(r.memory_limit) if r.memory_limit else 'max'}"
        pids = "-" if r.pids is None else (f"{r.pids} / {r.pids_limit}" if r.pids_limit else str(r.pids))
        cells.append([r.name, r.state, _pct(r.cpu_percent), mem, _pct(r.memory_percent), _rate(r.io_read_rate),
                      _rate(r.io_write_rate), pids, _pct(r.throttled_percent)])
    return table(HEADERS, cells)


def run(fetch: Callable[[], dict], stream: bool, as_json: bool, out, sleep=time.sleep) -> int:
    """The `stats` loop: print once (after two samples, for rates), or refresh every second."""
    if as_json and not stream:
        out.write(json.dumps(with_rfc3339(fetch()), indent=2, sort_keys=True) + "\n")
        return 0
    tty = hasattr(out, "isatty") and out.isatty()
    prev = fetch()
    if as_json:
        out.write(json.dumps(with_rfc3339(prev), sort_keys=True) + "\n")
        out.flush()
    cur = prev
    while True:
        for _ in range(5):  # wait for the collector's next sample
            sleep(REFRESH)
            cur = fetch()
            if cur.get("taken_at") != prev.get("taken_at"):
                break
        if as_json:
            out.write(json.dumps(with_rfc3339(cur), sort_keys=True) + "\n")
        else:
            text = render(rows(prev, cur))
            out.write(("\x1b[H\x1b[J" + text + "\n") if tty and stream else (text + "\n" + ("\n" if stream else "")))
        out.flush()
        if not stream:
            return 0
        if cur.get("taken_at") != prev.get("taken_at"):
            prev = cur
