"""The series of one cgroup, one container and the machine, as exposition lines.

``emit_cgroup`` formats every series a CgroupSample gives (what the kernel
does not provide is left out, never a made-up 0), ``emit_spec`` the ones a
container's spec and times give, ``emit_container_state`` the agent's own
per-container families, ``machine_lines`` cAdvisor's machine_* families.
Each line goes to its family by the index exporters/prom_families.py takes
from the family's name; exporters/prometheus.py gathers, caches and joins them.
"""
from __future__ import annotations

from exporters.prom_families import (
    BLKIO, BURST_PERIODS, BURST_SECONDS, CFS_PERIODS, CFS_THROTTLED_PERIODS, CFS_THROTTLED_SECONDS, CPU_SYSTEM,
    CPU_USAGE, CPU_USER, CREATION_TIME, FILE_DESCRIPTORS, FROZEN, FS_READS, FS_READ_BYTES, FS_WRITES,
    FS_WRITE_BYTES, HUGETLB_FAILCNT, HUGETLB_USAGE, LOG_BYTES, MACHINE_FAMILIES, MACHINE_LABELS,
    MEMSTAT_FAMILIES, MEM_EVENTS_HIGH, MEM_EVENTS_MAX, MEM_FAILCNT, MEM_FAILURES, MEM_MAX_USAGE, MEM_SWAP,
    MEM_USAGE, MEM_WORKING_SET, NET_FAMILIES, NET_FIRST, OOM_EVENTS, OOM_KILLS, PIDS_LIMIT_HITS,
    PRESSURE_CPU_WAITING, PRESSURE_IO_WAITING, PRESSURE_MEMORY_WAITING, PROCESSES, RESTARTS, SOCKETS,
    SPEC_CPU_PERIOD, SPEC_CPU_QUOTA, SPEC_CPU_SHARES, SPEC_MEMORY_LIMITS, START_TIME, STATE, TASKS_STATE,
    THREADS, THREADS_MAX, ULIMITS_SOFT,
)
from exporters.prom_labels import escape, label_str, num
from runtime.limits import DEFAULT_CPU_PERIOD_US
from runtime.procstat import TASK_STATES
from runtime.stats import working_set

DEFAULT_CPU_WEIGHT = 100   # the kernel's cpu.weight when none is set


def weight_to_shares(weight: int) -> int:
    """cgroup v2 cpu.weight back to v1 shares (the inverse of the classic runc formula)."""
    return 2 + ((weight - 1) * 262142) // 9999


def limit(lim, attr):
    """An int limit, or None when unset or unlimited ("max")."""
    v = getattr(lim, attr, None)
    return v if isinstance(v, int) and not isinstance(v, bool) else None



