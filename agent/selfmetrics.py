"""The agent's own health counters, exported as ``cgroup_agent_<name>``.

A tiny thread-safe registry that any module of the daemon may update. It never
blocks for long (one lock, O(1) updates) and never touches the kernel; the
/metrics exporter (exporters/prometheus.py) reads it with ``families()``.

Usage from other modules::

    from agent import selfmetrics

    selfmetrics.inc("launches_total", result="ok")          # counter +1
    selfmetrics.inc("collection_errors_total", reason="vanished")
    selfmetrics.inc("sink_rows_total", 500, sink="postgres")  # counter +500
    selfmetrics.set_gauge("cgroups_watched", 42)
    selfmetrics.observe_collection(0.0123)                  # collection pass seconds

Rules:

- ``name`` is without the ``cgroup_agent_`` prefix; counters end in ``_total``
  (the exporter relies on it), gauges do not.
- A family keeps one label set: the label *names* are fixed by ``declare()``
  or, for an undeclared family, by its first update. Updating it later with
  other label names raises ``ValueError`` (a programming error, found by
  tests, never by users).
- ``declare(name, kind, help, labelnames=())`` sets the help text; the
  families every engineer is likely to touch are declared below, so an
  ``inc()`` with the listed labels just works.

Counters are exported from the start at 0 (labelled ones for the label
values given to ``declare(zero=...)``); gauges are absent until first set.

Declared families (kind, labels):

    collection_errors_total     counter  reason   (vanished, read, subscriber, inotify)
    cgroups_vanished_total      counter  -        cgroups that disappeared mid-read
    launches_total              counter  result   (ok, failed)  -- supervisor
    subscriber_errors_total     counter  -        snapshot callbacks that raised
    scrapes_total               counter  format   (text, openmetrics)
    cgroups_watched             gauge    -        cgroups the collector reads
    collection_last_success_timestamp_seconds gauge -
    ledger_errors_total         counter  stage    (observe, final, retention)
    collection_duration_seconds histogram -       (via observe_collection)

Tests may call ``reset()`` to start from zero.
"""
from __future__ import annotations

import threading
from typing import NamedTuple

PREFIX = "cgroup_agent_"

# Label values of the labelled counters that deploy/alerts.yml reads, each
# exported at 0 from the start (counters without labels always are).
COLLECTION_ERROR_REASONS = ("vanished", "read", "inotify", "inotify_overflow", "fd_limit",
                            "containers", "pass", "watch_root_missing")
LEDGER_ERROR_STAGES = ("observe", "final", "retention")

# Upper bounds of the collection duration histogram, in seconds.
COLLECTION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Family(NamedTuple):
    """A read-only copy of one family, for the exporter."""

    name: str            # full name, with the cgroup_agent_ prefix
    kind: str            # "counter" | "gauge"
    help: str
    labelnames: tuple
    values: dict         # tuple(label values) -> float


class HistogramData(NamedTuple):
    name: str
    help: str
    buckets: tuple       # upper bounds
    counts: tuple        # cumulative counts per bucket (same length as buckets)
    count: int
    sum: float


_lock = threading.Lock()
_meta: dict[str, tuple[str, str, tuple]] = {}   # name -> (kind, help, labelnames)
_values: dict[str, dict[tuple, float]] = {}
_zero: dict[str, set[tuple]] = {}               # counter -> label-value tuples exported at 0
_hist_counts = [0] * len(COLLECTION_BUCKETS)
_hist_count = 0
_hist_sum = 0.0


def declare(name: str, kind: str, help: str, labelnames=(), zero=()) -> None:
    """Declare a family (idempotent when called again with the same label names).

    A counter is exported from the start at 0 (so that ``increase()`` in an
    alert rule sees its first error): without labels its one series, with
    labels each label-value tuple in ``zero``. Gauges stay absent until set.
    """
    if kind not in ("counter", "gauge"):
        raise ValueError(f"selfmetrics kind must be counter or gauge, got {kind!r}")
    if kind == "counter" and not name.endswith("_total"):
        raise ValueError(f"selfmetrics counter {name!r} must end in _total")
    if kind == "gauge" and name.endswith("_total"):
        raise ValueError(f"selfmetrics gauge {name!r} must not end in _total")
    labelnames = tuple(labelnames)
    with _lock:
        old = _meta.get(name)
        if old is not None and old[2] != labelnames:
            raise ValueError(f"selfmetrics {name!r} already has labels {old[2]}, not {labelnames}")
        _meta[name] = (kind, help, labelnames)
        vals = _values.setdefault(name, {})
        if kind == "counter":
            seeds = _zero.setdefault(name, set())
            seeds.update([()] if not labelnames else (tuple(str(v) for v in z) for z in zero))
            for key in seeds:
                if len(key) == len(labelnames):
                    vals.setdefault(key, 0)


