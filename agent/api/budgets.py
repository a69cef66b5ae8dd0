"""The budget endpoints of the control API (a resource module, registered in agent/api/router.py).

    GET    /v1/budgets           list
    POST   /v1/budgets           set one (agent/budgets.py validates the body)
    GET    /v1/budgets/{name}    one
    DELETE /v1/budgets/{name}    remove
"""
from __future__ import annotations

from agent.api.backend import Budgets
from agent.api.errors import RequestError
from agent.api.resource import backend, collection_routes, no_query

ROUTES = collection_routes("budgets", list="budgets", create="budget_set", one="budget", remove="budget_rm")

QUERY_PARAMS = no_query(ROUTES)


class BudgetHandlers:
    def _budgets(self) -> Budgets:
        return backend(self.api, "budgets",
                       RequestError("unavailable", "budgets are not available: this agentd runs without a billing ledger"))

    def h_budgets(self, query, body):
        self._send_json(200, {"budgets": self._budgets().list()})

    def h_budget_set(self, query, body):
        self._send_json(200, self._budgets().set(body))

    def h_budget(self, name, query, body):
        self._send_json(200, self._budgets().get(name))

    def h_budget_rm(self, name, query, body):
        self._send_json(200, self._budgets().remove(name))


HANDLERS = BudgetHandlers
