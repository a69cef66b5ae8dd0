"""agent.collector against real cgroups of this host's cgroup2 hierarchy.

Containers are plain cgroups made by the test, handed to the Collector as
ContainerInfo through the same ``containers`` callable the supervisor gives
it. Watch roots are real directories whose new children must come in through
inotify.
"""
from __future__ import annotations

import os
import sys

import pytest

from agent import selfmetrics
from agent.collector import Snapshot
from agent.config import load_config
from agent.model import ContainerInfo
from runtime import stats

SPIN = [sys.executable, "-c", "import os\nos.read(0, 1)\nwhile True: pass"]   # burns CPU once fed a byte


def config(mount, watch_roots=(), interval="100ms"):
    return load_config(None, {"collector.interval": interval,
                              "collector.watch_roots": [r[len(mount):] if r.startswith(mount) else r
                                                        for r in watch_roots],
                              "agent.metrics_listen": "127.0.0.1:0"})


def info_for(cg, cid="c0ffee000001", name="t") -> ContainerInfo:
    return ContainerInfo(id=cid, name=name, cgroup=cg.path, limits=None, state="running")


def usage(cg) -> int:
    return stats.parse_cpu_stat(cg.read("cpu.stat")).usage_usec


@pytest.fixture(autouse=True)
def _fresh_selfmetrics():
    selfmetrics.reset()


def test_cpu_usage_is_the_kernels_at_read_time_and_grows(cgroup, cgroup_mount, spawn, collectors):
    import subprocess
    p = spawn(SPIN, cgroup=cgroup, stdin=subprocess.PIPE)
    infos = [info_for(cgroup)]
    col = collectors(config(cgroup_mount), lambda: infos)
    first = col.collect_once()
    assert isinstance(first, Snapshot) and first.seq == 1
    assert first.containers["c0ffee000001"] is infos[0]
    u0 = first.samples[cgroup.path].cpu.usage_usec
    p.stdin.write(b"x")
    p.stdin.flush()
    # spin until the kernel has charged at least 50 ms more CPU to the cgroup
    while usage(cgroup) < u0 + 50_000:
        os.sched_yield()
    before = usage(cgroup)
    snap = col.collect_once()
    after = usage(cgroup)
    got = snap.samples[cgroup.path].cpu.usage_usec
    assert before <= got <= after
    assert got > u0
    assert snap.seq == 2 and snap.errors == 0
    assert snap.rel_id(cgroup.path) == cgroup.path[len(cgroup_mount):]
    # sample_now: a full independent read of every file
    final = col.sample_now(infos[0])
    assert final.cpu.usage_usec >= got
    assert final.events.populated is True


def test_watch_root_children_come_and_go_through_inotify(cgroup, cgroup_mount, collectors, monkeypatch):
    os.mkdir(os.path.join(cgroup.path, "old"))
    os.mkdir(os.path.join(cgroup.path, "old", "deep"))
    col = collectors(config(cgroup_mount, [cgroup.path]), lambda: [])
    col.collect_once()
    assert set(col.latest().samples) == {cgroup.path, f"{cgroup.path}/old", f"{cgroup.path}/old/deep"}

    # quiet passes list no directory: discovery is event-driven, not a rescan
    listed = []
    real_scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda p=".": listed.append(p) or real_scandir(p))
    col.collect_once()
    col.collect_once()
    assert listed == []

    new = os.path.join(cgroup.path, "new")
    os.mkdir(new)
    os.mkdir(os.path.join(new, "child"))      # may race the watch on "new": still found
    snap = col.collect_once()
    assert new in snap.samples and f"{new}/child" in snap.samples
    assert snap.samples[new].cpu is not None

    os.rmdir(f"{new}/child")
    os.rmdir(new)
    os.rmdir(f"{cgroup.path}/old/deep")
    snap = col.collect_once()
    assert set(snap.samples) == {cgroup.path, f"{cgroup.path}/old"}
    assert snap.errors == 0                    # removed through inotify, before any read failed


