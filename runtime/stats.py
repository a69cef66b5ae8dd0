"""Typed readings of cgroup v2 stat files.

The pure parsers and their named-tuple results are runtime/parsers.py
(re-exported here); ``read_*`` helpers return None when the kernel does not offer the
file (controller off, older kernel): absent is never reported as zero.
"""
from __future__ import annotations

import errno
import functools
import os
from typing import NamedTuple

from runtime.cgroupfs import Cgroup
from runtime.errors import CgroupError, CgroupGone
from runtime.parsers import (  # noqa: F401  (re-exported: callers import them from here)
    CgroupEvents, CPUSET_MAX, CpuStat, format_cpuset, HugetlbStat, IoStat, parse_cpu_stat,
    parse_cpuset, parse_devno, parse_events, parse_flat_keyed, parse_int_or_max, parse_io_stat,
    parse_nested_keyed, parse_pressure, Pressure, PressureLine, ProcessStats,
)


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


def _read(cg, field):
    """One file of SAMPLE_FILES, by its sample field, parsed; None when absent."""
    file, parser = SAMPLE_FILES[field]
    text = _as_cgroup(cg).read(file)
    return None if text is None else parser(text)


# readers of one file each (cg -> the parsed value, or None when absent), by their sample field
read_cpu_stat = functools.partial(_read, field="cpu")  # -> CpuStat | None
read_memory_events = functools.partial(_read, field="memory_events")  # -> dict | None
read_io_stat = functools.partial(_read, field="io")  # -> dict | None
read_pids_events = functools.partial(_read, field="pids_events")  # -> dict | None
read_events = functools.partial(_read, field="events")  # -> CgroupEvents | None
read_cpuset_effective = functools.partial(_read, field="cpuset_cpus_effective")  # -> frozenset | None


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
