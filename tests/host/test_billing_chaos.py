"""Chaos: the ledger runs in a child process that samples real cgroups with
CPU burners (runtime.stats.read_sample -> agent.collector.Snapshot ->
Ledger.observe, as agentd's collector does) and is SIGKILLed at random
instants across many 2 s periods, then restarted from its SQLite file.
Afterwards the final reading is taken and, for each container, the summed
cpu_seconds of its records equals cpu.stat usage_usec to the microsecond."""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

from agent.config import load_config
from agent.ledger import Ledger
from agent.model import ContainerInfo
from runtime.stats import read_sample

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = r"""
import json, sys, time
from agent.collector import Snapshot
from agent.config import load_config
from agent.ledger import Ledger
from agent.model import ContainerInfo
from runtime.stats import read_sample
db, cgroups = sys.argv[1], json.loads(sys.argv[2])
cfg = load_config(None, {"billing.period": "2s", "agent.host": "chaos", "billing.price_cpu_core_hour": "1"})
ledger = Ledger(cfg, db)
infos = {cid: ContainerInfo(id=cid, name="burner-" + cid, cgroup=path, limits=None, state="running")
         for cid, path in cgroups.items()}
while True:
    mono, wall = time.monotonic(), time.time()
    samples = {i.cgroup: read_sample(i.cgroup) for i in infos.values()}
    ledger.observe(Snapshot(taken_at=wall, monotonic=mono, duration=0.0, samples=samples, containers=infos))
    time.sleep(0.01)
"""

BURNER = ("import time\nwhile True:\n t = time.perf_counter()\n"
          " while time.perf_counter() - t < 0.004: pass\n time.sleep(0.008)\n")


def test_sigkill_at_random_instants_loses_and_duplicates_nothing(cgroup_factory, spawn, tmp_path):
    rng = random.Random(os.getpid())
    cgs = {f"{i:012x}": cgroup_factory() for i in range(2)}
    burners = [spawn([sys.executable, "-c", BURNER], cgroup=cg) for cg in cgs.values()]
    db = str(tmp_path / "ledger.db")
    env = {**os.environ, "PYTHONPATH": REPO}
    arg = json.dumps({cid: cg.path for cid, cg in cgs.items()})
    kills = 0
    for _ in range(22):
        child = subprocess.Popen([sys.executable, "-c", CHILD, db, arg], env=env,
                                 stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.05, 1.3))
        if child.poll() is not None:
            raise AssertionError(f"ledger child died by itself: {child.stderr.read().decode()[-2000:]}")
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stderr.close()
        kills += 1
    # the containers end: every burner is killed and its cgroup empties
    for p in burners:
        p.kill()
        p.wait()
    for cg in cgs.values():
        while read_sample(cg).events.populated:
            time.sleep(0.01)
    # the agent comes back once more and takes the final readings
    cfg = load_config(None, {"billing.period": "2s", "agent.host": "chaos", "billing.price_cpu_core_hour": "1"})
    ledger = Ledger(cfg, db)
    for cid, cg in cgs.items():
        ledger.final(ContainerInfo(id=cid, name="burner-" + cid, cgroup=cg.path, limits=None, state="exited"),
                     read_sample(cg))
    ledger.close()

    con = sqlite3.connect(db)
    assert kills == 22
    for cid, cg in cgs.items():
        usage = read_sample(cg).cpu.usage_usec
        assert usage > 0
        billed, n, periods = con.execute(
            "SELECT SUM(cpu_usec), COUNT(*), COUNT(DISTINCT period_start) FROM records WHERE container_id=?",
            (cid,)).fetchone()
        assert billed == usage, f"{cid}: billed {billed} us, kernel says {usage} us"
        assert n == periods >= 4          # one record per period, across many periods
        rows = con.execute("SELECT period_start FROM records WHERE container_id=? ORDER BY seq", (cid,)).fetchall()
        assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    ids = [r[0] for r in con.execute("SELECT record_id FROM records")]
    assert len(ids) == len(set(ids))
    # nothing is left open: the final readings closed every period
    assert con.execute("SELECT COUNT(*) FROM instances WHERE open_start IS NOT NULL").fetchone()[0] == 0
