"""The memory controller: memory.max/high/low/swap.max and memory.oom.group.

User input -> Limits fields (``PARSERS``), Limits -> file contents
(``render``), file contents -> Limits fields (``read_back``). The kernel
keeps memory limits in pages: it rounds memory.* down to a multiple of the
page size, which reading back then shows.
"""
from __future__ import annotations

from runtime.controllers.values import parse_bool, parse_size, size_or_max

NAME = "memory"
FIELDS = ("memory_max", "memory_high", "memory_low", "memory_swap_max", "memory_oom_group")
# cgroup file -> Limits field
FILES = {"memory.max": "memory_max", "memory.high": "memory_high", "memory.low": "memory_low",
         "memory.swap.max": "memory_swap_max", "memory.oom.group": "memory_oom_group"}
_SIZES = (("memory_low", "memory.low"), ("memory_high", "memory.high"), ("memory_max", "memory.max"),
          ("memory_swap_max", "memory.swap.max"))


def _size(name):
    return lambda value, key: {name: parse_size(value, key)}


PARSERS = {name: _size(name) for name, _ in _SIZES}
PARSERS["memory_oom_group"] = lambda value, key: {"memory_oom_group": parse_bool(value, key)}


def render(limits, out: dict) -> None:
    """Add the memory files of ``limits`` (set fields only) to ``out``."""
    for name, file in _SIZES:
        v = getattr(limits, name)
        if v is not None:
            out[file] = str(v)
    if limits.memory_oom_group is not None:
        out["memory.oom.group"] = "1" if limits.memory_oom_group else "0"


def read_back(texts: dict, vals: dict) -> None:
    """Limits fields from the memory files' contents (absent files skipped)."""
    for file, name in (("memory.max", "memory_max"), ("memory.high", "memory_high"),
                       ("memory.low", "memory_low"), ("memory.swap.max", "memory_swap_max")):
        t = texts.get(file)
        if t is not None:
            vals[name] = size_or_max(t)
    t = texts.get("memory.oom.group")
    if t is not None:
        vals["memory_oom_group"] = t.strip() == "1"
