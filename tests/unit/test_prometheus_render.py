"""exporters.prometheus: rendering Snapshots into Prometheus text and OpenMetrics.

Samples are built by the real parsers (runtime.stats) from cgroup files
captured on real kernels (tests/unit/fixtures/<kernel>/), plus one
full-cgroup-v2 set of file texts in the kernel's format for the families the
hybrid host cannot show. Output is parsed back with prometheus_client's own
parsers.
"""
from __future__ import annotations

import os
from types import MappingProxyType

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families as text_parse

from agent import selfmetrics
from agent.collector import Snapshot
from agent.model import ContainerInfo
from exporters import prometheus
from exporters.metrics_server import parse_listen, wants_openmetrics
from runtime import stats
from runtime.limits import Limits

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def fixture_dirs() -> list[str]:
    if not os.path.isdir(FIXTURES):
        return []
    return sorted(os.path.join(FIXTURES, d) for d in os.listdir(FIXTURES)
                  if os.path.isdir(os.path.join(FIXTURES, d)))

MOUNT = "/sys/fs/cgroup"

FULL_V2 = {
    "cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 40\n"
                "nr_throttled 12\nthrottled_usec 750000\nnr_bursts 0\nburst_usec 0\n",
    "memory.current": "10485760\n",
    "memory.peak": "20971520\n",
    "memory.swap.current": "4096\n",
    "memory.stat": "anon 6291456\nfile 3145728\nkernel 262144\nshmem 0\nfile_mapped 1048576\n"
                   "active_file 1048576\ninactive_file 2097152\npgfault 1234\npgmajfault 5\n",
    "memory.events": "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n",
    "io.stat": "8:0 rbytes=4096 wbytes=1048576 rios=1 wios=256 dbytes=0 dios=0\n",
    "pids.current": "3\n",
    "cpu.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=1500000\n"
                    "full avg10=0.00 avg60=0.00 avg300=0.00 total=250000\n",
    "memory.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=100\n"
                       "full avg10=0.00 avg60=0.00 avg300=0.00 total=50\n",
    "io.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=2000\n"
                   "full avg10=0.00 avg60=0.00 avg300=0.00 total=1000\n",
    "cgroup.events": "populated 1\nfrozen 1\n",
}


def sample_from_texts(texts: dict[str, str], inode=1) -> stats.CgroupSample:
    values = {"inode": inode}
    for fld, (file, parser) in stats.SAMPLE_FILES.items():
        values[fld] = parser(texts[file]) if file in texts else None
    return stats.CgroupSample(**values)


def sample_from_dir(d: str) -> stats.CgroupSample:
    texts = {}
    for fld, (file, parser) in stats.SAMPLE_FILES.items():
        if os.path.isfile(os.path.join(d, file)):
            with open(os.path.join(d, file)) as f:
                texts[file] = f.read()
    return sample_from_texts(texts)


def cgroup_fixture_dirs() -> list[str]:
    """Every captured cgroup: each kernel folder and its sub-folders holding cpu.stat."""
    out = []
    for d in fixture_dirs():
        for sub in [d] + sorted(os.path.join(d, x) for x in os.listdir(d)):
            if os.path.isfile(os.path.join(sub, "cpu.stat")):
                out.append(sub)
    return out


def make_snapshot(samples: dict, infos=(), taken_at=1_700_000_000.5) -> Snapshot:
    return Snapshot(taken_at=taken_at, monotonic=100.0, duration=0.01,
                    samples=MappingProxyType(dict(samples)),
                    containers=MappingProxyType({i.id: i for i in infos}),
                    mount=MOUNT, devices=MappingProxyType({(8, 0): "/dev/sda"}), seq=1)


def info(cid="0123456789ab", name="web", labels=None, limits=None, state="running", **kw):
    return ContainerInfo(id=cid, name=name, cgroup=f"{MOUNT}/agent/containers/{cid}",
                         limits=limits or Limits(), state=state, labels=labels or {},
                         image="/srv/images/web/rootfs", started_at=1_699_999_000.0, **kw)


