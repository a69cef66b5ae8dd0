"""cgroup_agent_ledger_errors_total: failed ledger transactions, by stage."""
from __future__ import annotations

from agent import selfmetrics

try:
    selfmetrics.declare("ledger_errors_total", "counter",
                        "Billing ledger transactions that failed (the committed state is reloaded).", ("stage",))
except ValueError:  # pragma: no cover - declared elsewhere with other labels
    pass


def count_error(where: str) -> None:
    try:
        selfmetrics.inc("ledger_errors_total", stage=where)
    except Exception:  # pragma: no cover - counting must never break accounting
        pass
