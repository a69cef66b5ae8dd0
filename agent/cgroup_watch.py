"""The watch roots: every cgroup under ``[collector] watch_roots`` (paths
relative to the cgroup2 mount), read-only and recursively.

The tree is walked once at start; after that new and removed cgroups come
from inotify (IN_CREATE/IN_DELETE on each watched directory via
runtime.inotify.Watcher), never from rescanning, except after an inotify
queue overflow (events were lost: the one case for a rescan). Cgroups found
here are tracked in the collector's TrackedCgroups with ``in_watch`` set.
"""
from __future__ import annotations

import os

import structlog

from agent import selfmetrics

log = structlog.get_logger("agent.collector")


class WatchRoots:
    """inotify watches on the watch roots' directories, feeding ``tracked``."""

    def __init__(self, mount: str, roots, tracked, watcher=None):
        self.mount = mount
        self.roots = tuple(roots)
        self.tracked = tracked           # agent.cgroup_sampling.TrackedCgroups
        self.watcher = watcher
        self._own_watcher = watcher is None
        self._dirs: set[str] = set()

    def fileno(self) -> int | None:
        return self.watcher.fileno() if self.watcher is not None else None

    def discard(self, path: str) -> None:
        """``path`` vanished (seen by a read): no longer a watched directory."""
        self._dirs.discard(path)

    def setup(self) -> None:
        """Watch every root and list it (once; a missing root is logged and counted)."""
        if not self.roots:
            return
        if self.watcher is None:
            from runtime.inotify import Watcher
            self.watcher = Watcher()
        for root in self.roots:
            path = self._root_path(root)
            if not path.startswith(self.mount) or not os.path.isdir(path):
                log.warning("collector.watch_root_missing", root=root, path=path)
                selfmetrics.inc("collection_errors_total", reason="watch_root_missing")
                continue
            self._add_tree(path)

    def close(self) -> None:
        if self.watcher is not None and self._own_watcher:
            try:
                self.watcher.close()
            except Exception:  # noqa: BLE001
                pass

    def drain(self, timeout: float) -> None:
        """Handle the inotify events that came (waiting up to ``timeout`` for one)."""
        if self.watcher is None:
            return
        try:
            events = self.watcher.read(timeout)
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

    def _root_path(self, root: str) -> str:
        return os.path.normpath(os.path.join(self.mount, root.lstrip("/")))

    def _add_tree(self, top: str, relist: bool = False) -> None:
        """Watch ``top`` and every cgroup below it (watch first, then list: no gap).
        ``relist`` lists already-watched directories again (after an overflow)."""
        stack = [top]
        while stack:
            path = stack.pop()
            if path in self._dirs:
                if not relist:
                    continue
            else:
                try:
                    self.watcher.watch_dir(path)
                except Exception as exc:  # noqa: BLE001 - vanished, or out of watches
                    if os.path.isdir(path):
                        log.warning("collector.watch_failed", path=path, error=str(exc))
                        selfmetrics.inc("collection_errors_total", reason="inotify")
                    continue
                self._dirs.add(path)
            t = self.tracked.track(path)
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
        for path in [p for p in self._dirs if p == top or p.startswith(prefix)]:
            self._dirs.discard(path)
            try:
                self.watcher.unwatch(path)
            except Exception:  # noqa: BLE001 - already gone with the directory
                pass
        self.tracked.forget_tree(top)

    def _rescan(self) -> None:
        for path in [p for p in self._dirs if not os.path.isdir(p)]:
            self._drop_tree(path)
        for root in self.roots:
            path = self._root_path(root)
            if os.path.isdir(path):
                self._add_tree(path, relist=True)