def parsed(snapshot, allow=(), om=False) -> dict:
    body = prometheus.render(snapshot, allow, openmetrics=om).decode()
    fams = om_parse(body) if om else text_parse(body)
    return {f.name: f for f in fams}


def series(fams, family, **match):
    """Samples of ``family`` (counter families are named without _total by the parser)."""
    fam = fams.get(family) or fams.get(family.removesuffix("_total"))
    if fam is None:
        return []
    return [s for s in fam.samples if all(s.labels.get(k) == v for k, v in match.items())]


@pytest.fixture(autouse=True)
def _fresh_selfmetrics():
    selfmetrics.reset()
    yield
    selfmetrics.reset()


@pytest.mark.parametrize("d", cgroup_fixture_dirs(),
                         ids=lambda d: os.path.relpath(d, os.path.dirname(os.path.dirname(d))))
def test_fixture_cgroup_renders_what_the_kernel_offers_and_nothing_else(d):
    sample = sample_from_dir(d)
    path = f"{MOUNT}/system.slice/x.service"
    fams = parsed(make_snapshot({path: sample}))
    lbl = {"id": "/system.slice/x.service", "name": "", "image": ""}
    if sample.cpu is not None and sample.cpu.usage_usec is not None:
        (s,) = series(fams, "container_cpu_usage_seconds_total", cpu="total", **lbl)
        assert s.value == pytest.approx(sample.cpu.usage_usec / 1e6)
    # absent in the kernel -> absent in /metrics (never a made-up 0)
    if sample.memory_current is not None:
        (s,) = series(fams, "container_memory_usage_bytes", **lbl)
        assert s.value == sample.memory_current
        if sample.memory_stat is not None:
            (s,) = series(fams, "container_memory_working_set_bytes", **lbl)
            assert s.value == max(0, sample.memory_current - sample.memory_stat["inactive_file"])
    if sample.memory_events is not None:
        (s,) = series(fams, "container_oom_events_total", **lbl)
        assert s.value == sample.memory_events["oom_kill"]
    if sample.io:
        for (maj, mnr), st in sample.io.items():
            if st.rbytes is None:   # "7:7 " (a device line without counters)
                assert not series(fams, "container_blkio_device_usage_total", major=str(maj),
                                  minor=str(mnr), **lbl)
                continue
            (s,) = series(fams, "container_blkio_device_usage_total", major=str(maj), minor=str(mnr),
                          operation="Read", **lbl)
            assert s.value == st.rbytes
    if sample.cpu is not None and sample.cpu.nr_throttled is not None:
        (s,) = series(fams, "container_cpu_cfs_throttled_periods_total", **lbl)
        assert s.value == sample.cpu.nr_throttled
    if sample.memory_current is None:
        assert not series(fams, "container_memory_usage_bytes")
        assert not series(fams, "container_memory_working_set_bytes")
    if sample.memory_stat is None:
        assert not series(fams, "container_memory_rss")
    if sample.cpu is not None and sample.cpu.nr_periods is None:
        assert not series(fams, "container_cpu_cfs_periods_total")
    if sample.io is None:
        assert not series(fams, "container_fs_reads_bytes_total")
    if sample.io_pressure is not None:
        (s,) = series(fams, "container_pressure_io_waiting_seconds_total", **lbl)
        assert s.value == pytest.approx(sample.io_pressure.some.total_usec / 1e6)
        if sample.io_pressure.full is not None:
            (s,) = series(fams, "container_pressure_io_stalled_seconds_total", **lbl)
            assert s.value == pytest.approx(sample.io_pressure.full.total_usec / 1e6)
    (s,) = series(fams, "container_last_seen", **lbl)
    assert s.value == pytest.approx(1_700_000_000.5)


