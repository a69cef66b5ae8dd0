"""The PostgreSQL sink down for an hour of billing periods under a real agentd
(issue 5, faults).

agentd runs with `[billing] period = "1s"` (the smallest accepted), so an hour
of the default 60 s periods is 60 periods: a minute. Several containers run;
the database (this machine's cluster, stopped with pg_ctlcluster like
test_postgres_sink.py, always started again) stays down until the local ledger
holds records of at least 60 periods that began after the stop. Meanwhile the
control API and /metrics are used. Then the database comes back and every
record of ledger.db must be in PostgreSQL exactly once, with the same CPU
seconds.

Checked on the way: the outage shows on /metrics (sink errors, lag, backlog)
and in the log (one `sink.down`, one `sink.recovered`, no event per retry);
the sink retries with a backoff (its failed attempts are a fraction of the
collector's passes in the same time); collection, the API and the ledger keep
working.
"""
from __future__ import annotations

import re
import sqlite3
import time
import urllib.request
import uuid
from decimal import Decimal

import psycopg
import pytest

from exporters.postgres import DEFAULT_TABLE, create_table_sql
from helpers import PG_DSN as DSN, Agentd, pg_ctl as _pg, pg_exclusive

PERIODS = 60            # an hour of the default 60 s periods
WORKERS = 4
# a little CPU every half second, so cpu_seconds differ from record to record
WORK = "while :; do i=0; while [ $i -lt 300 ]; do i=$((i+1)); done; sleep 0.5; done"


