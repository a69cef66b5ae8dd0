"""Prometheus / OpenMetrics rendering of the collector's latest Snapshot.

Why hand-written and not a prometheus_client custom Collector: measured on
this host, prometheus_client's generate_latest() takes ~280 ms for 1000
containers x 35 series (4.5 MB), over the 100 ms scrape goal. Rendering
straight to text with label strings built once per cgroup is ~10x faster (see
bench/collect). The output is the standard exposition format, checked by
`promtool check metrics` in tests/host/test_metrics_prometheus.py.

Names and labels follow cAdvisor (metrics/prometheus.go) where the meaning is
the same, so existing dashboards and OpenCost queries work unchanged:
labels ``container_label_<k>`` (allow-listed), ``id`` (cgroup path relative to
the cgroup2 mount, leading "/"), ``image``, ``name``; extra per-family labels
(cpu, failure_type/scope, device/major/minor/operation) come last. Every
series of a family carries the same label names.

A value the kernel does not provide (None in the CgroupSample: e.g. memory
files on a hybrid host, where the memory controller is bound to cgroup v1) is
not emitted for that cgroup -- never a made-up 0. container_spec_* follow
cAdvisor's defaults for every container: an unset or unlimited memory,
swap or reservation limit is 0, the CFS period 100000 when unset, shares
converted from cpu.weight (default 100); container_spec_cpu_quota only when
a quota is set.

The root cgroup (snapshot.root) is rendered with id="/" and image="" like
every non-container cgroup, so ``image!=""`` selects containers only; the
machine_* families carry cAdvisor's boot_id, machine_id, system_uuid labels.

Where a cAdvisor name is a counter without the _total suffix
(container_memory_failcnt, container_hugetlb_failcnt) it is typed gauge
here, keeping the name that dashboards query and `promtool check metrics`
clean. Families of the optional sets ([collector] enable) appear only when
the collector read them. Other differences from cAdvisor: container_processes
counts tasks (pids.current, on by default: the fork-bomb alert uses it), not
processes; not exported, because cgroup v2 and /proc do not give them:
container_hugetlb_max_usage_bytes (no hugetlb peak file),
container_tasks_state{state="iowaiting"} (netlink taskstats only), machine_nvm_*
(Intel's libipmctl), the cpu_topology set.

container_network_* come from the sample's ``network`` (agent/netmeter.py):
a container on the host's network has None and no series. cAdvisor's TCP/UDP
socket-state families (container_network_{tcp,tcp6,udp,udp6}_usage_total) are
not exported: they are gauges named _total, which `promtool check metrics`
rejects, and their source files cost ~670x the interface counters per
container (bench/net_counters.py).

Entry point: ``render(snapshot, label_allowlist=(), openmetrics=False) -> bytes``.
A scrape never reads the kernel: everything comes from the snapshot and from
agent.selfmetrics.
"""
from __future__ import annotations

import threading
import time

import structlog

from agent import selfmetrics
from agent.labels import metric_label_name

log = structlog.get_logger("exporters.prometheus")
from runtime.limits import DEFAULT_CPU_PERIOD_US
from runtime.procstat import TASK_STATES
from runtime.stats import working_set

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

try:
    from importlib.metadata import version as _dist_version
    VERSION = _dist_version("cgroup-agent")
except Exception:  # noqa: BLE001 - not installed: still render
    VERSION = "0.0.0"
selfmetrics.set_build_info(VERSION)

