"""Scale (issue 5): 2000 concurrent containers on one real agentd.

With N = 2000 long-lived `sleep` containers running at once (collector
interval 1 s, billing period 5 s):

- every launch succeeds and GET /v1/containers lists all N, running;
- the collector watches all N cgroups (cgroup_agent_cgroups_watched), a
  collection pass over them completes (the pass counter advances) without
  a collection error, and /metrics has container_cpu_usage_seconds_total
  for every one of them by name;
- every container gets a ledger record;
- the API keeps answering under the load: a further container is created,
  runs, is listed and removed, its cgroup gone;
- removing all N leaves no container cgroup, the collector watching none,
  and agentd alive, having logged no error.

Only functional properties are asserted; the figures (launch rate, scrape
size, RSS, descriptors) are printed (pytest -s / -rP). The load and the
figures come from the same helpers as bench/scale.py, which also times the
collection against psutil and a C reader at this scale.
"""
from __future__ import annotations

import os
import resource
import sys
import time

import pytest

from helpers import Agentd, wait_for
from test_faults import api, cgroup_dirs, containers, metrics_text

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "bench"))
import scale  # noqa: E402  bench/scale.py

pytestmark = pytest.mark.slow

N = 2000


def poll(pred, what: str, timeout: float = 120.0) -> None:
    """wait_for at a pace that does not add a 3 MB scrape every 20 ms to the load."""
    wait_for(lambda: pred() or time.sleep(0.5), timeout=timeout, what=what)


@pytest.fixture
def agentd(cgroup, tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = scale.fd_need(N)
    if soft < need <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))   # agentd inherits it
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= need, \
        f"{N} containers need about {need} descriptors in agentd; RLIMIT_NOFILE is {soft} (hard {hard})"
    cfg = tmp_path / "agentd.toml"
    cfg.write_text('[collector]\ninterval = "1s"\n[billing]\nperiod = "5s"\n')
    a = Agentd(cgroup, tmp_path, config=str(cfg))
    yield a
    a.stop()


@pytest.mark.timeout(1800)
def test_2000_concurrent_containers(agentd):
    a = agentd
    a.start()
    pid = a.proc.pid
    idle = scale.proc_figures(pid)

    def call(method, path, body=None):
        return api(a, method, path, body)

    infos, failures, launch_s = scale.launch_all(call, N)
    assert not failures, f"{len(failures)} of {N} launches failed, e.g. {failures[:3]}"
    assert len(infos) == N
    names = {i["name"] for i in infos}
    ids = {i["id"] for i in infos}

    lst = containers(a)
    assert {c["name"] for c in lst} == names
    not_running = [c["name"] for c in lst if c["state"] != "running"]
    assert not not_running, f"{len(not_running)} not running, e.g. {not_running[:5]}"
    assert cgroup_dirs(a) == ids

    # the collector: every cgroup watched, then whole passes over them without an error
    poll(lambda: scale.metric(metrics_text(a), "cgroup_agent_cgroups_watched") == N,
         what=f"the collector to watch {N} cgroups")
    passes0 = scale.metric(metrics_text(a), "cgroup_agent_collection_duration_seconds_count")
    poll(lambda: scale.metric(metrics_text(a), "cgroup_agent_collection_duration_seconds_count") >= passes0 + 2,
         what="two more collection passes")
    t = time.perf_counter()
    sf = scale.scrape_figures(metrics_text(a).encode())
    scrape_s = time.perf_counter() - t
    errors = scale.metric_sum(sf["text"], "cgroup_agent_collection_errors_total")
    assert errors == 0, [ln for ln in sf["text"].splitlines() if ln.startswith("cgroup_agent_collection_errors")]
    missing = names - sf["names"]
    assert not missing, f"{len(missing)} containers without container_cpu_usage_seconds_total, " \
                        f"e.g. {sorted(missing)[:5]}"

    # billing: a record for every container
    poll(lambda: ids <= scale.ledger_ids(a.state), what="a ledger record per container")

    # the API under the load: one more container, in and out
    st, probe = api(a, "POST", "/v1/containers", {"name": "probe", "argv": ["sleep", "3600"]})
    assert st == 201, probe
    st, got = api(a, "GET", "/v1/containers/probe")
    assert st == 200 and got["state"] == "running", got
    assert "probe" in {c["name"] for c in containers(a)}
    st, body = api(a, "DELETE", "/v1/containers/probe?force=1")
    assert st == 200, body
    assert api(a, "GET", "/v1/containers/probe")[0] == 404
    assert not os.path.exists(probe["cgroup"])

    at_n = scale.proc_figures(pid)
    rm_failures, remove_s = scale.remove_all(call, infos)
    assert not rm_failures, f"{len(rm_failures)} of {N} removals failed, e.g. {rm_failures[:3]}"
    wait_for(lambda: not cgroup_dirs(a), timeout=60, what="every container cgroup gone")
    assert containers(a) == []
    poll(lambda: scale.metric(metrics_text(a), "cgroup_agent_cgroups_watched") == 0,
         what="the collector to drop every removed cgroup")
    assert a.proc.poll() is None
    logged = [e for e in a.events() if e.get("level") in ("error", "critical")]
    assert not logged, f"agentd logged {len(logged)} errors, e.g. {logged[:3]}"

    print(f"\nscale: {N} containers launched in {launch_s:.1f} s ({N / launch_s:.1f}/s), removed in "
          f"{remove_s:.1f} s; /metrics {sf['bytes'] / 1e6:.2f} MB, {sf['series']} series, "
          f"{scrape_s * 1e3:.0f} ms; agentd RSS {idle['rss_kb'] / 1024:.1f} -> {at_n['rss_kb'] / 1024:.1f} MiB, "
          f"fds {idle['fds']} -> {at_n['fds']} (RLIMIT_NOFILE {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}), "
          f"inotify watches {at_n['inotify_watches']}")