def emit_cgroup(add, lb, s, info, devices):
    """Every series of one cgroup, as add((family index, line)) calls."""
    cpu = s.cpu
    if cpu is not None:
        if cpu.nr_bursts is not None:
            add((BURST_PERIODS, f"container_cpu_cfs_burst_periods_total{{{lb}}} {cpu.nr_bursts}"))
        if cpu.burst_usec is not None:
            add((BURST_SECONDS, f"container_cpu_cfs_burst_seconds_total{{{lb}}} {cpu.burst_usec / 1e6!r}"))
        if cpu.usage_usec is not None:
            add((CPU_USAGE, f'container_cpu_usage_seconds_total{{{lb},cpu="total"}} {cpu.usage_usec / 1e6!r}'))
        if cpu.user_usec is not None:
            add((CPU_USER, f"container_cpu_user_seconds_total{{{lb}}} {cpu.user_usec / 1e6!r}"))
        if cpu.system_usec is not None:
            add((CPU_SYSTEM, f"container_cpu_system_seconds_total{{{lb}}} {cpu.system_usec / 1e6!r}"))
        if cpu.nr_periods is not None:
            add((CFS_PERIODS, f"container_cpu_cfs_periods_total{{{lb}}} {cpu.nr_periods}"))
        if cpu.nr_throttled is not None:
            add((CFS_THROTTLED_PERIODS, f"container_cpu_cfs_throttled_periods_total{{{lb}}} {cpu.nr_throttled}"))
        if cpu.throttled_usec is not None:
            add((CFS_THROTTLED_SECONDS, f"container_cpu_cfs_throttled_seconds_total{{{lb}}} {cpu.throttled_usec / 1e6!r}"))
    cur = s.memory_current
    mstat = s.memory_stat
    if cur is not None:
        add((MEM_USAGE, f"container_memory_usage_bytes{{{lb}}} {cur}"))
        ws = working_set(s)
        if ws is not None:
            add((MEM_WORKING_SET, f"container_memory_working_set_bytes{{{lb}}} {ws}"))
    if mstat is not None:
        for key, idx, name in MEMSTAT_FAMILIES:
            if key in mstat:
                add((idx, f"{name}{{{lb}}} {mstat[key]}"))
        # memory.stat is hierarchical on cgroup v2: both scopes carry the same value (as cAdvisor).
        for ft in ("pgfault", "pgmajfault"):
            if ft in mstat:
                v = mstat[ft]
                add((MEM_FAILURES, f'container_memory_failures_total{{{lb},failure_type="{ft}",scope="container"}} {v}'))
                add((MEM_FAILURES, f'container_memory_failures_total{{{lb},failure_type="{ft}",scope="hierarchy"}} {v}'))
    if s.memory_swap_current is not None:
        add((MEM_SWAP, f"container_memory_swap{{{lb}}} {s.memory_swap_current}"))
    if s.memory_peak is not None:
        add((MEM_MAX_USAGE, f"container_memory_max_usage_bytes{{{lb}}} {s.memory_peak}"))
    mev = s.memory_events
    if mev is not None:
        if "oom_kill" in mev:
            add((OOM_EVENTS, f"container_oom_events_total{{{lb}}} {mev['oom_kill']}"))
        if "max" in mev:   # cgroup v2's failcnt: times usage hit memory.max (as runc/cAdvisor)
            add((MEM_FAILCNT, f"container_memory_failcnt{{{lb}}} {mev['max']}"))
            add((MEM_EVENTS_MAX, f"container_memory_events_max_total{{{lb}}} {mev['max']}"))
        if "high" in mev:
            add((MEM_EVENTS_HIGH, f"container_memory_events_high_total{{{lb}}} {mev['high']}"))
    if s.hugetlb:
        for size, h in sorted(s.hugetlb.items()):
            hl = f'{lb},pagesize="{escape(size)}"'
            if h.usage is not None:
                add((HUGETLB_USAGE, f"container_hugetlb_usage_bytes{{{hl}}} {h.usage}"))
            if h.failcnt is not None:
                add((HUGETLB_FAILCNT, f"container_hugetlb_failcnt{{{hl}}} {h.failcnt}"))
    ps = s.processes
    if ps is not None:
        if ps.file_descriptors is not None:    # the "process" set
            add((FILE_DESCRIPTORS, f"container_file_descriptors{{{lb}}} {ps.file_descriptors}"))
            add((SOCKETS, f"container_sockets{{{lb}}} {ps.sockets}"))
            threads = s.pids_current if s.pids_current is not None else ps.threads
            if threads is not None:
                add((THREADS, f"container_threads{{{lb}}} {threads}"))
            lim = info.limits if info is not None else None
            add((THREADS_MAX, f"container_threads_max{{{lb}}} {limit(lim, 'pids_max') or 0}"))
            if ps.max_open_files is not None:
                add((ULIMITS_SOFT, f'container_ulimits_soft{{{lb},ulimit="max_open_files"}} {ps.max_open_files}'))
        if ps.tasks_state is not None:          # the "cpuLoad" set
            for state, n in zip(TASK_STATES, ps.tasks_state):
                add((TASKS_STATE, f'container_tasks_state{{{lb},state="{state}"}} {n}'))
    net = getattr(s, "network", None)
    if net:     # None: the host's network or not measured; never a made-up 0
        for ifs in net:
            il = f'{lb},interface="{escape(ifs.name)}"'
            for i, (name, fld) in enumerate(NET_FAMILIES):
                add((NET_FIRST + i, f"{name}{{{il}}} {getattr(ifs, fld)}"))
    io = s.io
    if io:
        for (maj, mnr), st in sorted(io.items()):
            dev = escape(devices.get((maj, mnr)) or f"{maj}:{mnr}")
            dl = f'{lb},device="{dev}"'
            if st.rbytes is not None:
                add((FS_READ_BYTES, f"container_fs_reads_bytes_total{{{dl}}} {st.rbytes}"))
            if st.wbytes is not None:
                add((FS_WRITE_BYTES, f"container_fs_writes_bytes_total{{{dl}}} {st.wbytes}"))
            if st.rios is not None:
                add((FS_READS, f"container_fs_reads_total{{{dl}}} {st.rios}"))
            if st.wios is not None:
                add((FS_WRITES, f"container_fs_writes_total{{{dl}}} {st.wios}"))
            bl = f'{dl},major="{maj}",minor="{mnr}",operation='
            for op, v in (("Read", st.rbytes), ("Write", st.wbytes), ("Discard", st.dbytes)):
                if v is not None:
                    add((BLKIO, f'container_blkio_device_usage_total{{{bl}"{op}"}} {v}'))
    if s.pids_current is not None:
        add((PROCESSES, f"container_processes{{{lb}}} {s.pids_current}"))
    pev = s.pids_events
    if pev is not None and "max" in pev:
        add((PIDS_LIMIT_HITS, f"cgroup_agent_container_pids_limit_hits_total{{{lb}}} {pev['max']}"))
    for idx, kind, pr in ((PRESSURE_CPU_WAITING, "cpu", s.cpu_pressure), (PRESSURE_MEMORY_WAITING, "memory", s.memory_pressure),
                         (PRESSURE_IO_WAITING, "io", s.io_pressure)):
        if pr is None:
            continue
        if pr.some is not None:
            add((idx, f"container_pressure_{kind}_waiting_seconds_total{{{lb}}} {pr.some.total_usec / 1e6!r}"))
        if pr.full is not None:
            add((idx + 1, f"container_pressure_{kind}_stalled_seconds_total{{{lb}}} {pr.full.total_usec / 1e6!r}"))


