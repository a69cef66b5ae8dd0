"""Host tier fixtures: real cgroups on this machine's cgroup2 mount.

``cgroup``: a fresh, uniquely named cgroup (runtime.cgroupfs.Cgroup) directly
under the cgroup2 mount, e.g. /sys/fs/cgroup/unified/cga-test-1a2b3c4d5e. On
teardown everything left in it (and in any child cgroup) is killed and the
whole subtree removed, deepest first.
``cgroup_factory``: call it to get more such cgroups in one test.
``spawn``: start a real child process (list argv) that is killed after the
test; optionally placed in a cgroup from its first instruction.
"""
from __future__ import annotations

import os
import subprocess

import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # tests/: helpers

from helpers import kill_tree, new_cgroup  # noqa: E402
from runtime.cgroupfs import Cgroup, find_mount  # noqa: E402


# the clean-up and cgroup maker every tier shares (tests/helpers.py)
_kill_tree = kill_tree
_new_cgroup = new_cgroup


@pytest.fixture
def cgroup_mount() -> str:
    return find_mount()


@pytest.fixture
def cgroup_factory(cgroup_mount):
    made = []

    def make() -> Cgroup:
        cg = _new_cgroup(cgroup_mount)
        made.append(cg)
        return cg

    yield make
    for cg in reversed(made):
        _kill_tree(cg)


@pytest.fixture
def cgroup(cgroup_factory) -> Cgroup:
    """A fresh unique cgroup under the cgroup2 mount, removed after the test."""
    return cgroup_factory()


@pytest.fixture
def spawn():
    """spawn(argv, cgroup=None, **popen_kw) -> Popen, killed and reaped after the test.

    With ``cgroup`` the child writes itself into cgroup.procs before exec,
    so its first instruction already runs inside the cgroup.
    """
    procs = []

    def start(argv, cgroup: Cgroup | None = None, **kw):
        pre = None
        if cgroup is not None:
            procs_file = cgroup.file("cgroup.procs")

            def pre():
                with open(procs_file, "w") as f:
                    f.write("0")

        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(argv, preexec_fn=pre, **kw)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            try:
                p.kill()
            except ProcessLookupError:
                pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def collectors():
    """collectors(config, containers, **kw) -> Collector, stopped after the test."""
    from agent.collector import Collector
    made = []

    def make(*a, **kw) -> Collector:
        c = Collector(*a, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


@pytest.fixture(scope="session", autouse=True)
def _network_leftovers():
    """After the session: the bridge-network objects of agents that no longer
    run (tests/host/network_leftovers.py)."""
    yield
    from network_leftovers import remove_abandoned
    n = remove_abandoned()
    if n:
        print(f"\nremoved {n} network objects (namespaces, links, nftables tables) of agents no longer running")
