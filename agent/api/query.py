"""Parsing what a request says: its query string, its JSON body and the names in its path.

A resource module declares, per handler, the query parameters it accepts and
the parser of each (``QUERY_PARAMS = {"list": {"all": bool_param}}``); a
parser takes (key, raw value) and returns the value or raises a RequestError
naming the parameter and what is accepted.
"""
from __future__ import annotations

import json
from urllib.parse import parse_qs

from agent.api.errors import RequestError
from agent.errors import UserError
from agent.rules import NAME_RE
from runtime.rules import signal_number

NAME_ACCEPTED = "names match [a-zA-Z0-9][a-zA-Z0-9_.-]{0,62} (no / and no ..)"
NAME_PARAM = "{name}"  # in a route pattern: a path segment captured as a name (checked with NAME_RE)


def bool_param(key: str, value: str) -> bool:
    v = value.lower()
    if v in ("1", "true", "yes"):
        return True
    if v in ("0", "false", "no", ""):
        return False
    raise RequestError("invalid", f"query parameter {key}: {value!r} is not a boolean; use 1/0 or true/false")


def seconds_param(key: str, value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        f = -1.0
    if not (0 <= f <= 86400 * 365):
        raise RequestError("invalid", f"query parameter {key}: {value!r} is not a number of seconds >= 0")
    return f


def parse_signal(value) -> int:
    """A signal by name (KILL, SIGKILL, kill) or number (1..64) -> its number; UserError otherwise."""
    try:
        return signal_number(str(value).strip())
    except ValueError as e:
        raise UserError(f"signal: {e}") from None


def signal_param(key: str, value: str) -> int:
    try:
        return parse_signal(value)
    except UserError as e:
        raise RequestError("invalid", f"query parameter {e}") from None


def stream_param(key: str, value: str) -> str:
    if value not in ("stdout", "stderr", "all"):
        raise RequestError("invalid", f"query parameter {key}: {value!r} is not a stream; use stdout, stderr or all")
    return value


def tail_param(key: str, value: str) -> int:
    if not value.isdigit() or len(value) > 9:
        raise RequestError("invalid", f"query parameter {key}: {value!r} is not a number of lines; use 0..999999999")
    return int(value)


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise RequestError("invalid", f"name: {name!r} is not a valid container name; {NAME_ACCEPTED}")
    return name


def text_param(key: str, value: str) -> str:
    return value


def parse_query(qs: str, spec: dict | None) -> dict:
    """The query string checked against ``spec`` (None: passed through as text, last value wins)."""
    try:
        pairs = parse_qs(qs, keep_blank_values=True, strict_parsing=False, errors="strict", max_num_fields=64)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError("invalid", f"query string: {e}") from None
    if spec is None:  # passed through (usage: the ledger validates)
        return {k: v[-1] for k, v in pairs.items()}
    out = {}
    for key, values in pairs.items():
        if key not in spec:
            accepted = ", ".join(spec) or "none"
            raise RequestError("invalid", f"query parameter {key!r} is not accepted here; accepted: {accepted}")
        out[key] = spec[key](key, values[-1])
    return out


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json(data: bytes):
    """A request body as JSON (None when empty); NaN and Infinity are not JSON."""
    if not data.strip():
        return None
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        raise RequestError("invalid", "request body: JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError("invalid", f"request body is not valid JSON: {e}") from None
