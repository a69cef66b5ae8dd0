"""runtime.limits: what people type -> Limits -> cgroup file contents -> back."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from runtime.errors import LimitError
from runtime.limits import (MAX, IoMax, Limits, format_size, parse_cpus, parse_io_max,
                            parse_limit_files, parse_size, read_limits)
from runtime.cgroupfs import Cgroup

K, M, G, T = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize("text,expected", [
    ("1024", 1024), ("0", 0), ("512M", 512 * M), ("512m", 512 * M), ("1.5G", 1536 * M),
    ("1.5g", 1536 * M), ("2Gi", 2 * G), ("2GiB", 2 * G), ("2gb", 2 * G), ("1T", T),
    ("4k", 4 * K), ("4KiB", 4 * K), ("100b", 100), (" 64M ", 64 * M), ("max", MAX),
    ("MAX", MAX), (".5K", 512), ("0.3K", 307), ("1.1K", 1126), (2048, 2048),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["12Q", "-1", "-1M", "", "M", "1.5", "1..5G", "1e9", "0x10",
                                 "1 2", "12i", "nan", "inf", "max1", -5, True, "99999999P"])
def test_parse_size_rejects(bad):
    with pytest.raises(LimitError) as ei:
        parse_size(bad, "memory")
    msg = str(ei.value)
    assert msg.startswith("memory: ") and "\n" not in msg
    assert ei.value.field == "memory"


def test_size_error_message_exact():
    with pytest.raises(LimitError) as ei:
        Limits.parse(memory="12Q")
    assert str(ei.value) == ('memory: "12Q" is not a size; use bytes or a number with K, M, '
                             'G or T (e.g. 512M), or "max"')
    assert ei.value.value == "12Q"


@given(st.integers(0, 2**62))
def test_format_size_round_trip(n):
    assert parse_size(format_size(n)) == n


@pytest.mark.parametrize("text,expected", [
    ("0.5", (50000, 100000)), ("1", (100000, 100000)), ("2.25", (225000, 100000)),
    ("150%", (150000, 100000)), ("50%", (50000, 100000)), ("50000/100000", (50000, 100000)),
    ("25000/50000", (25000, 50000)), ("max", (MAX, 100000)), ("max/20000", (MAX, 20000)),
    (0.5, (50000, 100000)), (2, (200000, 100000)), ("0.01", (1000, 100000)),
])
def test_parse_cpus(text, expected):
    assert parse_cpus(text) == expected


@pytest.mark.parametrize("bad", ["abc", "-1", "0", "0.001", "1/0", "1000/999",
                                 "5000/2000000", "1/2/3", "%", "5%%", "", "1e400"])
def test_parse_cpus_rejects(bad):
    with pytest.raises(LimitError) as ei:
        parse_cpus(bad)
    assert str(ei.value).startswith("cpus: ") and "\n" not in str(ei.value)


def test_cpu_max_rendering():
    assert Limits.parse(cpus="0.5").files() == {"cpu.max": "50000 100000"}
    assert Limits.parse(cpus="max").files() == {"cpu.max": "max 100000"}
    assert Limits(cpu_period_us=20000).files() == {"cpu.max": "max 20000"}
    assert Limits(cpu_quota_us=30000).files() == {"cpu.max": "30000 100000"}


def test_weights_pids_cpuset_rendering():
    lim = Limits.parse(cpu_weight="300", io_weight=50, pids="100", cpuset_cpus="3,0-1",
                       cpuset_mems="0", memory_oom_group="true")
    assert lim.files() == {"cpu.weight": "300", "io.weight": "default 50", "pids.max": "100",
                           "cpuset.cpus": "0-1,3", "cpuset.mems": "0",
                           "memory.oom.group": "1"}
    assert lim.controllers() == {"cpu", "io", "pids", "cpuset", "memory"}
    assert Limits.parse(pids="max").files() == {"pids.max": "max"}


@pytest.mark.parametrize("kw", [
    {"cpu_weight": 0}, {"cpu_weight": "10001"}, {"io_weight": "abc"}, {"cpu_weight": 1.5},
    {"pids": 0}, {"pids": "-3"}, {"pids": "ten"}, {"cpuset_cpus": "a-b"},
    {"cpuset_cpus": "3-1"}, {"memory_oom_group": "maybe"}, {"nonsense": "1"},
    {"io_max": "8:0"}, {"io_max": "8:0 rbps=1M rbps=2M"}, {"io_max": "8:0 xbps=1"},
    {"io_max": "8:0 riops=1.5"}, {"io_max": "8:0 rbps=0"}, {"io_max": "/no/such:rbps=1M"},
    {"io_max": ["8:0 rbps=1M", "8:0 wbps=1M"]}, {"cpu_period_us": 10},
])
def test_bad_values_name_the_field(kw):
    with pytest.raises(LimitError) as ei:
        Limits.parse(**kw)
    (key,) = kw
    assert str(ei.value).startswith(key) and "\n" not in str(ei.value)


def test_io_max_forms():
    a = parse_io_max("8:0 rbps=10M riops=100")
    assert a == IoMax(8, 0, rbps=10 * M, riops=100)
    assert a.render() == "8:0 rbps=10485760 wbps=max riops=100 wiops=max"
    assert parse_io_max("8:16 wbps=5M,wiops=max") == IoMax(8, 16, wbps=5 * M)


def test_io_max_device_path_resolves_to_majmin(tmp_path):
    import os
    # find any whole-disk block device node on this machine
    for name in sorted(os.listdir("/sys/block")):
        node = f"/dev/{name}"
        if os.path.exists(node):
            break
    else:
        pytest.skip("no block device node in /dev")
    st_ = os.stat(node)
    e = parse_io_max(f"{node}:rbps=10M,wbps=5M")
    assert (e.major, e.minor) == (os.major(st_.st_rdev), os.minor(st_.st_rdev))
    assert (e.rbps, e.wbps) == (10 * M, 5 * M)
    with pytest.raises(LimitError, match="not a block device"):
        parse_io_max("/dev/null:rbps=1M")


def test_describe_human_forms():
    d = Limits.parse(memory="1.5G", cpus="10", pids=5, io_max="8:0 rbps=1M").describe()
    assert d == {"memory_max": "1536M", "cpus": "10", "pids_max": "5",
                 "io_max": "8:0 rbps=1048576 wbps=max riops=max wiops=max"}
    assert Limits.parse(cpus="0.5").describe() == {"cpus": "0.5"}
    assert Limits.parse(cpus="33333/100000").describe() == {"cpus": "0.3333"}
    assert Limits.parse(cpus="max").describe() == {"cpus": "max"}


@given(st.integers(100, 10**6).map(lambda n: n * 10))
def test_format_cpus_round_trip(quota):
    from runtime.limits import format_cpus
    # 4 decimals of a core at the default period are exact to 10 microseconds
    assert parse_cpus(format_cpus(quota, 100000)) == (quota, 100000)


def test_merge_and_json():
    a = Limits.parse(memory="1G", cpus="1", pids=10)
    b = Limits.parse(memory="2G", io_max="8:0 rbps=1M")
    m = a.merge(b)
    assert m.memory_max == 2 * G and m.cpu_quota_us == 100000 and m.pids_max == 10
    assert m.io_max == (IoMax(8, 0, rbps=M),)
    import json
    assert Limits.from_json(m.to_json()) == m
    assert Limits.from_json(json.dumps(m.to_json())) == m
    assert Limits.from_json(None) == Limits() and Limits().is_empty()


# -- property: render -> kernel files -> read back ----------------------------

sizes = st.one_of(st.just(MAX), st.integers(0, 2**62))
opt = lambda s: st.one_of(st.none(), s)  # noqa: E731
rates = st.one_of(st.none(), st.integers(1, 2**40))
io_entries = st.lists(st.builds(IoMax, st.integers(1, 300), st.integers(0, 255), rates, rates,
                                rates, rates), max_size=3,
                      unique_by=lambda e: (e.major, e.minor))
cpusets = st.frozensets(st.integers(0, 63), max_size=10).map(
    lambda s: __import__("runtime.stats", fromlist=["x"]).format_cpuset(s))


@st.composite
def limits_values(draw):
    quota = draw(opt(st.one_of(st.just(MAX), st.integers(1000, 10**7))))
    return Limits(
        memory_max=draw(opt(sizes)), memory_high=draw(opt(sizes)), memory_low=draw(opt(sizes)),
        memory_swap_max=draw(opt(sizes)), memory_oom_group=draw(opt(st.booleans())),
        cpu_quota_us=quota,
        cpu_period_us=draw(st.integers(1000, 10**6)) if quota is not None else None,
        cpu_weight=draw(opt(st.integers(1, 10000))), io_weight=draw(opt(st.integers(1, 10000))),
        io_max=draw(opt(io_entries.filter(bool))),
        pids_max=draw(opt(st.one_of(st.just(MAX), st.integers(1, 2**31)))),
        cpuset_cpus=draw(opt(cpusets)), cpuset_mems=draw(opt(cpusets)))


@settings(max_examples=100, deadline=None)
@given(limits_values())
def test_files_parse_back_round_trip(lim):
    texts = {f: t + "\n" for f, t in lim.files().items()}
    assert parse_limit_files(texts) == lim


@settings(max_examples=30, deadline=None)
@given(limits_values())
def test_read_limits_from_directory_round_trip(tmp_path_factory, lim):
    d = tmp_path_factory.mktemp("cg")
    for f, t in lim.files().items():
        (d / f).write_text(t + "\n")
    assert read_limits(Cgroup(str(d))) == lim


@settings(max_examples=100, deadline=None)
@given(limits_values())
def test_json_round_trip(lim):
    import json
    assert Limits.from_json(json.loads(json.dumps(lim.to_json()))) == lim


@given(st.decimals(min_value="0.01", max_value="512", places=3))
def test_cpus_cores_property(cores):
    quota, period = parse_cpus(str(cores))
    assert period == 100000
    assert abs(quota - cores * period) <= 0.5


@given(st.integers(1, 10**6).map(lambda n: n * 1000) if False else st.integers(1, 100000))
def test_parse_size_units_property(n):
    assert parse_size(f"{n}K") == n * K
    assert parse_size(f"{n}Mi") == n * M
    assert parse_size(str(n)) == n


# -- apply_limits on a plain directory laid out like a cgroup ------------------

def _fake_cgroup(tmp_path, controllers, files):
    (tmp_path / "cgroup.controllers").write_text(" ".join(controllers) + "\n")
    (tmp_path / "cgroup.procs").write_text("")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return Cgroup(str(tmp_path))


def test_apply_writes_and_reads_back(tmp_path):
    from runtime.apply import apply_limits
    cg = _fake_cgroup(tmp_path, ["memory", "pids"],
                      {"memory.max": "max\n", "memory.high": "max\n", "pids.max": "max\n"})
    got = apply_limits(cg, Limits.parse(memory="64M", pids=10))
    assert (tmp_path / "memory.max").read_text() == str(64 * M)
    assert got.memory_max == 64 * M and got.pids_max == 10 and got.memory_high == MAX


def test_apply_failure_midway_restores_what_was_written(tmp_path):
    from runtime.apply import apply_limits
    from runtime.errors import CgroupError
    cg = _fake_cgroup(tmp_path, ["memory", "pids"], {"memory.max": "max\n",
                                                      "memory.low": "0\n"})
    # readable, but every write fails (EIO): the third file written
    (tmp_path / "pids.max").symlink_to("/proc/version")
    with pytest.raises(CgroupError) as ei:
        apply_limits(cg, Limits.parse(memory="64M", memory_low="1M", pids=10))
    assert "pids.max" in str(ei.value)
    assert (tmp_path / "memory.max").read_text().strip() == "max"
    assert (tmp_path / "memory.low").read_text().strip() == "0"


def test_apply_refuses_before_writing_when_controller_missing(tmp_path):
    from runtime.apply import apply_limits
    from runtime.errors import ControllerMissing
    cg = _fake_cgroup(tmp_path, ["memory"], {"memory.max": "max\n", "pids.max": "max\n"})
    with pytest.raises(ControllerMissing) as ei:
        apply_limits(cg, Limits.parse(memory="64M", pids=10))
    assert ei.value.controller == "pids"
    assert (tmp_path / "memory.max").read_text() == "max\n"


# -- limits files captured from the VM's kernel (tests/vm/capture_fixtures.py) --

import os  # noqa: E402

KERNEL61 = os.path.join(os.path.dirname(__file__), "fixtures", "kernel-6.1")
needs_61 = pytest.mark.skipif(not os.path.isdir(KERNEL61), reason="no kernel-6.1 capture")

# What tests/vm/capture_fixtures.py wrote into the "busy" cgroup (CAPTURED.txt).
BUSY_WRITTEN = {
    "cpu.max": "50000 100000", "cpu.weight": "200", "memory.max": "268435456",
    "memory.high": "67108864", "memory.low": "16777216", "memory.swap.max": "0",
    "pids.max": "64", "cpuset.cpus": "0-1", "cpuset.mems": "0", "io.weight": "default 150",
    "io.max": "7:0 wbps=8388608 riops=2000\n7:1 rbps=16777216 wiops=500",
}


@needs_61
def test_read_limits_of_captured_busy_cgroup():
    lim = read_limits(Cgroup(KERNEL61))
    assert lim == Limits(
        memory_max=256 * M, memory_high=64 * M, memory_low=16 * M, memory_swap_max=0,
        memory_oom_group=False, cpu_quota_us=50000, cpu_period_us=100000, cpu_weight=200,
        io_weight=150, io_max=(IoMax(7, 0, wbps=8 * M, riops=2000),
                               IoMax(7, 1, rbps=16 * M, wiops=500)),
        pids_max=64, cpuset_cpus="0-1", cpuset_mems="0")
    # what we render for those limits is what the capture wrote, key for key
    # (io.max: we always spell out all four keys, "max" for the unset ones)
    mine = Limits.parse(cpus="0.5", cpu_weight=200, memory="256M", memory_high="64M",
                        memory_low="16M", memory_swap=0, pids=64, cpuset_cpus="0-1",
                        cpuset_mems="0", io_weight=150,
                        io_max=["7:0 wbps=8M,riops=2000", "7:1 rbps=16M wiops=500"])
    files = mine.files()
    for f, text in BUSY_WRITTEN.items():
        if f == "io.max":
            assert [parse_io_max(x) for x in files[f].splitlines()] == \
                   [parse_io_max(x) for x in text.splitlines()]
        else:
            assert files[f] == text, f
    import dataclasses
    assert mine == dataclasses.replace(lim, memory_oom_group=None)


@needs_61
def test_read_limits_of_captured_unlimited_cgroup():
    lim = read_limits(Cgroup(os.path.join(KERNEL61, "unlimited")))
    assert lim == Limits(memory_max=MAX, memory_high=MAX, memory_low=0, memory_swap_max=MAX,
                         memory_oom_group=False, cpu_quota_us=MAX, cpu_period_us=100000,
                         cpu_weight=100, io_weight=100, io_max=(), pids_max=MAX,
                         cpuset_cpus="", cpuset_mems="")


@needs_61
def test_read_limits_of_captured_root_has_no_limit_files():
    assert read_limits(Cgroup(os.path.join(KERNEL61, "root"))) == Limits()


def test_apply_io_max_replaces_the_whole_device_set(tmp_path):
    from runtime.apply import apply_limits
    cg = _fake_cgroup(tmp_path, ["io"],
                      {"io.max": "8:0 rbps=1024 wbps=max riops=max wiops=max\n"})
    apply_limits(cg, Limits(io_max=()))
    # (a real io.max drops the all-max line; a plain file keeps the last write)
    assert (tmp_path / "io.max").read_text() == "8:0 rbps=max wbps=max riops=max wiops=max"
    assert apply_limits(cg, Limits(io_max=(IoMax(8, 0, wbps=M),))).io_max == (
        IoMax(8, 0, wbps=M),)
