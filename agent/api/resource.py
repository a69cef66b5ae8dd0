"""What a resource module of the control API is made of, written once.

    ROUTES = collection_routes("budgets", list="budgets", create="budget_set",
                               one="budget", remove="budget_rm")
    QUERY_PARAMS = no_query(ROUTES)          # handlers that take no query parameters
    svc = backend(self.api, "budgets", RequestError("unavailable", "..."))

A collection resource has two paths: /v1/NAME (GET lists, POST creates) and
/v1/NAME/{name} (GET one, DELETE removes). ``backend`` is a daemon object a
resource needs (agent/api/backend.py) that this agentd may run without: the
object, or the one-line error saying it is absent.
"""
from __future__ import annotations

from typing import Any

from agent.api.query import NAME_PARAM


def collection_routes(name: str, *, list: str, create: str, one: str, remove: str) -> list:
    """ROUTES of a collection: /v1/<name> (GET, POST) and /v1/<name>/{name} (GET, DELETE)."""
    return [
        (("v1", name), {"GET": list, "POST": create}),
        (("v1", name, NAME_PARAM), {"GET": one, "DELETE": remove}),
    ]


def no_query(routes: list) -> dict:
    """QUERY_PARAMS for routes whose handlers take no query parameters (any given is refused)."""
    return {handler: {} for _pattern, methods in routes for handler in methods.values()}


def backend(owner: object, attr: str, absent: Exception) -> Any:
    """``owner.attr``, or raise ``absent`` when this agentd runs without it (None or unset)."""
    found = getattr(owner, attr, None)
    if found is None:
        raise absent
    return found
