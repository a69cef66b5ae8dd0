"""The /metrics family table: every container family's name, type, help and
extra label names, in output order, and the index of each by name; and the
*_FIELDS tables: which record field or file key feeds each one-value family.

The renderer (exporters/prometheus.py) gathers series per family index, so
the per-cgroup code (exporters/prom_series.py) appends to a list instead of
looking a name up; the indices below are taken from the names, never written
as numbers. Names, types and help texts follow cAdvisor where the meaning is
the same (see exporters/prometheus.py for the differences).
"""
from __future__ import annotations

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
INDEX = {f[0]: i for i, f in enumerate(FAMILIES)}

# the index of each family the per-cgroup code appends to, by its name
CPU_USAGE = INDEX["container_cpu_usage_seconds_total"]
CPU_USER = INDEX["container_cpu_user_seconds_total"]
CPU_SYSTEM = INDEX["container_cpu_system_seconds_total"]
CFS_PERIODS = INDEX["container_cpu_cfs_periods_total"]
CFS_THROTTLED_PERIODS = INDEX["container_cpu_cfs_throttled_periods_total"]
CFS_THROTTLED_SECONDS = INDEX["container_cpu_cfs_throttled_seconds_total"]
MEM_USAGE = INDEX["container_memory_usage_bytes"]
MEM_WORKING_SET = INDEX["container_memory_working_set_bytes"]
MEM_SWAP = INDEX["container_memory_swap"]
MEM_MAX_USAGE = INDEX["container_memory_max_usage_bytes"]
MEM_FAILURES = INDEX["container_memory_failures_total"]
OOM_EVENTS = INDEX["container_oom_events_total"]
FS_READ_BYTES = INDEX["container_fs_reads_bytes_total"]
FS_WRITE_BYTES = INDEX["container_fs_writes_bytes_total"]
FS_READS = INDEX["container_fs_reads_total"]
FS_WRITES = INDEX["container_fs_writes_total"]
BLKIO = INDEX["container_blkio_device_usage_total"]
PROCESSES = INDEX["container_processes"]
PRESSURE_CPU_WAITING = INDEX["container_pressure_cpu_waiting_seconds_total"]
PRESSURE_MEMORY_WAITING = INDEX["container_pressure_memory_waiting_seconds_total"]
PRESSURE_IO_WAITING = INDEX["container_pressure_io_waiting_seconds_total"]
SPEC_CPU_QUOTA = INDEX["container_spec_cpu_quota"]
SPEC_CPU_PERIOD = INDEX["container_spec_cpu_period"]
SPEC_CPU_SHARES = INDEX["container_spec_cpu_shares"]
START_TIME = INDEX["container_start_time_seconds"]
LAST_SEEN = INDEX["container_last_seen"]
STATE = INDEX["cgroup_agent_container_state"]
FROZEN = INDEX["cgroup_agent_container_frozen"]
RESTARTS = INDEX["cgroup_agent_container_restarts_total"]
OOM_KILLS = INDEX["cgroup_agent_container_oom_kills_total"]
PIDS_LIMIT_HITS = INDEX["cgroup_agent_container_pids_limit_hits_total"]
LOG_BYTES = INDEX["cgroup_agent_container_log_bytes_total"]
BURST_PERIODS = INDEX["container_cpu_cfs_burst_periods_total"]
BURST_SECONDS = INDEX["container_cpu_cfs_burst_seconds_total"]
MEM_FAILCNT = INDEX["container_memory_failcnt"]
MEM_EVENTS_HIGH = INDEX["container_memory_events_high_total"]
MEM_EVENTS_MAX = INDEX["container_memory_events_max_total"]
CREATION_TIME = INDEX["container_creation_time_seconds"]
HUGETLB_USAGE = INDEX["container_hugetlb_usage_bytes"]
HUGETLB_FAILCNT = INDEX["container_hugetlb_failcnt"]
FILE_DESCRIPTORS = INDEX["container_file_descriptors"]
SOCKETS = INDEX["container_sockets"]
THREADS = INDEX["container_threads"]
THREADS_MAX = INDEX["container_threads_max"]
ULIMITS_SOFT = INDEX["container_ulimits_soft"]
TASKS_STATE = INDEX["container_tasks_state"]
FS_USAGE = INDEX["container_fs_usage_bytes"]
NET_FIRST = INDEX["container_network_receive_bytes_total"]

# (family name, IfStats field) of the per-interface network families, in FAMILIES order from NET_FIRST
NET_FAMILIES = tuple((FAMILIES[NET_FIRST + i][0], fld) for i, fld in enumerate(
    ("rx_bytes", "rx_packets", "rx_dropped", "rx_errors", "tx_bytes", "tx_packets", "tx_dropped", "tx_errors")))

