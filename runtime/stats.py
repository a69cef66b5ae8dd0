"""Typed readings of cgroup v2 stat files.

One small pure parser per kernel file (psutil style), results as named
tuples; ``read_*`` helpers return None when the kernel does not offer the
file (controller off, older kernel): absent is never reported as zero.
"""
from __future__ import annotations

import errno
import os
from typing import NamedTuple

from runtime.cgroupfs import Cgroup
from runtime.errors import CgroupError, CgroupGone


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


class CgroupSample(NamedTuple):
    """Everything read from one cgroup at one instant; None = file absent."""

    inode: int | None = None
    cpu: CpuStat | None = None
    memory_current: int | None = None
    memory_peak: int | None = None
    memory_swap_current: int | None = None
    memory_stat: dict | None = None
    memory_events: dict | None = None
    io: dict | None = None
    pids_current: int | None = None
    pids_events: dict | None = None
    cpu_pressure: Pressure | None = None
    memory_pressure: Pressure | None = None
    io_pressure: Pressure | None = None
    events: CgroupEvents | None = None
    cpuset_cpus_effective: frozenset | None = None
    hugetlb: dict | None = None        # page size ("2MB") -> HugetlbStat; only with [collector] enable hugetlb
    processes: "ProcessStats | None" = None   # per-process walk; only with [collector] enable process/cpuLoad
    # the container's own network namespace (runtime.netstat; agent.netmeter fills them in): bytes
    # summed over its counted interfaces (loopback and cAdvisor's other ignored names left out),
    # and each counted interface's IfStats. None = not measured: the host's network (shared, no
    # figures of its own), no process, or not a container
    net_rx_bytes: int | None = None
    net_tx_bytes: int | None = None
    network: tuple | None = None


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


# -- reading ---------------------------------------------------------------

# sample field -> (file, parser)
SAMPLE_FILES = {
    "cpu": ("cpu.stat", parse_cpu_stat),
    "memory_current": ("memory.current", parse_int_or_max),
    "memory_peak": ("memory.peak", parse_int_or_max),
    "memory_swap_current": ("memory.swap.current", parse_int_or_max),
    "memory_stat": ("memory.stat", parse_flat_keyed),
    "memory_events": ("memory.events", parse_flat_keyed),
    "io": ("io.stat", parse_io_stat),
    "pids_current": ("pids.current", parse_int_or_max),
    "pids_events": ("pids.events", parse_flat_keyed),
    "cpu_pressure": ("cpu.pressure", parse_pressure),
    "memory_pressure": ("memory.pressure", parse_pressure),
    "io_pressure": ("io.pressure", parse_pressure),
    "events": ("cgroup.events", parse_events),
    "cpuset_cpus_effective": ("cpuset.cpus.effective", parse_cpuset),
}

_PREAD_SIZE = 16384


def _as_cgroup(cg) -> Cgroup:
    return cg if isinstance(cg, Cgroup) else Cgroup(cg)


def _pread(cg: Cgroup, fd: int, file: str) -> str:
    """Fresh contents of a kept-open cgroup file (pread at offset 0)."""
    size = _PREAD_SIZE
    try:
        data = os.pread(fd, size, 0)
        while len(data) == size:  # a big io.stat / memory.stat: read it whole
            size *= 4
            data = os.pread(fd, size, 0)
        return data.decode()
    except OSError as exc:
        if exc.errno in (errno.ENODEV, errno.ENOENT) or not os.path.isdir(cg.path):
            raise CgroupGone(f"cgroup {cg.path} was removed", exc.errno) from None
        raise CgroupError(f"cannot read {cg.file(file)}: {exc.strerror}", exc.errno) from None


def read_sample(cg, fds: dict[str, int] | None = None,
                inode: int | None = None) -> CgroupSample:
    """Read every stat file of a cgroup once.

    ``fds`` optionally maps file names to descriptors kept open by the
    caller (runtime.reader); those files are re-read with os.pread and a
    file not in ``fds`` counts as absent. ``inode`` (known to the caller)
    saves a stat. Raises CgroupGone if the cgroup vanished.
    """
    cg = _as_cgroup(cg)
    if inode is None:
        inode = cg.inode()
    values = {"inode": inode}
    absent = False
    for field, (file, parser) in SAMPLE_FILES.items():
        if fds is not None:
            fd = fds.get(file)
            text = None if fd is None else _pread(cg, fd, file)
        else:
            text = _read_or_none(cg, file)
            absent = absent or text is None
        if text is None:
            values[field] = None
            continue
        try:
            values[field] = parser(text)
        except (ValueError, KeyError):
            values[field] = None  # unreadable contents: absent, never zero
    if absent and not os.path.isdir(cg.path):
        raise CgroupGone(f"cgroup {cg.path} was removed", errno.ENOENT)
    return CgroupSample(**values)


