"""The agent's own health counters, exported as ``cgroup_agent_<name>``.

prometheus_client's Counter, Gauge, Histogram and Info in a registry of the
agent's own (``REGISTRY``, not the library's global one), behind a small
facade that any module of the daemon may update. Updates never block for
long and never touch the kernel; the /metrics exporter
(exporters/prometheus.py) appends ``exposition(openmetrics)``, rendered by
prometheus_client's own encoders. ``*_created`` series are disabled (as the
agent never exported them), and a family with no series yet is left out.

Usage from other modules::

    from agent import selfmetrics

    selfmetrics.inc("launches_total", result="ok")          # counter +1
    selfmetrics.inc("collection_errors_total", reason="vanished")
    selfmetrics.inc("sink_rows_total", 500, sink="postgres")  # counter +500
    selfmetrics.set_gauge("cgroups_watched", 42)
    selfmetrics.observe_collection(0.0123)                  # collection pass seconds
    selfmetrics.observe("checkpoint_duration_seconds", 1.5)  # a declared histogram

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
A histogram (``declare(name, "histogram", help, buckets=(...))``, updated
with ``observe()``; its name ends in neither ``_total`` nor ``_bucket``) is
exported from the start with every bucket at 0 when it has no labels;
``histogram(name)`` reads it back as ``HistogramData``.

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

``families()`` and ``collection_histogram()`` give read-only copies (tests,
the API). Tests may call ``reset()`` to start from zero.
"""
from __future__ import annotations

import platform
import threading
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

disable_created_metrics()  # no *_created series: the exposition stays what it always was

PREFIX = "cgroup_agent_"

# Label values of the labelled counters that deploy/alerts.yml reads, each
# exported at 0 from the start (counters without labels always are).
COLLECTION_ERROR_REASONS = ("vanished", "read", "inotify", "inotify_overflow", "fd_limit",
                            "containers", "pass", "watch_root_missing", "network")
LEDGER_ERROR_STAGES = ("observe", "final", "retention")

# Upper bounds of the collection duration histogram, in seconds.
COLLECTION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_HIST_NAME = PREFIX + "collection_duration_seconds"
_HIST_HELP = "Duration of one collection pass over every watched cgroup."

REGISTRY = CollectorRegistry(auto_describe=False)


class Family(NamedTuple):
    """A read-only copy of one family."""

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
_zero: dict[str, set[tuple]] = {}               # counter -> label-value tuples exported at 0
_metrics: dict = {}                             # name -> its Counter/Gauge in REGISTRY (a gauge once set)
_hist: list = [None]                            # the collection duration Histogram
_buckets: dict[str, tuple] = {}                 # histogram -> its upper bounds (declared)


def _create(name: str):
    """The prometheus_client metric of a declared family, registered (caller holds _lock)."""
    kind, help, labelnames = _meta[name]
    if kind == "histogram":
        metric = Histogram(PREFIX + name, help, labelnames, buckets=_buckets[name], registry=REGISTRY)
    else:
        metric = (Counter if kind == "counter" else Gauge)(PREFIX + name, help, labelnames, registry=REGISTRY)
    _metrics[name] = metric
    if kind == "counter":
        for key in sorted(_zero.get(name, ())):
            if len(key) == len(labelnames):
                if labelnames:
                    metric.labels(*key)  # a child starts at 0
    return metric


def declare(name: str, kind: str, help: str, labelnames=(), zero=(), buckets=()) -> None:
    """Declare a family (idempotent when called again with the same label names).

    A counter is exported from the start at 0 (so that ``increase()`` in an
    alert rule sees its first error): without labels its one series, with
    labels each label-value tuple in ``zero``. Gauges stay absent until set.
    """
    if kind not in ("counter", "gauge", "histogram"):
        raise ValueError(f"selfmetrics kind must be counter, gauge or histogram, got {kind!r}")
    if kind == "histogram" and (name.endswith(("_total", "_bucket", "_count", "_sum")) or not buckets):
        raise ValueError(f"selfmetrics histogram {name!r} needs buckets and a name without a sample suffix")
    if kind == "counter" and not name.endswith("_total"):
        raise ValueError(f"selfmetrics counter {name!r} must end in _total")
    if kind == "gauge" and name.endswith("_total"):
        raise ValueError(f"selfmetrics gauge {name!r} must not end in _total")
    labelnames = tuple(labelnames)
    with _lock:
        old = _meta.get(name)
        if old is not None and old[2] != labelnames:
            raise ValueError(f"selfmetrics {name!r} already has labels {old[2]}, not {labelnames}")
        if old is not None and old[0] != kind:
            raise ValueError(f"selfmetrics {name!r} is a {old[0]}, not a {kind}")
        _meta[name] = (kind, help, labelnames)
        metric = _metrics.get(name)
        if kind == "histogram":
            _buckets[name] = tuple(float(b) for b in buckets)
            if metric is None:
                _create(name)       # without labels: every bucket exported at 0 from the start
        if metric is not None:
            metric._documentation = help  # declared after a first update: the help text it now has
        if kind == "counter":
            seeds = _zero.setdefault(name, set())
            seeds.update([()] if not labelnames else (tuple(str(v) for v in z) for z in zero))
            if metric is None:
                _create(name)
            else:
                for key in sorted(seeds):
                    if labelnames and len(key) == len(labelnames):
                        metric.labels(*key)


