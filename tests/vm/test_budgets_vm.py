"""A throttle budget on full cgroup v2 (the host tier has no cpu controller):
a CPU burner whose cost crosses a `throttle:0.1` budget is capped to 0.1 CPU
by cpu.max, measured from its own cpu.stat, and raising the limit gives the
CPU back (cpu.max as it was)."""
from __future__ import annotations

import os
import secrets
import time

import pytest

from helpers import Agentd, wait_for
from runtime.cgroupfs import Cgroup
from runtime.stats import parse_cpu_stat

from conftest import destroy_cgroup


@pytest.fixture
def agentd(vm_test_parent, tmp_path):
    root = vm_test_parent.child(f"budget-{secrets.token_hex(3)}")
    os.mkdir(root.path)
    cfg = tmp_path / "agent.toml"
    # 36 USD per core-hour: a busy core costs 0.01 USD a second
    cfg.write_text('[collector]\ninterval = "250ms"\n'
                   '[billing]\nperiod = "1s"\ncurrency = "USD"\nprice_cpu_core_hour = "36"\n')
    a = Agentd(Cgroup(root.path), tmp_path, config=str(cfg))
    a.start()
    try:
        yield a
    finally:
        a.stop()
        destroy_cgroup(root.path)


def _cpu_max(cg: str) -> str:
    with open(os.path.join(cg, "cpu.max")) as f:
        return f.read().strip()


def _cpu_rate(cg: str, seconds: float) -> tuple[float, int]:
    """CPUs used over `seconds` of wall time, and the throttled periods meanwhile."""
    def read():
        with open(os.path.join(cg, "cpu.stat")) as f:
            s = parse_cpu_stat(f.read())
        return s.usage_usec, s.nr_throttled or 0
    u0, t0, w0 = *read(), time.monotonic()
    time.sleep(seconds)
    u1, t1, w1 = *read(), time.monotonic()
    return (u1 - u0) / 1e6 / (w1 - w0), t1 - t0


def test_a_throttle_budget_caps_the_burner_to_a_tenth_of_a_cpu_and_raising_it_gives_it_back(agentd, record_property):
    cid = agentd.run("burn", "while :; do :; done")["id"]
    cg = os.path.join(agentd.root.path, "containers", cid)
    assert _cpu_max(cg) == "max 100000"
    free_rate, _ = _cpu_rate(cg, 2.0)
    assert free_rate > 0.5, f"the burner used only {free_rate:.2f} CPU before the budget"

    agentd.client.call("POST", "/v1/budgets", body={"name": "cap", "match": "name:burn", "limit": "0.02",
                                                    "per": "day", "action": "throttle:0.1"})
    wait_for(lambda: _cpu_max(cg) == "10000 100000", what="the budget to write cpu.max")
    b = agentd.client.call("GET", "/v1/budgets/cap")
    assert b["acted_on"] == ["burn"] and b["crossed_at"] is not None
    capped_rate, throttled = _cpu_rate(cg, 4.0)
    record_property("cpu_free", round(free_rate, 3))
    record_property("cpu_under_throttle_0_1", round(capped_rate, 3))
    record_property("throttled_periods_4s", throttled)
    assert capped_rate < 0.2 and throttled > 0, (capped_rate, throttled)

    agentd.client.call("POST", "/v1/budgets", body={"name": "cap", "match": "name:burn", "limit": "1000",
                                                    "per": "day", "action": "throttle:0.1"})
    wait_for(lambda: _cpu_max(cg) == "max 100000", what="the raised limit to lift the throttle")
    assert agentd.client.call("GET", "/v1/budgets/cap")["acted_on"] == []
