"""The collector: one thread that samples cgroups into immutable Snapshots.

What it reads, every ``[collector] interval``:

- every container's cgroup (from the ``containers`` callable the supervisor
  passes in: ``Supervisor.containers`` -> list[ContainerInfo]);
- read-only, every cgroup under ``[collector] watch_roots`` (paths relative
  to the cgroup2 mount), recursively. The tree is walked once at start; after
  that new and removed cgroups come from inotify (IN_CREATE/IN_DELETE on each
  watched directory via runtime.inotify.Watcher), never from rescanning.

Each cgroup's files are opened once (runtime.reader.CgroupReader keeps the
descriptors) and re-read with pread. The result of a pass is a ``Snapshot``
(frozen; its mappings are read-only), published atomically: exporters call
``latest()`` and never wait for a pass, and a pass never waits for them.
Subscribers (``subscribe(cb)``) are called with each Snapshot from the
collector thread; an exception in one is logged and counted
(cgroup_agent_subscriber_errors_total) and the collector keeps going.

Cheapness (goal: < 5% of one core at 1000 containers, 1 s interval). Files
fall in three tiers:

    fast   cpu.stat, cgroup.events                      every pass
    medium memory.current, memory.events, pids.current  every pass while busy
    slow   memory.stat, io.stat, *.pressure, memory.peak, memory.swap.current,
           pids.events, cpuset.cpus.effective           every ``slow_every`` passes

A cgroup whose cpu.stat text did not change since the last pass ran nothing:
only the fast tier is read, plus a full refresh every ``idle_every`` passes.
Slow and idle refreshes are staggered by a per-cgroup phase so the cost is
spread evenly over passes instead of spiking. A file whose text is unchanged
is not parsed again.

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

Image containers' disk use: the bytes in each one's overlay upper dir
(state_dir/containers/<id>/upper), walked at a bounded cost by
runtime.fsusage: at most ``fs_budget`` directory entries per pass over all
upper dirs together, a figure published when its walk completed
(``Snapshot.fs_usage``: container id -> (device, bytes); exported as
container_fs_usage_bytes; a ledger can bill disk byte-seconds from it).

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

import errno
import os
import select
import threading
import time
import zlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

import structlog

from agent import selfmetrics
from agent.netmeter import NetMeter
from runtime import fsusage, machine, procstat, stats
from runtime.cgroupfs import find_mount
from runtime.errors import CgroupError

log = structlog.get_logger("agent.collector")

FAST = ("cpu.stat", "cgroup.events")
MEDIUM = ("memory.current", "memory.events", "pids.current")
SLOW = ("memory.stat", "io.stat", "cpu.pressure", "memory.pressure", "io.pressure",
        "memory.peak", "memory.swap.current", "pids.events", "cpuset.cpus.effective")

# file -> (CgroupSample field, parser); from runtime.stats.SAMPLE_FILES.
_FILE_FIELD = {file: (fld, parser) for fld, (file, parser) in stats.SAMPLE_FILES.items()}
_PREAD_SIZE = 65536
# directory entries examined per pass over all image containers' upper dirs (bench/fs_usage.py)
FS_BUDGET = 4096
_EMPTY = MappingProxyType({})


@dataclass(frozen=True)
class Snapshot:
    """One collection pass. Immutable: share it freely between threads."""

    taken_at: float                        # wall clock (time.time()) at the start of the pass
    monotonic: float                       # time.monotonic() at the start of the pass
    duration: float                        # seconds the pass took
    samples: Mapping[str, stats.CgroupSample]   # absolute cgroup path -> sample
    containers: Mapping[str, object]       # container id -> agent.model.ContainerInfo
    errors: int = 0                        # read errors (incl. vanished cgroups) in this pass
    mount: str = ""                        # cgroup2 mount point, for relative ids
    devices: Mapping = field(default_factory=lambda: _EMPTY)   # (major, minor) -> "/dev/name"
    seq: int = 0                           # 1 for the first pass, +1 each pass
    machine: object = None                 # runtime.machine.MachineInfo (read once at start)
    root: stats.CgroupSample | None = None # the root cgroup (id "/"), completed from /proc
    # image containers: container id -> (device of the filesystem, bytes in its upper dir at the
    # end of its last completed walk); absent until a first walk completed (runtime/fsusage.py)
    fs_usage: Mapping = field(default_factory=lambda: _EMPTY)

    def sample_for(self, info) -> stats.CgroupSample | None:
        """The sample of a container's cgroup (None if not read this pass)."""
        return self.samples.get(info.cgroup)

    def rel_id(self, path: str) -> str:
        """cgroup path relative to the mount, with a leading "/" (cAdvisor's id)."""
        rel = path[len(self.mount):] if self.mount and path.startswith(self.mount) else path
        return rel if rel.startswith("/") else "/" + rel


