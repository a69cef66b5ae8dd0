"""agentd as a real process: config checking, cgroup layout, live restore
after SIGKILL, SIGTERM leaving containers running, SIGHUP reload.

Every agentd here has its own state dir, socket, cgroup root (the `cgroup`
fixture: removed with everything in it afterwards, launcher included) and
a free metrics port.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from agent.cli.client import ApiError
from helpers import Agentd, free_port, populated, wait_for  # noqa: F401 - also imported from here by older test files


@pytest.fixture
def agentd(cgroup, tmp_path):
    a = Agentd(cgroup, tmp_path)
    yield a
    a.stop()


def test_check_accepts_a_valid_config(tmp_path):
    cfg = tmp_path / "ok.toml"
    cfg.write_text('[agent]\nlog_level = "debug"\n[collector]\ninterval = "200ms"\n')
    r = subprocess.run([sys.executable, "-m", "agent.daemon", "--config", str(cfg), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("text,key", [
    ('[collector]\ninterval = "fast"\n', "collector.interval"),
    ('[agent]\nstate_dirr = "/x"\n', "agent.state_dirr"),
    ('[billing]\nbasis = "sometimes"\n', "billing.basis"),
    ('[logs]\nmax_bytes = "lots"\n', "logs.max_bytes"),
])
def test_check_rejects_a_bad_config_naming_the_key(tmp_path, text, key):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    r = subprocess.run([sys.executable, "-m", "agent.daemon", "--config", str(cfg), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0]


def test_bad_flag_value_is_refused_like_the_config(tmp_path):
    r = subprocess.run([sys.executable, "-m", "agent.daemon", "--metrics-listen", "nowhere", "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "agent.metrics_listen" in r.stderr


def test_layout_and_self_placement(agentd):
    agentd.start()
    root = agentd.root
    assert agentd.proc.pid in root.child("agentd").procs()
    assert root.child("launcher").procs()
    assert os.path.isdir(root.child("containers").path)
    layout = [e for e in agentd.events() if e.get("event") == "cgroup.layout"]
    assert layout and layout[0]["root"] == root.path
    missing = {e["controller"] for e in agentd.events() if e.get("event") == "cgroup.controller_missing"}
    assert missing == {"cpu", "memory", "io", "pids", "cpuset"} - set(root.child("containers").subtree_control())


def test_live_restore_after_sigkill(agentd, tmp_path):
    go = tmp_path / "go"
    agentd.start()
    keep = agentd.run("keeper", "while :; do sleep 1; done")
    quit_ = agentd.run("quitter", f"while [ ! -e {go} ]; do sleep 0.05; done; exit 7")
    assert keep["state"] == "running" and quit_["state"] == "running"
    agentd.signal(signal.SIGKILL)
    agentd.wait()
    go.write_text("")
    wait_for(lambda: not populated(quit_["cgroup"]), what="quitter to exit while agentd is down")
    assert populated(keep["cgroup"])

    agentd.start()
    k = agentd.inspect("keeper")
    assert k["state"] == "running"
    assert k["pid"] == keep["pid"] and k["cgroup"] == keep["cgroup"] and k["id"] == keep["id"]
    q = agentd.inspect("quitter")
    assert q["state"] == "exited"
    assert q["exit_code"] == 7
    # the adopted container is fully managed again: stop goes through
    stopped = agentd.client.call("POST", "/v1/containers/keeper/stop", query={"timeout": "1"})
    assert stopped["state"] == "exited"
    assert not populated(keep["cgroup"])


def test_sigterm_leaves_containers_running(agentd):
    agentd.start()
    c = agentd.run("stays", "while :; do sleep 1; done")
    agentd.signal(signal.SIGTERM)
    assert agentd.wait() == 0
    assert populated(c["cgroup"])
    assert not os.path.exists(agentd.sock)
    agentd.start()
    again = agentd.inspect("stays")
    assert again["state"] == "running" and again["pid"] == c["pid"]


def test_stop_containers_on_exit(cgroup, tmp_path):
    cfg = tmp_path / "agentd.toml"
    cfg.write_text('[agent]\nstop_containers_on_exit = true\nstop_timeout = "1s"\n')
    a = Agentd(cgroup, tmp_path, config=str(cfg))
    try:
        a.start()
        ready = tmp_path / "ready"
        c = a.run("goes", f"trap 'exit 0' TERM; touch {ready}; while :; do sleep 0.05; done")
        wait_for(ready.exists, what="the TERM trap")
        a.signal(signal.SIGTERM)
        assert a.wait() == 0
        assert not populated(c["cgroup"])
        a.start()
        after = a.inspect("goes")
        assert after["state"] == "exited" and after["exit_code"] == 0
    finally:
        a.stop()


def test_bad_requests_do_not_crash_it(agentd):
    agentd.start()
    for body in ({"name": "../x", "argv": ["true"]}, {"name": "a"}, {"name": "a", "argv": "true"},
                 {"name": "a", "argv": ["true"], "volumes": ["/etc:/x"]}, {"name": "a", "argv": ["true"], "user": "root"},
                 {"name": "a", "argv": ["true"], "restart": "sometimes"}, {"name": "a", "argv": ["/no/such"]}):
        with pytest.raises(ApiError) as exc:
            agentd.client.call("POST", "/v1/containers", body=body)
        assert 400 <= exc.value.status < 500, body
    assert agentd.proc.poll() is None
    assert agentd.client.call("GET", "/v1/containers", query={"all": "1"}) == []


def test_sighup_reload(cgroup, tmp_path):
    cfg = tmp_path / "agentd.toml"
    cfg.write_text('[agent]\nlog_level = "info"\n')
    a = Agentd(cgroup, tmp_path, config=str(cfg))
    try:
        a.start()
        cfg.write_text('[agent]\nlog_level = "debug"\n[collector]\ninterval = "5s"\n')
        a.signal(signal.SIGHUP)
        wait_for(lambda: any(e.get("event") == "config.reloaded" for e in a.events()), what="reload")
        ev = {e["event"]: e for e in a.events()}
        assert ev["config.reloaded"]["changed"] == ["agent.log_level"]
        assert ev["config.reload_needs_restart"]["keys"] == ["collector.interval"]
        cfg.write_text('[agent]\nlog_level = "loud"\n')
        a.signal(signal.SIGHUP)
        wait_for(lambda: any(e.get("event") == "config.reload_failed" for e in a.events()), what="bad reload")
        assert a.proc.poll() is None
        a.client.call("GET", "/v1/health")
    finally:
        a.stop()


def test_cgroup_root_resolution():
    from agent.daemon.agentd import resolve_cgroup_root
    from runtime.cgroupfs import find_mount, own_cgroup
    mount = find_mount()
    assert resolve_cgroup_root(f"{mount}/cga-x") == (f"{mount}/cga-x", "configured")
    assert resolve_cgroup_root("/cga-y")[0] == f"{mount}/cga-y"
    root, why = resolve_cgroup_root("")
    if own_cgroup() == "/":
        # the hierarchy root is never taken over: a cgroup of our own below it
        assert root == f"{mount}/cgroup-agent" and "not delegated" in why
