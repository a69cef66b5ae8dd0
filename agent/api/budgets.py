"""The budget endpoints of the control API (a resource module, registered in agent/api/router.py).

    GET    /v1/budgets           list
    POST   /v1/budgets           set one (agent/budgets.py validates the body)
    GET    /v1/budgets/{name}    one
    DELETE /v1/budgets/{name}    remove
"""
from __future__ import annotations

from agent.api.errors import RequestError
from agent.api.query import NAME_PARAM

ROUTES = [
    (("v1", "budgets"), {"GET": "budgets", "POST": "budget_set"}),
    (("v1", "budgets", NAME_PARAM), {"GET": "budget", "DELETE": "budget_rm"}),
]

QUERY_PARAMS = {"budgets": {}, "budget_set": {}, "budget": {}, "budget_rm": {}}


class BudgetHandlers:
    def _budgets(self):
        budgets = getattr(self.api, "budgets", None)
        if budgets is None:
            raise RequestError("unavailable", "budgets are not available: this agentd runs without a billing ledger")
        return budgets

    def h_budgets(self, query, body):
        self._send_json(200, {"budgets": self._budgets().list()})

    def h_budget_set(self, query, body):
        self._send_json(200, self._budgets().set(body))

    def h_budget(self, name, query, body):
        self._send_json(200, self._budgets().get(name))

    def h_budget_rm(self, name, query, body):
        self._send_json(200, self._budgets().remove(name))


HANDLERS = BudgetHandlers
