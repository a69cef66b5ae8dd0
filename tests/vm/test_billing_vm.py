"""Billing on a full cgroup v2 kernel (inside the VM): the ledger, fed by
runtime.stats.read_sample as the collector feeds it, bills memory
byte-seconds and written bytes as the kernel saw them.

- a container holding 100 MiB for 10 s: memory_byte_seconds beyond its
  baseline (memory.current before the allocation, times the time it ran) is
  100 MiB x the holding time (nominally 1000 MiB-s) within 2%;
- a container writing 50 MiB with O_DIRECT to a block device: io_write_bytes
  is 50 MiB within 1%.
"""
from __future__ import annotations

import sqlite3
import threading
import time

from agent.collector import Snapshot
from agent.config import load_config
from agent.ledger import Ledger
from agent.model import ContainerInfo
from runtime.stats import read_sample

MIB = 1 << 20

HOLD = r"""
import mmap, sys, time
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
m = mmap.mmap(-1, 100 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
sys.stdout.write("allocated\n"); sys.stdout.flush()
time.sleep(10)
t_free = time.monotonic()
m.close()
sys.stdout.write(f"freed {t_free!r}\n"); sys.stdout.flush()
sys.stdin.readline()
"""

WRITE = r"""
import mmap, os, sys
buf = mmap.mmap(-1, 1 << 20)          # page aligned, as O_DIRECT needs
buf.write(b"\x5a" * (1 << 20))
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_DIRECT)
for _ in range(50):
    assert os.write(fd, buf) == 1 << 20
os.close(fd)
"""


class Sampler(threading.Thread):
    """A collector-like loop: read_sample -> Snapshot -> Ledger.observe."""

    def __init__(self, ledger, info, interval=0.05):
        super().__init__(daemon=True)
        self.ledger, self.info, self.interval = ledger, info, interval
        self.stop = threading.Event()
        self.first_mono = None

    def run(self):
        while not self.stop.is_set():
            mono, wall = time.monotonic(), time.time()
            sample = read_sample(self.info.cgroup)
            if self.first_mono is None:
                self.first_mono = mono
            self.ledger.observe(Snapshot(taken_at=wall, monotonic=mono, duration=0.0,
                                         samples={self.info.cgroup: sample},
                                         containers={self.info.id: self.info}))
            self.stop.wait(self.interval)


def _ledger(tmp_path):
    cfg = load_config(None, {"billing.period": "60s", "agent.host": "vm"})
    return Ledger(cfg, str(tmp_path / "ledger.db"))


def _totals(ledger):
    return sqlite3.connect(ledger.db_path).execute(
        "SELECT SUM(memory_byte_seconds), SUM(running_usec), MAX(memory_peak_bytes), SUM(io_write_bytes), "
        "SUM(io_write_ops), SUM(cpu_usec) FROM records").fetchone()


def _wait_empty(cg):
    while read_sample(cg).events.populated:
        time.sleep(0.01)


def test_holding_100_mib_for_10_s_bills_1000_mib_s(v2_cgroup, run_in_cgroup, python, tmp_path, record_property):
    """The container allocates 100 MiB (MAP_POPULATE), then holds it for 10 s.
    The ledger starts sampling once it holds the memory (in a slow VM the
    populate alone can take seconds, and its shape is not ours to model), so
    the ledger's window sees: 100 MiB above the baseline until the free, then
    the baseline. The holding time inside the window is measured on the same
    CLOCK_MONOTONIC (nominally 10 s, longer if the VM is starved)."""
    import subprocess
    ledger = _ledger(tmp_path)
    info = ContainerInfo(id="0000000000a1", name="hold", cgroup=v2_cgroup.path, limits=None, state="running")
    p = run_in_cgroup(v2_cgroup, [python, "-c", HOLD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "ready\n"
    base = [read_sample(v2_cgroup).memory_current for _ in range(5)]
    baseline = sum(base) / len(base)
    sampler = Sampler(ledger, info, interval=0.02)
    p.stdin.write("go\n")
    p.stdin.flush()
    assert p.stdout.readline() == "allocated\n"
    sampler.start()
    freed = p.stdout.readline()
    assert freed.startswith("freed ")
    t_free = float(freed.split()[1])
    time.sleep(0.5)
    p.stdin.write("bye\n")
    p.stdin.flush()
    p.wait()
    _wait_empty(v2_cgroup)
    sampler.stop.set()
    sampler.join()
    ledger.final(info, read_sample(v2_cgroup))
    mem_bs, running_us, peak, *_ = _totals(ledger)
    ledger.close()
    beyond = mem_bs - baseline * running_us / 1e6
    held = t_free - sampler.first_mono            # seconds of holding inside the ledger's window
    expected = 100 * MIB * held
    record_property("billed_mib_s_beyond_baseline", round(beyond / MIB, 2))
    record_property("held_seconds_in_window", round(held, 3))
    assert abs(beyond - expected) <= 0.02 * expected, \
        f"billed {beyond / MIB:.1f} MiB-s beyond baseline for {held:.3f} s at 100 MiB ({expected / MIB:.1f} MiB-s)"
    assert peak >= 100 * MIB


def test_50_mib_o_direct_write_bills_50_mib(v2_cgroup, run_in_cgroup, python, loop_block_device, tmp_path,
                                            record_property):
    ledger = _ledger(tmp_path)
    info = ContainerInfo(id="0000000000b2", name="writer", cgroup=v2_cgroup.path, limits=None, state="running")
    sampler = Sampler(ledger, info, interval=0.1)
    sampler.start()
    p = run_in_cgroup(v2_cgroup, [python, "-c", WRITE, loop_block_device.path])
    assert p.wait() == 0
    _wait_empty(v2_cgroup)
    sampler.stop.set()
    sampler.join()
    final = read_sample(v2_cgroup)
    ledger.final(info, final)
    _, _, _, wbytes, wops, cpu = _totals(ledger)
    ledger.close()
    record_property("billed_io_write_bytes", wbytes)
    assert abs(wbytes - 50 * MIB) <= 0.01 * 50 * MIB, f"billed {wbytes} bytes written"
    assert wbytes == sum(st.wbytes for st in final.io.values())   # exactly what io.stat says
    assert wops >= 50 and cpu == final.cpu.usage_usec