# (name, kind, help, extra label names). Order = output order.
FAMILIES = (
    ("container_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed in seconds.", ("cpu",)),
    ("container_cpu_user_seconds_total", "counter", "Cumulative user cpu time consumed in seconds.", ()),
    ("container_cpu_system_seconds_total", "counter", "Cumulative system cpu time consumed in seconds.", ()),
    ("container_cpu_cfs_periods_total", "counter", "Number of elapsed enforcement period intervals.", ()),
    ("container_cpu_cfs_throttled_periods_total", "counter", "Number of throttled period intervals.", ()),
    ("container_cpu_cfs_throttled_seconds_total", "counter", "Total time duration the container has been throttled.", ()),
    ("container_memory_usage_bytes", "gauge", "Current memory usage in bytes, including all memory regardless of when it was accessed.", ()),
    ("container_memory_working_set_bytes", "gauge", "Current working set in bytes (memory.current minus inactive_file).", ()),
    ("container_memory_rss", "gauge", "Size of RSS (anonymous memory) in bytes.", ()),
    ("container_memory_cache", "gauge", "Number of bytes of page cache memory.", ()),
    ("container_memory_swap", "gauge", "Container swap usage in bytes.", ()),
    ("container_memory_mapped_file", "gauge", "Size of memory mapped files in bytes.", ()),
    ("container_memory_max_usage_bytes", "gauge", "Maximum memory usage recorded in bytes (memory.peak).", ()),
    ("container_memory_failures_total", "counter", "Cumulative count of memory allocation failures.", ("failure_type", "scope")),
    ("container_oom_events_total", "counter", "Count of out of memory events observed for the container (memory.events oom_kill).", ()),
    ("container_fs_reads_bytes_total", "counter", "Cumulative count of bytes read.", ("device",)),
    ("container_fs_writes_bytes_total", "counter", "Cumulative count of bytes written.", ("device",)),
    ("container_fs_reads_total", "counter", "Cumulative count of reads completed.", ("device",)),
    ("container_fs_writes_total", "counter", "Cumulative count of writes completed.", ("device",)),
    ("container_blkio_device_usage_total", "counter", "Blkio device bytes usage.", ("device", "major", "minor", "operation")),
    ("container_processes", "gauge", "Number of tasks in the cgroup (pids.current).", ()),
    ("container_pressure_cpu_waiting_seconds_total", "counter", "Total time duration tasks in the container have waited due to CPU pressure.", ()),
    ("container_pressure_cpu_stalled_seconds_total", "counter", "Total time duration no tasks in the container could make progress due to CPU pressure.", ()),
    ("container_pressure_memory_waiting_seconds_total", "counter", "Total time duration tasks in the container have waited due to memory pressure.", ()),
    ("container_pressure_memory_stalled_seconds_total", "counter", "Total time duration no tasks in the container could make progress due to memory pressure.", ()),
    ("container_pressure_io_waiting_seconds_total", "counter", "Total time duration tasks in the container have waited due to IO pressure.", ()),
    ("container_pressure_io_stalled_seconds_total", "counter", "Total time duration no tasks in the container could make progress due to IO pressure.", ()),
    ("container_spec_memory_limit_bytes", "gauge", "Memory limit for the container (memory.max; absent = unlimited).", ()),
    ("container_spec_memory_reservation_limit_bytes", "gauge", "Memory reservation for the container (memory.low; absent = none).", ()),
    ("container_spec_memory_swap_limit_bytes", "gauge", "Memory swap limit for the container (memory.swap.max; absent = unlimited).", ()),
    ("container_spec_cpu_quota", "gauge", "CPU quota of the container in microseconds per period.", ()),
    ("container_spec_cpu_period", "gauge", "CPU period of the container in microseconds.", ()),
    ("container_spec_cpu_shares", "gauge", "CPU share of the container (cgroup v1 shares, converted from cpu.weight).", ()),
    ("container_start_time_seconds", "gauge", "Start time of the container since unix epoch in seconds.", ()),
    ("container_last_seen", "gauge", "Last time a container was seen by the exporter.", ()),
    ("cgroup_agent_container_state", "gauge", "Container lifecycle state: one series per container, value 1.", ("state",)),
    ("cgroup_agent_container_frozen", "gauge", "1 when the container's cgroup is frozen (cgroup.events frozen 1).", ()),
    ("cgroup_agent_container_restarts_total", "counter", "Restarts of the container by its restart policy.", ()),
    ("cgroup_agent_container_oom_kills_total", "counter", "OOM kills of the container's processes seen by the supervisor.", ()),
    ("cgroup_agent_container_pids_limit_hits_total", "counter", "Forks refused because the cgroup was at pids.max (pids.events max).", ()),
    ("cgroup_agent_container_log_bytes_total", "counter", "Bytes of stdout/stderr the container produced into its log files, kept or rotated away.", ()),
    # issue 16: the rest of cAdvisor's cgroup v2 families (appended: indices above stay put)
    ("container_cpu_cfs_burst_periods_total", "counter", "Number of periods when burst occurs.", ()),
    ("container_cpu_cfs_burst_seconds_total", "counter", "Total time duration the container has been bursted.", ()),
    ("container_memory_failcnt", "gauge", "Number of memory usage hits limits (memory.events max; a counter, typed gauge: cAdvisor's name has no _total).", ()),
    ("container_memory_events_high_total", "counter", "Cumulative count of memory.high throttle events for the container.", ()),
    ("container_memory_events_max_total", "counter", "Cumulative count of memory.max limit hit events for the container.", ()),
    ("container_memory_kernel_usage", "gauge", "Size of kernel memory allocated in bytes.", ()),
    ("container_memory_total_active_file_bytes", "gauge", "Current total active file in bytes.", ()),
    ("container_memory_total_inactive_file_bytes", "gauge", "Current total inactive file in bytes.", ()),
    ("container_memory_file_dirty_bytes", "gauge", "Number of bytes of file cache that has been modified but not yet written back to disk.", ()),
    ("container_memory_file_writeback_bytes", "gauge", "Number of bytes of file cache that is currently being written back to disk.", ()),
    ("container_memory_workingset_refault_anon_total", "counter", "Cumulative number of refaults of previously evicted anonymous pages.", ()),
    ("container_memory_workingset_refault_file_total", "counter", "Cumulative number of refaults of previously evicted file pages.", ()),
    ("container_memory_pgscan_total", "counter", "Cumulative number of pages scanned by the page reclaim algorithm.", ()),
    ("container_memory_pgsteal_total", "counter", "Cumulative number of pages reclaimed by the page reclaim algorithm.", ()),
    ("container_creation_time_seconds", "gauge", "Container creation time since unix epoch in seconds.", ()),
    ("container_hugetlb_usage_bytes", "gauge", "Current hugepage usage in bytes.", ("pagesize",)),
    ("container_hugetlb_failcnt", "gauge", "Number of hugepage usage hits limits (a counter, typed gauge: cAdvisor's name has no _total).", ("pagesize",)),
    ("container_file_descriptors", "gauge", "Number of open file descriptors for the container.", ()),
    ("container_sockets", "gauge", "Number of open sockets for the container.", ()),
    ("container_threads", "gauge", "Number of threads running inside the container.", ()),
    ("container_threads_max", "gauge", "Maximum number of threads allowed inside the container, infinity if value is zero.", ()),
    ("container_ulimits_soft", "gauge", "Soft ulimit values for the container root process. Unlimited if -1, except priority and nice.", ("ulimit",)),
    ("container_tasks_state", "gauge", "Number of tasks in given state.", ("state",)),
    ("container_fs_usage_bytes", "gauge", "Number of bytes that are consumed by the container on this filesystem "
     "(an image container's copy-on-write upper dir; runtime/fsusage.py).", ("device",)),
    # issue 15: a container's own network namespace, per counted interface (agent/netmeter.py)
    ("container_network_receive_bytes_total", "counter", "Cumulative count of bytes received", ("interface",)),
    ("container_network_receive_packets_total", "counter", "Cumulative count of packets received", ("interface",)),
    ("container_network_receive_packets_dropped_total", "counter", "Cumulative count of packets dropped while receiving", ("interface",)),
    ("container_network_receive_errors_total", "counter", "Cumulative count of errors encountered while receiving", ("interface",)),
    ("container_network_transmit_bytes_total", "counter", "Cumulative count of bytes transmitted", ("interface",)),
    ("container_network_transmit_packets_total", "counter", "Cumulative count of packets transmitted", ("interface",)),
    ("container_network_transmit_packets_dropped_total", "counter", "Cumulative count of packets dropped while transmitting", ("interface",)),
    ("container_network_transmit_errors_total", "counter", "Cumulative count of errors encountered while transmitting", ("interface",)),
)
_INDEX = {f[0]: i for i, f in enumerate(FAMILIES)}
(_BURST_N, _BURST_S, _FAILCNT, _EV_HIGH, _EV_MAX, _KERNEL, _ACTIVE_FILE, _INACTIVE_FILE, _DIRTY, _WRITEBACK,
 _REFAULT_ANON, _REFAULT_FILE, _PGSCAN, _PGSTEAL, _CREATED, _HUGE_USAGE, _HUGE_FAILCNT, _FDS, _SOCKETS,
 _THREADS, _THREADS_MAX, _ULIMITS, _TASKS) = range(_INDEX["container_cpu_cfs_burst_periods_total"],
                                                  _INDEX["container_tasks_state"] + 1)
