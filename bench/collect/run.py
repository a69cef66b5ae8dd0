#!/usr/bin/env python3
"""Collection and /metrics benchmark: our collector against two peers, same run.

    python3 bench/collect/run.py [--sizes 100,1000,5000] [--load-seconds 30]
                                 [--sections collect,render,scrape,optional,load]

Creates N real cgroups on this host's unified hierarchy (under a unique
cga-bench-<hex> directory), one sleeping process in each, then measures per
pass over the same cgroups:

  C floor     bench/collect/creader.c: descriptors kept open, pread + parse
              every number, every file every pass (compiled with gcc -O2)
  psutil      a plain per-process collector: psutil.Process(pid) cpu_times,
              memory_info, io_counters, num_threads for each cgroup's process
  ours/full   agent.collector.Collector reading every file every pass
              (slow_every=1, idle_every=1)
  ours/tiered the default: fast/medium/slow tiers, idle cgroups skipped

and /metrics render time (exporters.prometheus.render) against
prometheus_client.generate_latest over the same series; whole scrapes over
HTTP (section "scrape": the first, then cached text, OpenMetrics, gzip); the collection cost
of the optional sets ([collector] enable: process, cpuLoad, hugetlb) against
the default set and the C floor (section "optional"). Then agent RSS and
CPU% with 1000 containers at a 1 s interval (Collector thread + MetricsServer
in a child process, scraped every 15 s). Results print as ratios; timings are
only compared within this run. Not part of the test suite.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from types import MappingProxyType

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import psutil  # noqa: E402

from agent.collector import Collector, Snapshot  # noqa: E402
from agent.model import ContainerInfo  # noqa: E402
from exporters import prometheus  # noqa: E402
from runtime import stats  # noqa: E402
from runtime.cgroupfs import find_mount  # noqa: E402

FILES = [file for file, _ in stats.SAMPLE_FILES.values()]


class Cfg:
    """The two config sections the collector and server read."""

    def __init__(self, interval=1.0, listen="127.0.0.1:0", enable=()):
        self.collector = type("C", (), {"interval": interval, "watch_roots": (), "label_allowlist": (),
                                        "enable": tuple(enable)})()
        self.agent = type("A", (), {"metrics_listen": listen, "state_dir": tempfile.gettempdir()})()


def make_cgroups(root: str, n: int) -> tuple[list[str], list[int]]:
    os.mkdir(root)
    paths, pids = [], []
    for i in range(n):
        p = os.path.join(root, f"c{i:05d}")
        os.mkdir(p)
        pid = os.posix_spawn("/bin/sleep", ["sleep", "36000"], os.environ)
        with open(os.path.join(p, "cgroup.procs"), "w") as f:
            f.write(str(pid))
        paths.append(p)
        pids.append(pid)
    return paths, pids


def remove_cgroups(root: str, paths: list[str], pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    for p in paths:
        for _ in range(50):
            try:
                os.rmdir(p)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.02)
    os.rmdir(root)


def infos_for(paths):
    return [ContainerInfo(id=f"{i:012x}", name=f"bench-{i}", cgroup=p, limits=None, state="running",
                          image="/srv/bench/rootfs", started_at=time.time())
            for i, p in enumerate(paths)]


# The machine is shared: every figure is CPU time of the measuring thread
# (user + system, so the kernel's work of generating the files counts; time
# spent descheduled by other load does not), the fastest pass seen over
# several interleaved rounds, for every contender alike.

def time_c(creader: str, paths, passes: int, chunk: int) -> float:
    """Fastest pass; run in chunks of ``chunk`` cgroups when one process cannot
    hold every descriptor (RLIMIT_NOFILE), the chunk times added up."""
    total = 0.0
    for i in range(0, len(paths), chunk):
        out = subprocess.run([creader, str(passes), *FILES, "--"], input="\n".join(paths[i:i + chunk]),
                             capture_output=True, text=True, check=True).stdout
        fields = dict(kv.split("=") for kv in out.split())
        total += float(fields["min_pass"])
    return total


def psutil_pass(pids) -> None:
    """One pass of the plain per-process collector over ``pids``."""
    for pid in pids:
        try:
            p = psutil.Process(pid)
            p.cpu_times()
            p.memory_info()
            p.io_counters()
            p.num_threads()
        except psutil.Error:
            pass


def time_psutil(pids, passes: int) -> float:
    best = []
    for _ in range(passes):
        t0 = time.thread_time()
        psutil_pass(pids)
        best.append(time.thread_time() - t0)
    return min(best)


def build_creader(tmpdir: str) -> str:
    """creader.c compiled with gcc -O2 into tmpdir; returns the binary's path."""
    out = os.path.join(tmpdir, "creader")
    subprocess.run(["gcc", "-O2", "-o", out, os.path.join(HERE, "creader.c")], check=True)
    return out


