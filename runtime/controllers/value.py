"""The one Limits value over every controller.

Conventions of a ``Limits`` value:

- ``None``: not set (the cgroup file is left as it is, ``files()`` omits it).
- ``MAX`` (the string "max"): explicitly unlimited.
- sizes are bytes (int), cpu quota/period are µs, cpusets are canonical
  kernel lists ("0-2,5"; "" = no restriction).

Each controller module (cpu, memory, io, pids, cpuset) holds its own user
parsers (``PARSERS``), rendering (``render``) and reading back
(``read_back``); this module only dispatches to them, in ``CONTROLLERS``
order (the order in which files are written).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace

from runtime.controllers import cpu, cpuset, io, memory, pids
from runtime.controllers.cpu import DEFAULT_CPU_PERIOD_US, format_cpus
from runtime.controllers.io import IoMax
from runtime.controllers.values import MAX, LimitError, format_size

CONTROLLERS = (cpuset, memory, cpu, io, pids)

# user-facing name -> Limits field (aliases people type)
_ALIASES = {
    "memory": "memory_max",
    "memory_limit": "memory_max",
    "memory_reservation": "memory_low",
    "memory_swap": "memory_swap_max",
    "swap": "memory_swap_max",
    "oom_group": "memory_oom_group",
    "cpu_shares_weight": "cpu_weight",
    "pids": "pids_max",
    "pids_limit": "pids_max",
    "cpuset": "cpuset_cpus",
}
_PARSERS = {name: fn for c in CONTROLLERS for name, fn in c.PARSERS.items()}
# Limits field -> the controller it needs
_CONTROLLER = {name: c.NAME for c in (memory, cpu, io, pids, cpuset) for name in c.FIELDS}
# cgroup file -> Limits field (first field for multi-field files)
FILE_FIELDS = {file: name for c in (memory, cpu, io, pids, cpuset) for file, name in c.FILES.items()}


@dataclass(frozen=True)
class Limits:
    """Resource limits of one cgroup; None = not set, MAX = unlimited."""

    memory_max: int | str | None = None
    memory_high: int | str | None = None
    memory_low: int | str | None = None
    memory_swap_max: int | str | None = None
    memory_oom_group: bool | None = None
    cpu_quota_us: int | str | None = None
    cpu_period_us: int | None = None
    cpu_weight: int | None = None
    io_weight: int | None = None
    io_max: tuple[IoMax, ...] | None = None
    pids_max: int | str | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None

    def __post_init__(self):
        # cpu.max always carries both halves: fill the one left out.
        if self.cpu_quota_us is not None or self.cpu_period_us is not None:
            if self.cpu_quota_us is None:
                object.__setattr__(self, "cpu_quota_us", MAX)
            if self.cpu_period_us is None:
                object.__setattr__(self, "cpu_period_us", DEFAULT_CPU_PERIOD_US)
        if self.io_max is not None and not isinstance(self.io_max, tuple):
            object.__setattr__(self, "io_max", tuple(self.io_max))
        if self.io_max:
            devs = [e.devno for e in self.io_max]
            if len(set(devs)) != len(devs):
                raise LimitError("io_max", "has two entries for one device; give each "
                                 "device once with all its keys")
            object.__setattr__(self, "io_max", tuple(sorted(self.io_max, key=lambda e: e.devno)))

    # -- building ----------------------------------------------------------
    @classmethod
    def parse(cls, **user) -> "Limits":
        """Build from what people type, e.g. Limits.parse(memory="512M", cpus="0.5").

        Keys: memory (memory_max), memory_high, memory_low, memory_swap
        (memory_swap_max), memory_oom_group, cpus (cores, "150%",
        "QUOTA/PERIOD" or "max"), cpu_quota_us, cpu_period_us, cpu_weight,
        io_weight, io_max (one entry or a list), pids (pids_max),
        cpuset_cpus, cpuset_mems. None values are skipped.
        """
        vals: dict = {}
        for key, value in user.items():
            if value is None:
                continue
            parser = _PARSERS.get(_ALIASES.get(key, key))
            if parser is None:
                known = ("memory, memory_high, memory_low, memory_swap, memory_oom_group, "
                         "cpus, cpu_quota_us, cpu_period_us, cpu_weight, io_weight, io_max, "
                         "pids, cpuset_cpus, cpuset_mems")
                raise LimitError(key, f"is not a known limit; use one of {known}")
            vals.update(parser(value, key))
        return cls(**vals)

    def merge(self, other: "Limits") -> "Limits":
        """Fields set in ``other`` override this one's."""
        changes = {f.name: getattr(other, f.name) for f in fields(other)
                   if getattr(other, f.name) is not None}
        return replace(self, **changes)

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    # -- kernel side -------------------------------------------------------
    def controllers(self) -> set[str]:
        """The cgroup v2 controllers these limits need."""
        return {_CONTROLLER[f.name] for f in fields(self) if getattr(self, f.name) is not None}

    def files(self) -> dict[str, str]:
        """Exact contents to write to each cgroup file (set fields only).

        io.max may hold several lines: each must be written by its own write().
        """
        out: dict[str, str] = {}
        for c in CONTROLLERS:
            c.render(self, out)
        return out

    # -- serialisation -----------------------------------------------------
    def to_json(self) -> dict:
        """Plain JSON-able dict of the set fields (json.dumps it to store)."""
        out: dict = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if f.name == "io_max":
                v = [e._asdict() for e in v]
            out[f.name] = v
        return out

    @classmethod
    def from_json(cls, data) -> "Limits":
        """Inverse of to_json(); also accepts the JSON text."""
        if data is None:
            return cls()
        if isinstance(data, (str, bytes)):
            data = json.loads(data)
            if isinstance(data, str):
                data = json.loads(data)
        known = {f.name for f in fields(cls)}
        vals = {}
        for k, v in data.items():
            if k not in known:
                raise LimitError(k, "is not a known limit field")
            if k == "io_max" and v is not None:
                v = tuple(IoMax(**e) if isinstance(e, dict) else IoMax(*e) for e in v)
            vals[k] = v
        return cls(**vals)

    def describe(self) -> dict[str, str]:
        """Human forms of the set fields ("memory_max": "512M", "cpus": "0.5")."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None or f.name == "cpu_period_us":
                continue
            if f.name.startswith("memory_") and f.name != "memory_oom_group":
                out[f.name] = format_size(v)
            elif f.name == "cpu_quota_us":
                out["cpus"] = MAX if v == MAX else format_cpus(v, self.cpu_period_us)
            elif f.name == "io_max":
                out[f.name] = ", ".join(e.render() for e in v)
            else:
                out[f.name] = str(v)
        return out


def parse_limit_files(texts: dict[str, str | None]) -> Limits:
    """Limits from cgroup file contents as the kernel prints them (absent -> None).

    ValueError if a text is malformed (or not a string).
    """
    if not isinstance(texts, dict):
        raise ValueError(f"cgroup file texts must be a dict, not {type(texts).__name__}")
    for file, t in texts.items():
        if t is not None and not isinstance(t, str):
            raise ValueError(f"{file}: contents must be text, not {type(t).__name__}")
    vals: dict = {}
    for c in (memory, pids, cpu, io, cpuset):
        c.read_back(texts, vals)
    return Limits(**vals)


def read_limits(cg) -> Limits:
    """The limits in effect in a cgroup; fields None where the file is absent."""
    from runtime.cgroupfs import Cgroup

    cg = cg if isinstance(cg, Cgroup) else Cgroup(cg)
    return parse_limit_files({f: cg.read(f) for f in FILE_FIELDS})