assert FAMILIES[_TASKS][0] == "container_tasks_state"
_FS_USAGE = _INDEX["container_fs_usage_bytes"]
_NET = _INDEX["container_network_receive_bytes_total"]
# (family name, IfStats field), in FAMILIES order from _NET
_NET_FAMILIES = tuple((FAMILIES[_NET + i][0], fld) for i, fld in enumerate(
    ("rx_bytes", "rx_packets", "rx_dropped", "rx_errors", "tx_bytes", "tx_packets", "tx_dropped", "tx_errors")))

# memory.stat key -> family index of the plain one-value memory families
_MEMSTAT_FAMILIES = (
    ("kernel", _KERNEL, "container_memory_kernel_usage"),
    ("active_file", _ACTIVE_FILE, "container_memory_total_active_file_bytes"),
    ("inactive_file", _INACTIVE_FILE, "container_memory_total_inactive_file_bytes"),
    ("file_dirty", _DIRTY, "container_memory_file_dirty_bytes"),
    ("file_writeback", _WRITEBACK, "container_memory_file_writeback_bytes"),
    ("workingset_refault_anon", _REFAULT_ANON, "container_memory_workingset_refault_anon_total"),
    ("workingset_refault_file", _REFAULT_FILE, "container_memory_workingset_refault_file_total"),
    ("pgscan", _PGSCAN, "container_memory_pgscan_total"),
    ("pgsteal", _PGSTEAL, "container_memory_pgsteal_total"),
)
DEFAULT_CPU_WEIGHT = 100   # the kernel's cpu.weight when none is set