def _read_or_none(cg: Cgroup, file: str) -> str | None:
    """Like Cgroup.read without the per-file existence check (read_sample checks once)."""
    try:
        fd = os.open(cg.file(file), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CgroupError(f"cannot read {cg.file(file)}: {exc.strerror}", exc.errno) from None
    try:
        return _pread(cg, fd, file)
    finally:
        os.close(fd)


def _read(cg, file, parser):
    text = _as_cgroup(cg).read(file)
    return None if text is None else parser(text)


def read_cpu_stat(cg) -> CpuStat | None:
    return _read(cg, "cpu.stat", parse_cpu_stat)


def read_memory_current(cg) -> int | None:
    return _read(cg, "memory.current", parse_int_or_max)


def read_memory_peak(cg) -> int | None:
    return _read(cg, "memory.peak", parse_int_or_max)


def read_memory_swap_current(cg) -> int | None:
    return _read(cg, "memory.swap.current", parse_int_or_max)


def read_memory_stat(cg) -> dict | None:
    return _read(cg, "memory.stat", parse_flat_keyed)


def read_memory_events(cg) -> dict | None:
    return _read(cg, "memory.events", parse_flat_keyed)


def read_io_stat(cg) -> dict | None:
    return _read(cg, "io.stat", parse_io_stat)


def read_pids_current(cg) -> int | None:
    return _read(cg, "pids.current", parse_int_or_max)


def read_pids_events(cg) -> dict | None:
    return _read(cg, "pids.events", parse_flat_keyed)


def read_pressure(cg, resource: str) -> Pressure | None:
    """resource: "cpu", "memory" or "io"."""
    return _read(cg, f"{resource}.pressure", parse_pressure)


def read_events(cg) -> CgroupEvents | None:
    return _read(cg, "cgroup.events", parse_events)


def read_cpuset_effective(cg) -> frozenset | None:
    return _read(cg, "cpuset.cpus.effective", parse_cpuset)


def working_set(sample: CgroupSample) -> int | None:
    """cAdvisor's working set: memory.current - inactive_file, floored at 0.

    None when either is unknown (no memory.current, or a memory.stat without
    inactive_file): an unmeasured value is left out, never taken as 0. The
    one rule: the /metrics series container_memory_working_set_bytes is this."""
    if sample.memory_current is None:
        return None
    inactive = (sample.memory_stat or {}).get("inactive_file")
    if inactive is None:
        return None
    return max(0, sample.memory_current - inactive)


# -- hugetlb (files named per page size) --------------------------------------

HUGEPAGES_SYSFS = "/sys/kernel/mm/hugepages"


def hugepage_size_name(kb: int) -> str:
    """A huge page size in kB as the hugetlb controller names its files: 2048 -> "2MB"."""
    if kb >= 1 << 20:
        return f"{kb >> 20}GB"
    if kb >= 1 << 10:
        return f"{kb >> 10}MB"
    return f"{kb}KB"


def hugepage_sizes(sysfs: str = HUGEPAGES_SYSFS) -> tuple[str, ...]:
    """The huge page sizes this kernel offers ("hugepages-2048kB" -> "2MB"), smallest first."""
    try:
        names = os.listdir(sysfs)
    except OSError:
        return ()
    kbs = []
    for n in names:
        if n.startswith("hugepages-") and n.endswith("kB") and n[10:-2].isdigit():
            kbs.append(int(n[10:-2]))
    return tuple(hugepage_size_name(kb) for kb in sorted(kbs))


def read_hugetlb(cg, sizes) -> dict | None:
    """{size: HugetlbStat} from hugetlb.<size>.current and .events; None when the
    hugetlb controller is off for this cgroup (no files)."""
    cg = _as_cgroup(cg)
    out = {}
    for size in sizes:
        cur = _read_or_none(cg, f"hugetlb.{size}.current")
        if cur is None:
            continue
        ev = _read_or_none(cg, f"hugetlb.{size}.events")
        try:
            usage = parse_int_or_max(cur)
            failcnt = parse_flat_keyed(ev).get("max") if ev is not None else None
        except ValueError:
            continue
        out[size] = HugetlbStat(usage, failcnt)
    return out or None