def test_full_v2_container_values_match_the_files():
    ci = info(limits=Limits(memory_max=268435456, memory_low=1048576, memory_swap_max=0,
                            cpu_quota_us=50000, cpu_period_us=100000, cpu_weight=100),
              restart_count=3, oom_kills=2)
    fams = parsed(make_snapshot({ci.cgroup: sample_from_texts(FULL_V2)}, [ci]))
    lbl = {"id": "/agent/containers/0123456789ab", "name": "web", "image": "/srv/images/web/rootfs"}

    def one(family, **extra):
        found = series(fams, family, **lbl, **extra)
        assert len(found) == 1, (family, extra, found)
        return found[0].value

    assert one("container_cpu_usage_seconds_total", cpu="total") == 2.5
    assert one("container_cpu_user_seconds_total") == 2.0
    assert one("container_cpu_system_seconds_total") == 0.5
    assert one("container_cpu_cfs_periods_total") == 40
    assert one("container_cpu_cfs_throttled_periods_total") == 12
    assert one("container_cpu_cfs_throttled_seconds_total") == 0.75
    assert one("container_memory_usage_bytes") == 10485760
    assert one("container_memory_working_set_bytes") == 10485760 - 2097152
    assert one("container_memory_rss") == 6291456
    assert one("container_memory_cache") == 3145728
    assert one("container_memory_swap") == 4096
    assert one("container_memory_mapped_file") == 1048576
    assert one("container_memory_max_usage_bytes") == 20971520
    assert one("container_memory_failures_total", failure_type="pgfault", scope="container") == 1234
    assert one("container_memory_failures_total", failure_type="pgmajfault", scope="hierarchy") == 5
    assert one("container_oom_events_total") == 2
    assert one("container_fs_reads_bytes_total", device="/dev/sda") == 4096
    assert one("container_fs_writes_bytes_total", device="/dev/sda") == 1048576
    assert one("container_fs_reads_total", device="/dev/sda") == 1
    assert one("container_fs_writes_total", device="/dev/sda") == 256
    assert one("container_blkio_device_usage_total", device="/dev/sda", major="8", minor="0",
               operation="Write") == 1048576
    assert one("container_processes") == 3
    assert one("container_pressure_cpu_waiting_seconds_total") == 1.5
    assert one("container_pressure_cpu_stalled_seconds_total") == 0.25
    assert one("container_pressure_memory_stalled_seconds_total") == 0.00005
    assert one("container_pressure_io_waiting_seconds_total") == 0.002
    assert one("container_spec_memory_limit_bytes") == 268435456
    assert one("container_spec_memory_reservation_limit_bytes") == 1048576
    assert one("container_spec_memory_swap_limit_bytes") == 0
    assert one("container_spec_cpu_quota") == 50000
    assert one("container_spec_cpu_period") == 100000
    assert one("container_spec_cpu_shares") == prometheus.weight_to_shares(100)
    assert one("container_start_time_seconds") == 1_699_999_000.0
    assert one("cgroup_agent_container_state", state="running") == 1
    assert one("cgroup_agent_container_frozen") == 1
    assert one("cgroup_agent_container_restarts_total") == 3
    assert one("cgroup_agent_container_oom_kills_total") == 2


def test_unlimited_spec_exports_cadvisor_defaults():
    """cAdvisor (metrics/prometheus.go, specMemoryValue): an unlimited memory, swap or
    reservation limit is 0; the period is exported whatever the quota (cpu.max's
    default period 100000); shares are cpu.weight converted (kernel default 100);
    container_spec_cpu_quota only when a quota is set."""
    for limits in (Limits(), None, Limits(memory_max="max", memory_swap_max="max", cpu_quota_us="max")):
        ci = ContainerInfo(id="0123456789ab", name="web", cgroup=f"{MOUNT}/agent/containers/0123456789ab",
                           limits=limits, state="running", image="host", created_at=1.0)
        fams = parsed(make_snapshot({ci.cgroup: sample_from_texts(FULL_V2)}, [ci]))
        lbl = {"name": "web", "image": "host"}
        for name, want in (("container_spec_memory_limit_bytes", 0), ("container_spec_memory_swap_limit_bytes", 0),
                           ("container_spec_memory_reservation_limit_bytes", 0), ("container_spec_cpu_period", 100000),
                           ("container_spec_cpu_shares", 2597)):
            assert [x.value for x in series(fams, name, **lbl)] == [want], (limits, name)
        assert not series(fams, "container_spec_cpu_quota"), limits
        assert [x.value for x in series(fams, "container_creation_time_seconds", **lbl)] == [1.0]
    # a watched (non-container) cgroup has no spec: nothing invented for it
    fams = parsed(make_snapshot({f"{MOUNT}/system.slice/x.service": sample_from_texts(FULL_V2)}))
    assert not series(fams, "container_spec_memory_limit_bytes")


