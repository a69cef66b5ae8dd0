"""Parsers behind the root-cgroup, machine_* and per-process families, on the
kernel's own file formats (proc(5); Documentation/admin-guide/cgroup-v2.rst)."""
import pytest

from runtime.machine import parse_meminfo, parse_proc_stat_cpu, root_memory
from runtime.procstat import parse_nofile_soft, parse_pids, parse_stat_state
from runtime.stats import hugepage_size_name

MEMINFO = """MemTotal:       16318388 kB
MemFree:         1023140 kB
MemAvailable:    9170104 kB
Buffers:          530400 kB
Cached:          7803272 kB
SwapTotal:       2097148 kB
SwapFree:        2096124 kB
Active(file):    3355216 kB
Inactive(file):  4462392 kB
AnonPages:       5237348 kB
Mapped:           967112 kB
HugePages_Total:       0
"""


def test_meminfo_in_bytes_and_root_memory_as_runc_emulates_it():
    m = parse_meminfo(MEMINFO)
    assert m["MemTotal"] == 16318388 * 1024 and m["HugePages_Total"] == 0
    usage, swap, stat = root_memory(m)
    assert usage == (16318388 - 1023140) * 1024           # MemTotal - MemFree
    assert swap == (2097148 - 2096124) * 1024
    assert stat["inactive_file"] == 4462392 * 1024 and stat["anon"] == 5237348 * 1024
    assert stat["file"] == 7803272 * 1024 and stat["file_mapped"] == 967112 * 1024
    assert root_memory({}) == (None, None, {})


def test_proc_stat_cpu_line_in_microseconds():
    text = "cpu  100 20 30 4000 50 6 7 0 0 0\ncpu0 50 10 15 2000 25 3 3 0 0 0\nintr 1\n"
    c = parse_proc_stat_cpu(text, 100)
    assert c.user_usec == 120 * 10_000 and c.system_usec == 43 * 10_000
    assert c.usage_usec == c.user_usec + c.system_usec and c.nr_periods is None
    with pytest.raises(ValueError):
        parse_proc_stat_cpu("intr 1\n", 100)


@pytest.mark.parametrize("kb, name", [(2048, "2MB"), (1048576, "1GB"), (64, "64KB"), (32768, "32MB")])
def test_hugepage_sizes_named_as_the_hugetlb_controller_names_its_files(kb, name):
    assert hugepage_size_name(kb) == name


def test_stat_state_after_a_command_with_spaces_and_parentheses():
    assert parse_stat_state("42 (a) b (c)) S 1 42 42 0 -1") == "S"
    assert parse_stat_state("7 (kworker/0:1) D 2 0 0") == "D"
    with pytest.raises(ValueError):
        parse_stat_state("7 (x)")


def test_nofile_soft_limit_and_unlimited_as_minus_one():
    limits = ("Limit                     Soft Limit           Hard Limit           Units\n"
              "Max open files            1024                 524288               files\n")
    assert parse_nofile_soft(limits) == 1024
    assert parse_nofile_soft(limits.replace("1024 ", "unlimited ")) == -1
    assert parse_nofile_soft("Max processes 1 1 processes\n") is None
    assert parse_pids("1\n22\n\n333\n") == [1, 22, 333]