class _Tracked:
    """Per-cgroup reading state, owned by the collector thread."""

    __slots__ = ("path", "reader", "fds", "raw", "values", "sample", "phase",
                 "in_watch", "is_container", "inode", "fast", "medium", "rest")

    def __init__(self, path: str, reader, fds, inode=None):
        self.path = path
        self.inode = inode
        self.reader = reader
        self.fds = fds              # file -> fd (kept open by the reader) or None
        self.raw: dict[str, bytes] = {}
        self.values: dict[str, object] = {}
        self.sample = None
        self.phase = zlib.crc32(path.encode())
        self.in_watch = False
        self.is_container = False
        # (file, fd) per tier, only for files this cgroup has (fd None: open/read/close)
        have = fds or {}
        self.fast = tuple((f, have[f]) for f in FAST if f in have)
        self.medium = tuple((f, have[f]) for f in MEDIUM if f in have)
        self.rest = self.medium + tuple((f, have[f]) for f in SLOW if f in have)

    def close(self):
        try:
            if self.reader is not None:
                self.reader.close()
        except Exception:  # noqa: BLE001 - closing a vanished cgroup's fds
            pass
        self.reader = None
        self.fds = None


def _reader_fds(reader) -> dict | None:
    """The reader's file -> descriptor mapping, when it exposes one."""
    for attr in ("fds", "_fds"):
        fds = getattr(reader, attr, None)
        if isinstance(fds, dict):
            return fds
    return None


def _read_file(cg_path: str, file: str) -> bytes:
    """open/read/close: for cgroups beyond RLIMIT_NOFILE."""
    fd = os.open(os.path.join(cg_path, file), os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, _PREAD_SIZE)
    finally:
        os.close(fd)


def _inode(path: str):
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _gone(path: str, inode) -> bool:
    """The cgroup we opened no longer exists (removed, or replaced by a new one of that name)."""
    try:
        return inode is not None and os.stat(path).st_ino != inode
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _device_name(maj: int, mnr: int) -> str:
    try:
        with open(f"/sys/dev/block/{maj}:{mnr}/uevent") as f:
            for line in f:
                if line.startswith("DEVNAME="):
                    return "/dev/" + line.split("=", 1)[1].strip()
    except OSError:
        pass
    return f"{maj}:{mnr}"


