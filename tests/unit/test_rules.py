"""Each shared rule is defined once (agent/rules.py, runtime/rules.py,
runtime/controllers/values.py) and every caller applies that one."""
import argparse
import signal

import pytest

from agent import budget_spec, config, spec
from agent.api import router as api
from agent.cli import flags
from agent import rules as agent_rules
from runtime import rules, spawn
from runtime.controllers import values
from runtime.stats import CgroupSample, working_set


def test_every_caller_uses_the_one_name_and_restart_rule():
    assert flags.NAME_RE is api.NAME_RE is spec.NAME_RE is budget_spec.NAME_RE is agent_rules.NAME_RE
    assert flags.RESTART_RE is spec.RESTART_RE is agent_rules.RESTART_RE
    assert spawn.DEFAULT_PATH is rules.DEFAULT_PATH


@pytest.mark.parametrize("name", ["web-1", "a", "x" * 63, "a.b-c", "A1.example.org", "a" * 62 + "." + "b"])
def test_rfc1123_host_names_pass_the_agent_and_the_launcher(name):
    assert rules.valid_hostname(name)
    spawn.SpawnSpec.from_dict({"argv": ["true"], "cgroup": "/sys/fs/cgroup/x", "hostname": name,
                               "stdout": "/dev/null", "stderr": "/dev/null"})


@pytest.mark.parametrize("name", ["a_b", "-a", "a-", "a..b", ".a", "a.", "x" * 65, "a b", "x" * 64 + "." + "y"])
def test_non_rfc1123_host_names_are_refused_by_the_launcher_too(name):
    """The launcher once took [A-Za-z0-9_.-]{1,64} (underscores, empty labels,
    a trailing hyphen); now it checks the agent's RFC 1123 rule again."""
    assert not rules.valid_hostname(name)
    with pytest.raises(spawn.SpecError, match="spec.hostname"):
        spawn.SpawnSpec.from_dict({"argv": ["true"], "cgroup": "/sys/fs/cgroup/x", "hostname": name,
                                   "stdout": "/dev/null", "stderr": "/dev/null"})
    with pytest.raises(spec.UserError, match="^hostname: "):
        spec.from_json({"name": "c1", "argv": ["true"], "hostname": name}, config.load_config(None, {}))


@pytest.mark.parametrize("value,n", [("KILL", 9), ("sigterm", 15), (" 9 ", 9), (64, 64), ("RTMIN", int(signal.SIGRTMIN))])
def test_one_signal_rule(value, n):
    assert rules.signal_number(value) == n
    assert api.parse_signal(value) == n


@pytest.mark.parametrize("value", [0, 65, "0", "65", "NOPE", True, "", "-1", None])
def test_one_signal_rule_refuses(value):
    with pytest.raises(ValueError, match="is not a signal; use a name like TERM"):
        rules.signal_number(value)
    with pytest.raises(spec.UserError, match="^signal: "):
        api.parse_signal(value)
    if isinstance(value, str):
        with pytest.raises(argparse.ArgumentTypeError):
            flags.signal_name(value)


def test_config_sizes_follow_the_limits_rule():
    """One size rule: the config takes a decimal number with a unit, as limits do."""
    assert config.parse_size("1.5M") == values.parse_size("1.5M") == 1536 * 1024
    assert config.parse_size("10M") == 10 << 20
    for bad in ("max", "1.5", "-1", "12Q", True):
        with pytest.raises(ValueError):
            config.parse_size(bad)


def test_working_set_is_left_out_when_inactive_file_is_unknown():
    """Never a working set equal to usage because inactive_file was not read."""
    assert working_set(CgroupSample(memory_current=5000, memory_stat={"anon": 1})) is None
    assert working_set(CgroupSample(memory_current=5000)) is None
    assert working_set(CgroupSample(memory_current=5000, memory_stat={"inactive_file": 1000})) == 4000