MACHINE_LABELS = ("boot_id", "machine_id", "system_uuid")
# (name, help, MachineInfo field)
MACHINE_FAMILIES = (
    ("machine_cpu_cores", "Number of logical CPU cores.", "cpu_cores"),
    ("machine_cpu_physical_cores", "Number of physical CPU cores.", "cpu_physical_cores"),
    ("machine_cpu_sockets", "Number of CPU sockets.", "cpu_sockets"),
    ("machine_memory_bytes", "Amount of memory installed on the machine.", "memory_bytes"),
    ("machine_swap_bytes", "Amount of swap memory available on the machine.", "swap_bytes"),
)


def escape(value) -> str:
    """Escape a label value for the exposition formats."""
    s = str(value)
    if "\\" in s or '"' in s or "\n" in s:
        s = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return s


def label_key(k: str) -> str:
    """container_label_<k> with characters invalid in a label name replaced by _."""
    return metric_label_name(k)


def _num(v) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def weight_to_shares(weight: int) -> int:
    """cgroup v2 cpu.weight back to v1 shares (the inverse of the classic runc formula)."""
    return 2 + ((weight - 1) * 262142) // 9999


def _limit(lim, attr):
    """An int limit, or None when unset or unlimited ("max")."""
    v = getattr(lim, attr, None)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _rel_id(path: str, mount: str) -> str:
    if mount and path.startswith(mount):
        rel = path[len(mount):]
        return rel if rel.startswith("/") else "/" + rel
    return path if path.startswith("/") else "/" + path


