"""The collector: one thread that samples cgroups into immutable Snapshots.

What it reads, every ``[collector] interval``:

- every container's cgroup (from the ``containers`` callable the supervisor
  passes in: ``Supervisor.containers`` -> list[ContainerInfo]);
- read-only, every cgroup under ``[collector] watch_roots`` (paths relative
  to the cgroup2 mount), recursively. The tree is walked once at start; after
  that new and removed cgroups come from inotify (agent/cgroup_watch.py),
  never from rescanning.

Each cgroup's files are opened once (runtime.reader.CgroupReader keeps the
descriptors) and re-read with pread, by tiers (agent/cgroup_sampling.py).
The result of a pass is a ``Snapshot`` (agent/snapshot.py; frozen, its
mappings read-only), published atomically: exporters call ``latest()`` and
never wait for a pass, and a pass never waits for them. Subscribers
(``subscribe(cb)``) are called with each Snapshot from the collector thread;
an exception in one is logged and counted
(cgroup_agent_subscriber_errors_total) and the collector keeps going.

Cheapness (goal: < 5% of one core at 1000 containers, 1 s interval): the
fast tier (cpu.stat, cgroup.events) every pass; the medium tier
(memory.current, memory.events, pids.current) every pass while busy; the
slow tier (memory.stat, io.stat, *.pressure, memory.peak, ...) every
``slow_every`` passes. A cgroup whose cpu.stat text did not change since the
last pass ran nothing: only the fast tier is read, plus a full refresh every
``idle_every`` passes, staggered by a per-cgroup phase.

Trade-off: values from the slow tier (working set, rss/cache/mapped, page
faults, IO counters, pressure totals, peak) may be up to ``slow_every``
intervals old for busy cgroups, and up to ``idle_every`` for idle ones; the
medium tier (memory.current, memory.events, pids.current) is fresh for busy
cgroups and up to ``idle_every`` intervals old for idle ones (nothing ran
there: only reclaim can move their memory). cpu.stat, populated and frozen
are always fresh. Cumulative counters are delayed, never lost; billing's final
read (``sample_now``) reads every file. ``slow_every=1, idle_every=1`` reads
everything every pass. An unchanged cgroup keeps the very same CgroupSample
object from pass to pass (the renderer relies on that to reuse its output).

Also per pass: containers' network counters (agent/netmeter.py), the root
cgroup and the machine facts (agent/host_facts.py), image containers' disk
use within ``fs_budget`` directory entries (agent/upper_usage.py).

A cgroup that vanishes mid-read is dropped and counted
(cgroup_agent_cgroups_vanished_total); the pass goes on. Beyond
RLIMIT_NOFILE (runtime.reader keeps ~7 descriptors per cgroup) the collector
reads further cgroups with open/read/close under the same tiers, logs once
and counts collection_errors_total{reason="fd_limit"}.

API (used by agent/daemon.py, agent/api.py, agent/ledger/):

    c = Collector(config, supervisor.containers)   # slow_every=5, idle_every=30
    c.subscribe(cb)         # cb(snapshot) after each pass, collector thread
    c.start(); c.stop()
    c.latest() -> Snapshot | None
    c.sample_now(info) -> CgroupSample | None      # full fresh read, any thread
    c.wait_for(seq, timeout) -> Snapshot | None    # tests/tools
    c.collect_once() -> Snapshot                   # one pass, thread not running
"""
from __future__ import annotations

import os
import select
import threading
import time
from types import MappingProxyType
from typing import Callable

import structlog

from agent import selfmetrics
from agent.cgroup_sampling import FAST, MEDIUM, SLOW, TieredSampler, TrackedCgroups, gone
from agent.cgroup_watch import WatchRoots
from agent.fdclose import close_quietly
from agent.host_facts import DeviceNames, RootCgroup, read_machine
from agent.netmeter import NetMeter
from agent.snapshot import Snapshot
from agent.upper_usage import FS_BUDGET, UpperDirUsage
from runtime import stats
from runtime.cgroupfs import find_mount
from runtime.errors import CgroupError

__all__ = ["FAST", "FS_BUDGET", "MEDIUM", "SLOW", "Collector", "Snapshot"]

log = structlog.get_logger("agent.collector")