class Collector:
    """Samples container and watch-root cgroups every ``config.collector.interval``."""

    def __init__(self, config, containers: Callable[[], list], *, mount: str | None = None,
                 slow_every: int = 5, idle_every: int = 30, watcher=None, fs_budget: int = FS_BUDGET):
        self.config = config
        self.interval = float(config.collector.interval)
        self.watch_roots = tuple(config.collector.watch_roots)
        self._containers_fn = containers
        self.mount = mount or find_mount()
        self.slow_every = max(1, int(slow_every))
        self.idle_every = max(1, int(idle_every))
        self._watcher = watcher
        self._own_watcher = watcher is None
        self._tracked: dict[str, _Tracked] = {}
        self._watched_dirs: set[str] = set()
        self._devices: dict[tuple, str] = {}
        self._subscribers: list[Callable] = []
        self._latest: Snapshot | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._pass = 0
        self._pass_errors = 0
        self._last_infos: list = []
        self._started = False
        self._fd_limit_logged = False
        self._root = None   # _Tracked of the root cgroup, False when unreadable
        self.fs_budget = max(1, int(fs_budget))
        self._fs_walks = fsusage.Walks()
        self._uppers = os.path.join(config.agent.state_dir, "containers")
        enable = set(getattr(config.collector, "enable", ()) or ())
        self._hugepage_sizes = stats.hugepage_sizes() if "hugetlb" in enable else ()
        self._proc_fds = "process" in enable
        self._proc_tasks = "cpuLoad" in enable
        try:
            self.machine = machine.read_machine()
        except Exception as exc:  # noqa: BLE001 - machine_* absent, everything else goes on
            log.warning("collector.machine_info_failed", error=str(exc))
            self.machine = None
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
        self._setup_watches()
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
        for t in self._tracked.values():
            t.close()
        self._tracked.clear()
        if self._root:
            self._root.close()
        self._root = None
        self._net.close()
        if self._watcher is not None and self._own_watcher:
            try:
                self._watcher.close()
            except Exception:  # noqa: BLE001
                pass
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    def collect_once(self) -> Snapshot:
        """Run one pass synchronously (the thread must not be running). For tests and bench."""
        if self._watcher is None and self.watch_roots:
            self._setup_watches()
        self._drain_inotify(0)
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

    # -- discovery -------------------------------------------------------

    def _setup_watches(self) -> None:
        if not self.watch_roots:
            return
        if self._watcher is None:
            from runtime.inotify import Watcher
            self._watcher = Watcher()
        for root in self.watch_roots:
            path = os.path.normpath(os.path.join(self.mount, root.lstrip("/")))
            if not path.startswith(self.mount) or not os.path.isdir(path):
                log.warning("collector.watch_root_missing", root=root, path=path)
                selfmetrics.inc("collection_errors_total", reason="watch_root_missing")
                continue
            self._add_tree(path)

    def _add_tree(self, top: str, relist: bool = False) -> None:
        """Watch ``top`` and every cgroup below it (watch first, then list: no gap).
        ``relist`` lists already-watched directories again (after an overflow)."""
        stack = [top]
        while stack:
            path = stack.pop()
            if path in self._watched_dirs:
                if not relist:
                    continue
            else:
                try:
                    self._watcher.watch_dir(path)
                except Exception as exc:  # noqa: BLE001 - vanished, or out of watches
                    if os.path.isdir(path):
                        log.warning("collector.watch_failed", path=path, error=str(exc))
                        selfmetrics.inc("collection_errors_total", reason="inotify")
                    continue
                self._watched_dirs.add(path)
            t = self._track(path)
            if t is not None:
                t.in_watch = True
            try:
                with os.scandir(path) as it:
                    for e in it:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
            except OSError:
                continue

    def _drop_tree(self, top: str) -> None:
        prefix = top + "/"
        for path in [p for p in self._watched_dirs if p == top or p.startswith(prefix)]:
            self._watched_dirs.discard(path)
            try:
                self._watcher.unwatch(path)
            except Exception:  # noqa: BLE001 - already gone with the directory
                pass
        for path in [p for p in self._tracked if p == top or p.startswith(prefix)]:
            self._tracked.pop(path).close()

    def _drain_inotify(self, timeout: float) -> None:
        if self._watcher is None:
            return
        try:
            events = self._watcher.read(timeout)
        except Exception as exc:  # noqa: BLE001
            log.warning("collector.inotify_read_failed", error=str(exc))
            selfmetrics.inc("collection_errors_total", reason="inotify")
            return
        for ev in events:
            if ev.kind == "overflow":     # events were lost: the one case for a rescan
                log.warning("collector.inotify_overflow")
                selfmetrics.inc("collection_errors_total", reason="inotify_overflow")
                self._rescan()
                continue
            full = os.path.join(ev.path, ev.name) if ev.name else ev.path
            if ev.kind == "created":
                if os.path.isdir(full):
                    self._add_tree(full)
            elif ev.kind == "deleted":
                self._drop_tree(full)

    def _rescan(self) -> None:
        for path in [p for p in self._watched_dirs if not os.path.isdir(p)]:
            self._drop_tree(path)
        for root in self.watch_roots:
            path = os.path.normpath(os.path.join(self.mount, root.lstrip("/")))
            if os.path.isdir(path):
                self._add_tree(path, relist=True)

    def _track(self, path: str) -> _Tracked | None:
        t = self._tracked.get(path)
        if t is not None:
            return t
        from runtime.reader import CgroupReader
        try:
            inode = os.stat(path).st_ino
            reader = CgroupReader(path)
        except (CgroupError, OSError) as exc:
            if getattr(exc, "errno", None) == errno.EMFILE:
                selfmetrics.inc("collection_errors_total", reason="fd_limit")
                if not self._fd_limit_logged:     # once, not once per cgroup
                    self._fd_limit_logged = True
                    log.warning("collector.fd_limit", path=path, tracked=len(self._tracked),
                                effect="cgroups beyond the limit are read with open/read/close; "
                                       "raise LimitNOFILE")
                # fall back to open/read/close of the files this cgroup has (fd None)
                files = {f: None for f in _FILE_FIELD if os.path.exists(os.path.join(path, f))}
                t = _Tracked(path, None, files, _inode(path))
                self._tracked[path] = t
                return t
            return None   # vanished before we got to it
        t = _Tracked(path, reader, _reader_fds(reader), inode)
        self._tracked[path] = t
        return t

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
            t = self._tracked.get(path) or self._track(path)
            if t is not None:
                t.is_container = True
        return infos

    # -- reading ---------------------------------------------------------

    def _read(self, t: _Tracked, n: int):
        """Read one cgroup per the tier rules; returns its CgroupSample."""
        if t.fds is None:   # a reader that does not expose its descriptors
            return t.reader.sample()
        raw = t.raw
        values = t.values
        changed = False
        first = t.sample is None
        cpu_changed = True   # also when cpu.stat is absent: then never skip as idle
        for file, fd in t.fast:
            data = os.pread(fd, _PREAD_SIZE, 0) if fd is not None else _read_file(t.path, file)
            if raw.get(file) != data:
                raw[file] = data
                changed = True
                self._parse(file, data, values)
            elif file == "cpu.stat":
                cpu_changed = False
        if first:
            full = True
        elif cpu_changed:
            full = (n + t.phase) % self.slow_every == 0
        else:
            full = (n + t.phase) % self.idle_every == 0
        files = t.rest if full else (t.medium if cpu_changed else ())
        for file, fd in files:
            data = os.pread(fd, _PREAD_SIZE, 0) if fd is not None else _read_file(t.path, file)
            if raw.get(file) != data:
                raw[file] = data
                changed = True
                self._parse(file, data, values)
        if full and (self._hugepage_sizes or (t.is_container and (self._proc_fds or self._proc_tasks))):
            changed = self._read_optional(t, values) or changed
        if changed or first:
            values["inode"] = t.inode
            t.sample = stats.CgroupSample(**values)
        return t.sample

    def _read_optional(self, t: _Tracked, values: dict) -> bool:
        """The [collector] enable sets, on a full refresh; True if a value changed."""
        changed = False
        if self._hugepage_sizes:
            h = stats.read_hugetlb(t.path, self._hugepage_sizes)
            if h != values.get("hugetlb"):
                values["hugetlb"] = h
                changed = True
        if t.is_container and (self._proc_fds or self._proc_tasks):
            p = procstat.process_stats(t.path, fds=self._proc_fds, tasks=self._proc_tasks)
            if p != values.get("processes"):
                values["processes"] = p
                changed = True
        return changed

    def _read_root(self, n: int):
        """The root cgroup's sample (not in ``samples``: it is the host, not a watched
        cgroup), with what cgroup v2 lacks at the root taken from /proc."""
        if self._root is None:
            from runtime.reader import CgroupReader
            try:
                reader = CgroupReader(self.mount)
            except (CgroupError, OSError) as exc:
                log.warning("collector.root_unreadable", path=self.mount, error=str(exc))
                self._root = False
                return None
            self._root = _Tracked(self.mount, reader, _reader_fds(reader), reader.inode)
        if self._root is False:
            return None
        try:
            return machine.fill_root(self._read(self._root, n))
        except (CgroupError, OSError) as exc:
            selfmetrics.inc("collection_errors_total", reason="read")
            log.warning("collector.read_failed", path=self.mount, error=str(exc))
            return None

    @staticmethod
    def _parse(file: str, data: bytes, values: dict) -> None:
        fld, parser = _FILE_FIELD[file]
        try:
            values[fld] = parser(data.decode())
        except (ValueError, KeyError, UnicodeDecodeError):
            values[fld] = None

    def _do_pass(self) -> Snapshot:
        self._pass += 1
        n = self._pass
        wall = time.time()
        t0 = time.monotonic()
        infos = self._sync_containers()
        samples: dict[str, stats.CgroupSample] = {}
        errors = 0
        for path, t in list(self._tracked.items()):
            try:
                sample = self._read(t, n)
            except (CgroupError, OSError) as exc:
                errors += 1
                if _gone(path, t.inode):
                    self._tracked.pop(path).close()
                    self._watched_dirs.discard(path)
                    selfmetrics.inc("cgroups_vanished_total")
                    selfmetrics.inc("collection_errors_total", reason="vanished")
                    log.debug("collector.cgroup_vanished", path=path)
                else:
                    selfmetrics.inc("collection_errors_total", reason="read")
                    log.warning("collector.read_failed", path=path, error=str(exc))
                continue
            samples[path] = sample
        self._net.attach(infos, samples)
        root = self._net.attach_root(self._read_root(n))
        fs_usage = self._fs_usage(infos)
        for sample in (*samples.values(), root):
            if sample is not None and sample.io:
                for dev in sample.io:
                    if dev not in self._devices:
                        self._devices[dev] = _device_name(*dev)
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
        return snap

    def _fs_usage(self, infos) -> Mapping:
        """Walk the image containers' upper dirs on, within fs_budget entries."""
        trees = {}
        for info in infos:
            upper = os.path.join(self._uppers, info.id, "upper")
            if os.path.isdir(upper):
                trees[info.id] = upper
        if not trees:
            return _EMPTY
        try:
            self._fs_walks.advance(trees, self.fs_budget)
        except OSError as exc:
            selfmetrics.inc("collection_errors_total", reason="read")
            log.warning("collector.fs_usage_failed", error=str(exc))
        out = {}
        for cid, (nbytes, dev) in self._fs_walks.figures().items():
            key = (os.major(dev), os.minor(dev))
            if key not in self._devices:
                self._devices[key] = _device_name(*key)
            out[cid] = (self._devices[key], nbytes)
        return MappingProxyType(out)

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
            if self._watcher is not None:
                fds.append(self._watcher.fileno())
            try:
                ready, _, _ = select.select(fds, [], [], left)
            except (OSError, ValueError):
                return
            if self._wake_r in ready:
                return
            if ready:
                self._drain_inotify(0)
