"""One Limits value: parse what people type, render cgroup files, read back.

A facade: the code lives in runtime/controllers/, one module per controller
(cpu, memory, io, pids, cpuset: user parsing, rendering and reading back
side by side), the shared value parsers in runtime/controllers/values.py,
the Limits value in runtime/controllers/value.py and the OCI translation in
runtime/controllers/oci.py. Import from here or from there alike.
"""
from __future__ import annotations

from runtime.controllers.cpu import (CPU_PERIOD_MAX_US, CPU_PERIOD_MIN_US, CPU_QUOTA_MIN_US, CPUS_ACCEPTED,
                                     DEFAULT_CPU_PERIOD_US, format_cpus, parse_cpus)
from runtime.controllers.cpuset import CPUSET_ACCEPTED, parse_cpuset_list
from runtime.controllers.io import IO_MAX_ACCEPTED, IoMax, parse_io_max, parse_io_max_line
from runtime.controllers.oci import blkio_weight_to_io_weight, cpu_shares_to_weight, from_oci
from runtime.controllers.pids import PIDS_ACCEPTED, parse_pids
from runtime.controllers.value import _ALIASES, _CONTROLLER, FILE_FIELDS, Limits, parse_limit_files, read_limits
from runtime.controllers.values import (BOOL_ACCEPTED, MAX, SIZE_ACCEPTED, SIZE_LIMIT, WEIGHT_ACCEPTED, WEIGHT_MAX,
                                        WEIGHT_MIN, format_size, parse_bool, parse_size, parse_weight)
from runtime.errors import LimitError

__all__ = [
    "BOOL_ACCEPTED", "CPUSET_ACCEPTED", "CPUS_ACCEPTED", "CPU_PERIOD_MAX_US", "CPU_PERIOD_MIN_US",
    "CPU_QUOTA_MIN_US", "DEFAULT_CPU_PERIOD_US", "FILE_FIELDS", "IO_MAX_ACCEPTED", "IoMax", "LimitError",
    "Limits", "MAX", "PIDS_ACCEPTED", "SIZE_ACCEPTED", "SIZE_LIMIT", "WEIGHT_ACCEPTED", "WEIGHT_MAX",
    "WEIGHT_MIN", "_ALIASES", "_CONTROLLER", "blkio_weight_to_io_weight", "cpu_shares_to_weight",
    "format_cpus", "format_size", "from_oci", "parse_bool", "parse_cpus", "parse_cpuset_list",
    "parse_io_max", "parse_io_max_line", "parse_limit_files", "parse_pids", "parse_size", "parse_weight",
    "read_limits",
]
