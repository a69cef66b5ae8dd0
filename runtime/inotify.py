"""inotify on cgroupfs: the only module that touches inotify (via pyinotify).

cgroupfs raises IN_MODIFY on cgroup.events when populated/frozen change and
on memory.events when a counter moves; directory watches report cgroups
created and removed (IN_CREATE/IN_DELETE of subdirectories). Use this
instead of polling.

    w = Watcher()
    w.watch_events("/sys/fs/cgroup/R/containers/abc")  # cgroup.events, memory.events
    w.watch_dir("/sys/fs/cgroup/R/containers")          # children created/removed
    for ev in w.read(timeout=1.0):                      # [] after the timeout
        ev.kind, ev.path, ev.name   # ("modified", cg path, "cgroup.events")
                                    # ("created"/"deleted", parent path, child name)

``fileno()`` can be given to select/poll/selectors; ``read(0)`` then drains
without blocking.

cgroupfs does not drop the watches of a removed cgroup (no IN_IGNORED: the
watch keeps the dead kernfs inode alive). So when a watched directory
reports a child "deleted", the Watcher drops every watch on that child and
below by itself (``count()`` goes down). For cgroups whose parent is not
watched, call ``unwatch(path)`` when you learn they are gone, or ``prune()``.
"""
from __future__ import annotations

import errno
import os
import threading
from typing import NamedTuple

import logging
import warnings

with warnings.catch_warnings():
    # pyinotify imports asyncore, deprecated in 3.11 (pyasyncore provides it on 3.12+)
    warnings.simplefilter("ignore", DeprecationWarning)
    import pyinotify

# pyinotify warns on stderr about events of watches we already dropped.
pyinotify.log.setLevel(logging.CRITICAL)
from runtime.errors import CgroupError, CgroupGone

EVENT_FILES = ("cgroup.events", "memory.events", "pids.events")

_FILE_MASK = pyinotify.IN_MODIFY
_DIR_MASK = (pyinotify.IN_CREATE | pyinotify.IN_DELETE | pyinotify.IN_MOVED_FROM
             | pyinotify.IN_MOVED_TO | pyinotify.IN_ONLYDIR)


class WatchEvent(NamedTuple):
    kind: str   # "modified" | "created" | "deleted"
    path: str   # the cgroup (modified) or the watched parent directory (created/deleted)
    name: str   # the file (modified) or the child cgroup's name (created/deleted)


class _Collector(pyinotify.ProcessEvent):
    def my_init(self, sink=None):
        self.sink = sink

    def process_default(self, event):
        self.sink(event)


def _watch_limit() -> str:
    try:
        with open("/proc/sys/fs/inotify/max_user_watches") as f:
            return f.read().strip()
    except OSError:
        return "?"


