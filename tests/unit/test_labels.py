"""Labels as metric labels: refused at creation when they cannot be rendered, allow-list
collisions refused by the config, and a renderer that never fails a scrape for one bad value."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from agent import selfmetrics
from agent.config import ConfigError, load_config
from agent.errors import UserError
from agent.labels import metric_label_name, unrenderable
from agent.spec import parse_labels
from exporters import prometheus


def write(tmp_path, text):
    p = tmp_path / "agentd.toml"
    p.write_text(text)
    return str(p)


def test_metric_label_name_is_the_one_the_exporter_uses():
    assert metric_label_name("app.kubernetes.io/name") == "container_label_app_kubernetes_io_name"
    assert prometheus.label_key("team-x") == metric_label_name("team-x") == "container_label_team_x"


@pytest.mark.parametrize("value", ["\ud800", "x\udfffy", "\udcff"])
def test_a_lone_surrogate_is_refused_naming_the_label(value):
    assert unrenderable(value)
    for labels, where in (({"team": value}, "labels.team"), ([f"team={value}"], "labels[0]")):
        with pytest.raises(UserError) as e:
            parse_labels(labels)
        msg = str(e.value)
        assert msg.startswith(where) and '"team"' in msg and "surrogate" in msg and "\n" not in msg


@pytest.mark.parametrize("value", ["", "pay", "ünïcødé ✓", "😀", "a\"b\\c"])
def test_text_that_renders_is_accepted(value):
    assert unrenderable(value) is None
    assert parse_labels({"team": value}) == {"team": value}


@pytest.mark.parametrize("keys,message", [
    ('["team.x", "team-x"]',
     'collector.label_allowlist: "team.x" and "team-x" both become container_label_team_x; keep one of them'),
    ('["a/b", "ok", "a_b"]', 'collector.label_allowlist: "a/b" and "a_b" both become container_label_a_b; keep one of them'),
    ('["team", "team"]', 'collector.label_allowlist: "team" is listed twice; keep one of them'),
    ('["bad key"]', 'collector.label_allowlist: "bad key" is not a label key'),
    ('[""]', 'collector.label_allowlist: "" is not a label key'),
])
def test_allowlist_keys_that_become_the_same_metric_label_are_refused(tmp_path, keys, message):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, f"[collector]\nlabel_allowlist = {keys}\n"), {})
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_distinct_allowlist_keys_are_accepted(tmp_path):
    c = load_config(write(tmp_path, '[collector]\nlabel_allowlist = ["team", "app.kubernetes.io/name", "env"]\n'), {})
    assert c.collector.label_allowlist == ("team", "app.kubernetes.io/name", "env")


def test_api_section_defaults_and_checks(tmp_path):
    c = load_config(None, {})
    assert (c.api.max_connections, c.api.max_connections_per_peer) == (256, 32)
    assert (c.api.header_timeout, c.api.body_timeout) == (10.0, 30.0)
    with pytest.raises(ConfigError, match=r"^api.max_connections: 0 is not accepted; use an integer of at least 1$"):
        load_config(write(tmp_path, "[api]\nmax_connections = 0\n"), {})
    with pytest.raises(ConfigError, match=r"^api.header_timeout: \"soon\" is not a duration"):
        load_config(write(tmp_path, '[api]\nheader_timeout = "soon"\n'), {})


def _info(name, cid, labels):
    return SimpleNamespace(name=name, id=cid, cgroup=f"/sys/fs/cgroup/r/containers/{cid}", image="", labels=labels,
                           state="running", restart_count=0, oom_kills=0, limits=None, started_at=1.0, created_at=1.0)


def test_one_unrenderable_value_drops_its_own_series_not_the_scrape():
    good, bad = _info("good", "a1", {"team": "pay"}), _info("bad", "b2", {"team": "\ud800"})
    snap = SimpleNamespace(taken_at=2.0, mount="/sys/fs/cgroup", devices={}, samples={},
                           containers={"good": good, "bad": bad})
    before = selfmetrics.get("metrics_series_dropped_total")
    for om in (False, True):
        text = prometheus.render(snap, ("team",), openmetrics=om).decode()
        assert 'name="good"' in text and 'container_label_team="pay"' in text
        assert 'name="bad"' not in text
    assert selfmetrics.get("metrics_series_dropped_total") > before
    assert text.endswith("# EOF\n")