V2_MORE = dict(FULL_V2, **{
    "cpu.stat": FULL_V2["cpu.stat"].replace("nr_bursts 0\nburst_usec 0", "nr_bursts 4\nburst_usec 250000"),
    "memory.stat": FULL_V2["memory.stat"] + ("file_dirty 8192\nfile_writeback 4096\nworkingset_refault_anon 11\n"
                                             "workingset_refault_file 12\npgscan 13\npgsteal 14\n"),
    "memory.events": "low 0\nhigh 9\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n",
})


def test_more_cgroup_v2_families_follow_cadvisor():
    """Each value is the kernel file's, as cAdvisor's cgroup v2 handler maps it
    (container/libcontainer/handler.go and runc's fs2): failcnt = memory.events max,
    events_high/max from memory.events, kernel usage = memory.stat kernel,
    active/inactive file, dirty/writeback, refaults, pgscan/pgsteal from memory.stat,
    CFS burst periods and seconds from cpu.stat nr_bursts/burst_usec."""
    ci = info()
    fams = parsed(make_snapshot({ci.cgroup: sample_from_texts(V2_MORE)}, [ci]))
    lbl = {"id": "/agent/containers/0123456789ab", "name": "web"}

    def one(family, **extra):
        (found,) = series(fams, family, **lbl, **extra)
        return found.value

    assert one("container_cpu_cfs_burst_periods_total") == 4
    assert one("container_cpu_cfs_burst_seconds_total") == 0.25
    assert one("container_memory_failcnt") == 7
    assert one("container_memory_events_max_total") == 7
    assert one("container_memory_events_high_total") == 9
    assert one("container_memory_kernel_usage") == 262144
    assert one("container_memory_total_active_file_bytes") == 1048576
    assert one("container_memory_total_inactive_file_bytes") == 2097152
    assert one("container_memory_file_dirty_bytes") == 8192
    assert one("container_memory_file_writeback_bytes") == 4096
    assert one("container_memory_workingset_refault_anon_total") == 11
    assert one("container_memory_workingset_refault_file_total") == 12
    assert one("container_memory_pgscan_total") == 13
    assert one("container_memory_pgsteal_total") == 14
    # promtool-clean: the counters without _total are typed gauge, under cAdvisor's name
    assert fams["container_memory_failcnt"].type == "gauge"
    # off by default: the optional sets are absent when the collector did not read them
    for name in ("container_hugetlb_usage_bytes", "container_file_descriptors", "container_tasks_state",
                 "container_threads", "container_ulimits_soft"):
        assert name not in fams, name


def test_optional_sets_render_hugetlb_process_and_task_states():
    ci = info(limits=Limits(pids_max=64))
    sample = sample_from_texts(FULL_V2)._replace(
        hugetlb={"2MB": stats.HugetlbStat(4194304, 3), "1GB": stats.HugetlbStat(0, 0)},
        processes=stats.ProcessStats(file_descriptors=9, sockets=2, max_open_files=1024,
                                     tasks_state=(5, 1, 0, 2)))
    fams = parsed(make_snapshot({ci.cgroup: sample}, [ci]))
    lbl = {"id": "/agent/containers/0123456789ab", "name": "web"}

    def one(family, **extra):
        (found,) = series(fams, family, **lbl, **extra)
        return found.value

    assert one("container_hugetlb_usage_bytes", pagesize="2MB") == 4194304
    assert one("container_hugetlb_failcnt", pagesize="2MB") == 3
    assert one("container_hugetlb_usage_bytes", pagesize="1GB") == 0
    assert one("container_file_descriptors") == 9
    assert one("container_sockets") == 2
    assert one("container_threads") == 3          # pids.current (cAdvisor: PidsStats.Current)
    assert one("container_threads_max") == 64    # pids.max; 0 = unlimited
    assert one("container_ulimits_soft", ulimit="max_open_files") == 1024
    assert {s.labels["state"]: s.value for s in series(fams, "container_tasks_state", **lbl)} == \
        {"sleeping": 5, "running": 1, "stopped": 0, "uninterruptible": 2}


