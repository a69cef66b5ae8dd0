"""Every counter deploy/alerts.yml reads is on a fresh agentd's /metrics, at 0.

`increase()` over a series that appears with its first error misses that
error; so the agent's own counters are exported from the start at 0, and the
per-container ones from the container's creation. Gauges (last success
timestamp, sink lag) stay absent until they have a true value.

The rule expressions are parsed from deploy/alerts.yml; nothing is listed here
by hand except which cgroup controller feeds the kernel-sourced families (on a
host without it, they cannot exist and the test says so).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.request

import yaml
from prometheus_client.parser import text_string_to_metric_families

from agent.cli.client import Client
from helpers import free_port, kill_tree, new_cgroup, start_agentd_with_flags, stop_agentd, wait_for
from runtime.cgroupfs import find_mount

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# families read from a controller's files: only a host that hands the controller down has them
NEEDS = {"container_oom_events_total": "memory", "container_cpu_cfs_throttled_periods_total": "cpu",
         "container_cpu_cfs_periods_total": "cpu", "cgroup_agent_container_pids_limit_hits_total": "pids"}


def alert_counters() -> set[str]:
    with open(os.path.join(REPO, "deploy", "alerts.yml")) as f:
        doc = yaml.safe_load(f)
    names = set()
    for group in doc["groups"]:
        for rule in group["rules"]:
            names |= set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*_total)\b", rule["expr"]))
    return names


def test_alert_rules_read_counters():
    names = alert_counters()
    assert {"cgroup_agent_collection_errors_total", "cgroup_agent_ledger_errors_total"} <= names, names


def test_a_fresh_agent_exports_every_alert_counter_at_zero():
    root = new_cgroup(find_mount())
    top = tempfile.mkdtemp(prefix="cga-alerts-")
    port = free_port()
    d = start_agentd_with_flags(root, top, metrics_listen=f"127.0.0.1:{port}")
    sock = d.sock
    try:
        Client(sock).call("POST", "/v1/containers", body={"name": "idle", "argv": ["sleep", "600"]})
        with open(os.path.join(root.path, "containers", "cgroup.subtree_control")) as f:
            enabled = set(f.read().split())

        def scrape():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                text = r.read().decode()
            return text if 'name="idle"' in text else None
        text = wait_for(scrape, 60, "the container's series on /metrics")
        samples: dict[str, list[float]] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                samples.setdefault(s.name, []).append(s.value)
        checked = []
        for name in sorted(alert_counters()):
            need = NEEDS.get(name)
            if need and need not in enabled:
                print(f"NOT CHECKED {name}: this host does not hand the {need} controller to containers")
                continue
            assert name in samples, f"{name} (read by deploy/alerts.yml) is not on a fresh agent's /metrics"
            assert samples[name] and all(v == 0 for v in samples[name]), (name, samples[name])
            checked.append(name)
        assert "cgroup_agent_collection_errors_total" in checked and "cgroup_agent_ledger_errors_total" in checked
        # gauges without a true value yet stay absent: no sink configured, so no lag
        assert "cgroup_agent_sink_lag_seconds" not in samples
        print("checked at 0:", ", ".join(checked))
    finally:
        stop_agentd(d)
        kill_tree(root)
        shutil.rmtree(top, ignore_errors=True)
