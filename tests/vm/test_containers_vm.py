"""The supervisor on full cgroup v2 (kernel 6.1 in the VM): limits in effect as
the kernel reads them, OOM kills seen through memory.events and restarted
under on-failure, cpu.max throttling, pids.max, live limit changes.

One supervisor with a real launcher for the module (Python is slow under
TCG); every test uses its own container names.
"""
from __future__ import annotations

import os
import secrets
import signal

import pytest

from agent.config import load_config
from agent.launcher import LauncherClient
from agent.spec import from_json
from agent.store import Store
from agent.supervisor import Supervisor, layout_cgroups
from runtime.cgroupfs import Cgroup
from runtime.limits import Limits
from runtime.stats import parse_cpu_stat, parse_flat_keyed

from conftest import destroy_cgroup
from helpers import wait_for


@pytest.fixture(scope="module")
def sup(vm_test_parent, tmp_path_factory):
    root = vm_test_parent.child(f"agent-{secrets.token_hex(3)}")
    os.mkdir(root.path)
    state = str(tmp_path_factory.mktemp("agentd-state"))
    config = load_config(None, {"agent.state_dir": state, "agent.cgroup_root": root.path,
                                "agent.socket": os.path.join(state, "agent.sock"), "agent.stop_timeout": "5s"})
    layout = layout_cgroups(root.path, move_self=False)
    assert {"cpu", "memory", "io", "pids"} <= layout.enabled, layout.missing
    store = Store(os.path.join(state, "state.db"))
    launcher = LauncherClient.connect_or_start(state, layout.launcher.path, timeout=60)
    from runtime.inotify import Watcher
    watcher = Watcher()
    s = Supervisor(config, store, launcher, watcher, layout)
    s.boot()
    yield s
    s.close()
    try:
        launcher.shutdown()
    except Exception:
        pass
    launcher.close()
    watcher.close()
    store.close()
    destroy_cgroup(root.path)


def run(sup, name, argv, **kw):
    return sup.create(from_json({"name": name, "argv": argv, **kw}, sup.config))


def read(cg_path, file):
    return Cgroup(cg_path).read(file).strip()


def test_limits_are_in_the_kernel(sup):
    info = run(sup, "limited", ["sleep", "1000"],
               limits={"memory": "64M", "memory_high": "48M", "cpus": "0.5", "cpu_weight": 50, "pids": 32,
                       "io_weight": 50})
    try:
        cg = info.cgroup
        assert read(cg, "memory.max") == str(64 << 20)
        assert read(cg, "memory.high") == str(48 << 20)
        assert read(cg, "cpu.max") == "50000 100000"
        assert read(cg, "cpu.weight") == "50"
        assert read(cg, "pids.max") == "32"
        assert "default 50" in read(cg, "io.weight")
        assert info.limits.memory_max == 64 << 20 and info.limits.pids_max == 32
        assert info.pid in [int(p) for p in read(cg, "cgroup.procs").split()]
    finally:
        sup.remove("limited", force=True)


def test_oom_kill_is_shown_and_restarted_under_on_failure(sup):
    # tail keeps the last 10 lines of a stream without newlines: all of it
    run(sup, "hungry", ["tail", "/dev/zero"], limits={"memory": "32M", "memory_swap": "0"},
        restart="on-failure:1")
    info = wait_for(lambda: (lambda i: i if i.state == "exited" and i.restart_count == 1 else None)(sup.get("hungry")),
                    what="OOM kill, restart, OOM kill")
    info = sup.wait("hungry", 60)
    assert info.oom_killed is True
    assert info.oom_kills >= 2
    assert info.exit_signal == signal.SIGKILL
    assert info.restart_count == 1
    kinds = [e["kind"] for e in sup.events("hungry")]
    assert kinds.count("oom") >= 2 and kinds.count("started") == 2
    events = parse_flat_keyed(read(info.cgroup, "memory.events"))
    assert events["oom_kill"] == info.oom_kills
    sup.remove("hungry")


def test_cpu_max_throttles(sup):
    info = run(sup, "spinner", ["sh", "-c", "while :; do :; done"], limits={"cpus": "0.2"})
    try:
        assert read(info.cgroup, "cpu.max") == "20000 100000"
        stat = wait_for(lambda: (lambda s: s if s.nr_throttled and s.nr_throttled >= 3 else None)(
            parse_cpu_stat(read(info.cgroup, "cpu.stat"))), what="throttling")
        assert stat.throttled_usec > 0
    finally:
        sup.remove("spinner", force=True)


def test_pids_max_caps_forks(sup):
    info = run(sup, "forker", ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 1000 & done; wait"],
               limits={"pids": 5})
    try:
        wait_for(lambda: parse_flat_keyed(read(info.cgroup, "pids.events")).get("max", 0) > 0,
                 what="pids.max to refuse a fork")
        assert int(read(info.cgroup, "pids.current")) <= 5
    finally:
        sup.remove("forker", force=True)


def test_live_set_limits_reads_back(sup):
    info = run(sup, "resized", ["sleep", "1000"], limits={"memory": "64M", "pids": 20})
    try:
        back = sup.set_limits("resized", Limits.parse(memory="128M", cpus="1.5"))
        assert back.memory_max == 128 << 20
        assert back.cpu_quota_us == 150000 and back.cpu_period_us == 100000
        assert back.pids_max == 20  # untouched limits stay
        assert read(info.cgroup, "memory.max") == str(128 << 20)
        assert read(info.cgroup, "cpu.max") == "150000 100000"
        assert read(info.cgroup, "pids.max") == "20"
        assert sup.get("resized").limits.memory_max == 128 << 20
        assert sup.get("resized").state == "running"
        assert sup.get("resized").pid == info.pid
    finally:
        sup.remove("resized", force=True)