def test_root_cgroup_and_machine_series():
    from runtime.machine import MachineInfo
    ci = info()
    root = stats.CgroupSample(cpu=stats.CpuStat(9_000_000, 6_000_000, 3_000_000, None, None, None),
                              memory_current=1 << 30, memory_stat={"inactive_file": 1 << 20, "anon": 5})
    m = MachineInfo(4, 2, 1, 8 << 30, 1 << 30, (("Unbuffered-DDR4", 2, 8 << 30),), "b", "m", "u")
    snap = make_snapshot({ci.cgroup: sample_from_texts(FULL_V2)}, [ci])
    import dataclasses
    snap = dataclasses.replace(snap, root=root, machine=m)
    fams = parsed(snap, allow=("team",))
    (s,) = series(fams, "container_cpu_usage_seconds_total", id="/")
    assert s.value == 9.0 and s.labels["image"] == "" and s.labels["name"] == "" and s.labels["cpu"] == "total"
    (s,) = series(fams, "container_memory_working_set_bytes", id="/")
    assert s.value == (1 << 30) - (1 << 20)
    assert series(fams, "container_last_seen", id="/")
    assert not series(fams, "container_spec_memory_limit_bytes", id="/")
    # image!="" selects containers only
    ids = {x.labels["id"] for x in fams["container_cpu_usage_seconds"].samples if x.labels["image"] != ""}
    assert ids == {"/agent/containers/0123456789ab"}
    ml = {"boot_id": "b", "machine_id": "m", "system_uuid": "u"}
    for name, want in (("machine_cpu_cores", 4), ("machine_cpu_physical_cores", 2), ("machine_cpu_sockets", 1),
                       ("machine_memory_bytes", 8 << 30), ("machine_swap_bytes", 1 << 30)):
        assert [x.value for x in series(fams, name, **ml)] == [want], name
    assert [x.value for x in series(fams, "machine_dimm_count", type="Unbuffered-DDR4", **ml)] == [2]
    assert [x.value for x in series(fams, "machine_dimm_capacity_bytes", **ml)] == [8 << 30]


def test_every_family_keeps_one_label_set_with_allowlist():
    a = info("aaaaaaaaaaaa", "a", labels={"team": "pay", "tier": 'x"y\\z\n'})
    b = info("bbbbbbbbbbbb", "b", labels={})
    watched = f"{MOUNT}/system.slice/cron.service"
    snap = make_snapshot({a.cgroup: sample_from_texts(FULL_V2), b.cgroup: sample_from_texts(FULL_V2),
                          watched: sample_from_texts(FULL_V2)}, [a, b])
    for om in (False, True):
        fams = parsed(snap, allow=("team", "tier"), om=om)
        assert len(fams) >= 35
        for fam in fams.values():
            sets = {frozenset(k for k in s.labels if k != "le") for s in fam.samples}
            assert len(sets) == 1, (fam.name, sets)
        (s,) = series(fams, "container_memory_usage_bytes", name="a")
        assert s.labels["container_label_team"] == "pay"
        assert s.labels["container_label_tier"] == 'x"y\\z\n'   # escaped and parsed back
        (s,) = series(fams, "container_memory_usage_bytes", id="/system.slice/cron.service")
        assert s.labels["container_label_team"] == "" and s.labels["name"] == ""


def test_container_without_sample_still_has_state_but_no_usage():
    ci = info(state="exited")
    fams = parsed(make_snapshot({}, [ci]))
    assert series(fams, "cgroup_agent_container_state", state="exited", name="web")
    assert not series(fams, "container_cpu_usage_seconds_total")
    assert not series(fams, "cgroup_agent_container_frozen")