def _key(name: str, kind: str, labels: dict) -> tuple:
    meta = _meta.get(name)
    if meta is None:
        names = tuple(sorted(labels))
        _meta[name] = (kind, name.replace("_", " "), names)
        _values[name] = {}
        meta = _meta[name]
    if meta[0] != kind:
        raise ValueError(f"selfmetrics {name!r} is a {meta[0]}, not a {kind}")
    if len(labels) != len(meta[2]) or any(n not in labels for n in meta[2]):
        raise ValueError(f"selfmetrics {name!r} takes labels {meta[2]}, got {tuple(sorted(labels))}")
    return tuple(str(labels[n]) for n in meta[2])


def inc(name: str, value: float = 1, **labels) -> None:
    """Add ``value`` (>= 0) to counter ``name`` with the given labels."""
    if value < 0:
        raise ValueError(f"selfmetrics counter {name!r} cannot decrease (got {value})")
    if not name.endswith("_total"):
        raise ValueError(f"selfmetrics counter {name!r} must end in _total")
    with _lock:
        key = _key(name, "counter", labels)
        vals = _values[name]
        vals[key] = vals.get(key, 0) + value


def set_gauge(name: str, value: float, **labels) -> None:
    """Set gauge ``name`` with the given labels to ``value``."""
    if name.endswith("_total"):
        raise ValueError(f"selfmetrics gauge {name!r} must not end in _total")
    with _lock:
        key = _key(name, "gauge", labels)
        _values[name][key] = value


def observe_collection(seconds: float) -> None:
    """Record the duration of one collection pass."""
    global _hist_count, _hist_sum
    with _lock:
        for i, bound in enumerate(COLLECTION_BUCKETS):
            if seconds <= bound:
                _hist_counts[i] += 1
                break
        _hist_count += 1
        _hist_sum += seconds


def get(name: str, **labels) -> float:
    """Current value of one series (0 when never set). For tests and the API."""
    with _lock:
        meta = _meta.get(name)
        if meta is None:
            return 0
        key = tuple(str(labels.get(n, "")) for n in meta[2])
        return _values[name].get(key, 0)


def families() -> list[Family]:
    """A consistent copy of every family (sorted by name), for the exporter."""
    with _lock:
        return [Family(PREFIX + n, _meta[n][0], _meta[n][1], _meta[n][2], dict(_values[n]))
                for n in sorted(_meta)]


def collection_histogram() -> HistogramData:
    with _lock:
        cum, acc = [], 0
        for c in _hist_counts:
            acc += c
            cum.append(acc)
        return HistogramData(PREFIX + "collection_duration_seconds",
                             "Duration of one collection pass over every watched cgroup.",
                             COLLECTION_BUCKETS, tuple(cum), _hist_count, _hist_sum)


def _declare_defaults() -> None:
    declare("collection_errors_total", "counter",
            "Errors during collection passes, by reason.", ("reason",),
            zero=[(r,) for r in COLLECTION_ERROR_REASONS])
    declare("cgroups_vanished_total", "counter",
            "Cgroups that disappeared between discovery and read; they are dropped.")
    declare("launches_total", "counter", "Container process launches, by result.", ("result",),
            zero=[("ok",), ("failed",)])
    declare("subscriber_errors_total", "counter",
            "Snapshot subscriber callbacks that raised an exception.")
    declare("scrapes_total", "counter", "Scrapes of /metrics served, by format.", ("format",))
    declare("cgroups_watched", "gauge", "Cgroups read by the collector on each pass.")
    declare("collection_last_success_timestamp_seconds", "gauge",
            "Wall-clock time of the last completed collection pass.")
    # the billing ledger's failures (agent/ledger/ counts them; the alert rule
    # CgroupAgentLedgerFailing needs the series before the first failure)
    declare("ledger_errors_total", "counter",
            "Billing ledger transactions that failed (the committed state is reloaded).", ("stage",),
            zero=[(s,) for s in LEDGER_ERROR_STAGES])


def reset() -> None:
    """Forget every value (declarations stay). For tests."""
    global _hist_count, _hist_sum
    with _lock:
        for name, vals in _values.items():
            vals.clear()
            for key in _zero.get(name, ()):
                if len(key) == len(_meta[name][2]):
                    vals[key] = 0
        for i in range(len(_hist_counts)):
            _hist_counts[i] = 0
        _hist_count = 0
        _hist_sum = 0.0


_declare_defaults()
