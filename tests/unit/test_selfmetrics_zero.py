"""Counters are exported from the start at 0; every label value the code counts is seeded."""
from __future__ import annotations

import os
import re

from agent import selfmetrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _sources():
    for top in ("agent", "exporters", "runtime"):
        for dirpath, dirnames, files in sorted(os.walk(os.path.join(REPO, top))):   # subpackages too
            for name in sorted(files):
                if name.endswith(".py"):
                    with open(os.path.join(dirpath, name)) as f:
                        yield name, f.read()


def test_every_counted_label_value_is_exported_at_zero_from_the_start():
    """A reason/stage counted anywhere in the code but missing from the seed list would
    appear only at its first error, so increase() would miss that error."""
    seeded = {"collection_errors_total": ("reason", set(selfmetrics.COLLECTION_ERROR_REASONS)),
              "ledger_errors_total": ("stage", set(selfmetrics.LEDGER_ERROR_STAGES))}
    found = {name: set() for name in seeded}
    for _, text in _sources():
        for m in re.finditer(r'inc\("(collection_errors_total)",\s*reason="([a-z_]+)"\)', text):
            found[m.group(1)].add(m.group(2))
        for m in re.finditer(r'\b_?count_error\("([a-z_]+)"\)', text):
            found["ledger_errors_total"].add(m.group(1))
    for name, (_, values) in seeded.items():
        assert found[name], f"no {name} increments found in the source: the scan is broken"
        assert found[name] <= values, f"{name}: {sorted(found[name] - values)} not exported at 0 from the start"


def test_counters_start_at_zero_and_gauges_stay_absent_until_set():
    selfmetrics.reset()
    fams = {f.name: f for f in selfmetrics.families()}
    errors = fams["cgroup_agent_collection_errors_total"].values
    assert errors == {(r,): 0 for r in selfmetrics.COLLECTION_ERROR_REASONS}
    assert fams["cgroup_agent_ledger_errors_total"].values == {(s,): 0 for s in selfmetrics.LEDGER_ERROR_STAGES}
    assert fams["cgroup_agent_cgroups_vanished_total"].values == {(): 0}
    assert fams["cgroup_agent_collection_last_success_timestamp_seconds"].values == {}
    selfmetrics.inc("collection_errors_total", reason="read")
    assert selfmetrics.get("collection_errors_total", reason="read") == 1
    selfmetrics.reset()  # reset keeps the zeros
    assert selfmetrics.get("collection_errors_total", reason="read") == 0
    assert ("read",) in {f.name: f for f in selfmetrics.families()}["cgroup_agent_collection_errors_total"].values
