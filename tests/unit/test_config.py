"""agent/config.py: embedded defaults, TOML files, overrides, one-line errors naming the key."""
from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, strategies as st

from agent.config import ConfigError, diff_keys, load_config, parse_duration, parse_size


def write(tmp_path, text):
    p = tmp_path / "agentd.toml"
    p.write_text(text)
    return str(p)


def test_embedded_defaults():
    c = load_config(None, {})
    assert c.agent.state_dir == "/var/lib/cgroup-agent"
    assert c.agent.cgroup_root == ""
    assert c.agent.socket == "/run/cgroup-agent/agent.sock"
    assert c.agent.metrics_listen == "127.0.0.1:9101"
    assert c.agent.stop_containers_on_exit is False
    assert c.agent.stop_timeout == 10.0
    assert c.agent.events_max == 100000
    assert c.agent.host  # defaults to the hostname
    assert c.collector.interval == 1.0
    assert c.billing.period == 60.0 and c.billing.retention == 30 * 86400
    assert c.billing.basis == "usage" and c.billing.currency == "USD"
    assert c.billing.price_cpu_core_hour == Decimal("0")
    assert c.sink_postgres is None
    assert c.security.allow_sensitive_binds is False
    assert c.logs.max_bytes == 10 << 20


@pytest.mark.parametrize("text,seconds", [("200ms", 0.2), ("2s", 2.0), ("1m", 60.0), ("1h", 3600.0),
                                          ("30d", 30 * 86400.0), ("1.5s", 1.5), (3, 3.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["fast", "", "2", "-1s", "1 week", "1s2", True, None, [1]])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize("text,n", [("10M", 10 << 20), ("512K", 512 << 10), ("1G", 1 << 30), ("4096", 4096),
                                    ("2MiB", 2 << 20), (100, 100)])
def test_sizes(text, n):
    assert parse_size(text) == n


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["ms", "s", "m", "h", "d"]))
def test_duration_units_scale(n, unit):
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    assert parse_duration(f"{n}{unit}") == pytest.approx(n * factor)


def test_file_overrides_defaults_and_flags_override_file(tmp_path):
    path = write(tmp_path, '[agent]\nstate_dir = "/srv/a"\nsocket = "/srv/a.sock"\n[collector]\ninterval = "200ms"\n'
                           '[billing]\nprice_cpu_core_hour = "0.031"\nbasis = "max"\n'
                           '[sink.postgres]\ndsn = "postgresql://x@y/z"\n')
    c = load_config(path, {"agent.socket": "/tmp/other.sock", "metrics_listen": "0.0.0.0:9999", "state_dir": None})
    assert c.agent.state_dir == "/srv/a"
    assert c.agent.socket == "/tmp/other.sock"
    assert c.agent.metrics_listen == "0.0.0.0:9999"
    assert c.collector.interval == pytest.approx(0.2)
    assert c.billing.price_cpu_core_hour == Decimal("0.031") and c.billing.basis == "max"
    assert c.sink_postgres.dsn == "postgresql://x@y/z"
    assert c.sink_postgres.batch == 500 and c.sink_postgres.interval == 5.0
    assert c.source == path


