"""scripts/run-demo.sh, run twice, then --down: the host is left as it was.

The demo runs with its own state dir, cgroup root and metrics port
(SKIP_SETUP=1: the environment is already set up). The rerun keeps the
agentd, the running demo container (same id, same pid) and the log (only
appended to). --down leaves no process, cgroup, socket or port of ours.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid

import pytest

from agent.cli.client import Client
from helpers import kill_tree
from runtime.cgroupfs import Cgroup, find_mount
from helpers import free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "scripts", "run-demo.sh")


def run_demo(env, *args):
    r = subprocess.run(["bash", DEMO, *args], env=env, capture_output=True, text=True, timeout=300,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-2000:])
    return r.stdout


def ours(state: str) -> list[str]:
    """Processes whose command line names our state dir (agentd, the launcher)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state in cmd:
            found.append(f"{pid}: {cmd}")
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_demo_rerun_keeps_everything_and_down_leaves_nothing():
    top = tempfile.mkdtemp(prefix="cga-demo-")
    state = os.path.join(top, "state")
    root = os.path.join(find_mount(), f"cga-test-demo-{uuid.uuid4().hex[:8]}")
    port = free_port()
    env = dict(os.environ, SKIP_SETUP="1", STATE_DIR=state, CGROUP_ROOT=root, METRICS_LISTEN=f"127.0.0.1:{port}")
    env.pop("AGENT_SOCKET", None)
    sock = os.path.join(state, "agent.sock")
    try:
        out = run_demo(env)
        assert "demo container 'demo' is running" in out
        client = Client(sock)
        demo = client.call("GET", "/v1/containers/demo")
        assert demo["state"] == "running" and alive(demo["pid"])
        with open(os.path.join(state, "agentd.pid")) as f:
            agentd_pid = int(f.read())
        launcher = [int(p) for p in open(os.path.join(root, "launcher", "cgroup.procs")).read().split()]
        assert launcher and alive(agentd_pid)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        with open(os.path.join(state, "agentd.log"), "rb") as f:
            log_before = f.read()
        assert log_before

        out = run_demo(env)  # again: keeps agentd, the demo container and the log
        assert "already running" in out and "keeping the demo container 'demo'" in out
        again = client.call("GET", "/v1/containers/demo")
        assert (again["id"], again["pid"], again["state"]) == (demo["id"], demo["pid"], "running")
        assert int(open(os.path.join(state, "agentd.pid")).read()) == agentd_pid and alive(agentd_pid)
        with open(os.path.join(state, "agentd.log"), "rb") as f:
            assert f.read().startswith(log_before)

        # a second container, to see --down remove every one
        client.call("POST", "/v1/containers", body={"name": "extra", "argv": ["sleep", "600"]})
        extra = client.call("GET", "/v1/containers/extra")

        out = run_demo(env, "--down")
        for pid in (agentd_pid, *launcher, demo["pid"], extra["pid"]):
            assert not alive(pid), (pid, out)
        assert not ours(state), ours(state)
        assert not os.path.exists(root), os.listdir(root)
        assert not os.path.exists(sock) and not os.path.exists(os.path.join(state, "launcher.sock"))
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert os.path.exists(os.path.join(state, "agentd.log"))   # the log stays

        run_demo(env, "--down")  # again: nothing to do, still fine
    finally:
        if os.path.isdir(root):
            kill_tree(Cgroup(root))
        for line in ours(state):
            os.kill(int(line.split(":")[0]), 9)
        shutil.rmtree(top, ignore_errors=True)
