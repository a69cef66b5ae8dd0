"""The cgroup files captured in the VM (tests/vm/capture_fixtures.py) are all
here, and show the states they were captured for. A missing or stale capture
fails loudly instead of letting parser tests skip."""
from __future__ import annotations

import os

import pytest

KERNEL_61 = os.path.join(os.path.dirname(__file__), "fixtures", "kernel-6.1")

BUSY_FILES = [
    "cgroup.controllers", "cgroup.events", "cgroup.freeze", "cgroup.procs",
    "cgroup.stat", "cgroup.subtree_control", "cgroup.threads", "cgroup.type",
    "cpu.max", "cpu.pressure", "cpu.stat", "cpu.weight",
    "cpuset.cpus", "cpuset.cpus.effective", "cpuset.mems", "cpuset.mems.effective",
    "io.max", "io.pressure", "io.stat", "io.weight",
    "memory.current", "memory.events", "memory.events.local", "memory.high",
    "memory.low", "memory.max", "memory.min", "memory.oom.group", "memory.peak",
    "memory.pressure", "memory.stat", "memory.swap.current", "memory.swap.max",
    "pids.current", "pids.events", "pids.max",
]
SUBDIR_FILES = {
    "oom": ["memory.events", "memory.max", "memory.peak", "cgroup.events", "cpu.stat"],
    "frozen": ["cgroup.events", "cgroup.freeze", "cgroup.procs"],
    "unlimited": ["cpu.max", "cpu.weight", "memory.max", "memory.swap.max", "io.max",
                  "io.weight", "pids.max", "cpuset.cpus"],
    "root": ["cgroup.controllers", "cgroup.subtree_control", "cpu.stat", "io.stat",
             "memory.stat", "cpu.pressure"],
}


def read(*parts: str) -> str:
    with open(os.path.join(KERNEL_61, *parts)) as f:
        return f.read()


def flat(text: str) -> dict[str, str]:
    return dict(line.split(None, 1) for line in text.splitlines() if line.strip())


@pytest.mark.parametrize("name", BUSY_FILES)
def test_busy_cgroup_file_captured(name):
    assert os.path.isfile(os.path.join(KERNEL_61, name)), (
        f"tests/unit/fixtures/kernel-6.1/{name} missing; run "
        f"`python3 tests/vm/run.py --capture`")


@pytest.mark.parametrize("sub", sorted(SUBDIR_FILES))
def test_state_folders_captured(sub):
    for name in SUBDIR_FILES[sub]:
        assert os.path.isfile(os.path.join(KERNEL_61, sub, name)), f"{sub}/{name} missing"


def test_provenance_note():
    note = read("CAPTURED.txt")
    assert note.startswith("kernel: 6.1."), note.splitlines()[0]


def test_busy_capture_shows_its_workload():
    cpu = flat(read("cpu.stat"))
    assert int(cpu["nr_throttled"]) > 0          # cpu.max was biting
    assert read("cpu.max").split() == ["50000", "100000"]
    io = [line.split()[0] for line in read("io.stat").splitlines()]
    assert len(io) >= 2 and all(d.startswith("7:") for d in io)   # two loop devices
    assert int(read("pids.current")) == 4 == len(read("cgroup.procs").split())
    assert flat(read("memory.events"))["high"] != "0"
    assert read("cgroup.events").split() == ["populated", "1", "frozen", "0"]


def test_state_captures_show_their_state():
    assert int(flat(read("oom", "memory.events"))["oom_kill"]) >= 1
    assert read("oom", "cgroup.events").split() == ["populated", "0", "frozen", "0"]
    assert read("frozen", "cgroup.events").split() == ["populated", "1", "frozen", "1"]
    assert read("unlimited", "cpu.max").split() == ["max", "100000"]
    assert read("unlimited", "memory.max").strip() == "max"
    assert read("unlimited", "io.max") == ""
    assert set(read("root", "cgroup.subtree_control").split()) >= {
        "cpu", "memory", "io", "pids", "cpuset"}
