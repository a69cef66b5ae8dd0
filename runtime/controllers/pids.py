"""The pids controller: pids.max. User input, rendering and reading back."""
from __future__ import annotations

from runtime.controllers.values import SIZE_LIMIT, LimitError, _parse_int, _shown, size_or_max

NAME = "pids"
FIELDS = ("pids_max",)
FILES = {"pids.max": "pids_max"}
PIDS_ACCEPTED = 'is not a process count; use a whole number >= 1, or "max"'


def parse_pids(value, field: str = "pids") -> int | str:
    value = _shown(value)
    if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
        raise LimitError(field, value, PIDS_ACCEPTED)
    return _parse_int(value, field, PIDS_ACCEPTED, 1, SIZE_LIMIT, allow_max=True)


PARSERS = {"pids_max": lambda value, key: {"pids_max": parse_pids(value, key)}}


def render(limits, out: dict) -> None:
    if limits.pids_max is not None:
        out["pids.max"] = str(limits.pids_max)


def read_back(texts: dict, vals: dict) -> None:
    t = texts.get("pids.max")
    if t is not None:
        vals["pids_max"] = size_or_max(t)
