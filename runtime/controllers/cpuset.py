"""The cpuset controller: cpuset.cpus and cpuset.mems (canonical kernel
lists, "0-2,5"; "" = no restriction). User input, rendering, reading back."""
from __future__ import annotations

import re

from runtime.controllers.values import LimitError, _shown, _text

NAME = "cpuset"
FIELDS = ("cpuset_cpus", "cpuset_mems")
FILES = {"cpuset.cpus": "cpuset_cpus", "cpuset.mems": "cpuset_mems"}
CPUSET_ACCEPTED = 'is not a CPU/node list; use numbers and ranges like "0-1,3"'


def parse_cpuset_list(value, field: str = "cpuset_cpus") -> str:
    """ "0-1,3" -> canonical "0-1,3" (validated); "" = no restriction."""
    from runtime.stats import format_cpuset, parse_cpuset

    value = _shown(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        value = ",".join(_text(v) for v in value)
    text = _text(value)
    if not re.fullmatch(r"[\d\s,\-]*", text):
        raise LimitError(field, value, CPUSET_ACCEPTED)
    try:
        cpus = parse_cpuset(text)
    except ValueError:
        raise LimitError(field, value, CPUSET_ACCEPTED) from None
    if max(cpus, default=0) > 65535:
        raise LimitError(field, value, CPUSET_ACCEPTED)
    return format_cpuset(cpus)


PARSERS = {name: (lambda value, key, name=name: {name: parse_cpuset_list(value, key)}) for name in FIELDS}


def render(limits, out: dict) -> None:
    if limits.cpuset_cpus is not None:
        out["cpuset.cpus"] = limits.cpuset_cpus
    if limits.cpuset_mems is not None:
        out["cpuset.mems"] = limits.cpuset_mems


def read_back(texts: dict, vals: dict) -> None:
    for file, name in (("cpuset.cpus", "cpuset_cpus"), ("cpuset.mems", "cpuset_mems")):
        t = texts.get(file)
        if t is not None:
            vals[name] = parse_cpuset_list(t, file)
