"""The supervisor's lifecycle hook points (pre_start, post_start, post_stop),
end to end with a real launcher and real cgroups (the Env of
test_supervisor.py): what network setup/teardown and the like hang on."""
from __future__ import annotations

import os

import pytest

from agent.errors import UserError
from test_supervisor import Env, wait_for  # tests/host is on sys.path (rootdir conftest)


@pytest.fixture
def env(cgroup, tmp_path):
    e = Env(cgroup, tmp_path)
    yield e
    e.close()


def test_hooks_run_in_order_and_pre_start_amends_the_spawn_spec(env, tmp_path):
    calls = []

    def pre(info, spawn_spec):
        calls.append(("pre_start", info.state, info.pid))
        spawn_spec["env"]["HOOKED"] = "by-pre-start"

    env.sup.pre_start.append(pre)
    env.sup.post_start.append(lambda info: calls.append(("post_start", info.state, info.pid)))
    env.sup.post_stop.append(lambda info: calls.append(("post_stop", info.state, info.exit_code)))
    out = tmp_path / "hooked"
    env.run("hooked", f'echo "$HOOKED" > {out}; exit 7')
    info = env.sup.wait("hooked", 15)
    assert info.exit_code == 7
    assert out.read_text().strip() == "by-pre-start"  # the amended spec is what was spawned
    assert calls[0] == ("pre_start", "created", None)
    assert calls[1] == ("post_start", "running", info.pid) and info.pid
    assert calls[2] == ("post_stop", "exited", 7)
    assert len(calls) == 3


def test_every_run_of_a_restarted_container_gets_its_pair(env):
    starts, stops = [], []
    env.sup.pre_start.append(lambda info, spec: starts.append(info.restart_count))
    env.sup.post_stop.append(lambda info: stops.append(info.exit_code))
    env.run("again", "exit 1", restart="on-failure:2")
    wait_for(lambda: env.sup.get("again").restart_count == 2 and env.sup.get("again").state == "exited",
             what="two restarts")
    env.sup.wait("again", 15)
    assert starts == [0, 1, 2]
    assert stops == [1, 1, 1]


def test_a_refusing_pre_start_spawns_nothing_and_post_stop_undoes_it(env, tmp_path):
    undone = []
    marker = tmp_path / "ran"

    def refuse(info, spawn_spec):
        raise UserError("network: no address left in the pool")

    env.sup.pre_start.append(refuse)
    env.sup.post_stop.append(lambda info: undone.append(info.name))
    with pytest.raises(UserError, match="no address left"):
        env.run("refused", f"touch {marker}")
    assert undone == ["refused"]
    assert not marker.exists()
    # create() undid itself: no container, no cgroup left
    assert not [c for c in env.sup.containers() if c.name == "refused"]
    top = env.layout.containers.path
    assert not [d for d in os.listdir(top) if os.path.isdir(os.path.join(top, d))]


def test_a_failing_post_hook_is_logged_and_the_container_goes_on(env):
    def broken(info):
        raise RuntimeError("hook bug")

    env.sup.post_start.append(broken)
    env.sup.post_stop.append(broken)
    env.run("sturdy", "exit 0")
    info = env.sup.wait("sturdy", 15)
    assert info.state == "exited" and info.exit_code == 0