def c_chunk(files_present: int) -> int:
    """How many cgroups one creader process can hold open under this RLIMIT_NOFILE."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(1, (limit - 200) // (files_present + 1))   # + the directory descriptor runtime.reader keeps


def open_ours(paths, enable=(), **kw) -> Collector:
    infos = infos_for(paths)
    col = Collector(Cfg(enable=enable), lambda: infos, **kw)
    col.collect_once()                      # opens descriptors
    return col


def time_ours(col: Collector, passes: int) -> tuple[float, Snapshot]:
    times, snap = [], None
    for _ in range(passes):
        t0 = time.thread_time()
        snap = col.collect_once()
        times.append(time.thread_time() - t0)
    return min(times), snap


def full_v2_snapshot(n: int) -> Snapshot:
    """n containers with every file a full cgroup v2 host has (VM fixture texts)."""
    fx = os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "unit", "fixtures", "kernel-6.1")
    texts = {}
    for file in FILES:
        fp = os.path.join(fx, file)
        if os.path.isfile(fp):
            with open(fp) as f:
                texts[file] = f.read()
    values = {fld: (parser(texts[file]) if file in texts else None)
              for fld, (file, parser) in stats.SAMPLE_FILES.items()}
    sample = stats.CgroupSample(inode=1, **values)
    paths = [f"/sys/fs/cgroup/agent/containers/{i:012x}" for i in range(n)]
    infos = infos_for(paths)
    return Snapshot(time.time(), time.monotonic(), 0.0, MappingProxyType({p: sample for p in paths}),
                    MappingProxyType({i.id: i for i in infos}), mount="/sys/fs/cgroup")


def time_render(snap, reps=5) -> tuple[float, float, float, int, int]:
    """(cold, busy, idle) seconds. cold: first render (no per-cgroup cache);
    busy: every cgroup has a new sample since the last render (label strings
    cached); idle: no cgroup changed (the collector handed over the same
    sample objects)."""
    cold, busy, idle = [], [], []
    for _ in range(reps):
        renderer = prometheus.Renderer()
        t0 = time.thread_time()
        body = renderer.render(snap)
        cold.append(time.thread_time() - t0)
        fresh = dataclasses.replace(snap, samples=MappingProxyType(
            {p: s._replace() for p, s in snap.samples.items()}))
        t0 = time.thread_time()
        renderer.render(fresh)
        busy.append(time.thread_time() - t0)
        t0 = time.thread_time()
        renderer.render(fresh)
        idle.append(time.thread_time() - t0)
    series = sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#"))
    return min(cold), min(busy), min(idle), series, len(body)


def time_generate_latest(body: bytes, reps=3) -> float:
    """prometheus_client rendering the same families (built as MetricFamily objects)."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.registry import CollectorRegistry
    fams = list(text_string_to_metric_families(body.decode()))

    class Fixed:
        def collect(self):
            return fams
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Fixed())
    times = []
    for _ in range(reps):
        t0 = time.thread_time()
        generate_latest(reg)
        times.append(time.thread_time() - t0)
    return min(times)


OM_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
             "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def time_scrapes(snap, reps=7) -> dict:
    """Wall seconds of whole /metrics scrapes over HTTP on 127.0.0.1 (exporters.metrics_server
    over a fixed snapshot), min of ``reps``: "first" renders (text), the others are served from
    the per-snapshot cache: text, OpenMetrics (Prometheus's Accept), text gzipped."""
    from exporters.metrics_server import MetricsServer

    class Fixed:
        @staticmethod
        def latest():
            return snap

    srv = MetricsServer(Cfg(), Fixed())
    srv.start()
    url = f"http://127.0.0.1:{srv.port}/metrics"

    def get(headers):
        t0 = time.perf_counter()
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as r:
            r.read()
        return time.perf_counter() - t0
    try:
        out = {"first": get({})}
        for label, headers in (("text", {}), ("openmetrics", {"Accept": OM_ACCEPT}),
                               ("gzip", {"Accept-Encoding": "gzip"})):
            get(headers)  # fills the cache for this format
            out[label] = min(get(headers) for _ in range(reps))
    finally:
        srv.stop()
    return out


