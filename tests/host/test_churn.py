"""Churn soak (issue 5): containers created and removed at 10 a second for
10 minutes beside 200 long-lived ones, on a real agentd. Marked slow; it runs
in CI (about 12 minutes). bench/soak.py runs it with other parameters
(CGA_SOAK_RATE, CGA_SOAK_SECONDS, CGA_SOAK_LONG) and keeps the figures
(CGA_SOAK_OUT, a JSON file).

Creations follow a schedule (creation i is due at start + i / rate) served
by a few client threads; the achieved rate is printed, not asserted. Every
10 s the test samples agentd's RSS, open fds, inotify watches, the zombies
among the children of agentd and of the launcher, and the container cgroups.

After the churn, with only the long-lived containers left:

- agentd's open descriptors (/proc/PID/fd) are back to the warm baseline;
- its inotify watches (``inotify wd:`` lines of /proc/PID/fdinfo) too;
- no zombie among the children of agentd or of the launcher, and during the
  churn none that stays one for two samples in a row (a child that exited a
  moment before a sample is a zombie until reaped: not a leak);
- no cgroup under R/containers but those of listed containers;
- the state db holds one containers row per listed container, the events
  table at most what agent/store.py keeps for ``[agent] events_max``, and
  the ledger no instance row of a removed container (finished instances are
  forgotten ledger.FINISHED_GC_AFTER after their final reading);
- every removed container was billed: the ledger holds a record for its id;
- agentd's RSS is flat: the least-squares slope over the samples, the first
  four minutes dropped as warm-up, is below RSS_SLOPE_MAX_KB_PER_MIN.

RSS bound (measured, 10/s for 600 s beside 200, on the shared 2-core host):
while the ledger kept finished instances (~1.5 kB each, 6000 of them) agentd
grew 43 -> 57 MB, a slope of +725 kB/min after the same 4-minute warm-up
(+1022 kB/min over all samples). Forgetting them within seconds, RSS rises
~4.5 MB over the first 4 minutes while bounded structures fill (gc object
counts level off: finished ledger instances at rate x FINISHED_GC_AFTER, the
256 recently removed containers kept for wait(), the exporter's per-cgroup
cache; SQLite's page caches, 2 MB per connection at most, fill as the dbs
grow), then stays at 48 +- 0.5 MB: +31 and +0.1 kB/min after warm-up in two
runs. The bound, 256 kB/min, fails the old behaviour by ~3x and leaves the
flat one >8x headroom for noise.
"""
from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import agent.ledger
from helpers import Agentd, wait_for
from test_faults import api, cgroup_dirs, containers, metric

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "bench"))
from soak import db_bytes, fd_count, inotify_watches, rss_kb, slope_per_minute, zombies_of  # noqa: E402

pytestmark = pytest.mark.slow

RATE = float(os.environ.get("CGA_SOAK_RATE", "10"))          # containers created+removed per second
SECONDS = float(os.environ.get("CGA_SOAK_SECONDS", "600"))    # churn duration
LONG_LIVED = int(os.environ.get("CGA_SOAK_LONG", "200"))
WORKERS = 4                   # client threads serving the schedule
SAMPLE_EVERY = 10.0           # seconds between resource samples
SCRAPE_EVERY = 5.0            # seconds between /metrics scrapes during the churn
WARMUP = 240.0                # seconds of samples left out of the RSS slope (bounded caches filling)
EVENTS_MAX = 2000             # [agent] events_max of this agentd
RSS_SLOPE_MAX_KB_PER_MIN = 256.0


