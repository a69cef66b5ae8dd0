"""Budget definitions: every bad value is one line naming the field; windows
align to UTC days, months and epoch multiples; selectors match by label or
name glob; the ledger's spend_since adds open periods to closed records."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from agent.budgets import matches, parse, window_seconds
from agent.config import load_config
from agent.errors import UserError
from agent.ledger import Ledger
from agent.model import ContainerInfo
from runtime.stats import CgroupEvents, CgroupSample, CpuStat

GOOD = {"name": "cap", "match": "label:team=red", "limit": "0.01", "per": "day", "action": "freeze"}


@pytest.mark.parametrize("field,value", [
    ("name", "bad name"), ("match", "team=red"), ("match", "name:"), ("limit", "-1"), ("limit", "ten"),
    ("per", "fortnight"), ("per", "0.5s"), ("action", "explode"), ("action", "freeze:1"),
    ("action", "throttle:lots"), ("warn", "50,abc"), ("warn", "150"), ("colour", "red"),
])
def test_a_bad_value_names_its_field(field, value):
    with pytest.raises(UserError) as e:
        parse({**GOOD, field: value})
    assert str(e.value).startswith(f"{field}:") and "\n" not in str(e.value)


def test_a_good_budget():
    b = parse({**GOOD, "action": "throttle", "warn": "80,50"})
    assert (b.limit_nanos, b.action, b.warn) == (10_000_000, "throttle:0.1", [50, 80])


def test_windows():
    t = 1_900_000_000.5          # 2030-03-17T17:46:40Z
    assert window_seconds("day", t) == 1_899_936_000     # 2030-03-17T00:00:00Z
    assert window_seconds("month", t) == 1_898_553_600   # 2030-03-01T00:00:00Z
    assert window_seconds("1h", t) == 1_899_997_200


def test_selectors():
    assert matches("label:team=red", "web", {"team": "red"})
    assert not matches("label:team=red", "web", {"team": "blue"})
    assert matches("name:burn*", "burn1", {}) and not matches("name:burn*", "web", {})


def test_spend_since_counts_closed_records_and_the_open_period(tmp_path):
    cfg = load_config(None, {"billing.period": "10s", "agent.host": "h", "billing.price_cpu_core_hour": "3.6"})
    led = Ledger(cfg, str(tmp_path / "l.db"))
    info = ContainerInfo(id="c1", name="web", cgroup="/cg/c1", limits=None, state="running", labels={"team": "red"})
    t0 = 1_900_000_000.0
    for i, usec in enumerate((0, 1_000_000, 3_000_000)):       # 1 s of CPU in a closed period, 2 s open
        led.observe(SimpleNamespace(taken_at=t0 + 7 * i, monotonic=100.0 + 7 * i,
                                    samples={"/cg/c1": CgroupSample(inode=1, cpu=CpuStat(usec, usec, 0, 0, 0, 0),
                                                                    events=CgroupEvents(True, False))},
                                    containers={"c1": info}))
    rows = led.spend_since(int(t0))
    # 3.6 per core-hour = 0.001 per CPU-second = 1_000_000 nano-units
    assert sum(n for _c, _n, _l, n in rows) == 3_000_000
    assert {(c, n, tuple(lab.items())) for c, n, lab, _ in rows} == {("c1", "web", (("team", "red"),))}
    led.close()


# ------------------------------------------------------------ [budgets.NAME] in the config

def _config(tmp_path, text):
    from agent.config import load_config
    p = tmp_path / "agent.toml"
    p.write_text(text)
    return load_config(str(p))


def test_config_budgets_are_parsed_with_the_api_rules(tmp_path):
    from agent.budgets import from_config
    cfg = _config(tmp_path, '[budgets.team-a]\nmatch = "label:team=a"\nlimit = "12.5"\nper = "month"\n'
                            'action = "freeze"\nwarn = [50, 80]\n'
                            '[budgets.night]\nmatch = "name:batch-*"\nlimit = 3\nper = "1h"\naction = "alert"\n')
    got = {b.name: b for b in from_config(cfg.budgets.entries)}
    assert set(got) == {"team-a", "night"}
    assert got["team-a"].warn == [50, 80] and got["team-a"].per == "month" and got["team-a"].source == "config"
    assert got["night"].limit_nanos == 3 * 10**9 and got["night"].action == "alert"


@pytest.mark.parametrize("text, key", [
    ('[budgets.a]\nmatch = "team"\nlimit = "1"\nper = "day"\naction = "freeze"\n', "budgets.a: match:"),
    ('[budgets.a]\nmatch = "name:x"\nlimit = "-1"\nper = "day"\naction = "freeze"\n', "budgets.a: limit:"),
    ('[budgets.a]\nmatch = "name:x"\nlimit = "1"\nper = "day"\naction = "freeze"\ncolour = 1\n', "budgets.a: colour:"),
    ('[budgets.a]\nname = "b"\nmatch = "name:x"\nlimit = "1"\nper = "day"\naction = "freeze"\n', "budgets.a.name:"),
    ('[budgets]\na = 1\n', "budgets.a: must be a table"),
])
def test_a_wrong_config_budget_is_one_line_naming_the_table_and_field(tmp_path, text, key):
    from agent.budgets import check_config
    from agent.config import ConfigError
    with pytest.raises(ConfigError) as e:
        check_config(_config(tmp_path, text))
    assert str(e.value).startswith(key) and "\n" not in str(e.value)


def test_agentd_check_refuses_a_wrong_config_budget(tmp_path):
    import subprocess
    import sys
    p = tmp_path / "agent.toml"
    p.write_text('[budgets.a]\nmatch = "name:x"\nlimit = "1"\nper = "fortnight"\naction = "freeze"\n')
    r = subprocess.run([sys.executable, "-m", "agent.daemon", "--config", str(p), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "budgets.a: per:" in r.stderr, r.stderr
