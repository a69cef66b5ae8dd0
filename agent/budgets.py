"""Budgets: spend limits on groups of containers that act while the bill runs.

    agentctl budget set NAME --match label:K=V|name:GLOB --limit AMOUNT
                        --per day|month|DURATION --action alert|throttle[:CPUS]|freeze|stop
                        [--warn 50,80]

A budget's spend is the cost the ledger has accrued for the containers it
matches in the current window (UTC day, UTC month, or a DURATION aligned to
the epoch): closed records plus the open period, evaluated after every
collection pass (so an action lands within one collection interval of the
crossing). Containers match by the name and labels of their records, so the
spend of containers removed during the window still counts.

On crossing the limit the action is taken on the matching containers that
are running: ``freeze`` (cgroup.freeze), ``throttle:CPUS`` (cpu.max; default
0.1 CPU), ``stop``, or nothing but the event for ``alert``. Actions are
reversible: when the spend is below the limit again (the limit raised, a new
window) the budget thaws / unthrottles what *it* did, and only that (a
container that was already paused is not touched and stays paused). ``stop``
is not undone. An action the host cannot take (throttle without the cpu
controller) is refused when the budget is set. Warn thresholds (percent of
the limit) log ``budget.warned`` once per window; crossing logs
``budget.acted``, releasing ``budget.released``. Gauges
cgroup_agent_budget_spent and cgroup_agent_budget_limit (labels budget,
currency) follow every evaluation.

Budgets persist in state_dir/budgets.json (written atomically), with what
each budget did in its window, so a restarted agentd releases what the
previous one froze.

Budgets may also be set in the config file, one [budgets.NAME] table each
with the same fields (match, limit, per, action, warn). Those are checked by
`agentd --check`, applied at start and on every reload (a table removed from
the file removes its budget, releasing what it did), and shown with
source "config"; the API refuses to change or remove them (the file is
where they live).
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict

import structlog

from agent import selfmetrics
from agent.budget_spec import (  # noqa: F401  (check_config: the daemon imports it from here)
    Budget, check_config, from_config, matches, parse, window_seconds)
from agent.config import ConfigError
from agent.errors import NotFound, UserError
from agent.model import State
from agent.pricing import NANOS_PER_UNIT, money
from runtime.errors import ControllerMissing
from runtime.limits import DEFAULT_CPU_PERIOD_US, MAX, Limits, parse_cpus

log = structlog.get_logger("agentd.budgets")

FILE_NAME = "budgets.json"

selfmetrics.declare("budget_spent", "gauge", "Cost accrued by the containers of a budget in its current window.",
                    ("budget", "currency"))
selfmetrics.declare("budget_limit", "gauge", "Spend limit of a budget in its window.", ("budget", "currency"))
selfmetrics.declare("budget_fleet_errors_total", "counter",
                    "Failed reads of the other hosts' spend from the PostgreSQL table (fleet budgets).", ())


class Budgets:
    """The budgets of one agentd: persisted, evaluated after every collection pass."""

    def __init__(self, state_dir: str, ledger, supervisor, configured: tuple = (), fleet=None,
                 host: str = ""):
        """fleet: the other hosts' spend (exporters.postgres.FleetSpend, built
        by the daemon when [sink.postgres] is set), read by a thread of its
        own every fleet.interval; None: fleet budgets are refused."""
        self.path = os.path.join(state_dir, FILE_NAME)
        self.ledger = ledger
        self.sup = supervisor
        self.currency = ledger.card.currency
        self.fleet = fleet
        self.host = host
        self._fleet_rows: dict[int, tuple[float, list]] = {}   # window start -> (read at, rows)
        self._fleet_wake = threading.Event()
        self._fleet_stop = threading.Event()
        self._fleet_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._budgets: dict[str, Budget] = {}
        self._load()
        try:
            self.sync_config(configured)
        except ConfigError as e:     # agentd --check and main() refuse this first
            log.error("budgets.config_refused", error=str(e))

    # ------------------------------------------------------------ the config file
    def sync_config(self, entries: tuple) -> None:
        """Make the config-sourced budgets those of `entries` (all or none:
        ConfigError leaves every budget as it was). An update keeps what the
        budget did in its window; a removed table releases it."""
        wanted = {b.name: b for b in from_config(entries)}
        for b in wanted.values():
            try:
                self._check_scope(b)
            except UserError as e:
                raise ConfigError(f"budgets.{b.name}", str(e)) from None
            if b.action.startswith("throttle"):
                try:
                    self._check_throttle(b.action)
                except UserError as e:
                    raise ConfigError(f"budgets.{b.name}", str(e)) from None
        with self._lock:
            changed = False
            for name, old in list(self._budgets.items()):
                if old.source == "config" and name not in wanted:
                    self._release(old, "removed from the config")
                    del self._budgets[name]
                    changed = True
                    log.info("budget.removed", budget=name, source="config")
            for name, new in wanted.items():
                old = self._budgets.get(name)
                if old is not None:
                    if old.source != "config":
                        log.warning("budget.replaced_by_config", budget=name)
                    new.window, new.warned, new.acted, new.crossed_at = old.window, old.warned, old.acted, old.crossed_at
                    new.spent_nanos = old.spent_nanos
                    if asdict(old) == asdict(new):
                        continue
                self._budgets[name] = new
                changed = True
                selfmetrics.set_gauge("budget_limit", new.limit_nanos / NANOS_PER_UNIT, budget=name,
                                      currency=self.currency)
                log.info("budget.set", budget=name, match=new.match, limit=money(new.limit_nanos), per=new.per,
                         action=new.action, warn=new.warn, source="config")
            if changed:
                self._save()
        if wanted:
            self.evaluate()

    def _check_scope(self, b: Budget) -> None:
        if b.scope == "fleet":
            if self.fleet is None:
                raise UserError("scope: fleet needs [sink.postgres] in the config (the fleet's spend is "
                                "summed from its table); use scope host")
            self._start_fleet()

    # ------------------------------------------------------------ the fleet's spend
    def _start_fleet(self) -> None:
        if self._fleet_thread is None:
            self._fleet_thread = threading.Thread(target=self._fleet_loop, name="budgets-fleet", daemon=True)
            self._fleet_thread.start()
        self._fleet_wake.set()

    def stop(self) -> None:
        self._fleet_stop.set()
        self._fleet_wake.set()
        if self.fleet is not None:
            self.fleet.close()

    def _fleet_loop(self) -> None:
        """Every fleet.interval: the other hosts' spend for each window a fleet
        budget is in. A failed read keeps the previous answer (logged, counted)."""
        while not self._fleet_stop.is_set():
            with self._lock:
                starts = {window_seconds(b.per, time.time()) for b in self._budgets.values() if b.scope == "fleet"}
            fresh = {}
            for start in starts:
                try:
                    fresh[start] = (time.time(), self.fleet.since(start, self.host))
                except Exception as e:  # noqa: BLE001 - the database may be down: keep the last answer
                    selfmetrics.inc("budget_fleet_errors_total")
                    log.warning("budgets.fleet_unavailable", error=f"{type(e).__name__}: {e}".strip())
            with self._lock:
                self._fleet_rows = {s: fresh.get(s) or self._fleet_rows.get(s) for s in starts
                                    if fresh.get(s) or self._fleet_rows.get(s)}
            if fresh:
                self.evaluate()
            self._fleet_wake.wait(max(1.0, self.fleet.interval))
            self._fleet_wake.clear()

    def reload(self, cfg) -> None:
        """SIGHUP: the config's budgets anew; a wrong table keeps the previous ones."""
        try:
            self.sync_config(cfg.budgets.entries)
        except ConfigError as e:
            log.error("budgets.reload_failed", error=str(e), kept="previous budgets")

    def _not_from_config(self, name: str) -> None:
        b = self._budgets.get(name)
        if b is not None and b.source == "config":
            raise UserError(f"name: budget {name!r} is set in the config file ([budgets.{name}]); "
                            "change it there and reload agentd")

    # ------------------------------------------------------------ persistence
    def _load(self) -> None:
        try:
            with open(self.path) as f:
                doc = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.error("budgets.load_failed", path=self.path, error=str(e))
            return
        for d in doc.get("budgets", []):
            try:
                b = Budget(**d)
            except TypeError as e:
                log.error("budgets.bad_entry", error=str(e))
                continue
            self._budgets[b.name] = b
            if b.scope == "fleet" and self.fleet is not None:
                self._start_fleet()
            elif b.scope == "fleet":
                log.warning("budget.fleet_without_sink", budget=b.name,
                            note="no [sink.postgres]: only this host's spend counts until it is configured")
            selfmetrics.set_gauge("budget_limit", b.limit_nanos / NANOS_PER_UNIT, budget=b.name,
                                  currency=self.currency)

    def _save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"budgets": [asdict(b) for b in self._budgets.values()]}, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    # ------------------------------------------------------------ API
    def set(self, body: dict) -> dict:
        new = parse(body)
        self._check_scope(new)
        if new.action.startswith("throttle"):
            self._check_throttle(new.action)
        with self._lock:
            self._not_from_config(new.name)
            old = self._budgets.get(new.name)
            if old is not None:     # an update keeps what the budget did (it may now release it)
                new.window, new.warned, new.acted, new.crossed_at = old.window, old.warned, old.acted, old.crossed_at
            self._budgets[new.name] = new
            self._save()
        selfmetrics.set_gauge("budget_limit", new.limit_nanos / NANOS_PER_UNIT, budget=new.name,
                              currency=self.currency)
        log.info("budget.set", budget=new.name, match=new.match, limit=money(new.limit_nanos), per=new.per,
                 action=new.action, warn=new.warn)
        self.evaluate()
        return self.get(new.name)

    def _check_throttle(self, action: str) -> None:
        quota, period = parse_cpus(action.partition(":")[2], "action")
        try:
            self.sup.check_controllers(Limits(cpu_quota_us=quota, cpu_period_us=period))
        except (ControllerMissing, UserError) as e:
            reason = str(e).removeprefix("limits: ")
            raise UserError(f"action: {action} cannot be taken on this host: {reason}") from None

    def list(self) -> list[dict]:
        with self._lock:
            return [b.public(self.currency) for b in sorted(self._budgets.values(), key=lambda b: b.name)]

    def get(self, name: str) -> dict:
        with self._lock:
            b = self._budgets.get(name)
            if b is None:
                raise NotFound(f"name: no budget named {name!r}")
            return b.public(self.currency)

    def remove(self, name: str) -> dict:
        with self._lock:
            b = self._budgets.get(name)
            if b is None:
                raise NotFound(f"name: no budget named {name!r}")
            self._not_from_config(name)
            self._release(b, "removed")
            del self._budgets[name]
            self._save()
        log.info("budget.removed", budget=name)
        return b.public(self.currency)

    # ------------------------------------------------------------ evaluation
    def observe(self, snapshot=None) -> None:
        """Collector subscriber: evaluate every budget (never raises)."""
        if not self._budgets:
            return
        try:
            self.evaluate()
        except Exception as e:  # noqa: BLE001 - the collector must keep going
            log.error("budgets.evaluate_failed", error=str(e), exc_type=type(e).__name__)

    def evaluate(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            if not self._budgets:
                return
            changed = False
            spend_cache: dict[int, list] = {}
            for b in self._budgets.values():
                start = window_seconds(b.per, now)
                if start != b.window:
                    if b.window:
                        changed |= self._release(b, "new window")
                    b.window, b.warned, b.crossed_at = start, [], None
                    changed = True
                rows = spend_cache.get(start)
                if rows is None:
                    rows = spend_cache[start] = self.ledger.spend_since(start)
                spent = sum(n for _cid, name, labels, n in rows if matches(b.match, name, labels))
                if b.scope == "fleet":     # the other hosts' shipped records (their sink's lag behind)
                    _at, others = self._fleet_rows.get(start) or (None, [])
                    spent += sum(n for _host, name, labels, n in others if matches(b.match, name, labels))
                b.spent_nanos = spent
                selfmetrics.set_gauge("budget_spent", spent / NANOS_PER_UNIT, budget=b.name, currency=self.currency)
                for pct in b.warn:
                    if pct not in b.warned and spent * 100 >= b.limit_nanos * pct:
                        b.warned.append(pct)
                        changed = True
                        log.warning("budget.warned", budget=b.name, percent=pct, spent=money(spent),
                                    limit=money(b.limit_nanos), currency=self.currency)
                if spent >= b.limit_nanos:
                    if b.crossed_at is None:
                        b.crossed_at = now
                        changed = True
                    changed |= self._act(b, spent)
                elif b.crossed_at is not None or b.acted:
                    b.crossed_at = None
                    changed |= self._release(b, "below limit")
                    changed = True
            if changed:
                self._save()

    def _act(self, b: Budget, spent: int) -> bool:
        kind, _, arg = b.action.partition(":")
        done = []
        for info in self.sup.containers(all=False):
            if info.state != State.RUNNING or info.id in b.acted or not matches(b.match, info.name, info.labels or {}):
                continue
            undo = None
            try:
                if kind == "freeze":
                    self.sup.freeze(info.id)
                elif kind == "throttle":
                    lim = getattr(info, "limits", None)
                    undo = [getattr(lim, "cpu_quota_us", None), getattr(lim, "cpu_period_us", None)]
                    quota, period = parse_cpus(arg)
                    self.sup.set_limits(info.id, Limits(cpu_quota_us=quota, cpu_period_us=period))
                elif kind == "stop":
                    threading.Thread(target=self._stop, args=(info.id, b.name), daemon=True,
                                     name=f"budget-stop-{info.id}").start()
            except Exception as e:  # noqa: BLE001 - one container must not keep the others going
                log.error("budget.act_failed", budget=b.name, container=info.name, action=b.action, error=str(e))
                continue
            if kind != "alert":
                b.acted[info.id] = [info.name, kind, undo]
            done.append(info.name)
        if done or (kind == "alert" and "alerted" not in b.warned):
            if kind == "alert":
                b.warned.append("alerted")
            log.warning("budget.acted", budget=b.name, action=b.action, containers=done, spent=money(spent),
                        limit=money(b.limit_nanos), currency=self.currency)
            return True
        return False

    def _stop(self, cid: str, budget: str) -> None:
        try:
            self.sup.stop(cid)
        except Exception as e:  # noqa: BLE001
            log.error("budget.act_failed", budget=budget, container=cid, action="stop", error=str(e))

    def _release(self, b: Budget, why: str) -> bool:
        """Undo what this budget did (freeze, throttle); stop is not undone."""
        if not b.acted:
            return False
        released = []
        for cid, (name, kind, undo) in list(b.acted.items()):
            try:
                if kind == "freeze":
                    info = self.sup.get(cid)
                    if info.state == State.PAUSED:
                        self.sup.thaw(cid)
                        released.append(name)
                elif kind == "throttle":
                    quota, period = undo or (None, None)
                    self.sup.set_limits(cid, Limits(cpu_quota_us=quota if quota is not None else MAX,
                                                    cpu_period_us=period or DEFAULT_CPU_PERIOD_US))
                    released.append(name)
            except NotFound:
                pass        # removed meanwhile: nothing to undo
            except Exception as e:  # noqa: BLE001
                log.error("budget.release_failed", budget=b.name, container=name, error=str(e))
                continue
            del b.acted[cid]
        log.info("budget.released", budget=b.name, reason=why, containers=released)
        return True
