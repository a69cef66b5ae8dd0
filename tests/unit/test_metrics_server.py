"""exporters.metrics_server over a real HTTP socket on 127.0.0.1: negotiation and gzip by
prometheus_client's rules; the agent's own families rendered by prometheus_client without
*_created series."""
from __future__ import annotations

import gzip
import urllib.request
from types import SimpleNamespace

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families as text_parse

from agent import selfmetrics
from exporters import prometheus
from exporters.metrics_server import MetricsServer, negotiate


class _NoSnapshotYet:
    """A collector before its first pass (what MetricsServer serves then)."""

    def latest(self):
        return None


@pytest.fixture()
def server():
    cfg = SimpleNamespace(agent=SimpleNamespace(metrics_listen="127.0.0.1:0"),
                          collector=SimpleNamespace(label_allowlist=()))
    srv = MetricsServer(cfg, _NoSnapshotYet())
    srv.start()
    yield srv
    srv.stop()


def _get(srv, headers):
    req = urllib.request.Request(f"http://127.0.0.1:{srv.port}/metrics", headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.headers, r.read()


def test_gzip_when_the_scraper_accepts_it_and_plain_otherwise(server):
    h_plain, plain = _get(server, {})
    assert b"cgroup_agent_launches_total" in plain
    assert h_plain.get("Content-Encoding") is None
    assert h_plain["Content-Type"] == prometheus.TEXT_CONTENT_TYPE
    h_gz, packed = _get(server, {"Accept-Encoding": "gzip"})
    assert h_gz["Content-Encoding"] == "gzip"
    fams = {f.name for f in text_parse(gzip.decompress(packed).decode())}
    assert "cgroup_agent_launches" in fams and "cgroup_agent_build_info" in fams


def test_openmetrics_as_prometheus_asks_for_it(server):
    accept = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
              "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    h, body = _get(server, {"Accept": accept, "Accept-Encoding": "gzip"})
    assert h["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    text = gzip.decompress(body).decode()
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    assert {f.name: f.type for f in om_parse(text)}["cgroup_agent_launches"] == "counter"


def test_no_created_series_in_either_format():
    selfmetrics.inc("launches_total", result="ok")
    selfmetrics.observe_collection(0.01)
    for om in (False, True):
        assert b"_created" not in prometheus.render(None, openmetrics=om)


def test_text_is_chosen_when_ranked_higher_or_openmetrics_refused():
    assert negotiate("application/openmetrics-text;q=0.1,text/plain;q=0.9") == (False, prometheus.TEXT_CONTENT_TYPE)
    assert negotiate("application/openmetrics-text;q=0")[0] is False
    assert negotiate(None)[0] is False
    assert negotiate("application/openmetrics-text")[0] is True
