"""runtime.inotify on this machine's cgroupfs: populated/frozen changes and
child cgroups created/removed arrive as events."""
from __future__ import annotations

import os
import select
import signal
import time

import pytest

from runtime import freezer
from runtime.errors import CgroupGone
from runtime.inotify import Watcher, WatchEvent


@pytest.fixture
def watcher():
    w = Watcher()
    yield w
    w.close()


def _collect(w, want, limit=10.0):
    """Read events until ``want`` (a WatchEvent) shows up; return all seen."""
    seen = []
    end = time.monotonic() + limit  # guard against hanging only
    while want not in seen:
        assert time.monotonic() < end, f"no {want} in {seen}"
        seen += w.read(timeout=0.5)
    return seen


def test_populated_changes_are_reported(cgroup, spawn, watcher):
    assert watcher.watch_events(cgroup.path) == ["cgroup.events"] or \
        "memory" in cgroup.controllers()
    assert watcher.read(timeout=0) == []
    p = spawn(["sleep", "300"], cgroup=cgroup)
    mod = WatchEvent("modified", cgroup.path, "cgroup.events")
    _collect(watcher, mod)
    assert cgroup.events().populated is True
    p.send_signal(signal.SIGKILL)
    p.wait()
    _collect(watcher, mod)
    assert cgroup.events().populated is False


def test_frozen_changes_are_reported(cgroup, spawn, watcher):
    spawn(["sleep", "300"], cgroup=cgroup)
    watcher.watch_events(cgroup)
    watcher.read(timeout=0)
    mod = WatchEvent("modified", cgroup.path, "cgroup.events")
    cgroup.write("cgroup.freeze", "1")  # raw write: the event must come from the kernel
    _collect(watcher, mod)
    assert freezer.wait_events(cgroup, lambda e: e.frozen, 10) is not None
    cgroup.write("cgroup.freeze", "0")
    _collect(watcher, mod)


def test_nothing_happens_nothing_reported(cgroup, watcher):
    watcher.watch_events(cgroup)
    watcher.watch_dir(cgroup)
    assert watcher.read(timeout=0.2) == []


def test_child_cgroups_created_and_removed(cgroup, watcher):
    watcher.watch_dir(cgroup.path)
    os.mkdir(cgroup.file("c1"))
    assert _collect(watcher, WatchEvent("created", cgroup.path, "c1"))
    os.rmdir(cgroup.file("c1"))
    _collect(watcher, WatchEvent("deleted", cgroup.path, "c1"))


def test_removed_cgroup_drops_its_watches(cgroup, watcher):
    child = cgroup.child("w").create()
    watcher.watch_dir(cgroup)
    watcher.watch_events(child)
    watcher.watch_dir(child)
    assert watcher.count() == 3
    child.child("deeper").create()
    watcher.watch_events(child.child("deeper"))
    assert watcher.count() == 4
    child.child("deeper").remove()
    child.remove()
    _collect(watcher, WatchEvent("deleted", cgroup.path, "w"))
    # cgroupfs sends no IN_IGNORED: the parent's "deleted" drops the subtree's watches
    assert watcher.watched() == [("dir", cgroup.path, "")]


def test_prune_drops_watches_of_vanished_cgroups(cgroup, watcher):
    child = cgroup.child("p").create()
    watcher.watch_events(child)
    watcher.watch_events(cgroup)
    child.remove()
    assert watcher.count() == 2
    assert watcher.prune() == 1
    assert watcher.watched() == [("file", cgroup.path, "cgroup.events")]


def test_unwatch_and_fileno(cgroup, spawn, watcher):
    watcher.watch_events(cgroup)
    watcher.watch_dir(cgroup)
    assert watcher.unwatch(cgroup.path) == 2 and watcher.count() == 0
    spawn(["sleep", "300"], cgroup=cgroup)
    os.mkdir(cgroup.file("x"))
    assert watcher.read(timeout=0.2) == []
    os.rmdir(cgroup.file("x"))
    # fileno() works with select
    watcher.watch_dir(cgroup)
    os.mkdir(cgroup.file("y"))
    r, _, _ = select.select([watcher], [], [], 10)
    assert r == [watcher]
    assert WatchEvent("created", cgroup.path, "y") in watcher.read(timeout=0)


def test_watch_missing_cgroup_raises(cgroup, watcher):
    with pytest.raises(CgroupGone):
        watcher.watch_events(cgroup.file("nope"))
    with pytest.raises(CgroupGone):
        watcher.watch_dir(cgroup.file("nope"))
