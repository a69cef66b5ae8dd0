"""The host as cAdvisor's machine_* families and root-cgroup series see it.

Pure parsers for /proc/meminfo and /proc/stat, plus readers of the static
machine facts (logical and physical cores, sockets, memory, swap, DIMMs,
boot/machine/system ids) from /proc, /sys and /etc. ``fill_root`` completes
the root cgroup's sample where cgroup v2 has no file there: the root cgroup
has no memory.current, memory.swap.current (and, without the memory
controller in the v2 hierarchy, no memory.stat), so those come from
/proc/meminfo, as runc and cAdvisor do; cpu.stat is emulated from /proc/stat
only on a kernel whose root cgroup lacks it.
"""
from __future__ import annotations

import glob
import os
from typing import NamedTuple

from runtime.stats import CgroupSample, CpuStat, parse_cpuset


class MachineInfo(NamedTuple):
    cpu_cores: int            # logical CPUs online
    cpu_physical_cores: int   # distinct (package, core) pairs
    cpu_sockets: int          # distinct packages
    memory_bytes: int         # MemTotal
    swap_bytes: int           # SwapTotal
    dimms: tuple = ()         # ((type, count, capacity_bytes), ...) from EDAC, when the kernel offers it
    boot_id: str = ""
    machine_id: str = ""
    system_uuid: str = ""


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo -> {key: bytes} ("MemTotal: 16 kB" -> 16384; unitless counts as they are)."""
    out = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not parts:
            continue
        try:
            v = int(parts[0])
        except ValueError:
            continue
        out[key.strip()] = v * 1024 if len(parts) > 1 and parts[1] == "kB" else v
    return out


def parse_proc_stat_cpu(text: str, hz: int) -> CpuStat:
    """The aggregate "cpu" line of /proc/stat in clock ticks -> CpuStat in µs
    (user = user + nice; system = system + irq + softirq; usage = their sum;
    the kernel's own root cpu.stat adds the same fields)."""
    for line in text.splitlines():
        f = line.split()
        if f and f[0] == "cpu":
            t = [int(x) for x in f[1:8]] + [0] * max(0, 8 - len(f[1:8]))
            user, nice, system, _idle, _iowait, irq, softirq = t[:7]
            u = (user + nice) * 1_000_000 // hz
            s = (system + irq + softirq) * 1_000_000 // hz
            return CpuStat(u + s, u, s, None, None, None)
    raise ValueError("/proc/stat has no aggregate cpu line")


def root_memory(meminfo: dict[str, int]) -> tuple[int | None, int | None, dict]:
    """(usage, swap usage, memory.stat-like dict) of the whole host from /proc/meminfo.
    usage = MemTotal - MemFree (runc's emulation for the root cgroup)."""
    total, free = meminfo.get("MemTotal"), meminfo.get("MemFree")
    usage = total - free if total is not None and free is not None else None
    st, sf = meminfo.get("SwapTotal"), meminfo.get("SwapFree")
    swap = st - sf if st is not None and sf is not None else None
    stat = {}
    for key, src in (("anon", "AnonPages"), ("file", "Cached"), ("file_mapped", "Mapped"),
                     ("active_file", "Active(file)"), ("inactive_file", "Inactive(file)"),
                     ("shmem", "Shmem"), ("kernel_stack", "KernelStack"), ("slab", "Slab"),
                     ("pagetables", "PageTables"), ("file_dirty", "Dirty"), ("file_writeback", "Writeback")):
        if src in meminfo:
            stat[key] = meminfo[src]
    return usage, swap, stat


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def fill_root(sample: CgroupSample, proc: str = "/proc") -> CgroupSample:
    """The root cgroup's sample with what cgroup v2 lacks there taken from /proc."""
    fill = {}
    if sample.memory_current is None or sample.memory_stat is None or sample.memory_swap_current is None:
        text = _read(os.path.join(proc, "meminfo"))
        if text is not None:
            usage, swap, stat = root_memory(parse_meminfo(text))
            if sample.memory_current is None and usage is not None:
                fill["memory_current"] = usage
            if sample.memory_swap_current is None and swap is not None:
                fill["memory_swap_current"] = swap
            if sample.memory_stat is None and stat:
                fill["memory_stat"] = stat
    if sample.cpu is None:
        text = _read(os.path.join(proc, "stat"))
        if text is not None:
            try:
                fill["cpu"] = parse_proc_stat_cpu(text, os.sysconf("SC_CLK_TCK"))
            except ValueError:
                pass
    return sample._replace(**fill) if fill else sample


def _first_line(path: str) -> str:
    text = _read(path)
    return text.strip().splitlines()[0].strip() if text and text.strip() else ""


def read_machine(proc: str = "/proc", sys: str = "/sys", etc: str = "/etc") -> MachineInfo:
    """The static facts, read once at start."""
    online = _first_line(os.path.join(sys, "devices/system/cpu/online"))
    try:
        cpus = sorted(parse_cpuset(online)) if online else []
    except ValueError:
        cpus = []
    if not cpus:
        cpus = list(range(os.cpu_count() or 1))
    cores, packages = set(), set()
    for cpu in cpus:
        topo = os.path.join(sys, f"devices/system/cpu/cpu{cpu}/topology")
        pkg = _first_line(os.path.join(topo, "physical_package_id")) or "0"
        core = _first_line(os.path.join(topo, "core_id")) or str(cpu)
        packages.add(pkg)
        cores.add((pkg, core))
    mem = parse_meminfo(_read(os.path.join(proc, "meminfo")) or "")
    dimms: dict[str, list[int]] = {}
    for d in sorted(glob.glob(os.path.join(sys, "devices/system/edac/mc/mc*/dimm*"))):
        size, kind = _first_line(os.path.join(d, "size")), _first_line(os.path.join(d, "dimm_mem_type"))
        if size.isdigit() and kind:
            c = dimms.setdefault(kind, [0, 0])
            c[0] += 1
            c[1] += int(size) << 20          # EDAC sizes are in MiB
    machine_id = _first_line(os.path.join(etc, "machine-id"))
    return MachineInfo(
        cpu_cores=len(cpus), cpu_physical_cores=len(cores), cpu_sockets=len(packages),
        memory_bytes=mem.get("MemTotal", 0), swap_bytes=mem.get("SwapTotal", 0),
        dimms=tuple((k, v[0], v[1]) for k, v in sorted(dimms.items())),
        boot_id=_first_line(os.path.join(proc, "sys/kernel/random/boot_id")),
        machine_id=machine_id,
        system_uuid=_first_line(os.path.join(sys, "class/dmi/id/product_uuid")),
    )
