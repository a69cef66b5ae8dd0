"""Every limit, applied through runtime (Limits.parse + apply_limits), is
enforced by the kernel on full cgroup v2.

Bands are generous on purpose: Python under qemu TCG is slow and the host is
shared. The assertions are about behaviour (an OOM kill, throttling, a
failing fork, a capped device, a weighted split), each against what the
same workload does without the limit where that could look alike.
"""
from __future__ import annotations

import errno
import signal
import subprocess
import time

from runtime.apply import apply_limits
from runtime.limits import Limits
from runtime.stats import read_cpu_stat, read_io_stat, read_memory_events, read_pids_events

BURN = ["sh", "-c", "while :; do :; done"]   # dash: no interpreter start-up to wait for

ALLOCATE = """
chunks = []
while True:
    chunks.append(b"\\x01" * (1 << 20))   # touched, not just reserved
"""

FORK_UNTIL_REFUSED = """
import os, time
kids, err = [], 0
while len(kids) < 64:
    try:
        pid = os.fork()
    except OSError as exc:
        err = exc.errno
        break
    if pid == 0:
        time.sleep(120)
        os._exit(0)
    kids.append(pid)
print(len(kids), err, flush=True)
for pid in kids:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
"""

DIRECT_WRITE = """
import mmap, os, sys, time
dev, total, chunk = sys.argv[1], int(sys.argv[2]), 256 << 10
buf = mmap.mmap(-1, chunk)            # page aligned, as O_DIRECT wants
buf.write(b"w" * chunk)
fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
start = time.monotonic()
for off in range(0, total, chunk):
    os.pwrite(fd, buf, off)
elapsed = time.monotonic() - start
os.close(fd)
print(total, elapsed, flush=True)
"""


def usage_usec(cg) -> int:
    return read_cpu_stat(cg).usage_usec


def wait_running(cg, procs, timeout=60.0) -> None:
    """Wait until the cgroup has used some CPU (its burners are scheduled)."""
    deadline = time.monotonic() + timeout
    while usage_usec(cg) < 20_000:
        assert all(p.poll() is None for p in procs), "burner exited early"
        assert time.monotonic() < deadline, f"{cg} never ran"
        time.sleep(0.1)


def test_memory_max_oom_kills(v2_cgroup, run_in_cgroup, python):
    applied = apply_limits(v2_cgroup, Limits.parse(memory="32M", memory_swap="0"))
    assert applied.memory_max == 32 << 20 and applied.memory_swap_max == 0
    assert read_memory_events(v2_cgroup)["oom_kill"] == 0

    proc = run_in_cgroup(v2_cgroup, [python, "-S", "-c", ALLOCATE])
    assert proc.wait(timeout=300) == -signal.SIGKILL

    events = read_memory_events(v2_cgroup)
    assert events["oom_kill"] >= 1, events
    assert events["max"] >= 1, events
    assert int(v2_cgroup.read("memory.peak")) <= 32 << 20


def test_cpu_max_throttles_near_quota(v2_cgroup, run_in_cgroup, record_property):
    applied = apply_limits(v2_cgroup, Limits.parse(cpus="0.2"))
    assert (applied.cpu_quota_us, applied.cpu_period_us) == (20_000, 100_000)
    assert v2_cgroup.read("cpu.max").split() == ["20000", "100000"]

    proc = run_in_cgroup(v2_cgroup, BURN)
    wait_running(v2_cgroup, [proc])
    before, t0 = read_cpu_stat(v2_cgroup), time.monotonic()
    time.sleep(5)
    after, t1 = read_cpu_stat(v2_cgroup), time.monotonic()
    proc.kill()

    share = (after.usage_usec - before.usage_usec) / 1e6 / (t1 - t0)
    record_property("cpu_share_at_quota_0.2", round(share, 3))
    assert after.nr_throttled - before.nr_throttled > 0, after
    assert after.throttled_usec > before.throttled_usec, after
    # Quota 0.2 CPU; an unthrottled burner would take ~1.0. The lower bound
    # only guards against the burner not running at all.
    assert 0.05 <= share <= 0.3, f"cpu share {share:.3f} with cpu.max 0.2"


def test_pids_max_makes_fork_fail(v2_cgroup, run_in_cgroup, python):
    applied = apply_limits(v2_cgroup, Limits.parse(pids="5"))
    assert applied.pids_max == 5

    proc = run_in_cgroup(v2_cgroup, [python, "-S", "-c", FORK_UNTIL_REFUSED],
                         stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    forked, err = (int(x) for x in out.split())
    assert err == errno.EAGAIN, f"fork failed with errno {err}, not EAGAIN"
    assert forked == 4          # the script itself is the 5th task
    assert read_pids_events(v2_cgroup)["max"] >= 1


def _direct_write_rate(cg, run_in_cgroup, python, dev, total) -> float:
    proc = run_in_cgroup(cg, [python, "-S", "-c", DIRECT_WRITE, dev, str(total)],
                         stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    written, elapsed = out.split()
    return int(written) / float(elapsed)


def test_io_max_wbps_caps_direct_writes(make_v2_cgroup, run_in_cgroup, python,
                                        loop_block_device, record_property):
    cap = 512 << 10
    total = 3 << 20
    dev = loop_block_device
    limited, free = make_v2_cgroup("io-limited"), make_v2_cgroup("io-free")
    applied = apply_limits(limited, Limits.parse(io_max=f"{dev.path}:wbps=512K"))
    assert [(e.major, e.minor, e.wbps) for e in applied.io_max] == [(dev.major, dev.minor, cap)]

    free_rate = _direct_write_rate(free, run_in_cgroup, python, dev.path, total)
    rate = _direct_write_rate(limited, run_in_cgroup, python, dev.path, total)

    record_property("wbps_cap_ratio", round(rate / cap, 3))
    record_property("unlimited_wbps_MiB", round(free_rate / (1 << 20), 1))
    assert read_io_stat(limited)[(dev.major, dev.minor)].wbytes >= total
    assert free_rate > 3 * cap, f"the device itself is too slow to show a cap: {free_rate:.0f} B/s"
    assert 0.25 * cap <= rate <= 1.6 * cap, f"{rate:.0f} B/s with wbps={cap}"


def test_cpu_weight_splits_one_cpu(make_v2_cgroup, run_in_cgroup, record_property):
    light, heavy = make_v2_cgroup("w100"), make_v2_cgroup("w300")
    assert apply_limits(light, Limits.parse(cpu_weight="100", cpuset_cpus="0")).cpu_weight == 100
    assert apply_limits(heavy, Limits.parse(cpu_weight="300", cpuset_cpus="0")).cpu_weight == 300
    assert heavy.read("cpuset.cpus.effective").strip() == "0"

    procs = [run_in_cgroup(light, BURN), run_in_cgroup(heavy, BURN)]
    wait_running(light, procs)
    wait_running(heavy, procs)
    l0, h0 = usage_usec(light), usage_usec(heavy)
    time.sleep(6)
    l1, h1 = usage_usec(light), usage_usec(heavy)
    for p in procs:
        p.kill()

    ratio = (h1 - h0) / max(l1 - l0, 1)
    record_property("weight_300_100_ratio", round(ratio, 2))
    assert 2.0 <= ratio <= 4.5, f"cpu.weight 300:100 split the CPU {ratio:.2f}:1"
