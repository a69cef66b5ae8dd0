"""Metrics on full cgroup v2 (inside the VM): throttling, OOM and IO counters
appear in /metrics with exactly the values the kernel shows.

Each test drives a real workload into a kernel state (throttled by cpu.max,
OOM-killed by memory.max, writing to a loop device), lets it end so the
counters stand still, then runs one real Collector pass over the cgroup and
renders the snapshot; the rendered values are compared with the cgroup's own
files read right afterwards. `promtool check metrics` must accept the output
(run once, on the OOM test's memory-heavy output: it is slow under TCG; the
host tier checks a render of every family too).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent import selfmetrics
from agent.collector import Collector
from agent.config import load_config
from agent.model import ContainerInfo
from exporters import prometheus
from runtime.limits import read_limits
from runtime.stats import parse_cpu_stat, parse_flat_keyed, parse_io_stat

BURN = ["sh", "-c", "while :; do :; done"]
ALLOCATE = "chunks = []\nwhile True:\n    chunks.append(b'\\x01' * (1 << 20))\n"


def scrape(cg, cid="0123456789ab", name="vmtest") -> tuple[dict, bytes]:
    """One real collector pass over ``cg`` as a container; returns {(family, labels...): value}."""
    info = ContainerInfo(id=cid, name=name, cgroup=cg.path, limits=read_limits(cg), state="running")
    cfg = load_config(None, {"collector.interval": "1s", "agent.metrics_listen": "127.0.0.1:0"})
    col = Collector(cfg, lambda: [info])
    try:
        snap = col.collect_once()
    finally:
        col.stop()
    body = prometheus.render(snap)
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if s.labels.get("name") != name:
                continue
            extra = tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("id", "name", "image")))
            out[(s.name,) + extra] = s.value
    return out, body


def wait_until(pred, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def promtool_accepts(body: bytes) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        return
    p = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=120)
    assert p.returncode == 0 and not p.stdout and not p.stderr, (p.stdout, p.stderr)


@pytest.fixture(autouse=True)
def _fresh_selfmetrics():
    selfmetrics.reset()


def test_throttling_counters_match_cpu_stat(v2_cgroup, run_in_cgroup):
    cg = v2_cgroup
    cg.write("cpu.max", "10000 100000")          # 10% of one CPU
    p = run_in_cgroup(cg, BURN)
    wait_until(lambda: parse_cpu_stat(cg.read("cpu.stat")).nr_throttled >= 3, what="throttling")
    p.kill()
    p.wait()
    # the bandwidth timer may close one more period after the last task left:
    # wait until cpu.stat stands still before comparing
    def still():
        before = cg.read("cpu.stat")
        time.sleep(0.5)
        return cg.read("cpu.stat") == before
    wait_until(still, what="cpu.stat to stand still")
    m, body = scrape(cg)
    k = parse_cpu_stat(cg.read("cpu.stat"))
    assert k.nr_throttled >= 3
    assert m[("container_cpu_cfs_throttled_periods_total",)] == k.nr_throttled
    assert m[("container_cpu_cfs_periods_total",)] == k.nr_periods
    assert m[("container_cpu_cfs_throttled_seconds_total",)] == pytest.approx(k.throttled_usec / 1e6)
    assert m[("container_cpu_usage_seconds_total", ("cpu", "total"))] == pytest.approx(k.usage_usec / 1e6)
    assert m[("container_spec_cpu_quota",)] == 10000
    assert m[("container_spec_cpu_period",)] == 100000


def test_oom_kill_counted_as_the_kernel_counts_it(v2_cgroup, run_in_cgroup, python):
    cg = v2_cgroup
    cg.write("memory.max", str(32 << 20))
    cg.write("memory.swap.max", "0")
    p = run_in_cgroup(cg, [python, "-c", ALLOCATE])
    assert p.wait(timeout=300) == -9
    # the kernel keeps freeing the dead task's pages (and per-cpu charges)
    # for a while after the kill: memory.current is a gauge, so compare only
    # a scrape that memory.current and memory.stat stood still around
    def settled_scrape():
        before = (cg.read("memory.current"), cg.read("memory.stat"))
        got = scrape(cg)
        time.sleep(0.5)
        return got if (cg.read("memory.current"), cg.read("memory.stat")) == before else None
    got = None
    deadline = time.monotonic() + 120
    while got is None and time.monotonic() < deadline:
        got = settled_scrape()
    assert got is not None, "memory.current never stood still for a scrape"
    m, body = got
    events = parse_flat_keyed(cg.read("memory.events"))
    assert events["oom_kill"] >= 1
    assert m[("container_oom_events_total",)] == events["oom_kill"]
    assert m[("container_spec_memory_limit_bytes",)] == 32 << 20
    assert m[("container_spec_memory_swap_limit_bytes",)] == 0
    peak = int(cg.read("memory.peak"))
    assert m[("container_memory_max_usage_bytes",)] == peak
    assert peak > 16 << 20
    current = int(cg.read("memory.current"))
    stat = parse_flat_keyed(cg.read("memory.stat"))
    assert m[("container_memory_usage_bytes",)] == current
    assert m[("container_memory_working_set_bytes",)] == max(0, current - stat["inactive_file"])
    assert m[("container_memory_rss",)] == stat["anon"]
    assert ("container_memory_failures_total", ("failure_type", "pgfault"), ("scope", "container")) in m
    promtool_accepts(body)


def test_io_counters_match_io_stat(v2_cgroup, run_in_cgroup, loop_block_device):
    cg, dev = v2_cgroup, loop_block_device
    p = run_in_cgroup(cg, ["dd", f"if={dev.path}", f"of={dev.path}", "bs=64k", "count=32",
                           "iflag=direct", "oflag=direct", "status=none"])
    assert p.wait(timeout=300) == 0
    m, body = scrape(cg)
    st = parse_io_stat(cg.read("io.stat"))[(dev.major, dev.minor)]
    assert st.wbytes >= 2 << 20 and st.rbytes >= 2 << 20
    d = ("device", dev.path)
    assert m[("container_fs_writes_bytes_total", d)] == st.wbytes
    assert m[("container_fs_reads_bytes_total", d)] == st.rbytes
    assert m[("container_fs_writes_total", d)] == st.wios
    assert m[("container_fs_reads_total", d)] == st.rios
    key = ("container_blkio_device_usage_total", d, ("major", str(dev.major)), ("minor", str(dev.minor)),
           ("operation", "Write"))
    assert m[key] == st.wbytes
