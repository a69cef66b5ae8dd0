"""The control API: HTTP/1.1 + JSON on a Unix socket (described in agent/openapi.json).

    api = ApiServer(config, supervisor, collector, ledger)   # ledger may be None
    api.start()          # binds config.agent.socket (0660, group socket_group), serves in threads
    api.reload(config)   # SIGHUP: re-resolve read_group / admin_group (the container guard stays)
    api.stop()           # stops accepting, ends streams, removes the socket

This module is the router: it puts the resource modules together and sends
each request to its handler, after the access check. The parts:

    agent/api/server.py      the socket server: connections, caps, start/stop/reload
    agent/api/http.py        HTTP plumbing: reading under deadlines, JSON answers, streams
    agent/api/access.py      who may do what (peer credentials, the in-container guard)
    agent/api/query.py       query strings, JSON bodies, names in paths
    agent/api/views.py       the JSON shape of containers, stats and agent values
    agent/api/errors.py      error kinds and the one map from kind to HTTP status
    agent/api/<resource>.py  the handlers, one module per resource (RESOURCES below)

A resource module holds ``ROUTES`` (path pattern -> {method: handler name}),
``QUERY_PARAMS`` (handler name -> {parameter: parser}), ``HANDLERS`` (a mixin
class with one ``h_<handler name>(*path names, query, body)`` method per
handler) and optionally ``STREAMING`` (GET handlers that stream or block: no
HEAD). Registering one is adding it to ``RESOURCES``.

Every client error is a 4xx with ``{"error": "one line"}``. An unexpected
exception is logged with its traceback and answered 500; the server itself
never dies of a request.
"""
from __future__ import annotations

from urllib.parse import unquote, urlsplit

import structlog

from agent.api import attach, budgets, checkpoint, containers, images, networks, ops, system, usage
from agent.api import exec as exec_  # the module name, not the builtin
from agent.api.access import Access, Peer, peer_cgroup, peer_credentials
from agent.api.errors import ApiSetupError, HttpError, RequestError, classify
from agent.api.http import FRAME_HEADER, MAX_BODY, STREAM_CONTENT_TYPE, VERSION, BaseHandler
from agent.api.query import NAME_ACCEPTED, NAME_PARAM, NAME_RE, check_name, parse_json, parse_query, parse_signal
from agent.api.server import ControlSocket
from agent.api.views import container_json, json_bytes, plain, stats_json

log = structlog.get_logger("agent.api")

__all__ = [  # what other modules and the tests import from here
    "ApiServer", "ApiSetupError", "Access", "Peer", "peer_cgroup", "peer_credentials", "RequestError",
    "FRAME_HEADER", "MAX_BODY", "STREAM_CONTENT_TYPE", "VERSION", "NAME_ACCEPTED", "NAME_RE", "check_name",
    "parse_signal", "container_json", "stats_json", "ROUTES", "QUERY_PARAMS", "RESOURCES",
    "HttpError", "_plain", "_json_bytes",  # the names handler modules written before the split import
]
_plain, _json_bytes = plain, json_bytes

# The resource modules, in route order. A new resource: one line here.
RESOURCES = [  # a module's HANDLERS, or else its one class named *Handlers (as api/images.py had)
    system,
    containers,
    usage,
    images,
    budgets,
    exec_,
    ops,
    networks,
    checkpoint,
    attach,
]



def _handlers(m) -> type:
    found = getattr(m, "HANDLERS", None)
    if found is None:
        classes = [v for k, v in vars(m).items() if k.endswith("Handlers") and isinstance(v, type)
                   and v.__module__ == m.__name__]
        if len(classes) != 1:
            raise RuntimeError(f"{m.__name__}: no HANDLERS and not exactly one *Handlers class")
        found = classes[0]
    return found


ROUTES = [route for m in RESOURCES for route in m.ROUTES]
QUERY_PARAMS = {handler: spec for m in RESOURCES for handler, spec in m.QUERY_PARAMS.items()}
_STREAMING = frozenset(h for m in RESOURCES for h in getattr(m, "STREAMING", ()))


