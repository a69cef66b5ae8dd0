"""The usage endpoint of the control API (a resource module, registered in agent/api/router.py).

    GET /v1/usage?...   the billing ledger's records; the query is the ledger's
                        own language (agent/ledger.py validates it), passed through
"""
from __future__ import annotations

from agent.api.backend import Usage
from agent.api.errors import RequestError
from agent.api.resource import backend
from agent.api.views import plain

ROUTES = [
    (("v1", "usage"), {"GET": "usage"}),
]

QUERY_PARAMS: dict = {}  # "usage" absent: its query is passed through to ledger.query


class UsageHandlers:
    def h_usage(self, query, body):
        ledger: Usage = backend(self.api, "ledger", RequestError(
            "unavailable", "usage is not available: this agentd runs without a billing ledger"))
        self._send_json(200, plain(ledger.query(query)))


HANDLERS = UsageHandlers
