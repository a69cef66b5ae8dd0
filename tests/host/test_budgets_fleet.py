"""A fleet-wide budget over the real PostgreSQL table: two agentds (two
hosts, each its own cgroup root, state and socket) ship to the same table;
host B's budget `--scope fleet` on a label matches a burner on host A and an
idle container on B. A's spend, read back from the table, crosses B's limit
and B freezes its own container; B's own spend alone is far below the
limit. Without [sink.postgres] a fleet budget is refused in one line."""
from __future__ import annotations

import os
import uuid

from helpers import PG_DSN, Agentd, ctl, one_line, pg_exclusive, wait_for


def _frozen(cg: str) -> bool:
    with open(os.path.join(cg, "cgroup.events")) as f:
        return "frozen 1" in f.read()


def _agentd(cgroup_factory, tmp_path, host: str, sink: bool) -> Agentd:
    top = tmp_path / host
    top.mkdir()
    cfg = top / "agent.toml"
    # 36 USD per core-hour: a busy core costs 0.01 USD a second
    cfg.write_text(f'[agent]\nhost = "{host}"\n[collector]\ninterval = "200ms"\n'
                   '[billing]\nperiod = "1s"\ncurrency = "USD"\nprice_cpu_core_hour = "36"\n'
                   + (f'[sink.postgres]\ndsn = "{PG_DSN}"\ninterval = "200ms"\n' if sink else ""))
    a = Agentd(cgroup_factory(), top, config=str(cfg))
    a.start()
    return a


def test_a_fleet_budget_sums_the_other_hosts_spend_and_acts_on_its_own_containers(cgroup_factory, tmp_path):
    team = "fleet-" + uuid.uuid4().hex[:8]       # this test's containers only, in a shared table
    with pg_exclusive():
        a = _agentd(cgroup_factory, tmp_path, f"host-a-{team}", sink=True)
        b = _agentd(cgroup_factory, tmp_path, f"host-b-{team}", sink=True)
        try:
            a.run("burner", "while :; do :; done", labels={"team": team})
            cid = b.run("idle", "sleep 1000", labels={"team": team})["id"]
            cg = os.path.join(b.root.path, "containers", cid)
            r = ctl(b, "budget", "set", "team", "--match", f"label:team={team}", "--limit", "0.05",
                    "--per", "day", "--action", "freeze", "--scope", "fleet")
            assert r.returncode == 0, r.stderr
            wait_for(lambda: _frozen(cg), 120, "host B to freeze its own container on the fleet's spend")
            budget = b.client.call("GET", "/v1/budgets/team")
            assert budget["scope"] == "fleet" and budget["acted_on"] == ["idle"]
            assert float(budget["spent"]) >= 0.05
            own = sum(float(u["cost"]) for u in b.client.call("GET", "/v1/usage", {"format": "jsonl"})["rows"]
                      if u["labels"].get("team") == team)
            assert own < 0.01, f"host B's own spend {own} should be far below the limit"
            # the burner on host A is not B's to freeze
            assert a.inspect("burner")["state"] == "running"
        finally:
            a.stop()
            b.stop()


def test_a_fleet_budget_without_a_sink_is_refused_in_one_line(cgroup_factory, tmp_path):
    a = _agentd(cgroup_factory, tmp_path, "lonely", sink=False)
    try:
        r = ctl(a, "budget", "set", "x", "--match", "name:x", "--limit", "1", "--per", "day",
                "--action", "alert", "--scope", "fleet")
        assert r.returncode == 2 and "scope: fleet needs [sink.postgres]" in one_line(r)
        assert a.client.call("GET", "/v1/budgets")["budgets"] == []
        r = ctl(a, "budget", "set", "x", "--match", "name:x", "--limit", "1", "--per", "day",
                "--action", "alert", "--scope", "galaxy")
        assert r.returncode == 2 and "scope: 'galaxy' is not a budget scope" in one_line(r)
    finally:
        a.stop()