@pytest.mark.parametrize("text,message", [
    ('[collector]\ninterval = "fast"\n', 'collector.interval: "fast" is not a duration; use e.g. 200ms, 2s, 1m'),
    ('[agent]\nbogus = 1\n', "agent.bogus: unknown key"),
    ('[nope]\n', "nope: unknown section"),
    ('[sink.kafka]\nx = 1\n', "sink.kafka: unknown section"),
    ('[sink.postgres]\nbatch = 5\n', "sink.postgres.dsn: missing"),
    ('[sink.postgres]\ndsn = "x"\nbatch = 0\n', "sink.postgres.batch"),
    ('[billing]\nbasis = "sometimes"\n', "billing.basis"),
    ('[billing]\nprice_io_read_gib = "-1"\n', "billing.price_io_read_gib"),
    ('[billing]\nprice_io_read_gib = "abc"\n', "billing.price_io_read_gib"),
    ('[billing]\ncurrency = "dollars"\n', "billing.currency"),
    ('[billing]\nperiod = "10ms"\n', "billing.period"),
    ('[agent]\nlog_level = "loud"\n', "agent.log_level"),
    ('[agent]\nmetrics_listen = "9101"\n', "agent.metrics_listen"),
    ('[agent]\nstop_containers_on_exit = "yes"\n', "agent.stop_containers_on_exit"),
    ('[agent]\ncgroup_root = "relative/path"\n', "agent.cgroup_root"),
    ('[agent]\nstate_dir = ""\n', "agent.state_dir"),
    ('[collector]\nwatch_roots = "/sys/fs/cgroup"\n', "collector.watch_roots"),
    ('[collector]\nenable = ["process", "disk"]\n',
     'collector.enable: "disk" is not an optional metric set; use any of process, cpuLoad, hugetlb'),
    ('[collector]\nenable = "process"\n', "collector.enable"),
    ('[logs]\nmax_bytes = "lots"\n', "logs.max_bytes"),
    # a value with a newline or a quote is quoted escaped, the message stays one line (found by the fuzz test)
    ('[logs]\nmax_bytes = "\\n"\n', 'logs.max_bytes: "\\n" is not a size'),
    ('[collector]\ninterval = "a\\"b"\n', 'collector.interval: "a\\"b" is not a duration'),
    ('[security]\nallow_sensitive_binds = 1\n', "security.allow_sensitive_binds"),
    ('[agent\n', "not valid TOML"),
])
def test_errors_are_one_line_naming_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text), {})
    msg = str(exc.value)
    assert message in msg
    assert "\n" not in msg


@pytest.mark.parametrize("value", ["100", "123456"])
def test_events_max_accepts_integers_from_100(tmp_path, value):
    assert load_config(write(tmp_path, f"[agent]\nevents_max = {value}\n"), {}).agent.events_max == int(value)


@pytest.mark.parametrize("value", ["99", "0", "-5", '"1000"', "1000.0", "true", "[1000]"])
def test_events_max_refuses_anything_else_in_one_line(tmp_path, value):
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, f"[agent]\nevents_max = {value}\n"), {})
    msg = str(exc.value)
    assert msg.startswith("agent.events_max: ") and "an integer of at least 100" in msg and "\n" not in msg


def test_bad_override_names_the_key():
    with pytest.raises(ConfigError, match=r"^agent.metrics_listen: "):
        load_config(None, {"agent.metrics_listen": "nowhere"})
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(None, {"agent.nonsense": "1"})


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(str(tmp_path / "absent.toml"), {})


def test_relative_state_dir_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = load_config(None, {"state_dir": "./state"})
    assert c.agent.state_dir == str(tmp_path / "state")


def test_diff_keys():
    a = load_config(None, {})
    b = load_config(None, {"agent.log_level": "debug", "collector.interval": "5s"})
    assert diff_keys(a, b) == ["agent.log_level", "collector.interval"]
    assert diff_keys(a, a) == []


@pytest.mark.parametrize("host", ["h", "fleet-1", "node7.example.org", "a" * 63 + "." + "b" * 63])
def test_agent_host_takes_an_rfc1123_name(host):
    assert load_config(None, {"agent.host": host}).agent.host == host


@pytest.mark.parametrize("host", ["a_b", "-a", "a-", "a..b", ".a", "a b", "x" * 64, ("a" * 63 + ".") * 4 + "a"])
def test_agent_host_is_checked_by_the_one_host_name_rule(host):
    """agent.host once had its own, looser regex ([A-Za-z0-9][A-Za-z0-9.-]*:
    "a..b", "a-" passed); now it is runtime.rules.HOSTNAME_RE, as for a
    container's host name, up to a DNS name's 253 characters."""
    with pytest.raises(ConfigError, match=r"^agent\.host: .* is not a host name; use .*RFC 1123") as e:
        load_config(None, {"agent.host": host})
    assert "\n" not in str(e.value)
