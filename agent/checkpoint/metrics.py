"""The checkpoint families of the agent's own metrics (``cgroup_agent_*``),
declared on import: agent/api_checkpoint.py imports this module, so agentd
exports them from its start (counters at 0, histograms with every bucket
at 0), before the first checkpoint.

    checkpoints_total{result}          counter    ok, refused, failed
    restores_total{result}             counter    ok, refused, failed
    checkpoint_duration_seconds        histogram  a successful checkpoint
    restore_duration_seconds           histogram  a successful restore
    checkpoint_image_bytes             histogram  images/ of each checkpoint
    checkpoint_last_duration_seconds   gauge      the last checkpoint
    checkpoint_last_image_bytes        gauge      the last checkpoint's images/
    checkpoint_images_bytes            gauge      every checkpoint kept
"""
from __future__ import annotations

from agent import selfmetrics

RESULTS = ("ok", "refused", "failed")

selfmetrics.declare("checkpoints_total", "counter", "Container checkpoints, by result.", ("result",),
                    zero=[(r,) for r in RESULTS])
selfmetrics.declare("restores_total", "counter", "Container restores from a checkpoint, by result.", ("result",),
                    zero=[(r,) for r in RESULTS])
# Upper bounds of the duration histograms (seconds: a small tree dumps in well
# under a second on hardware, a few seconds under emulation, minutes when
# large) and of the image size histogram (bytes, 64 KiB .. 16 GiB).
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
IMAGE_BYTES_BUCKETS = tuple(float(64 << 10 << (2 * i)) for i in range(10))
selfmetrics.declare("checkpoint_duration_seconds", "histogram",
                    "Duration of successful checkpoints (CRIU dump, the tree's end or thaw, record written).",
                    buckets=DURATION_BUCKETS)
selfmetrics.declare("restore_duration_seconds", "histogram",
                    "Duration of successful restores (new container, CRIU restore, adoption).",
                    buckets=DURATION_BUCKETS)
selfmetrics.declare("checkpoint_image_bytes", "histogram",
                    "Size on disk of each successful checkpoint's images/ (CRIU's image files and dump log).",
                    buckets=IMAGE_BYTES_BUCKETS)
selfmetrics.declare("checkpoint_last_duration_seconds", "gauge", "Duration of the last successful checkpoint.")
selfmetrics.declare("checkpoint_last_image_bytes", "gauge", "Size of the last checkpoint's images on disk.")
selfmetrics.declare("checkpoint_images_bytes", "gauge", "Bytes of every checkpoint kept under the state dir.")
