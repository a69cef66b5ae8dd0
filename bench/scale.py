#!/usr/bin/env python3
"""N concurrent containers on one agentd (issue 5, "scale").

    python3 bench/scale.py                 # N = 2000
    python3 bench/scale.py -n 500 --workers 8

As root. Starts its own agentd (see bench/soak.py AgentProc: fresh state dir,
socket, cgroup root, metrics port; collector interval 1 s, billing period
10 s) and measures, with N `sleep` containers running at once:

  launch    N POST /v1/containers from --workers client threads: total time,
            rate, failures
  collect   cgroups_watched reaching N; agentd's mean collection pass (wall
            clock, from the cgroup_agent_collection_duration_seconds
            histogram over 10 s); then, on the same N container cgroups in
            the same run, CPU time per pass of (bench/collect/run.py's code,
            measured its way: CPU time of the measuring thread, best of
            interleaved rounds):
              C floor   bench/collect/creader.c (gcc -O2): descriptors kept
                        open, pread + parse every number of every file
              psutil    read each cgroup's cgroup.procs, then psutil
                        cpu_times, memory_info, io_counters, num_threads of
                        every pid in it
              ours      agent.collector.Collector built in this process over
                        the same cgroups: as agentd runs it (tiered) and
                        reading every file every pass (full)
            and the ratios ours/C and psutil/C
  scrape    /metrics: median of 5 scrapes, bytes, series
  list      GET /v1/containers: median of 3
  bill      every container has a ledger record once a billing period
            has closed
  agentd    RSS and open fds at N
  remove    DELETE ?force=1 of all N: total time, failures, leftover cgroups

Prints a summary and writes bench/out/scale.json.

The helpers above main() (launch_all, remove_all, scrape_figures,
proc_figures, ledger_ids, fd_need) are shared with tests/host/test_scale.py,
which runs the same load and asserts what must hold at it; they take a
``call(method, path, body=None) -> (status, json)`` so either harness's
agentd fits.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "bench"))

FDS_PER_CONTAINER = 7   # agentd keeps 6 per container on this host (bench/README.md, scale); one spare


def fd_need(n: int) -> int:
    """Descriptors agentd needs for n containers (its soft RLIMIT_NOFILE must allow them)."""
    return n * FDS_PER_CONTAINER + 500


def launch_all(call, n: int, workers: int = 8, prefix: str = "s",
               argv=("sleep", "86400")) -> tuple[list[dict], list[str], float]:
    """POST n containers named prefix0..prefix{n-1} from ``workers`` threads:
    (infos of those created, failure lines, seconds)."""
    failures: list[str] = []

    def launch(i):
        st, body = call("POST", "/v1/containers", {"name": f"{prefix}{i}", "argv": list(argv)})
        if st != 201:
            failures.append(f"{prefix}{i}: {st} {str(body)[:120]}")
            return None
        return body

    t = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        infos = [x for x in pool.map(launch, range(n)) if x]
    return infos, failures, time.monotonic() - t


def remove_all(call, infos: list[dict], workers: int = 8) -> tuple[list[str], float]:
    """DELETE ?force=1 every container: (failure lines, seconds)."""
    failures: list[str] = []

    def remove(info):
        st, body = call("DELETE", f"/v1/containers/{info['name']}?force=1")
        if st != 200:
            failures.append(f"{info['name']}: {st} {str(body)[:120]}")

    t = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(remove, infos))
    return failures, time.monotonic() - t


def metric(text: str, series: str) -> float | None:
    """Value of the first sample of ``series`` (a family name, labels ignored), None when absent."""
    for line in text.splitlines():
        if line.startswith(series + " ") or line.startswith(series + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def metric_sum(text: str, series: str) -> float:
    """Sum over every labelled sample of ``series`` (0 when absent)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(series + " ") or line.startswith(series + "{"))


_NAME = re.compile(r'\bname="((?:[^"\\]|\\.)*)"')


def scrape_figures(body: bytes, family: str = "container_cpu_usage_seconds_total") -> dict:
    """bytes, series and the container names that have a ``family`` series."""
    text = body.decode()
    names = set()
    series = 0
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        series += 1
        if line.startswith(family + "{"):
            m = _NAME.search(line)
            if m:
                names.add(m.group(1))
    return {"bytes": len(body), "series": series, "names": names, "text": text}


def proc_figures(pid: int) -> dict:
    """RSS (kB), open descriptors and inotify watches of a process."""
    with open(f"/proc/{pid}/status") as f:
        rss = int(f.read().split("VmRSS:")[1].split()[0])
    fds = os.listdir(f"/proc/{pid}/fd")
    watches = 0
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                watches += sum(1 for line in f if line.startswith("inotify wd:"))
        except OSError:
            pass
    return {"rss_kb": rss, "fds": len(fds), "inotify_watches": watches}


def ledger_ids(state_dir: str) -> set[str]:
    """Container ids with at least one ledger record."""
    con = sqlite3.connect(f"file:{os.path.join(state_dir, 'ledger.db')}?mode=ro", uri=True, timeout=30)
    try:
        return {r[0] for r in con.execute("SELECT DISTINCT container_id FROM records")}
    finally:
        con.close()


# ------------------------------------------------------------------ peers


def read_procs(cgroups: list[str]) -> list[int]:
    pids = []
    for cg in cgroups:
        try:
            with open(os.path.join(cg, "cgroup.procs")) as f:
                pids.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return pids


