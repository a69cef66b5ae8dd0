"""The checkpoint families of the agent's own metrics: declared as what they
are (histograms for durations and image size), exported from agentd's start
before any checkpoint, and fed by observe()."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent import selfmetrics
from agent.checkpoint import metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HISTOGRAMS = ("checkpoint_duration_seconds", "restore_duration_seconds", "checkpoint_image_bytes")


def _families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_agentd_exports_the_checkpoint_families_from_its_start():
    """A fresh interpreter importing what agentd imports (agent.api.router), no checkpoint made:
    the histograms are there with count 0, the result counters at 0."""
    code = "import agent.api.router\nfrom agent import selfmetrics\nprint(selfmetrics.exposition().decode())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
    assert out.returncode == 0, out.stderr
    fams = _families(out.stdout)
    for name in HISTOGRAMS:
        fam = fams["cgroup_agent_" + name]
        assert fam.type == "histogram"
        samples = {(s.name, s.labels.get("le")): s.value for s in fam.samples}
        assert samples[(fam.name + "_count", None)] == 0
        assert samples[(fam.name + "_bucket", "+Inf")] == 0
    for name in ("checkpoints_total", "restores_total"):
        fam = fams["cgroup_agent_" + name.removesuffix("_total")]
        assert fam.type == "counter"
        assert {s.labels["result"]: s.value for s in fam.samples if s.name.endswith("_total")} \
            == {r: 0 for r in metrics.RESULTS}
    # the former summed counters are gone: the histograms' _sum carry that
    assert "cgroup_agent_checkpoint_duration_seconds_total" not in out.stdout


def test_observe_fills_the_buckets_count_and_sum():
    selfmetrics.reset()
    selfmetrics.observe("checkpoint_duration_seconds", 0.3)
    selfmetrics.observe("checkpoint_duration_seconds", 7.0)
    selfmetrics.observe("checkpoint_image_bytes", 300 << 10)
    h = selfmetrics.histogram("checkpoint_duration_seconds")
    assert (h.count, h.sum) == (2, 7.3)
    by_le = dict(zip(h.buckets, h.counts))
    assert (by_le[0.25], by_le[0.5], by_le[5.0], by_le[10.0]) == (0, 1, 1, 2)
    img = selfmetrics.histogram("checkpoint_image_bytes")
    assert img.count == 1 and img.sum == 300 << 10
    assert dict(zip(img.buckets, img.counts))[256 << 10] == 0
    assert dict(zip(img.buckets, img.counts))[1 << 20] == 1
    assert selfmetrics.histogram("restore_duration_seconds").count == 0
    text = selfmetrics.exposition().decode()
    assert 'cgroup_agent_checkpoint_duration_seconds_bucket{le="0.5"} 1.0' in text
    selfmetrics.reset()            # the declared histograms stay, at 0
    assert selfmetrics.histogram("checkpoint_duration_seconds").count == 0
    assert "cgroup_agent_checkpoint_duration_seconds_count 0.0" in selfmetrics.exposition().decode()


def test_histogram_declarations_are_checked():
    with pytest.raises(ValueError, match="needs buckets"):
        selfmetrics.declare("x_seconds", "histogram", "x")
    with pytest.raises(ValueError, match="needs buckets"):
        selfmetrics.declare("x_total", "histogram", "x", buckets=(1.0,))
    with pytest.raises(ValueError, match="not declared"):
        selfmetrics.observe("never_declared_seconds", 1.0)
    with pytest.raises(ValueError, match="is a histogram"):
        selfmetrics.set_gauge("checkpoint_duration_seconds", 1.0)