class Collector:
    """Samples container and watch-root cgroups every ``config.collector.interval``."""

    def __init__(self, config, containers: Callable[[], list], *, mount: str | None = None,
                 slow_every: int = 5, idle_every: int = 30, watcher=None, fs_budget: int = FS_BUDGET):
        self.config = config
        self.interval = float(config.collector.interval)
        self.watch_roots = tuple(config.collector.watch_roots)
        self._containers_fn = containers
        self.mount = mount or find_mount()
        self._sampler = TieredSampler(slow_every, idle_every, getattr(config.collector, "enable", ()))
        self.slow_every = self._sampler.slow_every
        self.idle_every = self._sampler.idle_every
        self._tracked = TrackedCgroups()
        self._watch = WatchRoots(self.mount, self.watch_roots, self._tracked, watcher)
        self._devices = DeviceNames()
        self._subscribers: list[Callable] = []
        self._latest: Snapshot | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._pass = 0
        self._last_infos: list = []
        self._started = False
        self._root = RootCgroup(self.mount)
        self._fs = UpperDirUsage(config.agent.state_dir, self._devices, fs_budget)
        self.fs_budget = self._fs.budget
        self.machine = read_machine()
        self._net = NetMeter(self.mount)   # containers' network counters (agent/netmeter.py)

    # -- public API ------------------------------------------------------

    def subscribe(self, callback: Callable) -> None:
        """callback(snapshot) after each pass, from the collector thread."""
        self._subscribers.append(callback)

    def latest(self) -> Snapshot | None:
        """The most recent Snapshot (None before the first pass). Never blocks on a pass."""
        return self._latest

    def wait_for(self, seq: int, timeout: float) -> Snapshot | None:
        """Block until a Snapshot with ``seq >= seq`` exists (for tests and tools)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._latest is None or self._latest.seq < seq:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self._latest

    def start(self) -> None:
        """Discover watch roots, then run passes in a daemon thread."""
        if self._started:
            return
        self._started = True
        from runtime.reader import raise_nofile_limit
        raise_nofile_limit()
        self._watch.setup()
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(timeout)
        self._tracked.close_all()
        self._root.close()
        self._net.close()
        self._watch.close()
        close_quietly(self._wake_r, self._wake_w)
        self._wake_r = self._wake_w = -1

    def collect_once(self) -> Snapshot:
        """Run one pass synchronously (the thread must not be running). For tests and bench."""
        if self._watch.watcher is None and self.watch_roots:
            self._watch.setup()
        self._watch.drain(0)
        return self._do_pass()

    def sample_now(self, info) -> stats.CgroupSample | None:
        """A fresh full read of a container's cgroup (every file), e.g. the final
        read before removal. Independent of the pass; None if the cgroup is gone."""
        try:
            return self._net.attach_one(info, stats.read_sample(info.cgroup))
        except (CgroupError, OSError) as exc:
            log.info("collector.sample_now_gone", cgroup=info.cgroup, error=str(exc))
            return None

    def tracked_paths(self) -> list[str]:
        return sorted(self._tracked)

    # -- a pass ----------------------------------------------------------

    def _sync_containers(self) -> list:
        try:
            infos = list(self._containers_fn())
            self._last_infos = infos
        except Exception as exc:  # noqa: BLE001 - keep collecting with the last list
            log.warning("collector.containers_failed", error=str(exc))
            selfmetrics.inc("collection_errors_total", reason="containers")
            infos = self._last_infos
        wanted = {i.cgroup for i in infos if getattr(i, "cgroup", None)}
        for path, t in list(self._tracked.items()):
            if t.is_container and path not in wanted:
                t.is_container = False
                if not t.in_watch:
                    self._tracked.pop(path).close()
        for path in wanted:
            t = self._tracked.get(path) or self._tracked.track(path)
            if t is not None:
                t.is_container = True
        return infos

    def _do_pass(self) -> Snapshot:
        self._pass += 1
        n = self._pass
        wall = time.time()
        t0 = time.monotonic()
        infos = self._sync_containers()
        samples: dict[str, stats.CgroupSample] = {}
        errors = 0
        read = self._sampler.read
        for path, t in list(self._tracked.items()):
            try:
                sample = read(t, n)
            except (CgroupError, OSError) as exc:
                errors += 1
                if gone(path, t.inode):
                    self._tracked.pop(path).close()
                    self._watch.discard(path)
                    selfmetrics.inc("cgroups_vanished_total")
                    selfmetrics.inc("collection_errors_total", reason="vanished")
                    log.debug("collector.cgroup_vanished", path=path)
                else:
                    selfmetrics.inc("collection_errors_total", reason="read")
                    log.warning("collector.read_failed", path=path, error=str(exc))
                continue
            samples[path] = sample
        self._net.attach(infos, samples)
        root = self._net.attach_root(self._root.read(self._sampler, n))
        fs_usage = self._fs.advance(infos)
        self._devices.note_io((*samples.values(), root))
        duration = time.monotonic() - t0
        snap = Snapshot(
            taken_at=wall, monotonic=t0, duration=duration,
            samples=MappingProxyType(samples),
            containers=MappingProxyType({i.id: i for i in infos}),
            errors=errors, mount=self.mount,
            devices=MappingProxyType(dict(self._devices)), seq=n, machine=self.machine, root=root,
            fs_usage=fs_usage)
        selfmetrics.observe_collection(duration)
        selfmetrics.set_gauge("cgroups_watched", len(samples))
        selfmetrics.set_gauge("collection_last_success_timestamp_seconds", wall)
        with self._cond:
            self._latest = snap
            self._cond.notify_all()
        self._publish(snap)
        return snap

    def _publish(self, snap: Snapshot) -> None:
        for cb in list(self._subscribers):
            try:
                cb(snap)
            except Exception:  # noqa: BLE001 - a subscriber never kills the collector
                selfmetrics.inc("subscriber_errors_total")
                try:
                    log.exception("collector.subscriber_failed",
                                  subscriber=getattr(cb, "__qualname__", repr(cb)))
                except Exception:  # noqa: BLE001
                    pass

    # -- thread ----------------------------------------------------------

    def _run(self) -> None:
        log.info("collector.started", interval=self.interval, watch_roots=list(self.watch_roots),
                 mount=self.mount)
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self._do_pass()
            except Exception:  # noqa: BLE001 - never die; count and go on
                selfmetrics.inc("collection_errors_total", reason="pass")
                try:
                    log.exception("collector.pass_failed")
                except Exception:  # noqa: BLE001 - not even when logging fails (closed stdout)
                    pass
            next_at += self.interval
            now = time.monotonic()
            if next_at < now:   # overran: skip missed ticks, keep the cadence
                next_at = now + self.interval - ((now - next_at) % self.interval)
            self._wait_until(next_at)
        log.info("collector.stopped")

    def _wait_until(self, deadline: float) -> None:
        """Sleep until ``deadline``, handling inotify events as they come."""
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            fds = [self._wake_r]
            inotify_fd = self._watch.fileno()
            if inotify_fd is not None:
                fds.append(inotify_fd)
            try:
                ready, _, _ = select.select(fds, [], [], left)
            except (OSError, ValueError):
                return
            if self._wake_r in ready:
                return
            if ready:
                self._watch.drain(0)
