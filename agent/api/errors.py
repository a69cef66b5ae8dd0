"""The control API's one map from what went wrong to the HTTP status that says it.

Errors carry a *kind*, never a status: ``agent.errors`` (UserError and its
subclasses), the image errors, ``agent.store.StoreFull`` and the API's own
``RequestError`` are ``KindedError``s naming theirs (``kind = "not_found"``,
...). Runtime errors (runtime/ never imports agent/) are given theirs here,
by class. ``agent.errors.HTTP_STATUS`` is the only place a kind becomes a
status; ``classify(exc)`` answers any exception a handler can raise.

    raise RequestError("invalid", "query parameter x: ...")
    status, message, reason, headers = classify(exc)
"""
from __future__ import annotations

from runtime import errors as rt

from agent.errors import HTTP_STATUS, KindedError, UserError

STATUS = HTTP_STATUS  # kind -> HTTP status, defined once in agent/errors.py

# runtime errors (which know nothing of kinds): class -> (kind, message prefix)
RUNTIME_KINDS = (
    (rt.LimitError, "invalid", ""),
    (rt.ControllerMissing, "host_limitation", "cannot enforce this limit on this host: "),
    (rt.CgroupGone, "not_found", "container cgroup vanished: "),
    (rt.FreezeTimeout, "conflict", ""),
)


class ApiSetupError(Exception):
    """The API cannot start: unknown group, socket path in use, ... (one line)."""


class RequestError(KindedError):
    """A refusal decided by the API layer itself (routing, access, query, body)."""

    def __init__(self, kind: str, message: str, headers: dict | None = None):
        if kind not in STATUS:
            raise ValueError(f"unknown error kind {kind!r}")
        super().__init__(message)
        self.kind = kind  # an instance's own kind, over KindedError's
        self.headers = headers or {}


def HttpError(status: int, message: str, headers: dict | None = None) -> RequestError:  # noqa: N802
    """For handlers written before kinds (``raise HttpError(404, ...)``): the RequestError of that
    status's kind (derived from STATUS; 422 is "refused"). New code raises RequestError(kind, ...)."""
    kinds = {code: kind for kind, code in reversed(list(STATUS.items()))}
    return RequestError(kinds.get(status, "invalid" if status < 500 else "internal"), message, headers)


def status_of(kind: str) -> int:
    return STATUS[kind]


def kind_of(exc: BaseException) -> tuple[str, str]:
    """(kind, message) of any exception a request can meet; "internal" for the unexpected."""
    if isinstance(exc, KindedError):
        return exc.kind, str(exc)
    for cls, kind, prefix in RUNTIME_KINDS:
        if isinstance(exc, cls):
            return kind, prefix + str(exc)
    return "internal", f"internal error ({type(exc).__name__}); see the agentd log"


def classify(exc: BaseException) -> tuple[int, str, str | None, dict]:
    """(status, one-line message, machine-readable reason or None, extra headers)."""
    kind, message = kind_of(exc)
    reason = getattr(exc, "reason", None) if isinstance(exc, UserError) else None
    headers = exc.headers if isinstance(exc, RequestError) else {}
    return STATUS[kind], message, reason, headers