def time_psutil_cgroups(cgroups: list[str], passes: int) -> float:
    """Fastest pass of the psutil collector, finding each cgroup's pids every pass."""
    from collect import run as cr
    best = float("inf")
    for _ in range(passes):
        t0 = time.thread_time()
        cr.psutil_pass(read_procs(cgroups))
        best = min(best, time.thread_time() - t0)
    return best


def measure_peers(cgroups: list[str], rounds: int = 5, passes: int = 3) -> dict:
    """Seconds of CPU per pass over ``cgroups``: C floor, psutil, ours (tiered, full)."""
    from collect import run as cr
    with tempfile.TemporaryDirectory() as tmp:
        creader = cr.build_creader(tmp)
        present = [f for f in cr.FILES if os.path.exists(os.path.join(cgroups[0], f))]
        chunk = cr.c_chunk(len(present))
        c = ps = full = tier = float("inf")
        for _ in range(rounds):             # interleaved, as bench/collect/run.py
            c = min(c, cr.time_c(creader, cgroups, passes, chunk))
            for kw in ({"slow_every": 1, "idle_every": 1}, {}):
                col = cr.open_ours(cgroups, **kw)
                t = cr.time_ours(col, passes)[0]
                col.stop()
                if kw:
                    full = min(full, t)
                else:
                    tier = min(tier, t)
            ps = min(ps, time_psutil_cgroups(cgroups, max(1, passes // 4)))
    return {"files_per_cgroup": len(present), "c_chunks": -(-len(cgroups) // chunk),
            "c_floor_pass_s": round(c, 5), "psutil_pass_s": round(ps, 5),
            "ours_tiered_pass_s": round(tier, 5), "ours_full_pass_s": round(full, 5),
            "ours_tiered_over_c": round(tier / c, 2), "ours_full_over_c": round(full / c, 2),
            "psutil_over_c": round(ps / c, 2), "psutil_over_ours_tiered": round(ps / tier, 2)}


# ------------------------------------------------------------------ run


def main(argv=None) -> int:
    from soak import AgentProc
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=2000)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--out", default=os.path.join(REPO, "bench", "out", "scale.json"))
    args = p.parse_args(argv)
    n = args.n
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < fd_need(n):
        raise SystemExit(f"-n {n}: agentd needs about {fd_need(n)} descriptors, RLIMIT_NOFILE is {soft}")
    a = AgentProc('[collector]\ninterval = "1s"\n[billing]\nperiod = "10s"\n', "scale")
    res: dict = {"n": n, "host": f"kernel {os.uname().release}, {os.cpu_count()} CPUs, shared"}
    try:
        base_rss = proc_figures(a.pid)["rss_kb"]
        infos, failures, dt = launch_all(a.call, n, args.workers)
        res.update(launch_s=round(dt, 1), launch_per_s=round(len(infos) / dt, 1), launched=len(infos),
                   launch_failures=len(failures), launch_failure_examples=failures[:3])
        print(f"launched {len(infos)}/{n} in {dt:.1f} s ({len(infos) / dt:.1f}/s), {len(failures)} failures",
              flush=True)

        t = time.monotonic()
        while True:
            watched = metric(a.scrape().decode(), "cgroup_agent_cgroups_watched") or 0
            if watched >= len(infos) or time.monotonic() - t > 120:
                break
            time.sleep(1)
        res["cgroups_watched"] = watched

        def hist():
            text = a.scrape().decode()
            return (metric(text, "cgroup_agent_collection_duration_seconds_sum") or 0.0,
                    metric(text, "cgroup_agent_collection_duration_seconds_count") or 0.0)
        s0, c0 = hist()
        time.sleep(10)
        s1, c1 = hist()
        agent_pass = (s1 - s0) / (c1 - c0) if c1 > c0 else None
        res.update(agentd_collection_pass_wall_s=round(agent_pass, 4) if agent_pass else None,
                   agentd_collection_passes_in_10s=c1 - c0)

        print("peers on the same cgroups (CPU time per pass, best of 5 interleaved rounds) ...", flush=True)
        res["collect"] = measure_peers([i["cgroup"] for i in infos])
        print(json.dumps(res["collect"]), flush=True)

        times = []
        for _ in range(5):
            t = time.perf_counter()
            body = a.scrape()
            times.append(time.perf_counter() - t)
        sf = scrape_figures(body)
        res.update(scrape_s_p50=round(statistics.median(times), 4), scrape_bytes=sf["bytes"],
                   scrape_series=sf["series"], containers_with_cpu_series=len(sf["names"]))
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
            billed = ledger_ids(a.state) & ids
            if len(billed) == len(ids):
                break
            time.sleep(2)
        res.update(billed=len(billed), bill_wait_s=round(time.monotonic() - t, 1))
        pf = proc_figures(a.pid)
        res.update(agentd_rss_kb=pf["rss_kb"], agentd_rss_kb_idle=base_rss,
                   agentd_rss_kb_per_container=round((pf["rss_kb"] - base_rss) / max(len(infos), 1), 1),
                   agentd_fds=pf["fds"], inotify_watches=pf["inotify_watches"], db_bytes=a.sample()["db_bytes"])
        print(json.dumps(res, indent=1), flush=True)

        rm_fail, dt = remove_all(a.call, infos, args.workers)
        res.update(remove_s=round(dt, 1), remove_failures=len(rm_fail),
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
