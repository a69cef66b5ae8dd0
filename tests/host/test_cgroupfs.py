"""runtime.cgroupfs and runtime.stats on this machine's cgroup2 hierarchy."""
from __future__ import annotations

import os
import sys

import pytest

from runtime import stats
from runtime.cgroupfs import (cgroup_of, controller_status, find_mount, own_cgroup,
                              prepare_root)
from runtime.errors import CgroupBusy, CgroupError, CgroupGone


def _mounts_cgroup2():
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if line.split()[2] == "cgroup2"]


def test_find_mount_is_the_cgroup2_mount():
    mount = find_mount()
    assert mount in _mounts_cgroup2()
    assert os.path.isfile(os.path.join(mount, "cgroup.controllers"))


def test_own_cgroup_matches_proc(cgroup, spawn):
    p = spawn(["sleep", "30"], cgroup=cgroup)
    rel = "/" + os.path.relpath(cgroup.path, find_mount())
    assert own_cgroup(p.pid) == rel
    assert cgroup_of(p.pid) == cgroup
    with open("/proc/self/cgroup") as f:
        line = [x for x in f if x.startswith("0::")][0]
    assert own_cgroup() == line[3:].strip()


def test_create_child_and_remove(cgroup):
    child = cgroup.child("a")
    assert not child.exists()
    child.create()
    assert child.exists() and child.create(exist_ok=True) is child
    with pytest.raises(CgroupError):
        child.create(exist_ok=False)
    assert cgroup.children() == [child]
    ino = child.inode()
    child.remove()
    assert not child.exists()
    child.create()
    assert child.inode() != ino  # a new instance, a new inode
    child.remove()
    with pytest.raises(CgroupGone):
        child.remove()
    child.remove(missing_ok=True)


@pytest.mark.parametrize("bad", ["", "a/b", "..", ".", "x\n"])
def test_child_name_validation(cgroup, bad):
    with pytest.raises(CgroupError):
        cgroup.child(bad)


def test_move_process_and_busy_remove(cgroup, spawn):
    p = spawn(["sleep", "30"])
    assert cgroup.procs() == []
    cgroup.add_pid(p.pid)
    assert cgroup.procs() == [p.pid]
    assert cgroup.events().populated is True
    with pytest.raises(CgroupBusy, match="processes"):
        cgroup.remove()
    assert cgroup.exists()
    p.kill()
    p.wait()
    # populated goes 0 once the zombie is reaped
    assert cgroup.procs() == []
    assert cgroup.events().populated is False
    cgroup.child("x").create()
    with pytest.raises(CgroupBusy, match="child cgroups"):
        cgroup.remove()


def test_read_absent_file_is_none_and_vanished_cgroup_raises(cgroup):
    assert cgroup.read("memory.current") is None  # no memory controller here
    assert cgroup.read("cgroup.events") is not None
    child = cgroup.child("gone").create()
    child.remove()
    with pytest.raises(CgroupGone):
        child.read("cgroup.events")
    with pytest.raises(CgroupGone):
        stats.read_sample(child)


def test_write_errors_are_one_line(cgroup):
    with pytest.raises(CgroupError) as ei:
        cgroup.write("cgroup.procs", "999999999")
    assert str(ei.value).count("\n") == 0 and "cgroup.procs" in str(ei.value)


def test_read_sample_absent_controller_files_are_none(cgroup, spawn):
    spawn(["sleep", "30"], cgroup=cgroup)
    s = stats.read_sample(cgroup)
    assert s.inode == os.stat(cgroup.path).st_ino
    assert s.cpu is not None and s.cpu.usage_usec is not None
    assert s.events == stats.CgroupEvents(populated=True, frozen=False)
    assert s.cpu_pressure is not None
    avail = cgroup.controllers()
    if "memory" not in avail:
        assert s.memory_current is None and s.memory_stat is None and s.memory_peak is None
    if "io" not in avail:
        assert s.io is None
    if "pids" not in avail:
        assert s.pids_current is None and s.pids_events is None


BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"


def test_cpu_stat_grows_under_cpu_burner(cgroup, spawn):
    before = stats.read_cpu_stat(cgroup).usage_usec
    assert before == 0
    p = spawn([sys.executable, "-c", BURN], cgroup=cgroup)
    assert p.wait(timeout=60) == 0
    after = stats.read_cpu_stat(cgroup)
    # the burner used >= 0.3 s of CPU time, all accounted to this cgroup
    assert after.usage_usec >= 300_000
    assert after.user_usec > 0


def test_controller_status_names_every_controller(cgroup):
    st = controller_status(cgroup)
    assert set(st) == {"cpu", "memory", "io", "pids", "cpuset"}
    for name, why in st.items():
        if name in cgroup.controllers():
            assert why == "enabled"
        else:
            assert why != "enabled" and "\n" not in why


def test_prepare_root_moves_processes_into_leaf(cgroup, spawn):
    p1 = spawn(["sleep", "30"], cgroup=cgroup)
    p2 = spawn(["sleep", "30"], cgroup=cgroup)
    enabled = prepare_root(cgroup, self_leaf="agentd")
    leaf = cgroup.child("agentd")
    assert cgroup.procs() == []
    assert sorted(leaf.procs()) == sorted([p1.pid, p2.pid])
    assert enabled == cgroup.subtree_control()
    assert enabled == cgroup.controllers()
    # a child now sees what was enabled
    assert cgroup.child("c").create().controllers() == enabled


def test_enable_controllers_returns_what_is_enabled(cgroup):
    offered = cgroup.controllers()
    got = cgroup.enable_controllers(list(offered) + ["memory", "nosuch"])
    assert got == offered == cgroup.subtree_control()
    assert "nosuch" not in got
    if "memory" not in offered:
        assert "memory" not in got


# -- runtime.reader: kept descriptors, re-read with pread -------------------

from runtime.reader import CgroupReader, raise_nofile_limit  # noqa: E402


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_reader_sees_fresh_contents_and_matches_read_sample(cgroup, spawn):
    r = CgroupReader(cgroup.path)
    try:
        first = r.sample()
        assert first == stats.read_sample(cgroup)  # idle cgroup: identical readings
        assert first.events.populated is False and first.inode == cgroup.inode()
        assert set(r.files()) == {f for f, _ in stats.SAMPLE_FILES.values()
                                  if os.path.exists(cgroup.file(f))}
        p = spawn([sys.executable, "-c", BURN], cgroup=cgroup)
        assert r.sample().events.populated is True  # same descriptor, new contents
        p.wait(timeout=60)
        s = r.sample()
        assert s.events.populated is False
        assert s.cpu.usage_usec >= 300_000 > first.cpu.usage_usec
    finally:
        r.close()


def test_reader_never_reopens_silently(cgroup):
    child = cgroup.child("r").create()
    r = CgroupReader(child)
    r.sample()
    child.remove()
    with pytest.raises(CgroupGone):
        r.sample()
    child.create()  # same name, a new cgroup: the old reader must not follow it
    with pytest.raises(CgroupGone):
        r.sample()
    r.close()
    with pytest.raises(CgroupGone):
        CgroupReader(cgroup.file("nope"))


def test_reader_close_releases_descriptors(cgroup):
    before = _open_fds()
    r = CgroupReader(cgroup)
    assert _open_fds() == before + r.fd_count()
    r.close()
    assert _open_fds() == before
    with pytest.raises(CgroupError):
        r.sample()
    assert raise_nofile_limit() >= 1024