def _base_labels(path, info, mount, allowlist) -> str:
    parts = []
    labels = info.labels if info is not None else {}
    for k in allowlist:
        parts.append(f'{label_key(k)}="{escape(labels.get(k, "") if labels else "")}"')
    parts.append(f'id="{escape(_rel_id(path, mount))}"')
    parts.append(f'image="{escape(info.image if info is not None else "")}"')
    parts.append(f'name="{escape(info.name if info is not None else "")}"')
    return ",".join(parts)


def _emit_cgroup(add, lb, s, info, devices):
    """Every series of one cgroup, as add((family index, line)) calls."""
    cpu = s.cpu
    if cpu is not None:
        if cpu.nr_bursts is not None:
            add((_BURST_N, f"container_cpu_cfs_burst_periods_total{{{lb}}} {cpu.nr_bursts}"))
        if cpu.burst_usec is not None:
            add((_BURST_S, f"container_cpu_cfs_burst_seconds_total{{{lb}}} {cpu.burst_usec / 1e6!r}"))
        if cpu.usage_usec is not None:
            add((0, f'container_cpu_usage_seconds_total{{{lb},cpu="total"}} {cpu.usage_usec / 1e6!r}'))
        if cpu.user_usec is not None:
            add((1, f"container_cpu_user_seconds_total{{{lb}}} {cpu.user_usec / 1e6!r}"))
        if cpu.system_usec is not None:
            add((2, f"container_cpu_system_seconds_total{{{lb}}} {cpu.system_usec / 1e6!r}"))
        if cpu.nr_periods is not None:
            add((3, f"container_cpu_cfs_periods_total{{{lb}}} {cpu.nr_periods}"))
        if cpu.nr_throttled is not None:
            add((4, f"container_cpu_cfs_throttled_periods_total{{{lb}}} {cpu.nr_throttled}"))
        if cpu.throttled_usec is not None:
            add((5, f"container_cpu_cfs_throttled_seconds_total{{{lb}}} {cpu.throttled_usec / 1e6!r}"))
    cur = s.memory_current
    mstat = s.memory_stat
    if cur is not None:
        add((6, f"container_memory_usage_bytes{{{lb}}} {cur}"))
        ws = working_set(s)
        if ws is not None:
            add((7, f"container_memory_working_set_bytes{{{lb}}} {ws}"))
    if mstat is not None:
        if "anon" in mstat:
            add((8, f"container_memory_rss{{{lb}}} {mstat['anon']}"))
        if "file" in mstat:
            add((9, f"container_memory_cache{{{lb}}} {mstat['file']}"))
        if "file_mapped" in mstat:
            add((11, f"container_memory_mapped_file{{{lb}}} {mstat['file_mapped']}"))
        for key, idx, name in _MEMSTAT_FAMILIES:
            if key in mstat:
                add((idx, f"{name}{{{lb}}} {mstat[key]}"))
        # memory.stat is hierarchical on cgroup v2: both scopes carry the same value (as cAdvisor).
        for ft in ("pgfault", "pgmajfault"):
            if ft in mstat:
                v = mstat[ft]
                add((13, f'container_memory_failures_total{{{lb},failure_type="{ft}",scope="container"}} {v}'))
                add((13, f'container_memory_failures_total{{{lb},failure_type="{ft}",scope="hierarchy"}} {v}'))
    if s.memory_swap_current is not None:
        add((10, f"container_memory_swap{{{lb}}} {s.memory_swap_current}"))
    if s.memory_peak is not None:
        add((12, f"container_memory_max_usage_bytes{{{lb}}} {s.memory_peak}"))
    mev = s.memory_events
    if mev is not None:
        if "oom_kill" in mev:
            add((14, f"container_oom_events_total{{{lb}}} {mev['oom_kill']}"))
        if "max" in mev:   # cgroup v2's failcnt: times usage hit memory.max (as runc/cAdvisor)
            add((_FAILCNT, f"container_memory_failcnt{{{lb}}} {mev['max']}"))
            add((_EV_MAX, f"container_memory_events_max_total{{{lb}}} {mev['max']}"))
        if "high" in mev:
            add((_EV_HIGH, f"container_memory_events_high_total{{{lb}}} {mev['high']}"))
    if s.hugetlb:
        for size, h in sorted(s.hugetlb.items()):
            hl = f'{lb},pagesize="{escape(size)}"'
            if h.usage is not None:
                add((_HUGE_USAGE, f"container_hugetlb_usage_bytes{{{hl}}} {h.usage}"))
            if h.failcnt is not None:
                add((_HUGE_FAILCNT, f"container_hugetlb_failcnt{{{hl}}} {h.failcnt}"))
    ps = s.processes
    if ps is not None:
        if ps.file_descriptors is not None:    # the "process" set
            add((_FDS, f"container_file_descriptors{{{lb}}} {ps.file_descriptors}"))
            add((_SOCKETS, f"container_sockets{{{lb}}} {ps.sockets}"))
            threads = s.pids_current if s.pids_current is not None else ps.threads
            if threads is not None:
                add((_THREADS, f"container_threads{{{lb}}} {threads}"))
            lim = info.limits if info is not None else None
            add((_THREADS_MAX, f"container_threads_max{{{lb}}} {_limit(lim, 'pids_max') or 0}"))
            if ps.max_open_files is not None:
                add((_ULIMITS, f'container_ulimits_soft{{{lb},ulimit="max_open_files"}} {ps.max_open_files}'))
        if ps.tasks_state is not None:          # the "cpuLoad" set
            for state, n in zip(TASK_STATES, ps.tasks_state):
                add((_TASKS, f'container_tasks_state{{{lb},state="{state}"}} {n}'))
    net = getattr(s, "network", None)
    if net:     # None: the host's network or not measured; never a made-up 0
        for ifs in net:
            il = f'{lb},interface="{escape(ifs.name)}"'
            for i, (name, fld) in enumerate(_NET_FAMILIES):
                add((_NET + i, f"{name}{{{il}}} {getattr(ifs, fld)}"))
    io = s.io
    if io:
        for (maj, mnr), st in sorted(io.items()):
            dev = escape(devices.get((maj, mnr)) or f"{maj}:{mnr}")
            dl = f'{lb},device="{dev}"'
            if st.rbytes is not None:
                add((15, f"container_fs_reads_bytes_total{{{dl}}} {st.rbytes}"))
            if st.wbytes is not None:
                add((16, f"container_fs_writes_bytes_total{{{dl}}} {st.wbytes}"))
            if st.rios is not None:
                add((17, f"container_fs_reads_total{{{dl}}} {st.rios}"))
            if st.wios is not None:
                add((18, f"container_fs_writes_total{{{dl}}} {st.wios}"))
            bl = f'{dl},major="{maj}",minor="{mnr}",operation='
            for op, v in (("Read", st.rbytes), ("Write", st.wbytes), ("Discard", st.dbytes)):
                if v is not None:
                    add((19, f'container_blkio_device_usage_total{{{bl}"{op}"}} {v}'))
    if s.pids_current is not None:
        add((20, f"container_processes{{{lb}}} {s.pids_current}"))
    pev = s.pids_events
    if pev is not None and "max" in pev:
        add((39, f"cgroup_agent_container_pids_limit_hits_total{{{lb}}} {pev['max']}"))
    for idx, kind, pr in ((21, "cpu", s.cpu_pressure), (23, "memory", s.memory_pressure), (25, "io", s.io_pressure)):
        if pr is None:
            continue
        if pr.some is not None:
            add((idx, f"container_pressure_{kind}_waiting_seconds_total{{{lb}}} {pr.some.total_usec / 1e6!r}"))
        if pr.full is not None:
            add((idx + 1, f"container_pressure_{kind}_stalled_seconds_total{{{lb}}} {pr.full.total_usec / 1e6!r}"))