def emit_spec(add, lb, info):
    """The series that depend on the container alone (its spec and times), not on a sample."""
    # cAdvisor's spec defaults: unset/unlimited memory limits are 0, the period
    # 100000, shares from the kernel's default weight; a quota only when set.
    lim = info.limits
    for attr, idx, name in SPEC_MEMORY_LIMITS:
        add((idx, f"{name}{{{lb}}} {limit(lim, attr) or 0}"))
    v = limit(lim, "cpu_quota_us")
    if v is not None:
        add((SPEC_CPU_QUOTA, f"container_spec_cpu_quota{{{lb}}} {v}"))
    add((SPEC_CPU_PERIOD, f"container_spec_cpu_period{{{lb}}} {limit(lim, 'cpu_period_us') or DEFAULT_CPU_PERIOD_US}"))
    weight = limit(lim, "cpu_weight") or DEFAULT_CPU_WEIGHT
    add((SPEC_CPU_SHARES, f"container_spec_cpu_shares{{{lb}}} {weight_to_shares(weight)}"))
    start = info.started_at or info.created_at
    if start is not None:
        add((START_TIME, f"container_start_time_seconds{{{lb}}} {num(start)}"))
    if info.created_at is not None:
        add((CREATION_TIME, f"container_creation_time_seconds{{{lb}}} {num(info.created_at)}"))


def emit_container_state(out, lb, info, sample):
    out[STATE].append(f'cgroup_agent_container_state{{{lb},state="{escape(info.state)}"}} 1')
    if sample is not None and sample.events is not None:
        out[FROZEN].append(f"cgroup_agent_container_frozen{{{lb}}} {1 if sample.events.frozen else 0}")
    out[RESTARTS].append(f"cgroup_agent_container_restarts_total{{{lb}}} {int(info.restart_count)}")
    out[OOM_KILLS].append(f"cgroup_agent_container_oom_kills_total{{{lb}}} {int(info.oom_kills)}")
    log_bytes = getattr(info, "log_bytes", None)
    if log_bytes is not None:   # from creation on (0 before the first byte)
        out[LOG_BYTES].append(
            f"cgroup_agent_container_log_bytes_total{{{lb}}} {int(log_bytes)}")


def header(lines, name, kind, help, om):
    fam = name
    if om and kind == "counter":
        fam = name[:-6]  # OpenMetrics names the family without _total
    lines.append(f"# HELP {fam} {help}")
    lines.append(f"# TYPE {fam} {kind}")


def machine_lines(lines, m, om):
    """cAdvisor's machine_* families from a runtime.machine.MachineInfo."""
    ml = label_str(MACHINE_LABELS, (m.boot_id, m.machine_id, m.system_uuid))
    for name, help, attr in MACHINE_FAMILIES:
        header(lines, name, "gauge", help, om)
        lines.append(f"{name}{{{ml}}} {num(getattr(m, attr))}")
    if m.dimms:
        header(lines, "machine_dimm_count", "gauge",
                "Number of RAM DIMM (all types memory modules) value labeled by dimm type.", om)
        lines.extend(f'machine_dimm_count{{{ml},type="{escape(t)}"}} {n}' for t, n, _b in m.dimms)
        header(lines, "machine_dimm_capacity_bytes", "gauge",
                "Total RAM DIMM capacity (all types memory modules) value labeled by dimm type.", om)
        lines.extend(f'machine_dimm_capacity_bytes{{{ml},type="{escape(t)}"}} {b}' for t, _n, b in m.dimms)
