"""Disk byte-seconds and network bytes in billing records, from real
containers run by a real agentd, collected by the real collector and
accounted by a ledger with 1 s periods:

- an image container that wrote ~8 MiB into its rootfs (its upper dir) is
  billed disk byte-seconds of exactly those bytes times the time between the
  first and the last reading, priced at price_disk_gib_hour;
- a container without an image of its own (host rootfs) and on the host
  network has null disk and network fields (never 0): JSON null, empty CSV
  cells, no FOCUS row, and named in `unpriced` when those meters have a price.
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from decimal import Decimal

import pytest

from registry_fixtures import ImageBuilder
from helpers import uname, wait_for
from test_images import agentd, registry, run_ok, top  # noqa: F401  (module fixtures)

from agent.collector import Collector
from agent.config import load_config
from agent.ledger import Ledger
from agent.model import ContainerInfo
from exporters.billing import render
from exporters.focus import focus_rows

pytestmark = pytest.mark.skipif(__import__("shutil").which("docker-registry") is None,
                                reason="docker-registry/umoci/skopeo not installed (scripts/setup.sh installs them)")

MIB = 1 << 20


@pytest.fixture(scope="module")
def writer(top, registry):  # noqa: F811
    b = ImageBuilder(top, "diskwriter").busybox().layer()
    b.config("--config.cmd", "sh")
    return registry.push(b.layout, "1", "diskwriter")


def _info(d, name) -> ContainerInfo:
    doc = json.loads(run_ok(d, "inspect", name).stdout)
    return ContainerInfo(id=doc["id"], name=doc["name"], cgroup=doc["cgroup"], limits=None, state=doc["state"],
                         image=doc["image"], labels=doc["labels"])


def _account(d, tmp_path, infos, passes=8, **prices):
    """Collector passes (0.4 s apart) observed by a 1 s-period ledger, then each
    container's open period closed; -> (ledger, snapshots)."""
    cfg = load_config(None, {"agent.state_dir": d.state, "billing.period": "1s", "agent.host": "h",
                             **{f"billing.{k}": v for k, v in prices.items()}})
    led = Ledger(cfg, str(tmp_path / "ledger.db"), focus_rows=focus_rows)
    c = Collector(cfg, lambda: infos)
    snaps = []
    try:
        for _ in range(passes):
            s = c.collect_once()
            led.observe(s)
            snaps.append(s)
            time.sleep(0.4)
    finally:
        c.stop()
    for info in infos:
        led.final(info, None)       # no new reading: close the open period now
    return led, snaps


def test_an_image_container_is_billed_the_disk_byte_seconds_it_holds(agentd, writer, tmp_path):  # noqa: F811
    name = uname("disk")
    cid = run_ok(agentd, "run", "-d", "--name", name, "--image", writer, "--", "sh", "-c",
                 "busybox head -c 8388608 /dev/urandom > /big; sync; touch /done; sleep 600").stdout.strip()
    try:
        upper = os.path.join(agentd.state, "containers", cid, "upper")
        wait_for(lambda: os.path.exists(os.path.join(upper, "done")), 60, "the container's writes")
        info = _info(agentd, name)
        led, snaps = _account(agentd, tmp_path, [info], price_disk_gib_hour="3.6")
        measured = [s for s in snaps if cid in s.fs_usage]
        assert len(measured) == len(snaps), "the walk of a small upper dir completes every pass"
        sizes = {s.fs_usage[cid][1] for s in measured}
        assert len(sizes) == 1, sizes                  # nothing written after /done
        size = sizes.pop()
        assert 8 * MIB <= size < 9 * MIB, size
        recs = led.records()
        assert len(recs) >= 2, recs
        held = measured[-1].monotonic - measured[0].monotonic
        total = sum(r["disk_byte_seconds"] for r in recs)
        # the trapezoid of a constant: size x time, each record rounded to a byte-second
        assert abs(total - size * held) <= len(recs), (total, size * held)
        assert all(r["net_rx_bytes"] is None and r["net_tx_bytes"] is None for r in recs)   # host network
        assert all("disk" not in r["unpriced"] for r in recs), recs   # (memory/io: this host may lack them)
        # priced per GiB-hour: 3.6 per GiB-hour = 0.001 per GiB-second, exactly
        for r in recs:
            want = (Decimal(r["disk_byte_seconds"]) * Decimal("3.6") / (MIB * 1024 * 3600)).quantize(Decimal("1e-9"))
            assert Decimal(r["cost"]) == want, r
        groups = led.query({"group_by": "name"})["rows"]
        assert groups[0]["group"] == name and groups[0]["disk_byte_seconds"] == total
        led.close()
    finally:
        run_ok(agentd, "rm", "-f", name)


def test_a_host_container_has_null_disk_and_network(agentd, tmp_path):  # noqa: F811
    name = uname("hostnet")
    run_ok(agentd, "run", "-d", "--name", name, "--", "sh", "-c", "while :; do :; done")
    try:
        info = _info(agentd, name)
        led, snaps = _account(agentd, tmp_path, [info], price_disk_gib_hour="1", price_net_gib="0.09",
                              price_cpu_core_hour="1")
        assert all(s.samples[info.cgroup].net_rx_bytes is None for s in snaps)   # the host's network
        recs = led.records()
        assert recs and sum(r["cpu_seconds"] for r in recs) > 0
        for r in recs:
            assert r["disk_byte_seconds"] is None and r["net_rx_bytes"] is None and r["net_tx_bytes"] is None, r
            assert r["unpriced"][-2:] == ["disk", "net_tx"], r
        rows = list(csv.DictReader(io.StringIO(render(led.query({"format": "csv"}), "csv"))))
        assert rows and all(x["disk_byte_seconds"] == x["net_rx_bytes"] == x["net_tx_bytes"] == "" for x in rows)
        jsonl = [json.loads(line) for line in render(led.query({"format": "jsonl"}), "jsonl").splitlines()]
        assert all(x["net_tx_bytes"] is None for x in jsonl)
        group = led.query({"group_by": "name"})["rows"][0]
        assert group["disk_byte_seconds"] is None and group["net_tx_bytes"] is None
        focus = led.query({"format": "focus", "open": "1"})["rows"]
        assert focus and {x["x_Meter"] for x in focus} & {"disk", "net_tx"} == set(), focus
        led.close()
    finally:
        run_ok(agentd, "rm", "-f", name)
