"""Budgets on a real agentd: a 0.01 USD budget with --action freeze freezes a
CPU burner once its cost crosses the limit (cgroup.events frozen 1), a
container the user had paused is left alone, raising the limit thaws what the
budget froze (and only that); throttle is refused on a host without the cpu
controller, with the reason, and nothing is created."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

from helpers import free_port, start_agentd, stop_agentd


def _events(cg: str) -> dict:
    with open(os.path.join(cg, "cgroup.events")) as f:
        return dict(line.split() for line in f)


def _wait(pred, what, timeout=90):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_freeze_budget_freezes_the_burner_and_raising_the_limit_thaws_it(cgroup, tmp_path):
    port = free_port()
    # 36 USD per core-hour: a busy core costs 0.01 USD a second
    d = start_agentd(cgroup, str(tmp_path), 'host = "budget"\n[billing]\nperiod = "1s"\ncurrency = "USD"\n'
                     'price_cpu_core_hour = "36"\n', interval="100ms", metrics_listen=f"127.0.0.1:{port}")
    ctl = [shutil.which("agentctl"), "--socket", d.sock]

    def run(*args, check=True):
        return subprocess.run(ctl + list(args), check=check, capture_output=True, text=True)

    try:
        # refused where the host cannot act, with the reason; nothing created
        bad = run("budget", "set", "slow", "--match", "name:burn*", "--limit", "0.01", "--per", "day",
                  "--action", "throttle:0.1", check=False)
        cpu_enabled = "cpu" in open(os.path.join(cgroup.path, "containers", "cgroup.subtree_control")).read()
        if not cpu_enabled:
            assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "action:" in bad.stderr, bad.stderr
            assert "cpu" in bad.stderr
            assert json.loads(run("budget", "ls", "--json").stdout)["budgets"] == []
        else:
            print("cpu controller present: throttle accepted here")
            run("budget", "rm", "slow")
        bad = run("budget", "set", "x", "--match", "team", "--limit", "1", "--per", "day", "--action", "freeze",
                  check=False)
        assert bad.returncode == 2 and "match:" in bad.stderr and bad.stderr.count("\n") == 1

        burn = "while :; do :; done"
        ids = {n: run("run", "-d", "--name", n, "--", "/bin/sh", "-c", burn).stdout.strip()
               for n in ("burn1", "burn2")}
        cgs = {n: os.path.join(cgroup.path, "containers", cid) for n, cid in ids.items()}
        run("freeze", "burn2")                 # the user's own pause: not the budget's to undo
        run("budget", "set", "cap", "--match", "name:burn*", "--limit", "0.01", "--per", "day",
            "--action", "freeze", "--warn", "50")
        _wait(lambda: _events(cgs["burn1"])["frozen"] == "1", "the budget to freeze burn1")
        b = json.loads(run("budget", "inspect", "cap").stdout)
        assert b["crossed_at"] is not None and b["acted_on"] == ["burn1"] and b["warned"] == [50]
        assert float(b["spent"]) >= 0.01
        assert json.loads(run("inspect", "burn1").stdout)["state"] == "paused"
        metrics = _metrics(port)
        assert 'cgroup_agent_budget_limit{budget="cap",currency="USD"} 0.01' in metrics
        assert 'cgroup_agent_budget_spent{budget="cap",currency="USD"}' in metrics
        # log bytes are a counter family from the start (0 before the first byte)
        assert any(line.startswith("cgroup_agent_container_log_bytes_total{") and 'name="burn1"' in line
                   and line.endswith(" 0") for line in metrics.splitlines())

        run("budget", "set", "cap", "--match", "name:burn*", "--limit", "1000", "--per", "day", "--action", "freeze")
        _wait(lambda: _events(cgs["burn1"])["frozen"] == "0", "raising the limit to thaw burn1")
        b = json.loads(run("budget", "inspect", "cap").stdout)
        assert b["crossed_at"] is None and b["acted_on"] == []
        assert json.loads(run("inspect", "burn1").stdout)["state"] == "running"
        assert _events(cgs["burn2"])["frozen"] == "1"          # still the user's pause
        assert run("budget", "rm", "cap").stdout.strip() == "cap"
        assert run("budget", "inspect", "cap", check=False).returncode == 1
    finally:
        stop_agentd(d)


def _metrics(port):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def test_a_config_budget_acts_is_refused_to_the_api_and_follows_reloads(cgroup, tmp_path):
    """[budgets.cap] in the config file: shown with source config, acting like an
    API budget; agentctl may not change or remove it (one line naming the
    file); a SIGHUP after raising its limit in the file thaws what it froze;
    one after removing the table removes the budget."""
    import signal
    from helpers import Agentd, ctl, wait_for
    cfg = tmp_path / "agent.toml"
    base = ('[collector]\ninterval = "100ms"\n'
            '[billing]\nperiod = "1s"\ncurrency = "USD"\nprice_cpu_core_hour = "36"\n')

    def budget(limit):
        return (f'[budgets.cap]\nmatch = "name:burn*"\nlimit = "{limit}"\nper = "day"\n'
                f'action = "freeze"\nwarn = [50]\n')

    cfg.write_text(base + budget("0.01"))
    a = Agentd(cgroup, tmp_path, config=str(cfg))
    a.start()
    try:
        b = a.client.call("GET", "/v1/budgets/cap")
        assert b["source"] == "config" and float(b["limit"]) == 0.01 and b["action"] == "freeze"
        refused = ctl(a, "budget", "rm", "cap")
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert "[budgets.cap]" in refused.stderr and "config file" in refused.stderr
        refused = ctl(a, "budget", "set", "cap", "--match", "name:x", "--limit", "5", "--per", "day",
                      "--action", "alert")
        assert refused.returncode == 2 and "[budgets.cap]" in refused.stderr

        cid = a.run("burn1", "while :; do :; done")["id"]
        cg = os.path.join(cgroup.path, "containers", cid)
        wait_for(lambda: _events(cg)["frozen"] == "1", 90, "the config budget to freeze burn1")
        assert a.client.call("GET", "/v1/budgets/cap")["acted_on"] == ["burn1"]

        cfg.write_text(base + budget("1000"))
        a.signal(signal.SIGHUP)
        wait_for(lambda: _events(cg)["frozen"] == "0", 90, "the raised limit to thaw burn1")
        assert float(a.client.call("GET", "/v1/budgets/cap")["limit"]) == 1000

        cfg.write_text(base)
        a.signal(signal.SIGHUP)
        wait_for(lambda: a.client.call("GET", "/v1/budgets")["budgets"] == [], 60, "the budget to go")
        assert a.client.call("GET", f"/v1/containers/{cid}")["state"] == "running"
    finally:
        a.stop()
