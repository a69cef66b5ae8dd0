"""ConfigError, and the value rules a config shares with other modules
(budgets, agentctl): durations and sizes."""
from __future__ import annotations

import json
import re
from typing import Any

from runtime.controllers.values import parse_size as _parse_size
from runtime.errors import LimitError


class ConfigError(ValueError):
    """A config file or override is wrong; str() is one line naming the key."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """"200ms", "2s", "1m", "1h", "30d" (or a bare number of seconds) -> seconds."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError
        return float(value)
    if not isinstance(value, str):
        raise ValueError
    m = _DURATION_RE.match(value)
    if not m:
        raise ValueError
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_size(value: Any) -> int:
    """"10M", "512K", "1.5G", "4096" -> bytes (binary multiples); ValueError otherwise.

    The project's one size rule (runtime.controllers.values.parse_size),
    without "max": a unit may follow a decimal number, a bare number is
    whole bytes."""
    try:
        return _parse_size(value, "size", allow_max=False)
    except LimitError:
        raise ValueError(f"{value!r} is not a size") from None


def fmt(value: Any) -> str:
    """A config value as a message quotes it: a string in TOML's basic-string
    form (quotes, backslashes and control characters escaped, so a message
    stays one line), anything else as repr."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)
