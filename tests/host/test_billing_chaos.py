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
import select
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
first = True
while True:
    mono, wall = time.monotonic(), time.time()
    samples = {i.cgroup: read_sample(i.cgroup) for i in infos.values()}
    ledger.observe(Snapshot(taken_at=wall, monotonic=mono, duration=0.0, samples=samples, containers=infos))
    if first:
        sys.stdout.write("ready\n"); sys.stdout.flush(); first = False
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
    for _ in range(15):
        child = subprocess.Popen([sys.executable, "-c", CHILD, db, arg], env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.0, 0.3))          # while it starts and opens the ledger
        else:                                          # while it samples and commits
            ready, _, _ = select.select([child.stdout], [], [], 120)
            assert ready and child.stdout.readline() == b"ready\n", \
                f"ledger child did not start: {child.stderr.read().decode()[-2000:] if child.poll() is not None else ''}"
            time.sleep(rng.uniform(0.0, 1.3))
        if child.poll() is not None:
            raise AssertionError(f"ledger child died by itself: {child.stderr.read().decode()[-2000:]}")
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
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
    assert kills == 15
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


def test_sigkill_agentd_at_random_instants(cgroup, tmp_path):
    """The same with the real daemon: agentd is SIGKILLed at random instants
    (while starting, restoring, collecting, committing) and restarted; its
    containers keep running under the launcher. At the end every container's
    billed cpu_seconds equal its cpu.stat usage_usec exactly."""
    import shutil
    import socket

    from agent.client import Client

    rng = random.Random(os.getpid() + 1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sock = str(tmp_path / "agent.sock")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[agent]\nstate_dir = "{tmp_path / "state"}"\ncgroup_root = "{cgroup.path}"\n'
                   f'socket = "{sock}"\nmetrics_listen = "127.0.0.1:{port}"\nhost = "chaos"\n'
                   f'[collector]\ninterval = "50ms"\n[billing]\nperiod = "2s"\n')
    ctl = [shutil.which("agentctl"), "--socket", sock]

    def start():
        return subprocess.Popen([shutil.which("agentd"), "--config", str(cfg)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def healthy(proc):
        deadline = time.monotonic() + 60
        while True:
            try:
                Client(sock, timeout=5).call("GET", "/v1/health")
                return
            except Exception:
                assert proc.poll() is None and time.monotonic() < deadline, "agentd did not come up"
                time.sleep(0.05)

    agentd = start()
    try:
        healthy(agentd)
        ids = {}
        for name in ("b1", "b2"):
            ids[name] = subprocess.run(
                ctl + ["run", "-d", "--name", name, "--", "/bin/sh", "-c",
                       "while :; do i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; sleep 0.02; done"],
                check=True, capture_output=True, text=True).stdout.strip()
        for _ in range(8):
            if rng.random() < 0.7:
                healthy(agentd)
            time.sleep(rng.uniform(0.0, 2.0))
            agentd.send_signal(signal.SIGKILL)
            agentd.wait()
            agentd = start()
        healthy(agentd)
        time.sleep(0.5)
        usage = {}
        for name, cid in ids.items():
            subprocess.run(ctl + ["stop", "-t", "0", name], check=True, capture_output=True)
            cg = os.path.join(cgroup.path, "containers", cid)
            while read_sample(cg).events.populated:
                time.sleep(0.01)
            usage[name] = read_sample(cg).cpu.usage_usec
            subprocess.run(ctl + ["rm", name], check=True, capture_output=True)   # final reading, then rmdir
            assert not os.path.exists(cg)
        out = subprocess.run(ctl + ["usage", "--format", "jsonl"], check=True, capture_output=True, text=True).stdout
        recs = [json.loads(line) for line in out.splitlines()]
        for name in ids:
            mine = [r for r in recs if r["name"] == name]
            billed = sum(round(r["cpu_seconds"] * 1e6) for r in mine)
            assert billed == usage[name], f"{name}: billed {billed} us, kernel says {usage[name]} us"
            starts = [r["period_start"] for r in mine]
            assert len(starts) == len(set(starts)) >= 3
        assert len({r["record_id"] for r in recs}) == len(recs)
    finally:
        agentd.terminate()
        try:
            agentd.wait(30)
        except subprocess.TimeoutExpired:
            agentd.kill()
            agentd.wait()