def _emit_spec(add, lb, info):
    """The series that depend on the container alone (its spec and times), not on a sample."""
    # cAdvisor's spec defaults: unset/unlimited memory limits are 0, the period
    # 100000, shares from the kernel's default weight; a quota only when set.
    lim = info.limits
    add((27, f"container_spec_memory_limit_bytes{{{lb}}} {_limit(lim, 'memory_max') or 0}"))
    add((28, f"container_spec_memory_reservation_limit_bytes{{{lb}}} {_limit(lim, 'memory_low') or 0}"))
    add((29, f"container_spec_memory_swap_limit_bytes{{{lb}}} {_limit(lim, 'memory_swap_max') or 0}"))
    v = _limit(lim, "cpu_quota_us")
    if v is not None:
        add((30, f"container_spec_cpu_quota{{{lb}}} {v}"))
    add((31, f"container_spec_cpu_period{{{lb}}} {_limit(lim, 'cpu_period_us') or DEFAULT_CPU_PERIOD_US}"))
    weight = _limit(lim, "cpu_weight") or DEFAULT_CPU_WEIGHT
    add((32, f"container_spec_cpu_shares{{{lb}}} {weight_to_shares(weight)}"))
    start = info.started_at or info.created_at
    if start is not None:
        add((33, f"container_start_time_seconds{{{lb}}} {_num(start)}"))
    if info.created_at is not None:
        add((_CREATED, f"container_creation_time_seconds{{{lb}}} {_num(info.created_at)}"))


