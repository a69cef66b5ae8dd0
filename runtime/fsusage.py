"""Bytes on disk under a directory tree (an image container's overlay upper
dir), measured at a bounded cost per collection pass.

A full walk of every upper dir on every pass costs one lstat per file per
pass, however many files a tenant made. Instead each tree has a resumable
walk: `Walks.advance(trees, budget)` examines at most `budget` entries in
all trees together (round robin), and a tree's figure is published only
when its walk completed; the next walk then starts over. So the cost of a
pass is at most `budget` getdents/fstatat calls, and a figure is at most
ceil(entries / budget share) passes old (bench/fs_usage.py states both).

Bytes are allocated blocks (st_blocks * 512, as du counts them: a sparse
file counts what it occupies), each inode once per walk (hard links), the
directories included. The walk never follows a symlink, never leaves the
filesystem of the tree's top and opens each directory with
RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_XDEV from the top's
descriptor: a tenant who swaps a directory for a symlink mid-walk makes
that directory fail to open (it is skipped), never a walk of the host.
"""
from __future__ import annotations

import os
import stat
from collections import deque
from dataclasses import dataclass, field

from . import mounts as mountsmod

_RESOLVE = mountsmod.RESOLVE_BENEATH | mountsmod.RESOLVE_NO_SYMLINKS | mountsmod.RESOLVE_NO_XDEV
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class _Walk:
    top: str
    pending: deque = field(default_factory=lambda: deque([""]))   # directories to list, relative to top
    total: int = 0
    seen: set = field(default_factory=set)                        # (dev, ino) of inodes with links > 1
    dev: int | None = None
    done_bytes: int | None = None                                 # the last completed walk's figure
    walks: int = 0                                                 # completed walks


class Walks:
    """Resumable walks of several trees, keyed by the caller's ids."""

    def __init__(self):
        self._walks: dict[str, _Walk] = {}
        self._order: deque = deque()

    def figures(self) -> dict[str, tuple[int, int]]:
        """{key: (bytes of its last completed walk, st_dev of its top)}, for trees walked at least once."""
        return {k: (w.done_bytes, w.dev) for k, w in self._walks.items() if w.done_bytes is not None}

    def advance(self, trees: dict[str, str], budget: int) -> int:
        """Walk on for at most `budget` entries over `trees` ({key: top dir});
        keys no longer given are forgotten. Returns the entries examined."""
        for k in [k for k in self._walks if k not in trees]:
            del self._walks[k]
        for k, top in trees.items():
            w = self._walks.get(k)
            if w is None or w.top != top:
                self._walks[k] = _Walk(top)
        self._order = deque(k for k in self._order if k in trees)
        self._order.extend(k for k in trees if k not in self._order)
        spent = 0
        finished: set = set()   # a tree completes at most one walk per pass
        # round robin: each tree gets an equal share of what is left, at least one entry
        while spent < budget:
            active = [k for k in self._order if k not in finished]
            if not active:
                break
            share = max(1, (budget - spent) // len(active))
            for k in active:
                before = self._walks[k].walks
                used = self._step(self._walks[k], min(share, budget - spent))
                spent += used
                if used == 0 or self._walks[k].walks != before:
                    finished.add(k)
                if spent >= budget:
                    break
        if self._order:
            self._order.rotate(-1)   # the next pass starts with the next tree
        return spent

    def _step(self, w: _Walk, budget: int) -> int:
        """List directories of w until `budget` entries were examined or its walk completed."""
        used = 0
        try:
            top_fd = os.open(w.top, _DIR_FLAGS)
        except OSError:
            return 0   # the tree is gone (its container is being removed): no figure change
        try:
            if w.dev is None or w.pending == deque([""]):
                st = os.fstat(top_fd)
                w.dev = st.st_dev
            while w.pending and used < budget:
                rel = w.pending.popleft()
                used += 1 + self._list(w, top_fd, rel)
            if not w.pending:
                w.done_bytes, w.walks = w.total, w.walks + 1
                w.pending, w.total, w.seen = deque([""]), 0, set()
        finally:
            os.close(top_fd)
        return used

    @staticmethod
    def _list(w: _Walk, top_fd: int, rel: str) -> int:
        """Add one directory's own blocks and its entries'; queue its subdirectories."""
        try:
            fd = os.dup(top_fd) if not rel else mountsmod.openat2(top_fd, rel, _DIR_FLAGS, _RESOLVE)
        except OSError:
            return 0   # removed, replaced by a symlink (ELOOP), a mount (EXDEV), ...: skipped
        n = 0
        try:
            w.total += os.fstat(fd).st_blocks * 512
            with os.scandir(fd) as it:
                for entry in it:
                    n += 1
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if st.st_dev != w.dev:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        w.pending.append(f"{rel}/{entry.name}" if rel else entry.name)
                        continue       # its blocks are added when it is listed
                    if st.st_nlink > 1:
                        if (st.st_dev, st.st_ino) in w.seen:
                            continue
                        w.seen.add((st.st_dev, st.st_ino))
                    w.total += st.st_blocks * 512
        finally:
            os.close(fd)
        return n
