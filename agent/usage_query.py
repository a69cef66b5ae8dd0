"""The usage query language: GET /v1/usage and `agentctl usage` parameters
(strings, as from a query string) -> a validated UsageQuery.

since/until: ISO 8601, epoch seconds or a duration ago (90m, 24h, 7d);
name; label (K=V, repeatable or comma-separated); group_by
(name|label:K|hour|day); format (table|csv|jsonl|focus); open (focus: the
current hour too). Bad input raises agent.errors.UserError naming the
parameter and what is accepted.
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import NamedTuple

from agent.errors import UserError
from agent.records import DAY, HOUR

FOREVER = 1 << 62
GROUPS = ("name", "hour", "day")
QUERY_KEYS = ("since", "until", "name", "label", "group_by", "format", "open")
FORMATS = ("table", "csv", "jsonl", "focus")
_AGO_RE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_AGO_UNITS = {"s": 1, "m": 60, "h": HOUR, "d": DAY, "w": 7 * DAY}
_LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-/]{1,128}$")
_TIME_HELP = "use ISO 8601 (2026-11-01 or 2026-11-01T00:00:00Z), epoch seconds or a duration ago (90m, 24h, 7d)"


class UsageQuery(NamedTuple):
    since: int
    until: int
    name: str | None
    labels: tuple          # ((key, value), ...)
    group_by: str | None   # None, "name", "hour", "day", "label:K"
    format: str
    open: bool = False     # focus: include the open (current) hour, marked


def _one(params: dict, key: str):
    v = params.get(key)
    if isinstance(v, (list, tuple)):
        v = v[-1] if v else None
    return None if v is None or v == "" else v


def parse_time(field: str, value, now: float) -> int:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(math.floor(value))
    s = str(value).strip()
    try:
        return int(math.floor(float(s)))
    except ValueError:
        pass
    m = _AGO_RE.match(s)
    if m:
        return int(math.floor(now - float(m.group(1)) * _AGO_UNITS[m.group(2)]))
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise UserError(f"{field}: {s!r} is not a time; {_TIME_HELP}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(math.floor(dt.timestamp()))


def _labels(params: dict) -> tuple:
    labels = params.get("label") or ()
    if isinstance(labels, str):
        labels = labels.split(",")     # K=V[,K=V...]: one query parameter
    elif isinstance(labels, dict):
        labels = [f"{k}={v}" for k, v in labels.items()]
    pairs = []
    for item in labels:
        k, sep, v = str(item).partition("=")
        if not sep or not _LABEL_KEY_RE.match(k):
            raise UserError(f"label: {item!r} is not KEY=VALUE (key: letters, digits, _ . - /)")
        pairs.append((k, v))
    return tuple(pairs)


def _group(params: dict) -> str | None:
    group = _one(params, "group_by")
    if group is not None:
        group = str(group)
        if group.startswith("label:"):
            if not _LABEL_KEY_RE.match(group[6:]):
                raise UserError(f"group_by: {group!r} needs a label key, e.g. label:team")
        elif group not in GROUPS:
            raise UserError(f"group_by: {group!r} is not one of name, label:KEY, hour, day")
    return group


def parse_usage_params(params: dict, now: float) -> UsageQuery:
    params = params or {}
    unknown = sorted(set(params) - set(QUERY_KEYS))
    if unknown:
        raise UserError(f"{unknown[0]}: is not a usage query parameter; accepted: {', '.join(QUERY_KEYS)}")
    since = _one(params, "since")
    until = _one(params, "until")
    since = 0 if since is None else parse_time("since", since, now)
    until = FOREVER if until is None else parse_time("until", until, now)
    if until <= since:
        raise UserError("until: must be later than since")
    pairs = _labels(params)
    group = _group(params)
    fmt = str(_one(params, "format") or "table")
    if fmt not in FORMATS:
        raise UserError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    name = _one(params, "name")
    open_ = str(_one(params, "open") or "0").lower()
    if open_ not in ("0", "1", "true", "false"):
        raise UserError(f"open: {open_!r} is not a boolean; use 1 or 0 (true or false)")
    return UsageQuery(since, until, None if name is None else str(name), pairs, group, fmt,
                      open_ in ("1", "true"))