def test_watch_root_created_after_start_appears_with_the_thread_running(cgroup, cgroup_mount, collectors):
    col = collectors(config(cgroup_mount, [cgroup.path], interval="50ms"), lambda: [])
    col.start()
    first = col.wait_for(1, 10)
    assert first is not None and set(first.samples) == {cgroup.path}
    path = os.path.join(cgroup.path, "late")
    os.mkdir(path)
    seq = first.seq
    for _ in range(200):                       # bounded: 200 passes
        snap = col.wait_for(seq + 1, 10)
        seq = snap.seq
        if path in snap.samples:
            break
    assert path in snap.samples
    assert selfmetrics.get("cgroups_watched") == 2
    os.rmdir(path)
    for _ in range(200):
        snap = col.wait_for(seq + 1, 10)
        seq = snap.seq
        if path not in snap.samples:
            break
    assert path not in snap.samples
    assert selfmetrics.get("cgroups_vanished_total") == 0


def test_a_vanished_container_cgroup_is_dropped_counted_and_the_pass_goes_on(cgroup_factory, cgroup_mount, collectors):
    a, b = cgroup_factory(), cgroup_factory()
    infos = [info_for(a, "aaaaaaaaaaaa", "a"), info_for(b, "bbbbbbbbbbbb", "b")]
    col = collectors(config(cgroup_mount), lambda: infos, slow_every=1, idle_every=1)
    assert set(col.collect_once().samples) == {a.path, b.path}
    os.rmdir(a.path)                           # gone under the collector's open descriptors
    snap = col.collect_once()
    assert set(snap.samples) == {b.path}
    assert snap.errors == 1
    assert selfmetrics.get("cgroups_vanished_total") == 1
    assert selfmetrics.get("collection_errors_total", reason="vanished") == 1
    assert col.sample_now(infos[0]) is None
    # the container stays listed (the supervisor decides), without a sample
    assert "aaaaaaaaaaaa" in snap.containers and snap.sample_for(infos[0]) is None
    os.mkdir(a.path)                           # same name, new cgroup: read again
    assert a.path in col.collect_once().samples


def test_frozen_and_populated_are_fresh_every_pass(cgroup, cgroup_mount, spawn, collectors):
    spawn(["sleep", "60"], cgroup=cgroup)
    infos = [info_for(cgroup)]
    col = collectors(config(cgroup_mount), lambda: infos)
    assert col.collect_once().samples[cgroup.path].events.frozen is False
    cgroup.write("cgroup.freeze", "1")
    while "frozen 1" not in cgroup.read("cgroup.events"):
        os.sched_yield()
    ev = col.collect_once().samples[cgroup.path].events
    assert ev.frozen is True and ev.populated is True
    cgroup.write("cgroup.freeze", "0")


def test_idle_cgroup_is_not_parsed_again(cgroup_factory, cgroup_mount, spawn, collectors):
    import subprocess
    idle, busy = cgroup_factory(), cgroup_factory()
    p = spawn(SPIN, cgroup=busy, stdin=subprocess.PIPE)
    p.stdin.write(b"x")
    p.stdin.flush()
    infos = [info_for(idle, "111111111111", "idle"), info_for(busy, "222222222222", "busy")]
    col = collectors(config(cgroup_mount), lambda: infos)
    s1 = col.collect_once()
    u = usage(busy)
    while usage(busy) == u:
        os.sched_yield()
    s2 = col.collect_once()
    assert s2.samples[idle.path] is s1.samples[idle.path]      # unchanged files: same object
    assert s2.samples[busy.path] is not s1.samples[busy.path]
    assert s2.samples[busy.path].cpu.usage_usec > s1.samples[busy.path].cpu.usage_usec


def test_a_raising_subscriber_is_counted_and_never_stops_the_collector(cgroup, cgroup_mount, collectors):
    seen = []

    def bad(snap):
        raise RuntimeError("subscriber bug")

    col = collectors(config(cgroup_mount, interval="20ms"), lambda: [info_for(cgroup)])
    col.subscribe(bad)
    col.subscribe(seen.append)
    col.start()
    snap = col.wait_for(4, 10)       # published after pass 3's callbacks ran
    assert snap is not None and snap.seq >= 4
    assert selfmetrics.get("subscriber_errors_total") >= 3
    assert [s.seq for s in seen[:3]] == [1, 2, 3]
    assert col.latest().seq >= 3