# The one-value series of a flat-keyed file's keys: (key, family name), per file
MEMSTAT_FIELDS = (
    ("anon", "container_memory_rss"),
    ("file", "container_memory_cache"),
    ("file_mapped", "container_memory_mapped_file"),
    ("kernel", "container_memory_kernel_usage"),
    ("active_file", "container_memory_total_active_file_bytes"),
    ("inactive_file", "container_memory_total_inactive_file_bytes"),
    ("file_dirty", "container_memory_file_dirty_bytes"),
    ("file_writeback", "container_memory_file_writeback_bytes"),
    ("workingset_refault_anon", "container_memory_workingset_refault_anon_total"),
    ("workingset_refault_file", "container_memory_workingset_refault_file_total"),
    ("pgscan", "container_memory_pgscan_total"),
    ("pgsteal", "container_memory_pgsteal_total"),
)
# memory.events: "max" is cgroup v2's failcnt, times usage hit memory.max (as runc/cAdvisor), and its own counter
MEM_EVENTS_FIELDS = (
    ("oom_kill", "container_oom_events_total"),
    ("max", "container_memory_failcnt"),
    ("max", "container_memory_events_max_total"),
    ("high", "container_memory_events_high_total"),
)
PIDS_EVENTS_FIELDS = (("max", "cgroup_agent_container_pids_limit_hits_total"),)

# The one-value series of a record's fields, per record (runtime.parsers.CpuStat, IoStat,
# HugetlbStat, runtime.stats.CgroupSample): (field, family name, with the series' fixed labels
# in braces where it has any). A field in microseconds (*_usec) is exported in seconds.
CPU_FIELDS = (
    ("usage_usec", 'container_cpu_usage_seconds_total{cpu="total"}'),
    ("user_usec", "container_cpu_user_seconds_total"),
    ("system_usec", "container_cpu_system_seconds_total"),
    ("nr_periods", "container_cpu_cfs_periods_total"),
    ("nr_throttled", "container_cpu_cfs_throttled_periods_total"),
    ("throttled_usec", "container_cpu_cfs_throttled_seconds_total"),
    ("nr_bursts", "container_cpu_cfs_burst_periods_total"),
    ("burst_usec", "container_cpu_cfs_burst_seconds_total"),
)
IO_FIELDS = (     # labels: the cgroup's and device
    ("rbytes", "container_fs_reads_bytes_total"),
    ("wbytes", "container_fs_writes_bytes_total"),
    ("rios", "container_fs_reads_total"),
    ("wios", "container_fs_writes_total"),
)
HUGETLB_FIELDS = (     # labels: the cgroup's and pagesize
    ("usage", "container_hugetlb_usage_bytes"),
    ("failcnt", "container_hugetlb_failcnt"),
)
SAMPLE_FIELDS = (     # memory.current has its own code: the working set goes with it
    ("memory_swap_current", "container_memory_swap"),
    ("memory_peak", "container_memory_max_usage_bytes"),
    ("pids_current", "container_processes"),
)

# container_spec_* memory limits: (Limits field, family index, family name); unset or unlimited = 0
SPEC_MEMORY_LIMITS = tuple((attr, INDEX[name], name) for attr, name in (
    ("memory_max", "container_spec_memory_limit_bytes"),
    ("memory_low", "container_spec_memory_reservation_limit_bytes"),
    ("memory_swap_max", "container_spec_memory_swap_limit_bytes"),
))

MACHINE_LABELS = ("boot_id", "machine_id", "system_uuid")
# (name, help, MachineInfo field)
MACHINE_FAMILIES = (
    ("machine_cpu_cores", "Number of logical CPU cores.", "cpu_cores"),
    ("machine_cpu_physical_cores", "Number of physical CPU cores.", "cpu_physical_cores"),
    ("machine_cpu_sockets", "Number of CPU sockets.", "cpu_sockets"),
    ("machine_memory_bytes", "Amount of memory installed on the machine.", "memory_bytes"),
    ("machine_swap_bytes", "Amount of swap memory available on the machine.", "swap_bytes"),
)

# each pressure family's "stalled" series is the family right after its "waiting" one
assert all(FAMILIES[i + 1][0] == FAMILIES[i][0].replace("_waiting_", "_stalled_")
           for i in (PRESSURE_CPU_WAITING, PRESSURE_MEMORY_WAITING, PRESSURE_IO_WAITING))