def _emit_container_state(out, lb, info, sample):
    out[35].append(f'cgroup_agent_container_state{{{lb},state="{escape(info.state)}"}} 1')
    if sample is not None and sample.events is not None:
        out[36].append(f"cgroup_agent_container_frozen{{{lb}}} {1 if sample.events.frozen else 0}")
    out[37].append(f"cgroup_agent_container_restarts_total{{{lb}}} {int(info.restart_count)}")
    out[38].append(f"cgroup_agent_container_oom_kills_total{{{lb}}} {int(info.oom_kills)}")
    log_bytes = getattr(info, "log_bytes", None)
    if log_bytes is not None:   # from creation on (0 before the first byte)
        out[_INDEX["cgroup_agent_container_log_bytes_total"]].append(
            f"cgroup_agent_container_log_bytes_total{{{lb}}} {int(log_bytes)}")


def _header(lines, name, kind, help, om):
    fam = name
    if om and kind == "counter":
        fam = name[:-6]  # OpenMetrics names the family without _total
    lines.append(f"# HELP {fam} {help}")
    lines.append(f"# TYPE {fam} {kind}")


def _label_str(names, values) -> str:
    return ",".join(f'{n}="{escape(v)}"' for n, v in zip(names, values))


def _machine_lines(lines, m, om):
    """cAdvisor's machine_* families from a runtime.machine.MachineInfo."""
    ml = _label_str(MACHINE_LABELS, (m.boot_id, m.machine_id, m.system_uuid))
    for name, help, attr in MACHINE_FAMILIES:
        _header(lines, name, "gauge", help, om)
        lines.append(f"{name}{{{ml}}} {_num(getattr(m, attr))}")
    if m.dimms:
        _header(lines, "machine_dimm_count", "gauge",
                "Number of RAM DIMM (all types memory modules) value labeled by dimm type.", om)
        lines.extend(f'machine_dimm_count{{{ml},type="{escape(t)}"}} {n}' for t, n, _b in m.dimms)
        _header(lines, "machine_dimm_capacity_bytes", "gauge",
                "Total RAM DIMM capacity (all types memory modules) value labeled by dimm type.", om)
        lines.extend(f'machine_dimm_capacity_bytes{{{ml},type="{escape(t)}"}} {b}' for t, _n, b in m.dimms)


# Rendered series per cgroup, reused while the collector hands over the very
# same (immutable) CgroupSample object and an equal ContainerInfo: the collector keeps
# the previous sample object for a cgroup whose files did not change, so idle
# cgroups cost one append per series instead of formatting it. The spec series
# (container_spec_*, start/creation times) are kept while the ContainerInfo is equal,
# whatever the sample.
_chunks: dict[str, tuple] = {}
_cache_lock = threading.Lock()


