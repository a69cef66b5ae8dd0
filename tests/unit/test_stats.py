"""Parsers of cgroup v2 stat files, on files captured from real kernels and
on the literal examples of Documentation/admin-guide/cgroup-v2.rst."""
from __future__ import annotations

import os

import pytest
from hypothesis import given, strategies as st

from runtime import stats
from runtime.cgroupfs import Cgroup
from runtime.stats import (CgroupEvents, CgroupSample, CpuStat, IoStat, Pressure,
                           PressureLine, format_cpuset, parse_cpu_stat, parse_cpuset,
                           parse_events, parse_flat_keyed, parse_int_or_max, parse_io_stat,
                           parse_pressure, read_sample, working_set)


def _unit_helpers():
    # tests/unit/conftest.py by path: a plain "from conftest import" can pick up
    # tests/host/conftest.py when both tiers run in one pytest session
    import importlib.util
    path = os.path.join(os.path.dirname(__file__), "conftest.py")
    spec = importlib.util.spec_from_file_location("cga_unit_fixture_helpers", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_h = _unit_helpers()
fixture_dirs, fixture_files, read_fixture = _h.fixture_dirs, _h.fixture_files, _h.read_fixture

# As documented in cgroup-v2.rst ("io.stat ... An example read output follows").
IO_STAT_DOC = """8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0
8:0 rbytes=90430464 wbytes=299008000 rios=8950 wios=1252 dbytes=50331648 dios=3021
"""
# An older kernel (< 5.2) has no discard counters.
IO_STAT_OLD = "254:0 rbytes=4096 wbytes=0 rios=1 wios=0\n"

MEMORY_STAT_DOC = """anon 1048576
file 2097152
kernel 524288
kernel_stack 16384
pagetables 32768
sec_pagetables 0
percpu 0
sock 0
vmalloc 0
shmem 4096
zswap 0
zswapped 0
file_mapped 65536
file_dirty 0
file_writeback 0
swapcached 0
anon_thp 0
file_thp 0
shmem_thp 0
inactive_anon 1040384
active_anon 8192
inactive_file 1572864
active_file 524288
unevictable 0
slab_reclaimable 196608
slab_unreclaimable 98304
slab 294912
workingset_refault_anon 0
workingset_refault_file 0
workingset_activate_anon 0
workingset_activate_file 0
workingset_restore_anon 0
workingset_restore_file 0
workingset_nodereclaim 0
pgscan 0
pgsteal 0
pgscan_kswapd 0
pgscan_direct 0
pgsteal_kswapd 0
pgsteal_direct 0
pgfault 4521
pgmajfault 3
pgrefill 0
pgactivate 2
pgdeactivate 0
pglazyfree 0
pglazyfreed 0
thp_fault_alloc 0
thp_collapse_alloc 0
"""

MEMORY_EVENTS_DOC = "low 0\nhigh 12\nmax 40\noom 1\noom_kill 1\noom_group_kill 0\n"

CPU_STAT_V2_FULL = """usage_usec 1000
user_usec 600
system_usec 400
nr_periods 10
nr_throttled 3
throttled_usec 2500
nr_bursts 0
burst_usec 0
"""


def test_io_stat_doc_example():
    io = parse_io_stat(IO_STAT_DOC)
    assert io[(8, 16)] == IoStat(1459200, 314773504, 192, 353, 0, 0)
    assert io[(8, 0)] == IoStat(90430464, 299008000, 8950, 1252, 50331648, 3021)


def test_io_stat_missing_keys_are_none_not_zero():
    io = parse_io_stat(IO_STAT_OLD)
    assert io[(254, 0)].rbytes == 4096
    assert io[(254, 0)].dbytes is None and io[(254, 0)].dios is None


def test_io_stat_empty():
    assert parse_io_stat("") == {}
    # the root cgroup (6.1) prints devices without any counters: no entry, not zeros
    assert parse_io_stat("7:7 \n11:0 \n8:0 rbytes=1 wbytes=2 rios=3 wios=4\n") == {
        (8, 0): IoStat(1, 2, 3, 4, None, None)}


def test_memory_stat_doc_example():
    m = parse_flat_keyed(MEMORY_STAT_DOC)
    assert m["anon"] == 1048576 and m["inactive_file"] == 1572864
    assert m["pgmajfault"] == 3 and len(m) == MEMORY_STAT_DOC.count("\n")


def test_memory_events():
    ev = parse_flat_keyed(MEMORY_EVENTS_DOC)
    assert ev == {"low": 0, "high": 12, "max": 40, "oom": 1, "oom_kill": 1,
                  "oom_group_kill": 0}


def test_cpu_stat_with_and_without_cpu_controller():
    assert parse_cpu_stat(CPU_STAT_V2_FULL)[:6] == CpuStat(1000, 600, 400, 10, 3, 2500)[:6]
    core_only = parse_cpu_stat("usage_usec 5\nuser_usec 3\nsystem_usec 2\n")
    assert core_only.usage_usec == 5
    assert core_only.nr_periods is None and core_only.throttled_usec is None


def test_pressure_some_and_full():
    p = parse_pressure("some avg10=1.18 avg60=2.57 avg300=1.11 total=6346783\n"
                       "full avg10=1.06 avg60=2.49 avg300=1.05 total=5990604\n")
    assert p == Pressure(PressureLine(1.18, 2.57, 1.11, 6346783),
                         PressureLine(1.06, 2.49, 1.05, 5990604))
    # cpu.pressure before 5.13 had no "full" line
    assert parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n").full is None
    with pytest.raises(ValueError):
        parse_pressure("")


def test_events():
    assert parse_events("populated 1\nfrozen 0\n") == CgroupEvents(True, False)
    assert parse_events("populated 0\nfrozen 1\n") == CgroupEvents(False, True)


def test_int_or_max():
    assert parse_int_or_max("max\n") is None
    assert parse_int_or_max("123\n") == 123
    with pytest.raises(ValueError):
        parse_int_or_max("12x")


def test_cpuset_parse_and_format():
    assert parse_cpuset("0-3,5,7-8\n") == frozenset({0, 1, 2, 3, 5, 7, 8})
    assert parse_cpuset("\n") == frozenset()
    assert format_cpuset({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    with pytest.raises(ValueError):
        parse_cpuset("3-1")


@given(st.frozensets(st.integers(0, 511), max_size=64))
def test_cpuset_round_trip(cpus):
    assert parse_cpuset(format_cpuset(cpus)) == cpus


# -- captured from real kernels -------------------------------------------

def test_there_are_captured_fixtures():
    assert fixture_dirs(), "tests/unit/fixtures/ has no captured kernel folder"


def _files(name):
    found = fixture_files(name)
    if not found:
        pytest.skip(f"no kernel capture has {name}")  # per-file; the folder test above guards
    return found


def test_captured_cpu_stat():
    for path in _files("cpu.stat"):
        c = parse_cpu_stat(read_fixture(path))
        assert c.usage_usec is not None and c.usage_usec >= 0, path
        assert c.usage_usec >= c.user_usec, path
        assert c.user_usec + c.system_usec <= c.usage_usec + 1, path


@pytest.mark.parametrize("res", ["cpu", "memory", "io"])
def test_captured_pressure(res):
    for path in _files(f"{res}.pressure"):
        p = parse_pressure(read_fixture(path))
        assert p.some.total_usec >= 0 and 0 <= p.some.avg10 <= 100, path
        if p.full is not None:
            assert p.full.total_usec <= p.some.total_usec, path


def test_captured_events():
    for path in _files("cgroup.events"):
        ev = parse_events(read_fixture(path))
        assert isinstance(ev.populated, bool) and isinstance(ev.frozen, bool)


def test_captured_memory_files():
    for path in _files("memory.stat"):
        m = parse_flat_keyed(read_fixture(path))
        for key in ("anon", "file", "kernel_stack", "inactive_file", "pgfault"):
            assert key in m, (path, key)
    for path in fixture_files("memory.events"):
        ev = parse_flat_keyed(read_fixture(path))
        assert {"low", "high", "max", "oom", "oom_kill"} <= set(ev), path


def test_captured_io_stat():
    for path in _files("io.stat"):
        for dev, io in parse_io_stat(read_fixture(path)).items():
            assert dev[0] >= 0 and io.rbytes >= 0 and io.wbytes >= 0, path


def test_read_sample_on_captured_folder(fixture_dir):
    """read_sample over a captured folder: present files typed, absent ones None."""
    sample = read_sample(Cgroup(fixture_dir))
    assert isinstance(sample, CgroupSample)
    assert sample.inode == os.stat(fixture_dir).st_ino
    for field, (file, _parser) in stats.SAMPLE_FILES.items():
        present = os.path.isfile(os.path.join(fixture_dir, file))
        value = getattr(sample, field)
        assert (value is not None) == present, (fixture_dir, field)


def test_read_sample_absent_is_none_not_zero(tmp_path):
    (tmp_path / "cpu.stat").write_text("usage_usec 7\nuser_usec 4\nsystem_usec 3\n")
    sample = read_sample(Cgroup(str(tmp_path)))
    assert sample.cpu.usage_usec == 7
    assert sample.memory_current is None and sample.io is None
    assert sample.pids_current is None and sample.memory_stat is None
    assert working_set(sample) is None


def test_working_set():
    s = CgroupSample(memory_current=5000, memory_stat={"inactive_file": 1000})
    assert working_set(s) == 4000
    assert working_set(s._replace(memory_stat={"inactive_file": 9000})) == 0


KERNEL61 = os.path.join(os.path.dirname(__file__), "fixtures", "kernel-6.1")
needs_61 = pytest.mark.skipif(not os.path.isdir(KERNEL61), reason="no kernel-6.1 capture")


@needs_61
def test_captured_busy_cgroup_sample():
    s = read_sample(Cgroup(KERNEL61))
    assert s.io == {(7, 1): IoStat(2097152, 4194304, 4, 8, 0, 0),
                    (7, 0): IoStat(35581952, 4194304, 64, 8, 0, 0)}
    assert s.memory_current > 0 and s.memory_peak >= s.memory_current
    assert s.memory_events["high"] > 0  # memory.high was 64M under a bigger workload
    assert s.cpu.nr_periods > 0  # cpu.max set: the cpu controller counts periods
    assert s.pids_current >= 1 and s.events.populated
    assert s.cpuset_cpus_effective == frozenset({0, 1})
    assert 0 <= working_set(s) <= s.memory_current


@needs_61
def test_captured_frozen_oom_and_root():
    frozen = read_sample(Cgroup(os.path.join(KERNEL61, "frozen")))
    assert frozen.events == CgroupEvents(populated=True, frozen=True)
    oom = read_sample(Cgroup(os.path.join(KERNEL61, "oom")))
    assert oom.memory_events["oom_kill"] >= 1 and oom.memory_events["max"] > 0
    root = read_sample(Cgroup(os.path.join(KERNEL61, "root")))
    assert root.events is None and root.memory_current is None  # the root has neither file
    assert root.memory_stat is not None and root.cpu.usage_usec > 0