def rows(db: str, sql: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture
def agentd(cgroup, tmp_path):
    cfg = tmp_path / "agentd.toml"
    cfg.write_text(f'[agent]\nevents_max = {EVENTS_MAX}\n'
                   '[collector]\ninterval = "1s"\n[billing]\nperiod = "10s"\n')
    a = Agentd(cgroup, tmp_path, config=str(cfg))
    yield a
    a.stop()


class Churn:
    """Creates and removes `true` containers; remembers the removed ids and errors."""

    def __init__(self, a: Agentd):
        self.a = a
        self.removed: list[str] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def one(self, name: str) -> None:
        try:
            status, info = api(self.a, "POST", "/v1/containers", {"name": name, "argv": ["true"]})
            if status != 201:
                raise RuntimeError(f"create answered {status}: {info}")
            api(self.a, "GET", f"/v1/containers/{name}/wait?timeout=60")
            status, body = api(self.a, "DELETE", f"/v1/containers/{name}?force=1")
            if status != 200:
                raise RuntimeError(f"remove answered {status}: {body}")
            with self._lock:
                self.removed.append(info["id"])
        except Exception as e:  # noqa: BLE001 - collected, asserted empty
            with self._lock:
                self.errors.append(f"{name}: {e}")


@pytest.mark.timeout(1800)
def test_churn_soak_leaks_nothing_bills_every_container_rss_flat(agentd):
    a = agentd
    a.start()
    pid = a.proc.pid
    launcher = a.root.child("launcher").procs()[0]
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(lambda i: a.client.call("POST", "/v1/containers",
                                              body={"name": f"long{i}", "argv": ["sleep", "86400"]}),
                      range(LONG_LIVED)))
    churn = Churn(a)
    # warm up (first use of every code path, sqlite readers, metrics server)
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(churn.one, [f"warm{i}" for i in range(20)]))
    metric(a, "cgroup_agent_cgroups_watched")
    wait_for(lambda: len(cgroup_dirs(a)) == LONG_LIVED, what="warm-up cgroups gone")
    time.sleep(2)
    base_fds, base_watches, base_db = fd_count(pid), inotify_watches(pid), db_bytes(a.state)

    samples: list[dict] = []

    def sample(t: float) -> None:
        samples.append({"t": round(t, 1), "rss_kb": rss_kb(pid), "fds": fd_count(pid),
                        "inotify_watches": inotify_watches(pid), "zombies": zombies_of(pid, launcher),
                        "cgroups": len(cgroup_dirs(a))})

    start = time.monotonic()
    sample(0.0)
    next_sample, next_scrape = SAMPLE_EVERY, SCRAPE_EVERY
    i = 0
    futures = []
    with ThreadPoolExecutor(WORKERS) as pool:
        while True:
            now = time.monotonic() - start
            if now >= SECONDS:
                break
            if i / RATE <= now:       # due (or late): submit; a late schedule is caught up
                futures.append(pool.submit(churn.one, f"churn{i}"))
                i += 1
                continue
            if now >= next_sample:
                sample(now)
                next_sample += SAMPLE_EVERY
            if now >= next_scrape:
                metric(a, "cgroup_agent_cgroups_watched")
                next_scrape += SCRAPE_EVERY
            if len(futures) > 4 * WORKERS * RATE:   # more than ~4 s queued: let the workers catch up
                futures = [f for f in futures if not f.done()]
            time.sleep(max(0.0, min(i / RATE, next_sample, next_scrape) - (time.monotonic() - start)))
        for f in futures:
            f.result()
    elapsed = time.monotonic() - start
    wait_for(lambda: len(cgroup_dirs(a)) == LONG_LIVED, timeout=120, what="churned cgroups gone")
    # two billing periods (every final record committed) and FINISHED_GC_AFTER (instances forgotten)
    time.sleep(max(2 * 10.0, agent.ledger.FINISHED_GC_AFTER + 5))
    sample(time.monotonic() - start)
    end = samples[-1]

    lst = containers(a)
    live_ids = {c["id"] for c in lst}
    state = os.path.join(a.state, "state.db")
    ledger = os.path.join(a.state, "ledger.db")
    state_rows = {r[0] for r in rows(state, "SELECT id FROM containers")}
    n_events = rows(state, "SELECT COUNT(*) FROM events")[0][0]
    billed = {r[0] for r in rows(ledger, "SELECT DISTINCT container_id FROM records")}
    instances = {r[0] for r in rows(ledger, "SELECT container_id FROM instances")}
    unbilled = [cid for cid in churn.removed if cid not in billed]
    steady = [(s["t"], s["rss_kb"]) for s in samples if s["t"] >= WARMUP]
    slope = slope_per_minute(steady)
    figures = {
        "rate_asked": RATE, "rate_achieved": round(i / elapsed, 2), "seconds": round(elapsed, 1),
        "long_lived": LONG_LIVED, "churned": i, "removed_ok": len(churn.removed), "errors": len(churn.errors),
        "rss_kb_start": samples[0]["rss_kb"], "rss_kb_at_warmup": steady[0][1] if steady else None,
        "rss_kb_end": end["rss_kb"], "rss_slope_kb_per_min": round(slope, 1),
        "rss_slope_max_kb_per_min": RSS_SLOPE_MAX_KB_PER_MIN,
        "fds_start": base_fds, "fds_end": end["fds"],
        "inotify_watches_start": base_watches, "inotify_watches_end": end["inotify_watches"],
        "zombies_max": max(len(s["zombies"]) for s in samples), "zombies_end": len(end["zombies"]),
        "cgroups_end": end["cgroups"],
        "containers_listed_end": len(lst), "state_rows_end": len(state_rows), "events_rows_end": n_events,
        "ledger_instances_end": len(instances), "db_bytes_start": base_db, "db_bytes_end": db_bytes(a.state),
        "unbilled": len(unbilled),
    }
    print("\nchurn soak: " + json.dumps(figures))
    if os.environ.get("CGA_SOAK_OUT"):
        with open(os.environ["CGA_SOAK_OUT"], "w") as f:
            json.dump({**figures, "error_examples": churn.errors[:5], "samples": samples}, f, indent=1)

    assert a.proc.poll() is None
    assert not churn.errors, f"{len(churn.errors)} create/remove failures, e.g. {churn.errors[:3]}"
    # a leaked fd stays; one open for a moment (a cgroup file being read, a scrape) does not
    fds = end["fds"]
    for _ in range(5):
        if fds <= base_fds:
            break
        time.sleep(1)
        fds = fd_count(pid)
    assert fds <= base_fds, f"agentd fds grew from {base_fds} to {fds}"
    assert end["inotify_watches"] <= base_watches, \
        f"inotify watches grew from {base_watches} to {end['inotify_watches']}"
    assert not end["zombies"], f"zombies left: {end['zombies']}"
    lasting = [p for s, s2 in zip(samples, samples[1:]) for p in s["zombies"] if p in s2["zombies"]]
    assert not lasting, f"zombies not reaped for {SAMPLE_EVERY:.0f} s: {lasting}"
    assert len(lst) == LONG_LIVED and all(c["state"] == "running" for c in lst)
    assert cgroup_dirs(a) == live_ids
    assert state_rows == live_ids, "state db keeps rows of removed containers"
    # agent/store.py prunes once per max(100, events_max // 10) inserts down to events_max rows
    assert n_events <= EVENTS_MAX + max(100, EVENTS_MAX // 10) - 1, f"{n_events} events rows"
    assert instances <= live_ids, f"ledger keeps instances of removed containers: {len(instances - live_ids)}"
    assert not unbilled, f"{len(unbilled)} of {len(churn.removed)} removed containers have no ledger record"
    assert slope < RSS_SLOPE_MAX_KB_PER_MIN, \
        f"agentd RSS grows {slope:+.0f} kB/min after warm-up: {[s['rss_kb'] for s in samples]}"
