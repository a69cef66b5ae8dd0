"""Fixtures for the VM tier (full cgroup v2, run by tests/vm/run.py inside qemu).

Collection fails at once on the host: these tests write limits into
/sys/fs/cgroup and must only run in the throwaway VM.

Fixtures for test files in tests/vm:

- ``vm_test_parent`` (session): a cgroup /sys/fs/cgroup/cga-vmtest-<random>
  whose cgroup.subtree_control has +cpu +memory +io +pids +cpuset.
- ``make_v2_cgroup(name=None) -> runtime.cgroupfs.Cgroup``: a factory for
  fresh child cgroups of that parent (every controller's files present);
  each is killed (cgroup.kill) and removed after the test.
- ``v2_cgroup``: one such cgroup.
- ``run_in_cgroup(cg, argv, **popen_kwargs) -> subprocess.Popen``: starts a
  command whose first instruction already runs inside ``cg`` (the child
  writes "0" to cgroup.procs before exec). Processes still alive at
  teardown are killed.
- ``loop_block_device -> LoopDevice(path, major, minor, majmin, backing)``:
  a file-backed /dev/loopN (64 MiB, sparse, in /tmp) for io tests.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from typing import NamedTuple

import pytest

IN_VM_ENV = "CGROUP_AGENT_IN_VM"
CGROUP_MOUNT = "/sys/fs/cgroup"
CONTROLLERS = ("cpu", "memory", "io", "pids", "cpuset")

if os.environ.get(IN_VM_ENV) != "1":
    raise pytest.UsageError(
        f"tests/vm must run inside the VM, not on this host ({IN_VM_ENV} is not 1): "
        f"run `python3 tests/vm/run.py [pytest args]`")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # tests/: helpers

from helpers import kill_tree  # noqa: E402  (after the host guard)
from runtime.cgroupfs import Cgroup  # noqa: E402


class LoopDevice(NamedTuple):
    path: str       # /dev/loopN
    major: int
    minor: int
    majmin: str     # "7:0", as io.max / io.stat name it
    backing: str    # the backing file


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _enable_all(path: str) -> None:
    for name in CONTROLLERS:
        if name not in _read(os.path.join(path, "cgroup.subtree_control")).split():
            _write(os.path.join(path, "cgroup.subtree_control"), f"+{name}")
    missing = set(CONTROLLERS) - set(_read(os.path.join(path, "cgroup.subtree_control")).split())
    if missing:
        pytest.fail(f"cannot enable {sorted(missing)} in {path}/cgroup.subtree_control")


def _populated(path: str) -> bool:
    try:
        return "populated 1" in _read(os.path.join(path, "cgroup.events"))
    except FileNotFoundError:
        return False


destroy_cgroup = kill_tree   # the clean-up every tier shares (tests/helpers.py)


@pytest.fixture(scope="session")
def vm_test_parent():
    """/sys/fs/cgroup/cga-vmtest-<random> handing every controller to children."""
    root_controllers = set(_read(os.path.join(CGROUP_MOUNT, "cgroup.controllers")).split())
    missing = set(CONTROLLERS) - root_controllers
    if missing:
        pytest.fail(f"this VM's cgroup2 at {CGROUP_MOUNT} lacks {sorted(missing)}; "
                    f"the VM tier needs full cgroup v2")
    _enable_all(CGROUP_MOUNT)
    parent = os.path.join(CGROUP_MOUNT, f"cga-vmtest-{secrets.token_hex(4)}")
    os.mkdir(parent)
    try:
        _enable_all(parent)
        yield Cgroup(parent)
    finally:
        destroy_cgroup(parent)


@pytest.fixture
def make_v2_cgroup(vm_test_parent):
    """Factory: make_v2_cgroup(name=None) -> a fresh Cgroup under the test parent."""
    made = []

    def make(name: str | None = None) -> Cgroup:
        cg = vm_test_parent.child(name or f"t-{secrets.token_hex(4)}")
        os.mkdir(cg.path)
        made.append(cg.path)
        return cg

    yield make
    for path in reversed(made):
        destroy_cgroup(path)


@pytest.fixture
def v2_cgroup(make_v2_cgroup):
    """A fresh cgroup with cpu memory io pids cpuset files, removed afterwards."""
    return make_v2_cgroup()


def popen_in_cgroup(cg, argv, **kwargs) -> subprocess.Popen:
    """Start ``argv`` already inside cgroup ``cg`` (joined before exec)."""
    procs = os.path.join(os.fspath(cg), "cgroup.procs")

    def join():
        fd = os.open(procs, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)

    return subprocess.Popen(argv, preexec_fn=join, **kwargs)


@pytest.fixture
def run_in_cgroup():
    """run_in_cgroup(cg, argv, **popen_kwargs) -> Popen, killed at teardown."""
    started = []

    def run(cg, argv, **kwargs) -> subprocess.Popen:
        proc = popen_in_cgroup(cg, argv, **kwargs)
        started.append(proc)
        return proc

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _ensure_loop_module() -> None:
    if not os.path.exists("/dev/loop-control"):
        subprocess.run(["modprobe", "loop"], check=True)
        for _ in range(100):
            if os.path.exists("/dev/loop-control"):
                return
            time.sleep(0.05)
        pytest.fail("modprobe loop did not create /dev/loop-control")


@pytest.fixture
def loop_block_device(tmp_path):
    """A 64 MiB file-backed loop device; yields LoopDevice."""
    _ensure_loop_module()
    backing = str(tmp_path / "loop.img")
    with open(backing, "wb") as f:
        f.truncate(64 << 20)
    dev = subprocess.run(["losetup", "--find", "--show", backing], check=True,
                         capture_output=True, text=True).stdout.strip()
    try:
        st = os.stat(dev)
        major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        yield LoopDevice(dev, major, minor, f"{major}:{minor}", backing)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
        os.unlink(backing)


@pytest.fixture
def python():
    """The interpreter to run child scripts with (the one running pytest)."""
    return sys.executable