class Watcher:
    """A set of inotify watches on cgroup files and directories."""

    def __init__(self):
        self._wm = pyinotify.WatchManager()
        self._pending: list[WatchEvent] = []
        self._notifier = pyinotify.Notifier(self._wm, default_proc_fun=_Collector(sink=self._on),
                                            timeout=0)
        self._lock = threading.RLock()
        # wd -> ("file", cgroup path, file name) | ("dir", dir path, "")
        self._wds: dict[int, tuple[str, str, str]] = {}
        self._closed = False

    # -- watches -----------------------------------------------------------
    def _add(self, path: str, mask: int) -> int:
        wd = self._wm.get_wd(path)
        if wd is not None and wd in self._wds:
            return wd
        try:
            result = self._wm.add_watch(path, mask, quiet=False)
        except pyinotify.WatchManagerError as exc:
            wd = (exc.wmd or {}).get(path, -1)
            if not os.path.exists(path):
                raise CgroupGone(f"cannot watch {path}: it does not exist", errno.ENOENT) \
                    from None
            raise CgroupError(f"cannot watch {path} with inotify (inotify watch limit "
                              f"fs.inotify.max_user_watches={_watch_limit()}?)", errno.ENOSPC) \
                from None
        wd = result.get(path)
        if wd is None:
            wd = self._wm.get_wd(path)
        if wd is None or wd < 0:
            raise CgroupError(f"cannot watch {path} with inotify")
        return wd

    def watch_events(self, cg_path, files=EVENT_FILES) -> list[str]:
        """Watch IN_MODIFY of ``files`` in a cgroup; absent files are skipped.

        Returns the files actually watched. Raises CgroupGone if the cgroup
        directory does not exist.
        """
        cg_path = os.path.normpath(os.fspath(getattr(cg_path, "path", cg_path)))
        if not os.path.isdir(cg_path):
            raise CgroupGone(f"cannot watch {cg_path}: it does not exist", errno.ENOENT)
        watched = []
        with self._lock:
            for name in files:
                path = os.path.join(cg_path, name)
                if not os.path.exists(path):
                    continue
                try:
                    wd = self._add(path, _FILE_MASK)
                except CgroupGone:
                    if not os.path.isdir(cg_path):
                        raise
                    continue
                self._wds[wd] = ("file", cg_path, name)
                watched.append(name)
        return watched

    def watch_dir(self, path) -> None:
        """Watch creation and removal of child cgroups (subdirectories) of ``path``."""
        path = os.path.normpath(os.fspath(getattr(path, "path", path)))
        with self._lock:
            wd = self._add(path, _DIR_MASK)
            self._wds[wd] = ("dir", path, "")

    def unwatch(self, path) -> int:
        """Drop every watch on ``path``: its directory watch and its event files.

        Returns how many watches were dropped. Unknown paths are ignored.
        """
        path = os.path.normpath(os.fspath(getattr(path, "path", path)))
        with self._lock:
            wds = [wd for wd, (_k, p, _n) in self._wds.items() if p == path]
            for wd in wds:
                del self._wds[wd]
                try:
                    self._wm.rm_watch(wd, quiet=True)
                except Exception:
                    pass
                # pyinotify keeps its own table; forget the wd there too
                self._wm._wmd.pop(wd, None)
            return len(wds)

    def _unwatch_tree(self, path: str) -> int:
        prefix = path.rstrip("/") + "/"
        paths = {p for (_k, p, _n) in self._wds.values() if p == path or p.startswith(prefix)}
        return sum(self.unwatch(p) for p in paths)

    def prune(self) -> int:
        """Drop watches whose cgroup no longer exists; returns how many."""
        with self._lock:
            gone = {p for (_k, p, _n) in self._wds.values() if not os.path.isdir(p)}
            return sum(self.unwatch(p) for p in gone)

    def count(self) -> int:
        """Number of live watches."""
        return len(self._wds)

    def watched(self) -> list[tuple[str, str, str]]:
        """(kind, path, name) of every live watch ("file"/"dir")."""
        with self._lock:
            return sorted(self._wds.values())

    # -- events ------------------------------------------------------------
    def fileno(self) -> int:
        return self._wm.get_fd()

    def _on(self, event) -> None:
        mask = event.mask
        wd = event.wd
        info = self._wds.get(wd)
        if mask & pyinotify.IN_IGNORED:
            # the kernel dropped the watch (file or directory removed)
            self._wds.pop(wd, None)
            self._wm._wmd.pop(wd, None)
            return
        if info is None or mask & pyinotify.IN_Q_OVERFLOW:
            if mask & pyinotify.IN_Q_OVERFLOW:
                # events were lost: tell the reader to rescan everything
                self._pending.append(WatchEvent("overflow", "", ""))
            return
        kind, path, name = info
        if kind == "file":
            if mask & pyinotify.IN_MODIFY:
                self._pending.append(WatchEvent("modified", path, name))
            return
        if not (mask & pyinotify.IN_ISDIR):
            return
        if mask & (pyinotify.IN_CREATE | pyinotify.IN_MOVED_TO):
            self._pending.append(WatchEvent("created", path, event.name))
        elif mask & (pyinotify.IN_DELETE | pyinotify.IN_MOVED_FROM):
            self._pending.append(WatchEvent("deleted", path, event.name))
            self._unwatch_tree(os.path.join(path, event.name))

    def read(self, timeout: float | None = None) -> list[WatchEvent]:
        """Events since the last read; waits up to ``timeout`` seconds for the first.

        ``timeout=None`` blocks until something happens; 0 never blocks.
        Repeated "modified" events of one file in a batch are merged (the
        reader re-reads the file anyway). A "overflow" event (kind
        "overflow", empty path) means events were lost: rescan.
        """
        if self._closed:
            raise CgroupError("inotify watcher is closed")
        with self._lock:
            if not self._pending:
                ms = None if timeout is None else max(0, int(timeout * 1000))
                if ms is None:
                    while not self._notifier.check_events(timeout=-1):  # poll(-1): block
                        pass
                    ready = True
                else:
                    ready = self._notifier.check_events(timeout=ms)
                if ready:
                    self._drain()
            else:
                if self._notifier.check_events(timeout=0):
                    self._drain()
            out, seen = [], set()
            for ev in self._pending:
                if ev.kind == "modified":
                    if ev in seen:
                        continue
                    seen.add(ev)
                out.append(ev)
            self._pending = []
            return out

    def _drain(self) -> None:
        self._notifier.read_events()
        self._notifier.process_events()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._notifier.stop()
        except Exception:
            try:
                self._wm.close()
            except Exception:
                pass
        self._wds.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
