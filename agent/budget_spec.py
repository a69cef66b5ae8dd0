"""What a budget is (agent/budgets.py acts on them): its fields, the rules
of each (one place for the API body and the config's [budgets.NAME]
tables), its window and its container selector. Pure: no state, no I/O.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation

from agent.config import ConfigError, parse_duration
from agent.errors import UserError, json_object
from agent.pricing import NANOS_PER_UNIT, money
from agent.rules import NAME_RE
from runtime.limits import LimitError, parse_cpus

_LABEL_RE = re.compile(r"^label:([A-Za-z0-9_.\-/]{1,128})=(.*)$")
ACTIONS = ("alert", "throttle", "freeze", "stop")
DEFAULT_THROTTLE = "0.1"
KEYS = ("name", "match", "limit", "per", "action", "warn", "scope")
SCOPES = ("host", "fleet")
MATCH_HELP = "use label:KEY=VALUE or name:GLOB"
ACTION_HELP = "use alert, throttle[:CPUS], freeze or stop"
PER_HELP = "use day, month or a duration such as 1h, 7d, 90s"
SCOPE_HELP = "use host (this agentd's containers) or fleet (every host shipping to the PostgreSQL table)"


@dataclass
class Budget:
    name: str
    match: str
    limit_nanos: int
    per: str
    action: str
    warn: list = field(default_factory=list)
    # what the budget did in its current window
    window: int = 0
    warned: list = field(default_factory=list)
    acted: dict = field(default_factory=dict)     # container_id -> [name, action, undo]
    crossed_at: float | None = None
    spent_nanos: int = 0
    source: str = "api"      # "config": a [budgets.NAME] table of the config file
    scope: str = "host"      # "fleet": spend summed over every host of the central table

    def public(self, currency: str) -> dict:
        return {"name": self.name, "match": self.match, "limit": money(self.limit_nanos), "currency": currency,
                "per": self.per, "action": self.action, "warn": list(self.warn),
                "window_start": _iso(self.window) if self.window else None,
                "spent": money(self.spent_nanos), "crossed_at": self.crossed_at,
                "warned": list(self.warned), "acted_on": sorted(v[0] for v in self.acted.values()),
                "source": self.source, "scope": self.scope}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(body: dict) -> Budget:
    """A budget from the API body (strings as agentctl sends them); UserError naming the field."""
    json_object(body, KEYS, "budget")
    name = body.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise UserError(f"name: {name!r} is not a budget name (letters, digits, _ . -; up to 63)")
    match = body.get("match")
    if not isinstance(match, str) or not (_LABEL_RE.match(match) or (match.startswith("name:") and match[5:])):
        raise UserError(f"match: {match!r} is not a selector; {MATCH_HELP}")
    try:
        limit = Decimal(str(body.get("limit")))
        if not limit.is_finite() or limit <= 0:
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        raise UserError(f"limit: {body.get('limit')!r} is not an amount > 0 (a decimal such as 0.01 or 250)") from None
    per = str(body.get("per") or "")
    window_seconds(per, 0)   # validates
    action = str(body.get("action") or "")
    kind, _, arg = action.partition(":")
    if kind not in ACTIONS or (arg and kind != "throttle"):
        raise UserError(f"action: {action!r} is not an action; {ACTION_HELP}")
    if kind == "throttle":
        try:
            parse_cpus(arg or DEFAULT_THROTTLE, "action")
        except LimitError as e:
            raise UserError(f"action: {e}") from None
        action = f"throttle:{arg or DEFAULT_THROTTLE}"
    warn = body.get("warn") or []
    if isinstance(warn, str):
        warn = [w for w in warn.split(",") if w.strip()]
    try:
        warn = sorted({int(str(w).strip()) for w in warn})
    except ValueError:
        raise UserError(f"warn: {body.get('warn')!r} is not a list of percents such as 50,80") from None
    if any(not 0 < w < 100 for w in warn):
        raise UserError(f"warn: {body.get('warn')!r}: each percent must be between 1 and 99")
    scope = body.get("scope") or "host"
    if scope not in SCOPES:
        raise UserError(f"scope: {scope!r} is not a budget scope; {SCOPE_HELP}")
    nanos = int(limit * NANOS_PER_UNIT)
    return Budget(name=name, match=match, limit_nanos=nanos, per=per, action=action, warn=warn, scope=scope)


def window_seconds(per: str, now: float) -> int:
    """Start of the window containing ``now`` (UTC day, UTC month, or epoch-aligned duration)."""
    if per == "day":
        return int(now // 86400 * 86400)
    if per == "month":
        d = datetime.fromtimestamp(now, timezone.utc)
        return int(d.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp())
    try:
        secs = parse_duration(per)
    except Exception:  # noqa: BLE001 - any parse failure is the same user error
        secs = None
    if not secs or secs < 1 or secs != int(secs):
        raise UserError(f"per: {per!r} is not a budget period; {PER_HELP} (whole seconds)")
    return int(now // secs * secs)


def from_config(entries: tuple) -> list[Budget]:
    """The budgets of the config's [budgets.NAME] tables (Config.budgets.entries);
    ConfigError naming the table and the field."""
    out = []
    for name, items in entries:
        body = {k: list(v) if isinstance(v, tuple) else v for k, v in items}
        if "name" in body:
            raise ConfigError(f"budgets.{name}.name", "the table's name is the budget's name; remove this key")
        try:
            b = parse({**body, "name": name})
        except UserError as e:
            raise ConfigError(f"budgets.{name}", str(e)) from None
        b.source = "config"
        out.append(b)
    return out


def check_config(cfg) -> None:
    """agentd --check and start: ConfigError when a [budgets.NAME] table is wrong."""
    from_config(cfg.budgets.entries)


def matches(match: str, name: str, labels: dict) -> bool:
    m = _LABEL_RE.match(match)
    if m:
        return labels.get(m.group(1)) == m.group(2)
    return fnmatch.fnmatchcase(name, match[5:])