def _check_routes() -> None:
    """Two resources claiming one handler name or one path would shadow each other: fail at import."""
    seen: dict[str, str] = {}
    paths: set = set()
    for m in RESOURCES:
        for pattern, methods in m.ROUTES:
            if pattern in paths:
                raise RuntimeError(f"{m.__name__}: route /{'/'.join(pattern)} is already registered")
            paths.add(pattern)
            for handler in methods.values():
                if handler in seen and seen[handler] != m.__name__:
                    raise RuntimeError(f"{m.__name__}: handler {handler!r} is already {seen[handler]}'s")
                seen[handler] = m.__name__
                if not hasattr(_handlers(m), "h_" + handler):
                    raise RuntimeError(f"{m.__name__}: {_handlers(m).__name__} has no h_{handler}")


_check_routes()


def _match(segs: list[str], method: str) -> tuple[str, list[str]]:
    for pattern, methods in ROUTES:
        if len(pattern) != len(segs):
            continue
        params = []
        for p, s in zip(pattern, segs):
            if p == NAME_PARAM:
                params.append(s)
            elif p != s:
                break
        else:
            head_ok = methods.get("GET") not in (None, *_STREAMING)
            if method == "HEAD" and head_ok:
                method = "GET"  # HEAD is GET without the body (_send_json skips it)
            if method not in methods:
                allow = ", ".join(sorted(set(methods) | ({"HEAD"} if head_ok else set())))
                raise RequestError("method_not_allowed",
                                   f"method {method} is not allowed on {'/' + '/'.join(segs)}; allowed: {allow}",
                                   {"Allow": allow})
            for p in params:
                check_name(p)
            return methods[method], params
    raise RequestError("not_found", f"no such endpoint: /{'/'.join(segs)[:200]}; see agent/openapi.json")


class Handler(*(_handlers(m) for m in RESOURCES), BaseHandler):
    """One request: route, check access, parse, call ``h_<handler>``, map any error to its status."""

    def _dispatch(self):
        try:
            self._route()
        except (BrokenPipeError, ConnectionResetError):  # the client hung up (agentctl logs -f, then Ctrl-C)
            log.debug("api.client_gone", method=self.command, path=self.path, pid=self.peer.pid)
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 - the server must survive anything
            status, message, reason, headers = classify(e)
            if status >= 500:
                log.exception("api.internal_error", method=self.command, path=self.path)
            self._fail(status, message, headers, reason=reason)

    def _route(self):
        url = urlsplit(self.path)
        raw = url.path
        if not raw.startswith("/"):
            raise RequestError("invalid", f"request target {self.path[:80]!r} is not a path")
        raw_body = self._read_body()  # first, so that an early error never leaves it unread
        try:
            segs = [unquote(s, errors="strict") for s in raw[1:].split("/")]
        except UnicodeDecodeError:
            raise RequestError("invalid", "request path: percent-encoding is not valid UTF-8") from None
        handler, params = _match(segs, self.command)
        if self.access is None and self.server.api.access.in_container(self.peer):
            raise RequestError("forbidden", "permission denied: processes inside the agent's containers "
                                            "have no access to its control socket")
        if self.command in ("GET", "HEAD"):
            if self.access is None:
                raise RequestError("forbidden", f"permission denied: uid {self.peer.uid} is not in the agent's "
                                                "read or admin group")
        elif self.access != "admin":
            raise RequestError("forbidden", f"permission denied: uid {self.peer.uid} may only read; "
                                            "changes need root or the agent's admin group")
        query = parse_query(url.query, QUERY_PARAMS.get(handler))
        body = parse_json(raw_body)
        getattr(self, "h_" + handler)(*params, query=query, body=body)


class ApiServer(ControlSocket):
    """The control API: the socket server of agent/api/server.py answering with this router."""

    handler_class = Handler
