"""Errors a client can cause; the API maps them to 4xx responses."""


class UserError(Exception):
    """Bad input: HTTP 400, CLI exit 2."""

    status = 400


class Forbidden(UserError):
    status = 403


class NotFound(UserError):
    status = 404


class Conflict(UserError):
    status = 409


class CannotExecute(UserError):
    """The container's program could not be executed: ``reason`` is
    "exec_not_found" or "exec_not_executable" (agentctl exits 127 or 126 for
    them, as shells and Docker do)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class HostLimitation(UserError):
    """The request is well-formed but this host cannot honour it (a limit
    needs a cgroup controller the host does not hand down): HTTP 422, CLI
    exit 1 (a property of the host, not bad usage)."""

    status = 422
