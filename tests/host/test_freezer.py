"""freeze/thaw/kill on this machine's cgroup2 hierarchy, confirmed by
cgroup.events and by the processes themselves."""
from __future__ import annotations

import os
import sys
import time

import pytest

from runtime import freezer
from runtime.errors import FreezeTimeout

# Writes an ever-growing counter to a file, ~200 times a second.
COUNTER = """
import os, sys, time
path = sys.argv[1]
i = 0
while True:
    i += 1
    with open(path + ".tmp", "w") as f:
        f.write(str(i))
    os.replace(path + ".tmp", path)
    time.sleep(0.005)
"""


def _counter(path):
    try:
        with open(path) as f:
            return int(f.read() or 0)
    except FileNotFoundError:
        return 0


def _wait_until(pred, what, limit=20.0):
    # generous bound: only guards against hanging, never a timing assertion
    end = time.monotonic() + limit
    while not pred():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.01)


def _ctxt_switches(pid):
    with open(f"/proc/{pid}/status") as f:
        return sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)


def test_freeze_stops_the_process_and_thaw_resumes_it(cgroup, spawn, tmp_path):
    path = str(tmp_path / "counter")
    p = spawn([sys.executable, "-c", COUNTER, path], cgroup=cgroup)
    _wait_until(lambda: _counter(path) >= 3, "the counter to start")

    ev = freezer.freeze(cgroup)
    assert ev.frozen and ev.populated
    assert cgroup.events().frozen is True and freezer.is_frozen(cgroup)
    frozen_at = _counter(path)
    switches = _ctxt_switches(p.pid)
    time.sleep(0.3)  # ~60 increments if it were running
    assert _counter(path) == frozen_at
    assert _ctxt_switches(p.pid) == switches
    assert p.poll() is None

    ev = freezer.thaw(cgroup)
    assert not ev.frozen and cgroup.events().frozen is False
    _wait_until(lambda: _counter(path) > frozen_at + 2, "the counter to move after thaw")


def test_freeze_empty_cgroup_and_nested(cgroup):
    child = cgroup.child("inner").create()
    assert freezer.freeze(cgroup).frozen
    assert child.events().frozen is True  # an ancestor's freeze reaches the child
    assert child.read("cgroup.freeze").strip() == "0"
    with pytest.raises(FreezeTimeout) as ei:
        freezer.thaw(child, timeout=0.2)  # its parent keeps it frozen
    assert child.path in str(ei.value) and "\n" not in str(ei.value)
    freezer.thaw(cgroup)
    assert child.events().frozen is False


@pytest.mark.parametrize("method", ["auto", "signal"])
def test_kill_empties_the_cgroup(cgroup, spawn, method):
    if method == "auto":
        assert os.path.exists(cgroup.file("cgroup.kill"))  # this kernel has it
    sub = cgroup.child("sub").create()
    procs = [spawn(["sleep", "300"], cgroup=cgroup), spawn(["sleep", "300"], cgroup=cgroup),
             spawn(["sleep", "300"], cgroup=sub)]
    assert cgroup.events().populated
    freezer.kill(cgroup, method=method)
    assert cgroup.events().populated is False
    assert cgroup.procs() == [] and sub.procs() == []
    for p in procs:
        assert p.wait(timeout=10) == -9
    cgroup.child("sub").remove()


def test_kill_frozen_cgroup(cgroup, spawn):
    p = spawn(["sleep", "300"], cgroup=cgroup)
    freezer.freeze(cgroup)
    freezer.kill(cgroup)
    assert p.wait(timeout=10) == -9
    assert cgroup.events().populated is False


def test_kill_sees_processes_forked_meanwhile(cgroup, spawn):
    # a shell that keeps forking children: every one of them must be gone
    p = spawn(["sh", "-c", "while :; do sleep 300 & sleep 0.01; done"], cgroup=cgroup)
    _wait_until(lambda: len(cgroup.procs()) >= 4, "the forker to fork")
    freezer.kill(cgroup)
    assert cgroup.procs() == [] and not cgroup.events().populated
    assert p.wait(timeout=10) == -9


def test_kill_vanished_cgroup_is_a_no_op(cgroup):
    child = cgroup.child("gone").create()
    child.remove()
    freezer.kill(child)
