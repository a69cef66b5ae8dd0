"""Faults that need real limits (issue 5), on a real agentd in the VM.

One agentd process (own state dir, socket, cgroup root under the session's
v2 test parent, metrics port) serves the module:

- a fork bomb under pids.max stays capped (pids.current <= pids.max, the
  kernel counts refused forks in pids.events "max"), /metrics shows the
  capped process count and the refused forks
  (cgroup_agent_container_pids_limit_hits_total), the log a
  container.pids_limit_hit event, and agentd keeps serving while it runs;
  stop ends it through the cgroup.
- a memory hog under memory.max with restart=always is OOM-killed, restarted
  with a growing backoff (container.restart_scheduled delays), and counted
  (container oom_kills / restart_count in the API and
  cgroup_agent_container_oom_kills_total / _restarts_total on /metrics).
"""
from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import destroy_cgroup
from helpers import free_port, wait_for


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=60)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(60)
        self.sock.connect(self.unix_path)


class Agent:
    def __init__(self, root: str, state: str):
        self.root, self.state = root, state
        self.sock = os.path.join(state, "agent.sock")
        self.log_path = os.path.join(state, "agentd.log")
        self.port = free_port()
        cfg = os.path.join(state, "agentd.toml")
        with open(cfg, "w") as f:
            f.write('[collector]\ninterval = "500ms"\n[agent]\nstop_timeout = "2s"\n')
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.daemon", "--config", cfg, "--state-dir", state,
                 "--cgroup-root", root, "--socket", self.sock, "--metrics-listen", f"127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def call(self, method, path, body=None):
        conn = _UnixHTTP(self.sock)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
            r = conn.getresponse()
            return r.status, json.loads(r.read() or b"null")
        finally:
            conn.close()

    def healthy(self) -> bool:
        assert self.proc.poll() is None, f"agentd exited:\n{self.log()[-3000:]}"
        try:
            return self.call("GET", "/v1/health")[0] == 200
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=60) as r:
            return r.read().decode()

    def metric(self, family: str, name: str) -> float | None:
        for line in self.metrics().splitlines():
            if line.startswith(family + "{") and f'name="{name}"' in line:
                return float(line.rsplit(" ", 1)[1])
        return None

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def events(self, name: str) -> list[dict]:
        out = []
        for line in self.log().splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("event") == name:
                out.append(e)
        return out


@pytest.fixture(scope="module")
def agent(vm_test_parent, tmp_path_factory):
    root = vm_test_parent.child(f"faults-{secrets.token_hex(3)}")
    os.mkdir(root.path)
    a = Agent(root.path, str(tmp_path_factory.mktemp("faults-state")))
    try:
        wait_for(a.healthy, timeout=180, what="agentd to serve")
        yield a
    finally:
        if a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait(30)
        destroy_cgroup(root.path)


def _read(cg: str, file: str) -> str:
    with open(os.path.join(cg, file)) as f:
        return f.read()


def test_fork_bomb_stays_under_pids_max_and_agentd_serves(agent, record_property):
    status, info = agent.call("POST", "/v1/containers", {
        "name": "bomb", "argv": ["sh", "-c", "b() { b | b & }; b; sleep 600"], "limits": {"pids": "32"}})
    assert status == 201, info
    cg = info["cgroup"]
    wait_for(lambda: int(re.search(r"max (\d+)", _read(cg, "pids.events")).group(1)) > 0,
             what="forks refused at pids.max")
    peak = 0
    for _ in range(10):  # while the bomb keeps trying: capped, and agentd answers
        peak = max(peak, int(_read(cg, "pids.current")))
        assert agent.healthy()
        time.sleep(0.2)
    assert peak <= 32
    refused = int(re.search(r"max (\d+)", _read(cg, "pids.events")).group(1))
    shown = wait_for(lambda: agent.metric("container_processes", "bomb"), what="container_processes on /metrics")
    assert 0 < shown <= 32
    # the fault shows in a metric (the kernel's count) and in a log event
    hits = wait_for(lambda: agent.metric("cgroup_agent_container_pids_limit_hits_total", "bomb"),
                    what="pids.max hits on /metrics")
    assert 0 < hits <= int(re.search(r"max (\d+)", _read(cg, "pids.events")).group(1))
    logged = wait_for(lambda: [e for e in agent.events("container.pids_limit_hit") if e.get("name") == "bomb"],
                      what="container.pids_limit_hit logged")
    assert logged[0]["refused_forks"] > 0
    record_property("fork_bomb_forks_refused", refused)
    status, info = agent.call("POST", "/v1/containers/bomb/stop?timeout=1")
    assert status == 200 and info["state"] == "exited", info
    assert "populated 0" in _read(cg, "cgroup.events")
    assert agent.healthy()


def test_memory_hog_is_oom_killed_restarted_with_backoff_and_counted(agent, record_property):
    status, info = agent.call("POST", "/v1/containers", {
        "name": "hog", "argv": ["sh", "-c", "x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done"],
        "limits": {"memory": "32M", "memory_swap": "0"}, "restart": "always"})
    assert status == 201, info

    def restarted_twice():
        st, i = agent.call("GET", "/v1/containers/hog")
        return i if i["restart_count"] >= 2 and i["oom_kills"] >= 1 else None

    got = wait_for(restarted_twice, what="two restarts after OOM kills")
    delays = [e["delay"] for e in agent.events("container.restart_scheduled") if e.get("name") == "hog"]
    assert len(delays) >= 2 and delays[1] > delays[0], delays
    assert agent.events("container.oom_kill")
    wait_for(lambda: (agent.metric("cgroup_agent_container_oom_kills_total", "hog") or 0) >= 1,
             what="oom kills on /metrics")
    wait_for(lambda: (agent.metric("cgroup_agent_container_restarts_total", "hog") or 0) >= 2,
             what="restarts on /metrics")
    record_property("memory_hog_restarts", got["restart_count"])
    record_property("memory_hog_backoff_delays", ",".join(str(d) for d in delays[:4]))
    status, info = agent.call("POST", "/v1/containers/hog/stop?timeout=1")
    assert status == 200 and info["state"] == "exited", info
    assert agent.healthy()