def test_containers_callable_failure_keeps_the_last_list(cgroup, cgroup_mount, collectors):
    infos = [info_for(cgroup)]
    calls = []

    def containers():
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("supervisor busy")
        return infos

    col = collectors(config(cgroup_mount), containers)
    col.collect_once()
    snap = col.collect_once()
    assert cgroup.path in snap.samples and "c0ffee000001" in snap.containers
    assert selfmetrics.get("collection_errors_total", reason="containers") == 1


def test_beyond_the_descriptor_limit_cgroups_are_still_read(cgroup_factory, cgroup_mount, spawn, collectors):
    import resource
    cgs = [cgroup_factory() for _ in range(3)]
    for cg in cgs:
        spawn(["sleep", "60"], cgroup=cg)
    infos = [info_for(cg, f"{i:012x}", f"c{i}") for i, cg in enumerate(cgs)]
    col = collectors(config(cgroup_mount), lambda: infos)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 8, hard))   # room for one reader only
    try:
        col.collect_once()
        snap = col.collect_once()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert selfmetrics.get("collection_errors_total", reason="fd_limit") >= 1
    assert set(snap.samples) == {cg.path for cg in cgs}
    for cg in cgs:
        s = snap.samples[cg.path]
        assert s.cpu.usage_usec == usage(cg)           # sleeping: stable
        assert s.events.populated is True


# A process with a known set of descriptors (a socketpair and an open file) and
# three threads, all asleep: what the [collector] enable sets must find.
KNOWN = [sys.executable, "-c", """
import os, socket, threading, time
a, b = socket.socketpair()
f = open("/proc/self/status")
for _ in range(3):
    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
os.write(1, b"r")
time.sleep(600)
"""]


def test_optional_sets_walk_the_real_processes(cgroup, cgroup_mount, spawn, collectors):
    import subprocess
    p = spawn(KNOWN, cgroup=cgroup, stdout=subprocess.PIPE)
    assert p.stdout.read(1) == b"r"
    infos = [info_for(cgroup)]
    off = collectors(config(cgroup_mount), lambda: infos).collect_once()
    assert off.samples[cgroup.path].processes is None and off.samples[cgroup.path].hugetlb is None
    cfg = load_config(None, {"collector.enable": ["process", "cpuLoad", "hugetlb"]})
    snap = collectors(cfg, lambda: infos).collect_once()
    ps = snap.samples[cgroup.path].processes
    fds = os.listdir(f"/proc/{p.pid}/fd")
    socks = [n for n in fds if os.readlink(f"/proc/{p.pid}/fd/{n}").startswith("socket:")]
    assert len(socks) == 2 and ps.sockets == 2
    assert ps.file_descriptors == len(fds)
    assert ps.threads == 4 == len(os.listdir(f"/proc/{p.pid}/task"))
    assert ps.tasks_state == (4, 0, 0, 0)            # all four asleep
    with open(f"/proc/{p.pid}/limits") as f:
        soft = [ln.split()[3] for ln in f if ln.startswith("Max open files")][0]
    assert ps.max_open_files == (-1 if soft == "unlimited" else int(soft))
    # a watched (non-container) cgroup is never walked: its processes are not ours
    assert all(s.processes is None for path, s in snap.samples.items() if path != cgroup.path)


def test_root_cgroup_and_machine_facts(cgroup, cgroup_mount, collectors):
    infos = [info_for(cgroup)]
    snap = collectors(config(cgroup_mount), lambda: infos).collect_once()
    assert cgroup_mount not in snap.samples                # not a watched cgroup: cgroups_watched unchanged
    root = snap.root
    kernel = stats.parse_cpu_stat(open(os.path.join(cgroup_mount, "cpu.stat")).read()).usage_usec
    assert 0 < root.cpu.usage_usec <= kernel
    with open("/proc/meminfo") as f:
        mem = {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in f if ln.split()[-1] == "kB"}
    assert root.memory_current is not None and 0 < root.memory_current <= mem["MemTotal"]
    assert "inactive_file" in root.memory_stat
    m = snap.machine
    assert m.cpu_cores == os.cpu_count() and m.memory_bytes == mem["MemTotal"]
    assert 1 <= m.cpu_sockets <= m.cpu_physical_cores <= m.cpu_cores
    with open("/proc/sys/kernel/random/boot_id") as f:
        assert m.boot_id == f.read().strip()
