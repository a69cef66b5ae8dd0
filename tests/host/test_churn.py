"""Churn (issue 5, the soak scaled to CI): containers created and removed at
a steady pace beside long-lived ones, on a real agentd.

After the churn, with only the long-lived containers left:

- agentd's open descriptors (/proc/PID/fd) are back to the warm baseline;
- its inotify watches (``inotify wd:`` lines of /proc/PID/fdinfo) too;
- no zombie among the children of agentd or of the launcher;
- no cgroup under R/containers but those of listed containers;
- the state db holds one row per listed container (no leftovers) and the
  ledger no open instance of a removed container (closed ones are kept a
  day by design, agent/ledger.py GC_AFTER);
- every removed container was billed: the ledger holds a record for its id.

The full soak (10/s for 10 min beside 200) is bench/soak.py.
"""
from __future__ import annotations

import os
import sqlite3
import time

import pytest

from test_daemon import Agentd, wait_for
from test_faults import api, cgroup_dirs, containers, metric

pytestmark = pytest.mark.slow

LONG_LIVED = 20
CHURN_SECONDS = 40
RATE = 5.0  # containers per second (aimed at; the pace is kept with a schedule, not sleeps per item)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def inotify_watches(pid: int) -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                n += sum(1 for line in f if line.startswith("inotify wd:"))
        except OSError:
            pass
    return n


def zombies_of(*parents: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        if rest[0] == "Z" and int(rest[1]) in parents:
            out.append(int(d))
    return out


def rows(db: str, sql: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture
def agentd(cgroup, tmp_path):
    cfg = tmp_path / "agentd.toml"
    cfg.write_text('[collector]\ninterval = "200ms"\n[billing]\nperiod = "5s"\n')
    a = Agentd(cgroup, tmp_path, config=str(cfg))
    yield a
    a.stop()


def _settle(a: Agentd, n_live: int) -> None:
    wait_for(lambda: len(cgroup_dirs(a)) == n_live, what="churned cgroups gone")
    time.sleep(1.0)  # a few collection passes over the final set


def test_churn_leaks_nothing_and_bills_every_container(agentd):
    a = agentd
    a.start()
    pid = a.proc.pid
    launcher = a.root.child("launcher").procs()[0]
    for i in range(LONG_LIVED):
        a.run(f"long{i}", "exec sleep 3600")

    def one(name: str) -> str:
        info = a.run(name, "exit 0")
        a.client.call("GET", f"/v1/containers/{name}/wait", query={"timeout": "30"})
        status, body = api(a, "DELETE", f"/v1/containers/{name}")
        assert status == 200, body
        return info["id"]

    # warm up (first use of every code path, sqlite readers, metrics server)
    warm = [one(f"warm{i}") for i in range(5)]
    metric(a, "cgroup_agent_cgroups_watched")
    _settle(a, LONG_LIVED)
    base_fds, base_watches = fd_count(pid), inotify_watches(pid)

    removed = list(warm)
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < CHURN_SECONDS:
        due = start + i / RATE
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        removed.append(one(f"churn{i}"))
        if i % 25 == 0:
            metric(a, "cgroup_agent_cgroups_watched")  # scrapes during the churn
        i += 1
    elapsed = time.monotonic() - start
    _settle(a, LONG_LIVED)

    fds, watches = fd_count(pid), inotify_watches(pid)
    zombies = zombies_of(pid, launcher)
    lst = containers(a)
    live_ids = {c["id"] for c in lst}
    state_rows = rows(os.path.join(a.state, "state.db"), "SELECT id FROM containers")
    billed = {r[0] for r in rows(os.path.join(a.state, "ledger.db"), "SELECT DISTINCT container_id FROM records")}
    # finished instances stay (closed) for ledger.GC_AFTER (a day) to absorb late passes; none may stay open
    open_instances = {r[0] for r in rows(os.path.join(a.state, "ledger.db"),
                                         "SELECT container_id FROM instances WHERE open_start IS NOT NULL "
                                         "OR NOT finished")}
    print(f"\nchurn: {i} containers in {elapsed:.1f}s ({i / elapsed:.2f}/s) beside {LONG_LIVED}; "
          f"fds {base_fds}->{fds}, inotify watches {base_watches}->{watches}, "
          f"rss {open(f'/proc/{pid}/status').read().split('VmRSS:')[1].split()[0]} kB")

    assert a.proc.poll() is None
    assert fds <= base_fds, f"agentd fds grew from {base_fds} to {fds}: {sorted(os.listdir(f'/proc/{pid}/fd'))}"
    assert watches <= base_watches, f"inotify watches grew from {base_watches} to {watches}"
    assert not zombies, f"zombies: {zombies}"
    assert len(lst) == LONG_LIVED and all(c["state"] == "running" for c in lst)
    assert cgroup_dirs(a) == live_ids
    assert {r[0] for r in state_rows} == live_ids, "state db keeps rows of removed containers"
    assert open_instances <= live_ids, f"ledger instances left open: {sorted(open_instances - live_ids)[:5]}"
    unbilled = [cid for cid in removed if cid not in billed]
    assert not unbilled, f"{len(unbilled)} of {len(removed)} removed containers have no ledger record"
