"""Pure parsers of cgroup v2 files and their typed results.

One small parser per kernel file format (psutil style), results as named
tuples. Text in, values out: this module imports nothing of the project, so
every runtime module (cgroupfs, stats, limits, ...) can use it without a
cycle. Reading the files is runtime/stats.py's job.
"""
from __future__ import annotations

from typing import NamedTuple


class CpuStat(NamedTuple):
    usage_usec: int | None
    user_usec: int | None
    system_usec: int | None
    nr_periods: int | None
    nr_throttled: int | None
    throttled_usec: int | None
    nr_bursts: int | None = None      # cpu.max.burst used (Linux 5.14+)
    burst_usec: int | None = None


class IoStat(NamedTuple):
    rbytes: int | None
    wbytes: int | None
    rios: int | None
    wios: int | None
    dbytes: int | None
    dios: int | None


class PressureLine(NamedTuple):
    avg10: float
    avg60: float
    avg300: float
    total_usec: int


class Pressure(NamedTuple):
    some: PressureLine
    full: PressureLine | None


class CgroupEvents(NamedTuple):
    populated: bool
    frozen: bool


class HugetlbStat(NamedTuple):
    usage: int | None        # hugetlb.<size>.current
    failcnt: int | None      # hugetlb.<size>.events max: allocations refused at the limit


class ProcessStats(NamedTuple):
    """What a walk of the cgroup's processes found (runtime.procstat); None = not counted."""

    file_descriptors: int | None = None   # entries of /proc/PID/fd, summed
    sockets: int | None = None            # of those, sockets
    max_open_files: int | None = None     # soft RLIMIT_NOFILE of the first process (-1 = unlimited)
    tasks_state: tuple | None = None      # (sleeping, running, stopped, uninterruptible) task counts
    threads: int | None = None            # tasks in cgroup.threads (where pids.current is absent)


# -- parsers ---------------------------------------------------------------
# Every parse_* takes the text of one kernel file and raises only ValueError
# when it is malformed (wrong type included: the caller gets one exception
# type to catch, whatever it was handed).

def _need_text(text) -> None:
    if not isinstance(text, str):
        raise ValueError(f"cgroup file contents must be text, not {type(text).__name__}")


def parse_flat_keyed(text: str) -> dict[str, int]:
    """ "key value" lines (memory.stat, memory.events, pids.events, cpu.stat)."""
    _need_text(text)
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def parse_cpu_stat(text: str) -> CpuStat:
    kv = parse_flat_keyed(text)
    return CpuStat(*(kv.get(f) for f in CpuStat._fields))


def parse_nested_keyed(text: str) -> dict[str, dict[str, str]]:
    """ "KEY sub=val sub=val" lines (io.stat, io.max, pressure files)."""
    _need_text(text)
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        fields = {}
        for item in parts[1:]:
            k, sep, v = item.partition("=")
            if sep:
                fields[k] = v
        out[parts[0]] = fields
    return out


def parse_devno(text: str) -> tuple[int, int]:
    _need_text(text)
    maj, sep, mnr = text.partition(":")
    if not sep:
        raise ValueError(f"not a MAJ:MIN device number: {text!r}")
    return int(maj), int(mnr)


def parse_io_stat(text: str) -> dict[tuple[int, int], IoStat]:
    out = {}
    for dev, fields in parse_nested_keyed(text).items():
        if not fields:
            continue  # the root cgroup lists idle devices with no keys at all
        try:
            key = parse_devno(dev)
        except ValueError:
            continue
        vals = []
        for f in IoStat._fields:
            v = fields.get(f)
            vals.append(int(v) if v is not None else None)
        out[key] = IoStat(*vals)
    return out


_PRESSURE_KEYS = ("avg10", "avg60", "avg300", "total")


def _pressure_line(kind: str, fields: dict[str, str]) -> PressureLine:
    missing = [k for k in _PRESSURE_KEYS if k not in fields]
    if missing:
        raise ValueError(f"pressure '{kind}' line has no {', '.join(missing)}")
    return PressureLine(float(fields["avg10"]), float(fields["avg60"]),
                        float(fields["avg300"]), int(fields["total"]))


def parse_pressure(text: str) -> Pressure:
    lines = parse_nested_keyed(text)
    if "some" not in lines:
        raise ValueError("pressure file has no 'some' line")
    full = lines.get("full")
    return Pressure(_pressure_line("some", lines["some"]), _pressure_line("full", full) if full else None)


def parse_events(text: str) -> CgroupEvents:
    kv = parse_flat_keyed(text)
    return CgroupEvents(bool(kv.get("populated", 0)), bool(kv.get("frozen", 0)))


def parse_int_or_max(text: str) -> int | None:
    """ "max" -> None, otherwise the integer."""
    _need_text(text)
    t = text.strip()
    return None if t == "max" else int(t)


# Highest CPU or memory node number a cpuset list may name. The kernel's own
# ceilings are far lower (NR_CPUS <= 8192, MAX_NUMNODES <= 1024); the bound
# keeps a list like "0-99999999999" from building a set of 10^11 numbers.
CPUSET_MAX = 65535


def parse_cpuset(text: str) -> frozenset[int]:
    """ "0-3,5,7-8" -> frozenset({0,1,2,3,5,7,8}); "" -> empty set.

    ValueError for anything else, numbers above CPUSET_MAX included.
    """
    _need_text(text)
    out = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if sep:
            a, b = int(lo), int(hi)
            if a > b or a < 0 or b > CPUSET_MAX:
                raise ValueError(f"bad cpu range {part!r}")
            out.update(range(a, b + 1))
        else:
            n = int(lo)
            if n < 0 or n > CPUSET_MAX:
                raise ValueError(f"bad cpu number {part!r}")
            out.add(n)
    return frozenset(out)


def format_cpuset(cpus) -> str:
    """frozenset({0,1,2,5}) -> "0-2,5" (the kernel's own list format)."""
    nums = sorted(set(cpus))
    parts = []
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        parts.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    return ",".join(parts)


def unescape_mount_field(field: str) -> str:
    """A field of /proc/self/mounts or mountinfo: the kernel escapes space,
    tab, newline and backslash as \\ooo (three octal digits)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)
