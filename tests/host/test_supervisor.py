"""Supervisor end to end on this machine's cgroup2 tree with a real launcher.

Each test gets its own cgroup root (the `cgroup` fixture: a unique directory
under the cgroup2 mount, killed and removed afterwards), its own state dir
and its own launcher process (living in R/launcher, so the teardown kills it).
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from agent.config import load_config
from agent.errors import Conflict, NotFound, UserError
from agent.launcher import LauncherClient
from agent.spec import from_json
from agent.store import Store
from agent.supervisor import Supervisor, layout_cgroups
from runtime.cgroupfs import Cgroup
from helpers import wait_for


class Env:
    def __init__(self, root: Cgroup, tmp_path):
        self.tmp = tmp_path
        self.state = str(tmp_path / "state")
        os.makedirs(self.state)
        self.config = load_config(None, {
            "agent.state_dir": self.state, "agent.cgroup_root": root.path,
            "agent.socket": str(tmp_path / "agent.sock"), "agent.stop_timeout": "5s"})
        self.layout = layout_cgroups(root.path, move_self=False)
        self.store = Store(os.path.join(self.state, "state.db"))
        self.launcher = LauncherClient.connect_or_start(self.state, self.layout.launcher.path)
        try:
            from runtime.inotify import Watcher
            self.watcher = Watcher()
        except ImportError:
            self.watcher = None
        self.sup = Supervisor(self.config, self.store, self.launcher, self.watcher, self.layout)
        self.sup.boot()

    def spec(self, name, argv, **kw):
        return from_json({"name": name, "argv": argv, **kw}, self.config)

    def run(self, name, script, **kw):
        return self.sup.create(self.spec(name, ["sh", "-c", script], **kw))

    def close(self):
        self.sup.close()
        try:
            self.launcher.shutdown()
        except Exception:
            pass
        self.launcher.close()
        if self.watcher is not None:
            self.watcher.close()
        self.store.close()


@pytest.fixture
def env(cgroup, tmp_path):
    e = Env(cgroup, tmp_path)
    yield e
    e.close()


def test_layout_creates_the_three_cgroups(env):
    root = env.layout.root
    for leaf in ("agentd", "launcher", "containers"):
        assert os.path.isdir(root.child(leaf).path)
    # the launcher really lives in R/launcher
    assert env.layout.launcher.procs()


def test_exit_code_is_recorded(env):
    env.run("three", "exit 3")
    info = env.sup.wait("three", 15)
    assert info.state == "exited"
    assert info.exit_code == 3
    assert info.exit_signal is None
    assert info.restart_count == 0
    kinds = [e["kind"] for e in env.sup.events("three")]
    assert kinds[:3] == ["created", "started", "exited"]


def test_container_runs_in_its_cgroup_and_namespaces(env, tmp_path):
    out = tmp_path / "out"
    env.run("where", f"cat /proc/self/cgroup > {out}.cg; echo $$ > {out}.pid; hostname > {out}.host")
    info = env.sup.wait("where", 15)
    assert info.exit_code == 0

    assert (tmp_path / "out.cg").read_text().strip().endswith("/containers/" + info.id)
    assert (tmp_path / "out.pid").read_text().strip() == "1"  # PID 1 of its own namespace
    assert (tmp_path / "out.host").read_text().strip() == "where"


def test_logs_are_captured(env):
    env.run("talk", "echo out-line; echo err-line >&2")
    env.sup.wait("talk", 15)
    with open(env.sup.log_path("talk", "stdout")) as f:
        assert f.read() == "out-line\n"
    with open(env.sup.log_path("talk", "stderr")) as f:
        assert f.read() == "err-line\n"


def test_kill_gives_a_signal_exit(env):
    env.run("victim", "sleep 1000")
    env.sup.kill("victim", "KILL")
    info = env.sup.wait("victim", 15)
    assert info.state == "exited"
    assert info.exit_signal == signal.SIGKILL


def test_stop_sends_sigterm_first(env, tmp_path):
    ready = tmp_path / "ready"
    env.run("polite", f"trap 'exit 0' TERM; touch {ready}; while :; do sleep 0.05; done")
    wait_for(ready.exists, what="the TERM trap")
    info = env.sup.stop("polite", 10)
    assert info.state == "exited"
    assert info.exit_code == 0 and info.exit_signal is None


def test_stop_of_a_process_ignoring_sigterm_ends_with_cgroup_kill(env, tmp_path):
    ready = tmp_path / "ready"
    env.run("stubborn", f"trap '' TERM; touch {ready}; while :; do sleep 0.05; done")
    wait_for(ready.exists, what="the ignoring trap")
    info = env.sup.stop("stubborn", 0.5)
    assert info.state == "exited"
    assert info.exit_signal == signal.SIGKILL
    assert not Cgroup(info.cgroup).events().populated


def test_restart_on_failure_with_count(env):
    env.run("flaky", "exit 1", restart="on-failure:2")
    info = wait_for(lambda: (lambda i: i if i.state == "exited" and i.restart_count == 2 else None)(env.sup.get("flaky")),
                    what="two restarts")
    info = env.sup.wait("flaky", 15)
    assert info.restart_count == 2
    assert info.exit_code == 1
    starts = [e for e in env.sup.events("flaky") if e["kind"] == "started"]
    assert len(starts) == 3


def test_on_failure_does_not_restart_a_success(env):
    env.run("fine", "exit 0", restart="on-failure")
    info = env.sup.wait("fine", 15)
    assert info.state == "exited" and info.restart_count == 0


def test_restart_always_until_stopped(env):
    env.run("loop", "exit 0", restart="always")
    wait_for(lambda: env.sup.get("loop").restart_count >= 2, what="restarts under always")
    info = env.sup.stop("loop", 1)
    assert info.state == "exited"
    n = info.restart_count
    time.sleep(0.5)
    assert env.sup.get("loop").restart_count == n
    assert env.sup.get("loop").state == "exited"


def test_no_policy_does_not_restart(env):
    env.run("once", "exit 1", restart="no")
    info = env.sup.wait("once", 15)
    assert info.restart_count == 0 and info.exit_code == 1


def _count(path):
    try:
        return int(open(path).read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def test_freeze_and_thaw(env, tmp_path):
    counter = tmp_path / "count"
    env.run("ticker", f"i=0; while :; do i=$((i+1)); echo $i > {counter}; sleep 0.02; done")
    wait_for(lambda: _count(counter) > 2, what="ticking")
    info = env.sup.freeze("ticker")
    assert info.state == "paused"
    assert Cgroup(info.cgroup).events().frozen
    c1 = _count(counter)
    time.sleep(0.3)
    assert _count(counter) == c1, "a frozen container kept running"
    info = env.sup.thaw("ticker")
    assert info.state == "running"
    assert not Cgroup(info.cgroup).events().frozen
    wait_for(lambda: _count(counter) > c1, what="progress after thaw")


def test_stop_of_a_paused_container_thaws_it_first(env, tmp_path):
    ready = tmp_path / "ready"
    env.run("sleepy", f"trap 'exit 0' TERM; touch {ready}; while :; do sleep 0.05; done")
    wait_for(ready.exists, what="the TERM trap")
    env.sup.freeze("sleepy")
    info = env.sup.stop("sleepy", 10)
    assert info.state == "exited"
    assert info.exit_code == 0  # the TERM trap ran: it was thawed before SIGTERM


def test_duplicate_name_conflicts(env):
    env.run("dup", "sleep 1000")
    with pytest.raises(Conflict):
        env.run("dup", "true")
    assert [i.name for i in env.sup.containers()] == ["dup"]


def test_unknown_name_is_not_found(env):
    for call in (lambda: env.sup.get("ghost"), lambda: env.sup.stop("ghost"), lambda: env.sup.remove("ghost"),
                 lambda: env.sup.freeze("ghost"), lambda: env.sup.kill("ghost", "TERM")):
        with pytest.raises(NotFound):
            call()


def test_unenforceable_limit_creates_nothing(env):
    if "memory" not in env.layout.missing:
        pytest.skip("this host has the memory controller on cgroup2")
    before = os.listdir(env.layout.containers.path)
    with pytest.raises(UserError) as exc:
        env.run("limited", "true", limits={"memory": "64M"})
    msg = str(exc.value)
    assert "memory controller is" in msg and "\n" not in msg
    assert os.listdir(env.layout.containers.path) == before
    assert env.store.all() == []
    assert env.sup.containers() == []
    with pytest.raises(NotFound):
        env.sup.get("limited")


def test_exec_failure_creates_nothing(env):
    with pytest.raises(UserError) as exc:
        env.sup.create(env.spec("nope", ["/no/such/binary"]))
    assert "/no/such/binary" in str(exc.value)
    assert env.store.all() == []
    assert [d for d in os.listdir(env.layout.containers.path) if os.path.isdir(os.path.join(env.layout.containers.path, d))] == []


def test_remove_calls_hooks_with_a_final_sample_before_rmdir(env):
    seen = []

    def hook(info, sample):
        seen.append((info.name, os.path.isdir(info.cgroup), sample))

    env.sup.before_remove.append(hook)
    info = env.run("billed", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")
    env.sup.wait("billed", 30)
    with pytest.raises(Conflict):
        env.run("billed", "true")
    env.sup.remove("billed")
    assert len(seen) == 1
    name, existed, sample = seen[0]
    assert name == "billed" and existed
    assert sample is not None and sample.cpu.usage_usec > 0
    assert not os.path.exists(info.cgroup)
    with pytest.raises(NotFound):
        env.sup.get("billed")


def test_remove_of_a_running_container_needs_force(env):
    info = env.run("busy", "sleep 1000")
    with pytest.raises(Conflict):
        env.sup.remove("busy")
    env.sup.remove("busy", force=True)
    assert not os.path.exists(info.cgroup)


def test_auto_remove(env):
    seen = []
    env.sup.before_remove.append(lambda info, sample: seen.append(info.name))
    info = env.run("temp", "exit 4", rm=True)
    final = env.sup.wait("temp", 15)
    assert final.exit_code == 4
    wait_for(lambda: not os.path.exists(info.cgroup), what="auto removal")
    assert seen == ["temp"]
    with pytest.raises(NotFound):
        env.sup.get("temp")


def test_created_only_then_started(env):
    env.sup.create(env.spec("later", ["sh", "-c", "exit 5"], start=False))
    assert env.sup.get("later").state == "created"
    env.sup.start("later")
    assert env.sup.wait("later", 15).exit_code == 5


def test_a_vanished_cgroup_is_survived(env):
    info = env.run("vanish", "exit 0")
    env.sup.wait("vanish", 15)
    os.rmdir(info.cgroup)  # someone else removed it behind the agent's back
    with pytest.raises(UserError):
        env.sup.freeze("vanish")  # not running: a clear error, no crash
    env.sup.start("vanish")  # a new cgroup instance is made
    again = env.sup.wait("vanish", 15)
    assert again.exit_code == 0 and os.path.isdir(again.cgroup)
    assert again.cgroup_inode != info.cgroup_inode  # counters start again from zero
    os.rmdir(again.cgroup)
    env.sup.remove("vanish")
    with pytest.raises(NotFound):
        env.sup.get("vanish")