def _series(name: str, kind: str, labels: dict):
    """The series to update (created on first use); ValueError for another kind or label set."""
    with _lock:
        meta = _meta.get(name)
        if meta is None:
            meta = _meta[name] = (kind, name.replace("_", " "), tuple(sorted(labels)))
        if meta[0] != kind:
            raise ValueError(f"selfmetrics {name!r} is a {meta[0]}, not a {kind}")
        if len(labels) != len(meta[2]) or any(n not in labels for n in meta[2]):
            raise ValueError(f"selfmetrics {name!r} takes labels {meta[2]}, got {tuple(sorted(labels))}")
        metric = _metrics.get(name) or _create(name)
        return metric.labels(*(str(labels[n]) for n in meta[2])) if meta[2] else metric


def inc(name: str, value: float = 1, **labels) -> None:
    """Add ``value`` (>= 0) to counter ``name`` with the given labels."""
    if value < 0:
        raise ValueError(f"selfmetrics counter {name!r} cannot decrease (got {value})")
    if not name.endswith("_total"):
        raise ValueError(f"selfmetrics counter {name!r} must end in _total")
    _series(name, "counter", labels).inc(value)


def set_gauge(name: str, value: float, **labels) -> None:
    """Set gauge ``name`` with the given labels to ``value``."""
    if name.endswith("_total"):
        raise ValueError(f"selfmetrics gauge {name!r} must not end in _total")
    _series(name, "gauge", labels).set(value)


def observe(name: str, value: float, **labels) -> None:
    """Add one observation to the declared histogram ``name``."""
    if name not in _buckets:
        raise ValueError(f"selfmetrics histogram {name!r} is not declared")
    _series(name, "histogram", labels).observe(value)


def observe_collection(seconds: float) -> None:
    """Record the duration of one collection pass."""
    _hist[0].observe(seconds)


def _values(name: str) -> dict:
    """label-value tuple -> value of every series of ``name`` (caller holds _lock)."""
    metric = _metrics.get(name)
    if metric is None:
        return {}
    labelnames = _meta[name][2]
    full = PREFIX + name
    return {tuple(s.labels[n] for n in labelnames): s.value
            for fam in metric.collect() for s in fam.samples if s.name == full}


def get(name: str, **labels) -> float:
    """Current value of one series (0 when never set). For tests and the API."""
    with _lock:
        meta = _meta.get(name)
        if meta is None:
            return 0
        key = tuple(str(labels.get(n, "")) for n in meta[2])
        return _values(name).get(key, 0)


def families() -> list[Family]:
    """A copy of every family (sorted by name)."""
    with _lock:
        return [Family(PREFIX + n, _meta[n][0], _meta[n][1], _meta[n][2], _values(n)) for n in sorted(_meta)]


def _histogram_data(metric, full: str, help: str, bounds: tuple, labels: dict) -> HistogramData:
    by_le, count, total = {}, 0, 0.0
    for fam in metric.collect():
        for s in fam.samples:
            if any(s.labels.get(k) != str(v) for k, v in labels.items()):
                continue
            if s.name == full + "_bucket":
                by_le[float(s.labels["le"])] = int(s.value)
            elif s.name == full + "_count":
                count = int(s.value)
            elif s.name == full + "_sum":
                total = s.value
    return HistogramData(full, help, bounds, tuple(by_le.get(b, 0) for b in bounds), count, total)


def collection_histogram() -> HistogramData:
    return _histogram_data(_hist[0], _HIST_NAME, _HIST_HELP, COLLECTION_BUCKETS, {})


def histogram(name: str, **labels) -> HistogramData:
    """A copy of the declared histogram ``name`` (one label set): buckets, count, sum."""
    with _lock:
        metric = _metrics.get(name)
        if name not in _buckets or metric is None:
            raise ValueError(f"selfmetrics histogram {name!r} is not declared")
        return _histogram_data(metric, PREFIX + name, _meta[name][1], _buckets[name], labels)


class _Exposed:
    """REGISTRY as the exposition shows it: families sorted by name, those without a series left out."""

    def collect(self):
        return sorted((f for f in REGISTRY.collect() if f.samples), key=lambda f: f.name)


_EXPOSED = _Exposed()


def exposition(openmetrics: bool = False) -> bytes:
    """The agent's own families in the text format, or OpenMetrics without its final ``# EOF``."""
    if not openmetrics:
        return generate_latest(_EXPOSED)
    body = generate_openmetrics(_EXPOSED)
    return body[:-len(b"# EOF\n")] if body.endswith(b"# EOF\n") else body


def set_build_info(version: str) -> None:
    """cgroup_agent_build_info{version, python} 1 (an Info: "cgroup_agent_build" in OpenMetrics)."""
    _build.info({"version": version, "python": platform.python_version()})


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


def _new_histogram() -> None:
    _hist[0] = Histogram(_HIST_NAME, _HIST_HELP, buckets=COLLECTION_BUCKETS, registry=REGISTRY)


def reset() -> None:
    """Forget every value (declarations stay). For tests."""
    with _lock:
        for metric in list(_metrics.values()) + [_hist[0]]:
            REGISTRY.unregister(metric)
        _metrics.clear()
        for name, (kind, _help, _labels) in _meta.items():
            if (kind == "counter" and name in _zero) or kind == "histogram":  # declared: exported at 0 again
                _create(name)
        _new_histogram()


_build = Info(PREFIX + "build", "Build information of the running agent.", registry=REGISTRY)
_new_histogram()
_declare_defaults()
