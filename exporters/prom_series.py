"""The series of one cgroup, one container and the machine, as exposition lines.

``emit_cgroup`` formats every series a CgroupSample gives (what the kernel
does not provide is left out, never a made-up 0), ``emit_spec`` the ones a
container's spec and times give, ``emit_container_state`` the agent's own
per-container families, ``machine_lines`` cAdvisor's machine_* families.
Each line goes to its family by the index exporters/prom_families.py takes
from the family's name; exporters/prometheus.py gathers, caches and joins them.
The one-value families (a record field or a file key -> one line) come from
prom_families' *_FIELDS tables through functions written out at import.
"""
from __future__ import annotations

from exporters.prom_families import (
    BLKIO, CPU_FIELDS, CREATION_TIME, FILE_DESCRIPTORS, FROZEN, HUGETLB_FIELDS, INDEX, IO_FIELDS, LOG_BYTES,
    MACHINE_FAMILIES, MACHINE_LABELS, MEM_EVENTS_FIELDS, MEM_FAILURES, MEM_USAGE, MEM_WORKING_SET,
    MEMSTAT_FIELDS, NET_FAMILIES, NET_FIRST, OOM_KILLS, PIDS_EVENTS_FIELDS, PRESSURE_CPU_WAITING,
    PRESSURE_IO_WAITING, PRESSURE_MEMORY_WAITING, RESTARTS, SAMPLE_FIELDS, SOCKETS, SPEC_CPU_PERIOD,
    SPEC_CPU_QUOTA, SPEC_CPU_SHARES, SPEC_MEMORY_LIMITS, START_TIME, STATE, TASKS_STATE, THREADS, THREADS_MAX,
    ULIMITS_SOFT,
)
from exporters.prom_labels import escape, label_str, num
from runtime.limits import DEFAULT_CPU_PERIOD_US
from runtime.parsers import CpuStat, HugetlbStat, IoStat
from runtime.procstat import TASK_STATES
from runtime.stats import CgroupSample, working_set

DEFAULT_CPU_WEIGHT = 100   # the kernel's cpu.weight when none is set


def weight_to_shares(weight: int) -> int:
    """cgroup v2 cpu.weight back to v1 shares (the inverse of the classic runc formula)."""
    return 2 + ((weight - 1) * 262142) // 9999


def limit(lim, attr):
    """An int limit, or None when unset or unlimited ("max")."""
    v = getattr(lim, attr, None)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _compiled(name, rows, lookup):
    """``name(add, labels, rec)``: for each (key, family name or 'name{fixed="labels"}') row,
    the family's line of rec's value at ``lookup(key)`` (an expression on ``rec``) when it is
    not None, a *_usec value in seconds. Written out once, at import, as straight-line code with
    the names and indices inlined: it runs for every cgroup on every scrape, and a loop over the
    rows made the render measurably slower (bench/collect)."""
    src = [f"def {name}(add, labels, rec):"]
    for key, series in rows:
        family, _, fixed = series.partition("{")
        labels = "{labels}" + ("," + fixed[:-1] if fixed else "")
        line = family + "{{" + labels + "}} " + ("{v / 1e6!r}" if key.endswith("_usec") else "{v}")
        src += [f"    v = {lookup(key)}", "    if v is not None:", f"        add(({INDEX[family]}, f{line!r}))"]
    namespace = {}
    exec(compile("\n".join(src), f"<prom_series {name}>", "exec"), namespace)   # our own tables, once
    return namespace[name]


def _fields(name, record_type, rows):
    """Emits the series of a NamedTuple record's fields (see _compiled)."""
    return _compiled(name, rows, lambda f: f"rec[{record_type._fields.index(f)}]")


def _keys(name, rows):
    """Emits the series of a flat-keyed file's keys (see _compiled)."""
    return _compiled(name, rows, lambda k: f"rec[{k!r}] if {k!r} in rec else None")


_emit_cpu = _fields("_emit_cpu", CpuStat, CPU_FIELDS)
_emit_io = _fields("_emit_io", IoStat, IO_FIELDS)
_emit_hugetlb = _fields("_emit_hugetlb", HugetlbStat, HUGETLB_FIELDS)
_emit_sample = _fields("_emit_sample", CgroupSample, SAMPLE_FIELDS)
_emit_memory_stat = _keys("_emit_memory_stat", MEMSTAT_FIELDS)
_emit_memory_events = _keys("_emit_memory_events", MEM_EVENTS_FIELDS)
_emit_pids_events = _keys("_emit_pids_events", PIDS_EVENTS_FIELDS)


def emit_cgroup(add, lb, s, info, devices):
    """Every series of one cgroup, as add((family index, line)) calls."""
    if s.cpu is not None:
        _emit_cpu(add, lb, s.cpu)
    _emit_sample(add, lb, s)
    cur = s.memory_current
    mstat = s.memory_stat
    if cur is not None:
        add((MEM_USAGE, f"container_memory_usage_bytes{{{lb}}} {cur}"))
        ws = working_set(s)
        if ws is not None:
            add((MEM_WORKING_SET, f"container_memory_working_set_bytes{{{lb}}} {ws}"))
    if mstat is not None:
        _emit_memory_stat(add, lb, mstat)
        # memory.stat is hierarchical on cgroup v2: both scopes carry the same value (as cAdvisor).
        for ft in ("pgfault", "pgmajfault"):
            if ft in mstat:
                v = mstat[ft]
                add((MEM_FAILURES, f'container_memory_failures_total{{{lb},failure_type="{ft}",scope="container"}} {v}'))
                add((MEM_FAILURES, f'container_memory_failures_total{{{lb},failure_type="{ft}",scope="hierarchy"}} {v}'))
    if s.memory_events is not None:
        _emit_memory_events(add, lb, s.memory_events)
    if s.pids_events is not None:
        _emit_pids_events(add, lb, s.pids_events)
    if s.hugetlb:
        for size, h in sorted(s.hugetlb.items()):
            _emit_hugetlb(add, f'{lb},pagesize="{escape(size)}"', h)
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
            _emit_io(add, dl, st)
            bl = f'{dl},major="{maj}",minor="{mnr}",operation='
            for op, v in (("Read", st.rbytes), ("Write", st.wbytes), ("Discard", st.dbytes)):
                if v is not None:
                    add((BLKIO, f'container_blkio_device_usage_total{{{bl}"{op}"}} {v}'))
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
