"""Errors a client can cause. Each carries a kind; ``HTTP_STATUS`` is the one map from kind to status.

The control API (agent/api/errors.py) answers every error through this map;
``status`` on an error is read from it, never set by the error.
"""

# kind -> HTTP status. A new kind is added here, and nowhere else gets a number.
HTTP_STATUS = {
    "invalid": 400,              # bad input: the message names what and what is accepted
    "forbidden": 403,            # the peer may not do this
    "not_found": 404,            # no such container, image, budget, endpoint
    "method_not_allowed": 405,   # the path exists, not with this method (Allow header)
    "timeout": 408,              # the request head or body did not arrive in time
    "conflict": 409,             # the state does not allow it now (running, in use, name taken)
    "length_required": 411,      # a request body without Content-Length
    "too_large": 413,            # a request body over the limit
    "refused": 422,              # understood, but a registry or an image said no
    "host_limitation": 422,      # understood, but this host cannot honour it (a missing controller)
    "unavailable": 503,          # a part of agentd this request needs is not running
    "storage_full": 507,         # the state dir has no room: nothing was changed
    "internal": 500,             # a bug: logged with its traceback
}


class KindedError(Exception):
    """An error that says what kind of failure it is; its HTTP status follows from the kind."""

    kind = "internal"

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.kind]


class UserError(KindedError):
    """Bad input: HTTP 400, CLI exit 2."""

    kind = "invalid"


class Forbidden(UserError):
    kind = "forbidden"


class NotFound(UserError):
    kind = "not_found"


class Conflict(UserError):
    kind = "conflict"


class CannotExecute(UserError):
    """The container's program could not be executed: ``reason`` is
    "exec_not_found" or "exec_not_executable" (agentctl exits 127 or 126 for
    them, as shells and Docker do)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def json_object(body, accepted, what: str, example: str = "") -> dict:
    """``body`` when it is a JSON object whose keys are all in ``accepted``; else UserError
    naming ``what`` (and ``example``, a hint), or the first unknown key and the accepted ones."""
    if not isinstance(body, dict):
        raise UserError(f"{what}: expected a JSON object{example}")
    unknown = sorted(set(body) - set(accepted))
    if unknown:
        raise UserError(f"{unknown[0]}: unknown field; accepted: {', '.join(accepted)}")
    return body


class HostLimitation(UserError):
    """The request is well-formed but this host cannot honour it (a limit
    needs a cgroup controller the host does not hand down): HTTP 422, CLI
    exit 1 (a property of the host, not bad usage)."""

    kind = "host_limitation"
