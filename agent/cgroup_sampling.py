"""Reading one cgroup into a CgroupSample under the collector's tiers.

Each tracked cgroup keeps its files open (runtime.reader.CgroupReader) and
its last raw texts and parsed values; a pass re-reads with pread:

    fast   cpu.stat, cgroup.events                      every pass
    medium memory.current, memory.events, pids.current  every pass while busy
    slow   memory.stat, io.stat, *.pressure, memory.peak, memory.swap.current,
           pids.events, cpuset.cpus.effective           every ``slow_every`` passes

A cgroup whose cpu.stat text did not change ran nothing: only the fast tier
is read, plus a full refresh every ``idle_every`` passes, staggered by a
per-cgroup phase. A file whose text is unchanged is not parsed again, and an
unchanged cgroup keeps the very same CgroupSample object (the renderer
reuses its output for it). The inode read when the cgroup was opened tells a
vanished cgroup from a read error, and a cgroup replaced by a new one of the
same name from the old one. Beyond RLIMIT_NOFILE a cgroup is read with
open/read/close under the same tiers (logged once, counted as
collection_errors_total{reason="fd_limit"}).
"""
from __future__ import annotations

import errno
import os
import zlib

import structlog

from agent import selfmetrics
from runtime import procstat, stats
from runtime.errors import CgroupError

log = structlog.get_logger("agent.collector")

FAST = ("cpu.stat", "cgroup.events")
MEDIUM = ("memory.current", "memory.events", "pids.current")
SLOW = ("memory.stat", "io.stat", "cpu.pressure", "memory.pressure", "io.pressure",
        "memory.peak", "memory.swap.current", "pids.events", "cpuset.cpus.effective")

# file -> (CgroupSample field, parser); from runtime.stats.SAMPLE_FILES.
_FILE_FIELD = {file: (fld, parser) for fld, (file, parser) in stats.SAMPLE_FILES.items()}
_PREAD_SIZE = 65536


class Tracked:
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


def reader_fds(reader) -> dict | None:
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


def gone(path: str, inode) -> bool:
    """The cgroup we opened no longer exists (removed, or replaced by a new one of that name)."""
    try:
        return inode is not None and os.stat(path).st_ino != inode
    except FileNotFoundError:
        return True
    except OSError:
        return False


class TrackedCgroups(dict):
    """path -> Tracked, opening each cgroup once (``track``)."""

    def __init__(self):
        super().__init__()
        self._fd_limit_logged = False

    def track(self, path: str) -> Tracked | None:
        t = self.get(path)
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
                    log.warning("collector.fd_limit", path=path, tracked=len(self),
                                effect="cgroups beyond the limit are read with open/read/close; "
                                       "raise LimitNOFILE")
                # fall back to open/read/close of the files this cgroup has (fd None)
                files = {f: None for f in _FILE_FIELD if os.path.exists(os.path.join(path, f))}
                t = Tracked(path, None, files, _inode(path))
                self[path] = t
                return t
            return None   # vanished before we got to it
        t = Tracked(path, reader, reader_fds(reader), inode)
        self[path] = t
        return t

    def forget_tree(self, top: str) -> None:
        """Close and forget ``top`` and every cgroup below it."""
        prefix = top + "/"
        for path in [p for p in self if p == top or p.startswith(prefix)]:
            self.pop(path).close()

    def close_all(self) -> None:
        for t in self.values():
            t.close()
        self.clear()


class TieredSampler:
    """Reads a Tracked cgroup per the tier rules (and the ``[collector] enable`` sets)."""

    def __init__(self, slow_every: int, idle_every: int, enable=()):
        self.slow_every = max(1, int(slow_every))
        self.idle_every = max(1, int(idle_every))
        enable = set(enable or ())
        self._hugepage_sizes = stats.hugepage_sizes() if "hugetlb" in enable else ()
        self._proc_fds = "process" in enable
        self._proc_tasks = "cpuLoad" in enable

    def read(self, t: Tracked, n: int):
        """Read one cgroup per the tier rules on pass ``n``; returns its CgroupSample."""
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

    def _read_optional(self, t: Tracked, values: dict) -> bool:
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

    @staticmethod
    def _parse(file: str, data: bytes, values: dict) -> None:
        fld, parser = _FILE_FIELD[file]
        try:
            values[fld] = parser(data.decode())
        except (ValueError, KeyError, UnicodeDecodeError):
            values[fld] = None