def render(snapshot, label_allowlist=(), openmetrics=False) -> bytes:
    """Render ``snapshot`` (or None before the first pass) as exposition text."""
    out = [[] for _ in FAMILIES]
    if snapshot is not None:
        allow = tuple(label_allowlist)
        mount = getattr(snapshot, "mount", "")
        devices = getattr(snapshot, "devices", None) or {}
        by_cgroup = {info.cgroup: info for info in snapshot.containers.values()}
        taken_at = snapshot.taken_at
        seen = _num(taken_at)
        last_seen = out[34]
        put = [x.append for x in out]
        lbs = {}   # container cgroup -> its label string, built once in the sample loop
        root = getattr(snapshot, "root", None)
        if root is not None:     # the host: id="/", image="" and name="" as every non-container
            lb = _base_labels(mount, None, mount, allow)
            acc = []
            _emit_cgroup(acc.append, lb, root, None, devices)
            for i, line in acc:
                put[i](line)
            last_seen.append(f"container_last_seen{{{lb}}} {seen}")
        with _cache_lock:
            cache = _chunks
            for path in sorted(snapshot.samples):
                info = by_cgroup.get(path)
                sample = snapshot.samples[path]
                hit = cache.get(path)
                same_labels = hit is not None and (hit[1] is info or hit[1] == info) and hit[2] == allow
                if same_labels and hit[0] is sample:
                    lb, acc, spec = hit[3], hit[4], hit[5]
                else:
                    if same_labels:
                        lb, spec = hit[3], hit[5]
                    else:
                        lb = _base_labels(path, info, mount, allow)
                        spec = []
                        if info is not None:
                            _emit_spec(spec.append, lb, info)
                    acc = []
                    _emit_cgroup(acc.append, lb, sample, info, devices)
                    cache[path] = (sample, info, allow, lb, acc, spec)
                for i, line in acc:
                    put[i](line)
                for i, line in spec:
                    put[i](line)
                last_seen.append(f"container_last_seen{{{lb}}} {seen}")
                if info is not None:
                    lbs[path] = lb
            if len(cache) > 2 * len(snapshot.samples) + 64:
                for path in [p for p in cache if p not in snapshot.samples]:
                    del cache[path]
        fs_usage = getattr(snapshot, "fs_usage", None) or {}
        for info in sorted(snapshot.containers.values(), key=lambda i: i.id):
            lb = lbs.get(info.cgroup) or _base_labels(info.cgroup, info, mount, allow)
            _emit_container_state(out, lb, info, snapshot.samples.get(info.cgroup))
            if info.id in fs_usage:
                device, nbytes = fs_usage[info.id]
                out[_FS_USAGE].append(f'container_fs_usage_bytes{{{lb},device="{escape(device)}"}} {nbytes}')
    lines: list[str] = []
    for (name, kind, help, _extra), series in zip(FAMILIES, out):
        if series:
            _header(lines, name, kind, help, openmetrics)
            lines.extend(series)
    if snapshot is not None and getattr(snapshot, "machine", None) is not None:
        _machine_lines(lines, snapshot.machine, openmetrics)
    lines.extend(selfmetrics.exposition(openmetrics).decode().splitlines())  # by prometheus_client
    if openmetrics:
        lines.append("# EOF")
    lines.append("")
    text = "\n".join(lines)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a value that is not text (a lone surrogate): drop its series, never the scrape
        return _encode_skipping_bad_lines(lines)


selfmetrics.declare("metrics_series_dropped_total", "counter",
                    "Series left out of a /metrics scrape because a label value is not valid Unicode text.")
selfmetrics.inc("metrics_series_dropped_total", 0)
_dropped_logged_at = [0.0]


def _encode_skipping_bad_lines(lines: list) -> bytes:
    good, bad = [], []
    for line in lines:
        try:
            good.append(line.encode())
        except UnicodeEncodeError:
            bad.append(line)
    selfmetrics.inc("metrics_series_dropped_total", len(bad))
    now = time.monotonic()
    if now - _dropped_logged_at[0] >= 60:  # one line a minute, not one per scrape
        _dropped_logged_at[0] = now
        log.warning("metrics.series_dropped", series=len(bad), example=ascii(bad[0])[:300],
                    reason="a label value is not valid Unicode text")
    return b"\n".join(good)
