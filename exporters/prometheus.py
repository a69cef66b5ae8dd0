"""Prometheus / OpenMetrics rendering of the collector's latest Snapshot.

Why hand-written and not a prometheus_client custom Collector: measured on
this host, prometheus_client's generate_latest() takes ~280 ms for 1000
containers x 35 series (4.5 MB), over the 100 ms scrape goal. Rendering
straight to text with label strings built once per cgroup is ~10x faster (see
bench/collect). The output is the standard exposition format, checked by
`promtool check metrics` in tests/host/test_metrics_prometheus.py.

Names and labels follow cAdvisor (metrics/prometheus.go) where the meaning is
the same, so existing dashboards and OpenCost queries work unchanged:
labels ``container_label_<k>`` (allow-listed), ``id`` (cgroup path relative to
the cgroup2 mount, leading "/"), ``image``, ``name``; extra per-family labels
(cpu, failure_type/scope, device/major/minor/operation) come last. Every
series of a family carries the same label names.

A value the kernel does not provide (None in the CgroupSample: e.g. memory
files on a hybrid host, where the memory controller is bound to cgroup v1) is
not emitted for that cgroup -- never a made-up 0. container_spec_* follow
cAdvisor's defaults for every container: an unset or unlimited memory,
swap or reservation limit is 0, the CFS period 100000 when unset, shares
converted from cpu.weight (default 100); container_spec_cpu_quota only when
a quota is set.

The root cgroup (snapshot.root) is rendered with id="/" and image="" like
every non-container cgroup, so ``image!=""`` selects containers only; the
machine_* families carry cAdvisor's boot_id, machine_id, system_uuid labels.

Where a cAdvisor name is a counter without the _total suffix
(container_memory_failcnt, container_hugetlb_failcnt) it is typed gauge
here, keeping the name that dashboards query and `promtool check metrics`
clean. Families of the optional sets ([collector] enable) appear only when
the collector read them. Other differences from cAdvisor: container_processes
counts tasks (pids.current, on by default: the fork-bomb alert uses it), not
processes; not exported, because cgroup v2 and /proc do not give them:
container_hugetlb_max_usage_bytes (no hugetlb peak file),
container_tasks_state{state="iowaiting"} (netlink taskstats only), machine_nvm_*
(Intel's libipmctl), the cpu_topology set.

container_network_* come from the sample's ``network`` (agent/netmeter.py):
a container on the host's network has None and no series. cAdvisor's TCP/UDP
socket-state families (container_network_{tcp,tcp6,udp,udp6}_usage_total) are
not exported: they are gauges named _total, which `promtool check metrics`
rejects, and their source files cost ~670x the interface counters per
container (bench/net_counters.py).

Entry points: ``Renderer().render(snapshot, label_allowlist=(), openmetrics=False)
-> bytes`` (each Renderer owns its per-cgroup cache: exporters/metrics_server.py
holds one), and the module-level ``render(...)`` on a default Renderer. A
scrape never reads the kernel: everything comes from the snapshot and from
agent.selfmetrics. The family table is exporters/prom_families.py, the
series of one cgroup exporters/prom_series.py, label text
exporters/prom_labels.py; this module gathers, caches and joins them.
"""
from __future__ import annotations

import threading
import time

import structlog

from agent import selfmetrics
from exporters.prom_families import FAMILIES, FS_USAGE, LAST_SEEN
from exporters.prom_labels import base_labels, escape, label_key, num
from exporters.prom_series import (emit_cgroup, emit_container_state, emit_spec, header, machine_lines,
                                   weight_to_shares)

__all__ = ["FAMILIES", "OPENMETRICS_CONTENT_TYPE", "Renderer", "TEXT_CONTENT_TYPE", "VERSION", "escape",
           "label_key", "render", "weight_to_shares"]

log = structlog.get_logger("exporters.prometheus")

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

try:
    from importlib.metadata import version as _dist_version
    VERSION = _dist_version("cgroup-agent")
except Exception:  # noqa: BLE001 - not installed: still render
    VERSION = "0.0.0"
selfmetrics.set_build_info(VERSION)