OPTIONAL_ALL = ("process", "cpuLoad", "hugetlb")


def optional_sets(creader: str, paths, sizes, chunk: int) -> None:
    """Collection cost per container with the default families and with every
    optional set on, full reads (every file and every set each pass: the worst
    case; by default the sets are read on a cgroup's slow/idle refresh only),
    against the C floor over the same cgroups."""
    print(f"optional sets ([collector] enable = {list(OPTIONAL_ALL)}), full reads every pass,"
          " one sleeping process per cgroup:")
    print(f"{'cgroups':>8} {'C floor':>10} {'default':>10} {'+process':>10} {'+cpuLoad':>10} {'+hugetlb':>10}"
          f" {'all':>10} {'default/C':>10} {'all/C':>7}   (us per cgroup per pass)")
    for n in sizes:
        sub = paths[:n]
        passes = max(3, 2000 // n)
        best = {k: float("inf") for k in ("c", "default", "process", "cpuLoad", "hugetlb", "all")}
        for _ in range(3):              # interleaved rounds
            best["c"] = min(best["c"], time_c(creader, sub, passes, chunk))
            for key, enable in (("default", ()), ("process", ("process",)), ("cpuLoad", ("cpuLoad",)),
                                ("hugetlb", ("hugetlb",)), ("all", OPTIONAL_ALL)):
                col = open_ours(sub, enable=enable, slow_every=1, idle_every=1)
                best[key] = min(best[key], time_ours(col, passes)[0])
                col.stop()
        us = {k: v / n * 1e6 for k, v in best.items()}
        print(f"{n:>8} {us['c']:>10.1f} {us['default']:>10.1f} {us['process']:>10.1f} {us['cpuLoad']:>10.1f}"
              f" {us['hugetlb']:>10.1f} {us['all']:>10.1f} {us['default'] / us['c']:>10.2f}"
              f" {us['all'] / us['c']:>7.2f}", flush=True)
    print()


LOAD_CHILD = r"""
import sys, time, json
sys.path.insert(0, sys.argv[1])
import structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
from agent.collector import Collector
from agent.model import ContainerInfo
from exporters.metrics_server import MetricsServer
paths = [l for l in sys.stdin.read().split("\n") if l]
class Cfg:
    class collector: interval = 1.0; watch_roots = (); label_allowlist = (); enable = ()
    class agent: metrics_listen = "127.0.0.1:0"; state_dir = "/tmp"
infos = [ContainerInfo(id=f"{i:012x}", name=f"bench-{i}", cgroup=p, limits=None, state="running")
         for i, p in enumerate(paths)]
col = Collector(Cfg, lambda: infos, **json.loads(sys.argv[3]))
srv = MetricsServer(Cfg, col)
col.start(); srv.start()
print(srv.port, flush=True)
time.sleep(float(sys.argv[2]))
"""


def agent_load(paths, seconds: float, **kw) -> tuple[float, float]:
    import json
    repo = os.path.dirname(os.path.dirname(HERE))
    child = subprocess.Popen([sys.executable, "-c", LOAD_CHILD, repo, str(seconds + 30), json.dumps(kw)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    child.stdin.write("\n".join(paths))
    child.stdin.close()
    port = int(child.stdout.readline())
    proc = psutil.Process(child.pid)
    time.sleep(5)                           # warm up: descriptors opened, first passes done
    c0, t0 = sum(proc.cpu_times()[:2]), time.monotonic()
    next_scrape = t0
    while time.monotonic() - t0 < seconds:
        if time.monotonic() >= next_scrape:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read()
            next_scrape += 15
        time.sleep(0.2)
    c1, t1 = sum(proc.cpu_times()[:2]), time.monotonic()
    rss = proc.memory_info().rss
    child.kill()
    child.wait()
    return (c1 - c0) / (t1 - t0) * 100, rss / 2**20


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--load-seconds", type=float, default=30)
    ap.add_argument("--load-size", type=int, default=1000)
    ap.add_argument("--sections", default="collect,render,optional,load")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    sizes = [int(s) for s in args.sizes.split(",")]

    # one descriptor per file per cgroup: 5000 cgroups need more than the usual
    # 20000; raise the hard limit where allowed (CAP_SYS_RESOURCE), else the soft one
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 18, 1 << 18))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    mount = find_mount()
    with tempfile.TemporaryDirectory() as tmp:
        creader = build_creader(tmp)
        root = os.path.join(mount, f"cga-bench-{uuid.uuid4().hex[:8]}")
        n_max = max(sizes + [args.load_size])
        print(f"host: {mount}, kernel {os.uname().release}, {os.cpu_count()} CPUs; creating {n_max} "
              f"cgroups with one sleeping process each ...", flush=True)
        paths, pids = make_cgroups(root, n_max)
        try:
            present = [f for f in FILES if os.path.exists(os.path.join(paths[0], f))]
            print(f"stat files present per cgroup here: {', '.join(present)}")
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            chunk = c_chunk(len(present))
            if n_max > chunk:
                print(f"RLIMIT_NOFILE is {limit} here (no CAP_SYS_RESOURCE to raise it): the C floor runs "
                      f"in chunks of {chunk} cgroups; our collector keeps {chunk} cgroups' descriptors "
                      f"and reads the rest with open/read/close (its fallback)")
            print()
            if "optional" in sections:
                optional_sets(creader, paths, sizes, chunk)
            if "collect" in sections:
                print(f"{'cgroups':>8} {'C floor':>10} {'psutil':>10} {'ours/full':>10} {'ours/tier':>10}"
                      f" {'full/C':>7} {'tier/C':>7} {'psutil/C':>8}   (us per cgroup per pass)")
            for n in (sizes if "collect" in sections else ()):
                sub, subpids = paths[:n], pids[:n]
                passes = max(3, 4000 // n)
                c = ps = full = tier = float("inf")
                for _ in range(5):          # interleaved rounds
                    c = min(c, time_c(creader, sub, passes, chunk))
                    for kw in ({"slow_every": 1, "idle_every": 1}, {}):
                        col = open_ours(sub, **kw)
                        t = time_ours(col, passes)[0]
                        col.stop()
                        if kw:
                            full = min(full, t)
                        else:
                            tier = min(tier, t)
                    ps = min(ps, time_psutil(subpids, max(1, passes // 4)))
                c, ps, full, tier = (x / n * 1e6 for x in (c, ps, full, tier))
                print(f"{n:>8} {c:>10.1f} {ps:>10.1f} {full:>10.1f} {tier:>10.1f}"
                      f" {full / c:>7.2f} {tier / c:>7.2f} {ps / c:>8.2f}", flush=True)
            print()
            if "render" in sections:
                print("/metrics render (this host's files, and a full cgroup v2 file set from the VM fixture):")
                print(f"{'containers':>10} {'files':>6} {'series':>8} {'MB':>6} {'cold ms':>8} {'busy ms':>8}"
                      f" {'idle ms':>8} {'prom_client ms':>15} {'pc/busy':>8}")
            for n in (sizes if "render" in sections else ()):
                col = open_ours(paths[:n], slow_every=1, idle_every=1)
                snap = col.latest()
                col.stop()
                for label, s in (("host", snap), ("v2", full_v2_snapshot(n))):
                    cold, busy, idle, nseries, size = time_render(s)
                    g = time_generate_latest(prometheus.render(s))
                    print(f"{n:>10} {label:>6} {nseries:>8} {size / 1e6:>6.2f} {cold * 1e3:>8.1f}"
                          f" {busy * 1e3:>8.1f} {idle * 1e3:>8.1f} {g * 1e3:>15.1f} {g / busy:>7.1f}x",
                          flush=True)
            print()
            if "scrape" in sections:
                print("/metrics scrapes over HTTP (full cgroup v2 file set), ms: first = render + send; "
                      "then cached per snapshot")
                print(f"{'containers':>10} {'first':>8} {'text':>8} {'openmetrics':>12} {'gzip':>8}")
            for n in (sizes if "scrape" in sections else ()):
                f = time_scrapes(full_v2_snapshot(n))
                print(f"{n:>10} {f['first'] * 1e3:>8.1f} {f['text'] * 1e3:>8.1f} {f['openmetrics'] * 1e3:>12.1f}"
                      f" {f['gzip'] * 1e3:>8.1f}", flush=True)
            print()
            for mode, kw in ((("tiered (default)", {}), ("full reads", {"slow_every": 1, "idle_every": 1}))
                             if "load" in sections else ()):
                cpu, rss = agent_load(paths[:args.load_size], args.load_seconds, **kw)
                print(f"agent at {args.load_size} containers, 1 s interval, scraped every 15 s, "
                      f"{args.load_seconds:.0f} s, {mode}: CPU {cpu:.2f}% of one core, RSS {rss:.1f} MiB",
                      flush=True)
        finally:
            remove_cgroups(root, paths, pids)
    return 0


if __name__ == "__main__":
    sys.exit(main())