def scrape(a: Agentd) -> dict[str, float]:
    """/metrics as {'name{labels}': value} (labels as written by the exporter)."""
    port = a.args[a.args.index("--metrics-listen") + 1].rsplit(":", 1)[1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?) (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def sink(m: dict, family: str) -> float:
    return m.get(f'cgroup_agent_{family}{{sink="postgres"}}', 0.0)


def local_records(a: Agentd) -> dict[str, tuple]:
    """ledger.db records: record_id -> (period_start, period_end, cpu_usec)."""
    db = sqlite3.connect(f"file:{a.state}/ledger.db?mode=ro", uri=True, timeout=30)
    try:
        return {r[0]: r[1:] for r in db.execute("SELECT record_id, period_start, period_end, cpu_usec FROM records")}
    finally:
        db.close()


def remote_records(host: str) -> list[tuple]:
    with psycopg.connect(DSN, autocommit=True, connect_timeout=5) as c:
        return c.execute("SELECT record_id, cpu_seconds FROM cgroup_agent_usage WHERE host = %s", (host,)).fetchall()


def wait_for(pred, timeout: float, what: str):
    """Poll every 0.25 s (each poll reads PostgreSQL, ledger.db or /metrics)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def events(a: Agentd, name: str) -> list[dict]:
    return [e for e in a.events() if e.get("event") == name]


def _up() -> bool:
    try:
        psycopg.connect(DSN, connect_timeout=5).close()
        return True
    except psycopg.OperationalError:
        return False


@pytest.fixture
def outage_agentd(cgroup, tmp_path):
    host = f"outage-{uuid.uuid4().hex[:10]}"
    cfg = tmp_path / "agentd.toml"
    cfg.write_text(f'[agent]\nhost = "{host}"\n[collector]\ninterval = "500ms"\n'
                   f'[billing]\nperiod = "1s"\nprice_cpu_core_hour = "0.036"\n'
                   f'[sink.postgres]\ndsn = "{DSN}"\nbatch = 50\ninterval = "1s"\n')
    with pg_exclusive():
        with psycopg.connect(DSN, autocommit=True) as c:   # the sink's own table, made as the sink makes it
            for sql in create_table_sql(DEFAULT_TABLE):
                c.execute(sql)
        a = Agentd(cgroup, tmp_path, config=str(cfg))
        try:
            yield a, host
        finally:
            a.stop()
            _pg("start")
            wait_for(_up, timeout=60, what="PostgreSQL back")
            with psycopg.connect(DSN, autocommit=True) as c:
                c.execute("DELETE FROM cgroup_agent_usage WHERE host = %s", (host,))


def test_sink_down_for_an_hour_of_periods_loses_and_duplicates_nothing(outage_agentd):
    a, host = outage_agentd
    a.start()
    for i in range(WORKERS):
        a.run(f"w{i}", WORK)
    wait_for(lambda: len(remote_records(host)) >= WORKERS, timeout=60, what="first records shipped")
    before = scrape(a)
    assert sink(before, "sink_errors_total") == 0

    t_down = time.time()
    _pg("stop")
    api_calls = scrapes = periods = rounds = 0
    try:
        assert not _up()
        while periods < PERIODS:
            # the agent keeps serving: API reads, a create/remove now and then, usage, /metrics
            assert a.client.call("GET", "/v1/health")
            assert {f"w{i}" for i in range(WORKERS)} <= {c["name"] for c in a.client.call("GET", "/v1/containers")}
            a.client.call("GET", "/v1/usage", query={"since": "10m", "group_by": "name"})
            api_calls += 3
            if rounds % 10 == 0:
                a.run(f"short-{rounds}", "exit 0")
                a.client.call("DELETE", f"/v1/containers/short-{rounds}", query={"force": "1"})
                api_calls += 2
            assert scrape(a)["cgroup_agent_cgroups_watched"] >= WORKERS
            scrapes += 1
            periods = len({start for start, _, _ in local_records(a).values() if start >= t_down})
            rounds += 1
            time.sleep(0.5)
        during = scrape(a)
        t_up = time.time()
        downs = events(a, "sink.down")
    finally:
        _pg("start")

    attempts = sink(during, "sink_errors_total") - sink(before, "sink_errors_total")
    passes = (during["cgroup_agent_collection_duration_seconds_count"]
              - before["cgroup_agent_collection_duration_seconds_count"])
    print(f"\noutage {t_up - t_down:.1f} s, {periods} periods of 1 s closed during it; "
          f"{api_calls} API calls and {scrapes} scrapes served; {passes:.0f} collector passes; "
          f"{attempts:.0f} failed shipping attempts; at the end lag {sink(during, 'sink_lag_seconds'):.1f} s, "
          f"backlog {sink(during, 'sink_backlog_records'):.0f} records")
    # collection went on (its last success is recent, not frozen at the stop)
    assert during["cgroup_agent_collection_last_success_timestamp_seconds"] > t_down + PERIODS / 2
    # the outage is on /metrics: failed attempts, lag and backlog
    assert attempts >= 3
    assert sink(during, "sink_lag_seconds") > 0 and sink(during, "sink_backlog_records") > 0
    # ... retried with a backoff, not once per pass (a busy loop would be ~1 per interval = 2 passes)
    assert attempts * 5 < passes, f"{attempts} shipping attempts in {passes} collector passes"
    # ... and in the log once, not once per retry
    assert len(downs) == 1, downs
    print("log:", downs[0])

    wait_for(lambda: events(a, "sink.recovered"), timeout=90, what="sink.recovered in the log")
    rec = events(a, "sink.recovered")
    assert len(rec) == 1 and rec[0]["failed_attempts"] >= attempts, rec
    print("log:", rec[0])

    # stop producing records, then everything must arrive, once
    for i in range(WORKERS):
        a.client.call("DELETE", f"/v1/containers/w{i}", query={"force": "1"})
    wait_for(lambda: len(remote_records(host)) == len(local_records(a)), timeout=60,
             what="every local record in PostgreSQL")
    wait_for(lambda: sink(scrape(a), "sink_backlog_records") == 0 and sink(scrape(a), "sink_lag_seconds") == 0,
             timeout=30, what="backlog and lag back to 0 on /metrics")

    local = local_records(a)
    remote = remote_records(host)
    assert len(remote) == len({rid for rid, _ in remote}), "a record twice in PostgreSQL"
    assert {rid: cpu for rid, cpu in remote} == {rid: Decimal(us).scaleb(-6) for rid, (_, _, us) in local.items()}
    in_outage = [r for r in local.values() if r[0] >= t_down and r[1] <= t_up]
    assert len({r[0] for r in in_outage}) >= PERIODS
    assert len(in_outage) >= WORKERS * PERIODS     # the ledger kept writing locally
    assert sum(us for _, _, us in in_outage) > 0
    assert len(events(a, "sink.down")) == 1 and len(events(a, "sink.recovered")) == 1
    print(f"{len(local)} records in ledger.db = {len(remote)} rows in PostgreSQL, "
          f"{len(in_outage)} of them from the outage")