class Renderer:
    """Renders Snapshots; owns the rendered series per cgroup, reused while the
    collector hands over the very same (immutable) CgroupSample object and an
    equal ContainerInfo: the collector keeps the previous sample object for a
    cgroup whose files did not change, so idle cgroups cost one append per
    series instead of formatting it. The spec series (container_spec_*,
    start/creation times) are kept while the ContainerInfo is equal, whatever
    the sample. Safe to call from several threads (one render at a time
    touches the cache)."""

    def __init__(self):
        self._chunks: dict[str, tuple] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget every cached series (the next render is a cold one)."""
        with self._lock:
            self._chunks.clear()

    def render(self, snapshot, label_allowlist=(), openmetrics=False) -> bytes:
        """Render ``snapshot`` (or None before the first pass) as exposition text."""
        out = [[] for _ in FAMILIES]
        if snapshot is not None:
            allow = tuple(label_allowlist)
            mount = getattr(snapshot, "mount", "")
            devices = getattr(snapshot, "devices", None) or {}
            by_cgroup = {info.cgroup: info for info in snapshot.containers.values()}
            taken_at = snapshot.taken_at
            seen = num(taken_at)
            last_seen = out[LAST_SEEN]
            put = [x.append for x in out]
            lbs = {}   # container cgroup -> its label string, built once in the sample loop
            root = getattr(snapshot, "root", None)
            if root is not None:     # the host: id="/", image="" and name="" as every non-container
                lb = base_labels(mount, None, mount, allow)
                acc = []
                emit_cgroup(acc.append, lb, root, None, devices)
                for i, line in acc:
                    put[i](line)
                last_seen.append(f"container_last_seen{{{lb}}} {seen}")
            with self._lock:
                cache = self._chunks
                for path in sorted(snapshot.samples):
                    info = by_cgroup.get(path)
                    sample = snapshot.samples[path]
                    hit = cache.get(path)
                    same_labels = hit is not None and (hit[1] is info or hit[1] == info) and hit[2] == allow
                    if same_labels and hit[0] is sample:
                        lb, acc, spec = hit[3], hit[4], hit[5]
                    else:
                        if same_labels:
                            lb, spec = hit[3], hit[5]
                        else:
                            lb = base_labels(path, info, mount, allow)
                            spec = []
                            if info is not None:
                                emit_spec(spec.append, lb, info)
                        acc = []
                        emit_cgroup(acc.append, lb, sample, info, devices)
                        cache[path] = (sample, info, allow, lb, acc, spec)
                    for i, line in acc:
                        put[i](line)
                    for i, line in spec:
                        put[i](line)
                    last_seen.append(f"container_last_seen{{{lb}}} {seen}")
                    if info is not None:
                        lbs[path] = lb
                if len(cache) > 2 * len(snapshot.samples) + 64:
                    for path in [p for p in cache if p not in snapshot.samples]:
                        del cache[path]
            fs_usage = getattr(snapshot, "fs_usage", None) or {}
            for info in sorted(snapshot.containers.values(), key=lambda i: i.id):
                lb = lbs.get(info.cgroup) or base_labels(info.cgroup, info, mount, allow)
                emit_container_state(out, lb, info, snapshot.samples.get(info.cgroup))
                if info.id in fs_usage:
                    device, nbytes = fs_usage[info.id]
                    out[FS_USAGE].append(f'container_fs_usage_bytes{{{lb},device="{escape(device)}"}} {nbytes}')
        lines: list[str] = []
        for (name, kind, help, _extra), series in zip(FAMILIES, out):
            if series:
                header(lines, name, kind, help, openmetrics)
                lines.extend(series)
        if snapshot is not None and getattr(snapshot, "machine", None) is not None:
            machine_lines(lines, snapshot.machine, openmetrics)
        lines.extend(selfmetrics.exposition(openmetrics).decode().splitlines())  # by prometheus_client
        if openmetrics:
            lines.append("# EOF")
        lines.append("")
        text = "\n".join(lines)
        try:
            return text.encode()
        except UnicodeEncodeError:  # a value that is not text (a lone surrogate): drop its series, never the scrape
            return _encode_skipping_bad_lines(lines)


_DEFAULT = Renderer()


def render(snapshot, label_allowlist=(), openmetrics=False) -> bytes:
    """Render ``snapshot`` on the module's default Renderer (its cache shared by every caller)."""
    return _DEFAULT.render(snapshot, label_allowlist, openmetrics)


selfmetrics.declare("metrics_series_dropped_total", "counter",
                    "Series left out of a /metrics scrape because a label value is not valid Unicode text.")
selfmetrics.inc("metrics_series_dropped_total", 0)
_dropped_logged_at = [0.0]


def _encode_skipping_bad_lines(lines: list) -> bytes:
    good, bad = [], []
    for line in lines:
        try:
            good.append(line.encode())
        except UnicodeEncodeError:
            bad.append(line)
    selfmetrics.inc("metrics_series_dropped_total", len(bad))
    now = time.monotonic()
    if now - _dropped_logged_at[0] >= 60:  # one line a minute, not one per scrape
        _dropped_logged_at[0] = now
        log.warning("metrics.series_dropped", series=len(bad), example=ascii(bad[0])[:300],
                    reason="a label value is not valid Unicode text")
    return b"\n".join(good)
