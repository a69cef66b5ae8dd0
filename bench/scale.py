#!/usr/bin/env python3
"""N concurrent containers on one agentd (issue 5, "scale").

    python3 bench/scale.py                 # N = 2000
    python3 bench/scale.py -n 500 --workers 8

As root. Starts its own agentd (see bench/soak.py AgentProc: fresh state dir,
socket, cgroup root, metrics port; collector interval 1 s, billing period
10 s) and measures, with N `sleep` containers running at once:

  launch    N POST /v1/containers from --workers client threads: total time,
            rate, failures
  collect   cgroups_watched reaching N; mean collection pass (from the
            cgroup_agent_collection_duration_seconds histogram over 10 s),
            against a peer measured in the same run on the same cgroups: a
            plain Python loop that opens, reads and closes the same stat
            files of every container cgroup (ratio agent / peer)
  scrape    /metrics: median of 5 scrapes, bytes, series
  list      GET /v1/containers: median of 3
  bill      every container has a ledger record once a billing period
            has closed
  agentd    RSS and open fds at N
  remove    DELETE ?force=1 of all N: total time, failures, leftover cgroups

Prints a summary and writes bench/out/scale.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "bench"))

from soak import AgentProc  # noqa: E402

PEER_FILES = ("cpu.stat", "cgroup.events", "cpu.pressure", "memory.pressure", "io.pressure", "io.stat",
              "memory.current", "memory.stat", "memory.events", "pids.current", "pids.events")


def peer_pass(cgroups: list[str]) -> float:
    """A straightforward reader: open, read, close every stat file of every cgroup."""
    t = time.perf_counter()
    for cg in cgroups:
        for f in PEER_FILES:
            try:
                with open(os.path.join(cg, f)) as fh:
                    fh.read()
            except OSError:
                pass
    return time.perf_counter() - t


def hist(a: AgentProc) -> tuple[float, float]:
    text = a.scrape().decode()
    return (a.metric_value(text, "cgroup_agent_collection_duration_seconds_sum") or 0.0,
            a.metric_value(text, "cgroup_agent_collection_duration_seconds_count") or 0.0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=2000)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--out", default=os.path.join(REPO, "bench", "out", "scale.json"))
    args = p.parse_args(argv)
    n = args.n
    a = AgentProc('[collector]\ninterval = "1s"\n[billing]\nperiod = "10s"\n', "scale")
    res: dict = {"n": n}
    try:
        base_rss = a.sample()["rss_kb"]
        failures = []

        def launch(i):
            st, body = a.call("POST", "/v1/containers", {"name": f"s{i}", "argv": ["sleep", "86400"]})
            if st != 201:
                failures.append(f"{st} {str(body)[:120]}")
                return None
            return body

        t = time.monotonic()
        with ThreadPoolExecutor(args.workers) as pool:
            infos = [x for x in pool.map(launch, range(n)) if x]
        dt = time.monotonic() - t
        res.update(launch_s=round(dt, 1), launch_per_s=round(len(infos) / dt, 1), launched=len(infos),
                   launch_failures=len(failures), launch_failure_examples=failures[:3])
        print(f"launched {len(infos)}/{n} in {dt:.1f} s ({len(infos) / dt:.1f}/s), {len(failures)} failures",
              flush=True)

        t = time.monotonic()
        while True:
            watched = a.metric_value(a.scrape().decode(), "cgroup_agent_cgroups_watched") or 0
            if watched >= len(infos) or time.monotonic() - t > 120:
                break
            time.sleep(1)
        res["cgroups_watched"] = watched
        s0, c0 = hist(a)
        time.sleep(10)
        s1, c1 = hist(a)
        agent_pass = (s1 - s0) / (c1 - c0) if c1 > c0 else None
        cgs = [i["cgroup"] for i in infos]
        peer = statistics.median(peer_pass(cgs) for _ in range(3))
        res.update(collection_pass_s=round(agent_pass, 4) if agent_pass else None,
                   collection_passes_in_10s=c1 - c0, peer_pass_s=round(peer, 4),
                   agent_over_peer=round(agent_pass / peer, 2) if agent_pass else None)

        times, size = [], 0
        for _ in range(5):
            t = time.perf_counter()
            body = a.scrape()
            times.append(time.perf_counter() - t)
            size = len(body)
        res.update(scrape_s_p50=round(statistics.median(times), 4), scrape_bytes=size,
                   scrape_series=sum(1 for line in body.decode().splitlines() if line and line[0] != "#"))
        lt = []
        for _ in range(3):
            t = time.perf_counter()
            st, lst = a.call("GET", "/v1/containers")
            lt.append(time.perf_counter() - t)
        res.update(list_s_p50=round(statistics.median(lt), 4), listed=len(lst) if isinstance(lst, list) else None)

        ids = {i["id"] for i in infos}
        t = time.monotonic()
        billed = set()
        while time.monotonic() - t < 60:
            billed = a.ledger_ids() & ids
            if len(billed) == len(ids):
                break
            time.sleep(2)
        res.update(billed=len(billed), bill_wait_s=round(time.monotonic() - t, 1))
        smp = a.sample()
        res.update(agentd_rss_kb=smp["rss_kb"], agentd_rss_kb_idle=base_rss,
                   agentd_rss_kb_per_container=round((smp["rss_kb"] - base_rss) / max(len(infos), 1), 1),
                   agentd_fds=smp["fds"], inotify_watches=smp["inotify_watches"], db_bytes=smp["db_bytes"])
        print(json.dumps(res, indent=1), flush=True)

        rm_fail = []

        def remove(info):
            st, body = a.call("DELETE", f"/v1/containers/{info['name']}?force=1")
            if st != 200:
                rm_fail.append(f"{st} {str(body)[:120]}")

        t = time.monotonic()
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(remove, infos))
        res.update(remove_s=round(time.monotonic() - t, 1), remove_failures=len(rm_fail),
                   remove_failure_examples=rm_fail[:3], cgroups_left=a.container_cgroups(),
                   agentd_alive=a.proc.poll() is None)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
        print(json.dumps({k: res[k] for k in ("remove_s", "remove_failures", "cgroups_left", "agentd_alive")}))
        return 0 if not failures and not rm_fail and res["cgroups_left"] == 0 else 1
    finally:
        a.close()


if __name__ == "__main__":
    sys.exit(main())
