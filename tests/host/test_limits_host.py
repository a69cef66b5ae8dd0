"""Limits on this host: refused, with the controller and the reason, before
anything is written (hybrid host: controllers bound to cgroup v1)."""
from __future__ import annotations

import os

import pytest

from runtime.apply import apply_limits
from runtime.cgroupfs import controller_status, find_mount, read_proc_cgroups, v1_mountpoint
from runtime.errors import ControllerMissing
from runtime.limits import Limits, read_limits

CASES = {
    "memory": Limits.parse(memory="64M"),
    "cpu": Limits.parse(cpus="0.5"),
    "io": Limits.parse(io_weight=200),
    "pids": Limits.parse(pids=16),
    "cpuset": Limits.parse(cpuset_cpus="0"),
}


def _snapshot(cg):
    """Directory listing plus every config file a limit write could touch."""
    names = sorted(os.listdir(cg.path))
    config = {n: cg.read(n) for n in names
              if n in ("cgroup.subtree_control", "cgroup.freeze", "cgroup.max.depth",
                       "cgroup.max.descendants", "cgroup.type")
              or n.endswith((".max", ".high", ".low", ".weight", ".cpus", ".mems", ".group"))}
    return names, config


@pytest.mark.parametrize("controller", sorted(CASES))
def test_limit_needing_missing_controller_is_refused(cgroup, controller):
    if controller in cgroup.controllers():
        pytest.skip(f"{controller} is available on this host; the VM tier covers applying it")
    before = _snapshot(cgroup)
    with pytest.raises(ControllerMissing) as ei:
        apply_limits(cgroup, CASES[controller])
    msg = str(ei.value)
    assert ei.value.controller == controller
    assert msg.startswith(f"{controller} controller is ") and "\n" not in msg
    assert _snapshot(cgroup) == before  # nothing written
    v1 = {"io": "blkio"}.get(controller, controller)
    hier = read_proc_cgroups().get(v1, (0, True))[0]
    point = v1_mountpoint(controller)
    if hier and point:  # this hybrid host: bound to a v1 hierarchy
        alias = f" as {v1}" if v1 != controller else ""
        assert msg == (f"{controller} controller is bound to cgroup v1{alias} (hybrid host: "
                       f"{point}); cgroup2 at {find_mount()} has no {controller} controller")


def test_memory_message_on_this_hybrid_host(cgroup):
    if find_mount() != "/sys/fs/cgroup/unified" or not v1_mountpoint("memory"):
        pytest.skip("not the hybrid host this message is about")
    with pytest.raises(ControllerMissing) as ei:
        apply_limits(cgroup, Limits.parse(memory="64M"))
    assert str(ei.value) == ("memory controller is bound to cgroup v1 (hybrid host: "
                             "/sys/fs/cgroup/memory); cgroup2 at /sys/fs/cgroup/unified has "
                             "no memory controller")


def test_several_missing_controllers_are_all_listed(cgroup):
    lim = Limits.parse(memory="1G", cpus="1", pids=10)
    missing = lim.controllers() - cgroup.controllers()
    if not missing:
        pytest.skip("all controllers available here")
    with pytest.raises(ControllerMissing) as ei:
        apply_limits(cgroup, lim)
    assert set(ei.value.missing) == missing
    assert ei.value.controller in missing


def test_controller_status_matches_apply(cgroup):
    st = controller_status(cgroup)
    for name, lim in CASES.items():
        if st[name] == "enabled":
            continue
        with pytest.raises(ControllerMissing) as ei:
            apply_limits(cgroup, lim)
        assert ei.value.reason == st[name]


def test_read_limits_never_pretends(cgroup):
    lim = read_limits(cgroup)
    for name in ("memory", "cpu", "io", "pids", "cpuset"):
        if name not in cgroup.controllers():
            fields = [f for f, c in __import__("runtime.limits", fromlist=["x"])._CONTROLLER.items()
                      if c == name]
            assert all(getattr(lim, f) is None for f in fields), name
    assert apply_limits(cgroup, Limits()) == lim  # nothing asked, nothing written


def test_controller_not_handed_down_names_the_ancestor(cgroup):
    """A controller the cgroup2 root offers but no ancestor hands down
    (hugetlb here; a limit controller on a pure v2 host)."""
    root_offers = set(open(os.path.join(find_mount(), "cgroup.controllers")).read().split())
    name = next((c for c in ("cpu", "memory", "io", "pids", "cpuset", "hugetlb")
                 if c in root_offers and c not in cgroup.controllers()), None)
    if name is None:
        pytest.skip("every controller the root offers is handed down to test cgroups")
    child = cgroup.child("leaf").create()
    # the first ancestor that does not have it in subtree_control is the mount root
    assert controller_status(child, names=(name,)) == {
        name: f"not in {os.path.join(find_mount(), 'cgroup.subtree_control')}"}