def test_selfmetrics_and_histogram_render_in_both_formats():
    selfmetrics.inc("launches_total", result="ok")
    selfmetrics.inc("launches_total", result="ok")
    selfmetrics.inc("collection_errors_total", reason="vanished")
    selfmetrics.observe_collection(0.003)
    selfmetrics.observe_collection(0.2)
    for om in (False, True):
        fams = parsed(make_snapshot({}), om=om)
        (s,) = series(fams, "cgroup_agent_launches_total", result="ok")
        assert s.value == 2
        (s,) = series(fams, "cgroup_agent_collection_errors_total", reason="vanished")
        assert s.value == 1
        h = fams["cgroup_agent_collection_duration_seconds"]
        assert h.type == "histogram"
        by = {(x.name, x.labels.get("le")): x.value for x in h.samples}
        assert by[("cgroup_agent_collection_duration_seconds_count", None)] == 2
        assert by[("cgroup_agent_collection_duration_seconds_bucket", "0.005")] == 1
        assert by[("cgroup_agent_collection_duration_seconds_bucket", "+Inf")] == 2
        build = fams.get("cgroup_agent_build_info") or fams["cgroup_agent_build"]
        assert build.samples[0].labels["version"]


def test_openmetrics_ends_with_eof_and_text_does_not():
    assert prometheus.render(None, openmetrics=True).endswith(b"# EOF\n")
    assert b"# EOF" not in prometheus.render(None)


def test_selfmetrics_rejects_a_second_label_set_and_bad_names():
    selfmetrics.inc("test_things_total", kind="a")
    with pytest.raises(ValueError):
        selfmetrics.inc("test_things_total", other="b")
    with pytest.raises(ValueError):
        selfmetrics.inc("no_suffix")
    with pytest.raises(ValueError):
        selfmetrics.set_gauge("gauge_total", 1)
    with pytest.raises(ValueError):
        selfmetrics.inc("test_things_total", -1, kind="a")
    assert selfmetrics.get("test_things_total", kind="a") == 1


@pytest.mark.parametrize("accept,om", [
    (None, False),
    ("text/plain;version=0.0.4", False),
    ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1", True),   # what Prometheus 2.x sends
    ("application/openmetrics-text;q=0.1,text/plain;q=0.9", False),
    ("application/openmetrics-text;q=0", False),
])
def test_content_negotiation(accept, om):
    assert wants_openmetrics(accept) is om


def test_parse_listen():
    assert parse_listen("127.0.0.1:9101") == ("127.0.0.1", 9101)
    assert parse_listen("[::1]:0") == ("::1", 0)
    with pytest.raises(ValueError, match="metrics_listen"):
        parse_listen("localhost")


def test_render_cache_never_serves_stale_series():
    ci = info()
    texts = dict(FULL_V2)
    s1 = sample_from_texts(texts)
    fams = parsed(make_snapshot({ci.cgroup: s1}, [ci]))
    assert series(fams, "container_cpu_usage_seconds_total", name="web")[0].value == 2.5
    # the same sample object again: same series (served from the cache), new last_seen
    fams = parsed(make_snapshot({ci.cgroup: s1}, [ci], taken_at=1_700_000_009.0))
    assert series(fams, "container_cpu_usage_seconds_total", name="web")[0].value == 2.5
    assert series(fams, "container_last_seen", name="web")[0].value == 1_700_000_009.0
    # a new sample: new values
    texts["cpu.stat"] = texts["cpu.stat"].replace("usage_usec 2500000", "usage_usec 3500000")
    fams = parsed(make_snapshot({ci.cgroup: sample_from_texts(texts)}, [ci]))
    assert series(fams, "container_cpu_usage_seconds_total", name="web")[0].value == 3.5
    # same sample, container renamed / relabelled: new labels everywhere
    s2 = sample_from_texts(texts)
    parsed(make_snapshot({ci.cgroup: s2}, [ci]))
    renamed = info(name="api")
    fams = parsed(make_snapshot({ci.cgroup: s2}, [renamed]))
    assert series(fams, "container_cpu_usage_seconds_total", name="api")
    assert not series(fams, "container_cpu_usage_seconds_total", name="web")
    fams = parsed(make_snapshot({ci.cgroup: s2}, [renamed]), allow=("team",))
    assert "container_label_team" in series(fams, "container_cpu_usage_seconds_total", name="api")[0].labels
