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
