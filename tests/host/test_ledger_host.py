"""The ledger on real cgroups of this host: exact CPU of a 50 ms container
from its final reading, periods across a burner's life, frozen time from
cgroup.freeze, a new cgroup instance (inode) billed from zero."""
from __future__ import annotations

import os
import sqlite3
import sys
import time

from agent.collector import Snapshot
from agent.config import load_config
from agent.ledger import Ledger
from agent.model import ContainerInfo
from runtime.stats import read_sample

BURN_50MS = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.05: pass\n"
BURNER = ("import time\nwhile True:\n t = time.perf_counter()\n"
          " while time.perf_counter() - t < 0.004: pass\n time.sleep(0.008)\n")


def _ledger(tmp_path, **over):
    cfg = load_config(None, {"billing.period": "1s", "agent.host": "host-test",
                             "billing.price_cpu_core_hour": "0.036", **over})
    return Ledger(cfg, str(tmp_path / "ledger.db"))


def _wait_empty(cg):
    while read_sample(cg).events.populated:
        time.sleep(0.005)


def test_fifty_ms_container_gets_its_exact_cpu_time(cgroup, spawn, tmp_path):
    led = _ledger(tmp_path, **{"billing.period": "60s"})
    started = time.time()
    p = spawn([sys.executable, "-c", BURN_50MS], cgroup=cgroup)
    assert p.wait() == 0
    _wait_empty(cgroup)
    info = ContainerInfo(id="0123456789ab", name="short", cgroup=cgroup.path, limits=None, state="exited",
                         started_at=started, finished_at=time.time())
    sample = read_sample(cgroup)
    led.final(info, sample)      # before the cgroup is removed, whatever the interval
    rows = sqlite3.connect(led.db_path).execute(
        "SELECT cpu_usec, cpu_user_usec + cpu_system_usec, running_usec, cgroup_inode, cost_nanos FROM records").fetchall()
    led.close()
    assert len(rows) == 1
    cpu, user_sys, running, inode, cost = rows[0]
    assert cpu == sample.cpu.usage_usec >= 50_000
    assert user_sys == sample.cpu.user_usec + sample.cpu.system_usec
    assert inode == os.stat(cgroup.path).st_ino
    assert running > 0 and cost > 0


def test_periods_freeze_and_new_instance(cgroup, spawn, tmp_path):
    led = _ledger(tmp_path)
    info = ContainerInfo(id="abcdefabcdef", name="burner", cgroup=cgroup.path, limits=None, state="running",
                         labels={"team": "infra"})
    spawn([sys.executable, "-c", BURNER], cgroup=cgroup)

    def observe():
        led.observe(Snapshot(taken_at=time.time(), monotonic=time.monotonic(), duration=0.0,
                             samples={cgroup.path: read_sample(cgroup)}, containers={info.id: info}))

    def run_for(n):
        for _ in range(n):
            observe()
            time.sleep(0.05)

    run_for(20)
    cgroup.write("cgroup.freeze", "1")
    while not read_sample(cgroup).events.frozen:
        time.sleep(0.005)
    frozen_cpu = read_sample(cgroup).cpu.usage_usec
    run_for(20)
    assert read_sample(cgroup).cpu.usage_usec == frozen_cpu   # the kernel agrees: frozen
    cgroup.write("cgroup.freeze", "0")
    run_for(10)
    cgroup.write("cgroup.kill", "1")
    _wait_empty(cgroup)
    final = read_sample(cgroup)
    led.final(info, final)
    con = sqlite3.connect(led.db_path)
    billed, frozen, running, n = con.execute(
        "SELECT SUM(cpu_usec), SUM(frozen_usec), SUM(running_usec), COUNT(*) FROM records").fetchone()
    assert billed == final.cpu.usage_usec
    assert frozen > 0 and running > 0 and n >= 2
    res = led.query({"group_by": "label:team"})
    assert [r["group"] for r in res["rows"]] == ["infra"]
    assert round(res["totals"]["cpu_seconds"] * 1e6) == billed

    # the same container id in a new cgroup (new inode): a new instance, billed from zero
    os.rmdir(cgroup.path)
    os.mkdir(cgroup.path)
    p = spawn([sys.executable, "-c", BURN_50MS], cgroup=cgroup)
    p.wait()
    _wait_empty(cgroup)
    second = read_sample(cgroup)
    assert second.inode != final.inode
    led.final(info, second)
    rows = con.execute("SELECT cgroup_inode, SUM(cpu_usec) FROM records GROUP BY cgroup_inode ORDER BY MIN(seq)").fetchall()
    assert rows == [(final.inode, final.cpu.usage_usec), (second.inode, second.cpu.usage_usec)]
    led.close()


def test_agentd_bills_a_container_and_agentctl_usage_reconciles(cgroup, tmp_path):
    """The real daemon: collector -> ledger.observe, supervisor -> ledger.final
    before rmdir, GET /v1/usage -> agentctl usage."""
    import csv
    import io
    import json
    import shutil
    import subprocess

    from helpers import free_port, start_agentd, stop_agentd

    d = start_agentd(cgroup, str(tmp_path), 'host = "e2e"\n[billing]\nperiod = "1s"\nprice_cpu_core_hour = "3.6"\n'
                     'price_memory_gib_hour = "0.5"\n', interval="100ms", metrics_listen=f"127.0.0.1:{free_port()}")
    ctl = [shutil.which("agentctl"), "--socket", d.sock]
    try:
        cid = subprocess.run(ctl + ["run", "-d", "--name", "bill", "-l", "team=red", "--", "/bin/sh", "-c",
                                    "echo billed-output; echo to-stderr >&2; "
                                    "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; sleep 1.5"],
                             check=True, capture_output=True, text=True).stdout.strip()
        subprocess.run(ctl + ["wait", "bill"], capture_output=True, timeout=120)
        stat = os.path.join(cgroup.path, "containers", cid, "cpu.stat")
        while True:   # exited: the counters stand still now
            info = json.loads(subprocess.run(ctl + ["inspect", "bill"], check=True, capture_output=True,
                                             text=True).stdout)
            if info.get("state") == "exited":
                break
            time.sleep(0.1)
        usage = int(open(stat).read().split()[1])
        # this hybrid host has no memory/io/pids controller: those are not measured
        measured = os.path.exists(os.path.join(os.path.dirname(stat), "memory.current"))
        subprocess.run(ctl + ["rm", "bill"], check=True, capture_output=True)   # final reading, then rmdir
        assert not os.path.exists(stat)
        out = subprocess.run(ctl + ["usage", "--format", "jsonl"], check=True, capture_output=True, text=True).stdout
        recs = [json.loads(line) for line in out.splitlines()]
        assert recs and {r["name"] for r in recs} == {"bill"} and {r["labels"]["team"] for r in recs} == {"red"}
        assert sum(round(r["cpu_seconds"] * 1e6) for r in recs) == usage
        assert len({r["record_id"] for r in recs}) == len(recs) >= 2
        # what it printed is billed to it, once, whatever the stream
        assert sum(r["log_bytes"] for r in recs) == len("billed-output\n") + len("to-stderr\n")
        table = subprocess.run(ctl + ["usage", "--group-by", "label:team"], check=True, capture_output=True,
                               text=True).stdout
        assert f"{usage / 1e6:.6f}" in table.splitlines()[-1]     # TOTAL line
        rows = list(csv.DictReader(io.StringIO(subprocess.run(ctl + ["usage", "--format", "csv"], check=True,
                                                              capture_output=True, text=True).stdout)))
        assert len(rows) == len(recs)
        if measured:
            print("memory controller present: memory_byte_seconds measured")
            assert all(isinstance(r["memory_byte_seconds"], int) and "memory" not in r["unpriced"] for r in recs)
        else:       # unmeasured is null in JSON lines, empty in CSV, '-' in the table, and unpriced
            assert all(r["memory_byte_seconds"] is None and r["memory_peak_bytes"] is None for r in recs)
            assert all(r["io_write_bytes"] is None and r["pids_peak"] is None for r in recs)
            assert all(r["unpriced"] == ["memory", "io_read", "io_write"] for r in recs)
            assert {r["memory_byte_seconds"] for r in rows} == {""}
            assert {r["io_read_bytes"] for r in rows} == {""}
            assert all(r["cpu_seconds"] != "" for r in rows)
            total = table.splitlines()[-1].split()
            head = table.splitlines()[0].split()
            assert total[head.index("MEM_GIB_H")] == "-" and total[head.index("WRITE_GIB")] == "-"
        bad = subprocess.run(ctl + ["usage", "--since", "yesterday"], capture_output=True, text=True)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "since:" in bad.stderr
    finally:
        stop_agentd(d)
