"""Directory trees copied out of or into a container's root (agentctl cp of
a directory), one descriptor per directory, never a path walked twice.

The top of the tree on the container's side is opened as runtime/rootfile.py
opens a file (openat2 RESOLVE_IN_ROOT from PID 1's root). Below it, and on
the host's side, every entry is opened relative to its parent directory's
descriptor with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS: a symlink, or a
directory the tenant swaps for one at any moment, is never followed (the
open fails and the copy stops with the entry's path). Symlinks are copied
as symlinks (their target text, never read through); regular files by
copy_file_range; directories recursively (an explicit stack, no recursion
limit to hit); FIFOs, sockets and device nodes are skipped and counted.
Permission bits are kept but set-user-ID and set-group-ID are dropped: a
tenant's binary never becomes a set-id program of the host's, nor the
host's of the tenant's.

All or nothing: the tree is built under a temporary name beside the target
(`.NAME.cga-cp-XXXXXXXX`) and renamed into place at the end (renameat2
RENAME_NOREPLACE: a target that appeared meanwhile is not overwritten); on
any failure the temporary tree is removed. A target that already exists is
refused (no merge into an existing tree). `MAX_ENTRIES` and `MAX_DEPTH` bound
what one copy may walk: a tenant's tree of a million entries is refused, not
copied for an hour.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import stat

from . import namespaces as ns
from .mounts import RESOLVE_BENEATH, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, openat2
from .rootfile import O_LARGEFILE, RootFileError, copy

MAX_ENTRIES = 100_000
MAX_DEPTH = 128
KEEP_BITS = 0o1777            # permission bits and sticky; never set-uid or set-gid
BELOW = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
FILE_READ = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK | O_LARGEFILE
FILE_WRITE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOCTTY | O_LARGEFILE
RENAME_NOREPLACE = 1
AT_REMOVEDIR = 0x200
_libc = ctypes.CDLL(None, use_errno=True)


class Counts:
    __slots__ = ("files", "dirs", "symlinks", "skipped", "bytes")

    def __init__(self):
        self.files = self.dirs = self.symlinks = self.skipped = self.bytes = 0

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}


def is_dir_in_root(root: int, path: str) -> bool:
    """`path` inside the container's root is a directory (symlinks resolved inside the root)."""
    try:
        fd = openat2(root, path.strip("/") or ".", DIR_FLAGS, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    except OSError:
        return False
    os.close(fd)
    return True


def open_dir_in_root(root: int, path: str) -> int:
    try:
        return openat2(root, path.strip("/") or ".", DIR_FLAGS, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    except OSError as e:
        raise RootFileError(f"{path}: {os.strerror(e.errno)} inside the container") from None


def copy_tree(src_top: int, dst_parent: int, name: str, src_path: str, dst_path: str,
              as_ids=None) -> Counts:
    """Copy the directory `src_top` as `name` into the directory `dst_parent`
    (both descriptors, closed by the caller). `src_path`, `dst_path`: the two
    sides' paths, for messages. `as_ids`: the (uid, gid) the destination is
    written as (this thread's fsuid/fsgid while it writes). RootFileError on
    failure, and then nothing is left at the destination."""
    if not name or "/" in name or name in (".", ".."):
        raise RootFileError(f"{dst_path}: not a name a directory can have")
    c = _Copy(as_ids)
    tmp = f".{name}.cga-cp-{secrets.token_hex(4)}"
    try:
        c.walk(src_top, dst_parent, tmp, src_path)
        c.writing(_rename_noreplace, dst_parent, tmp, name, dst_path)
    except BaseException:
        c.writing(_remove_tree, dst_parent, tmp)
        raise
    return c.counts


class _Copy:
    def __init__(self, as_ids):
        self.as_ids = as_ids
        self.counts = Counts()

    def writing(self, fn, *args):
        """fn(*args) with this thread's fsuid/fsgid those of the destination's owner."""
        old = ns.setfsid(*self.as_ids) if self.as_ids else None
        try:
            return fn(*args)
        finally:
            if old is not None:
                ns.setfsid(*old)

    def walk(self, src_top: int, dst_parent: int, tmp: str, where: str) -> None:
        counts = self.counts
        dst_top = self.writing(_make_dir, dst_parent, tmp, os.fstat(src_top).st_mode, where)
        counts.dirs += 1
        stack = [(os.dup(src_top), dst_top, where, 0)]
        try:
            while stack:
                src, dst, path, depth = stack.pop()
                try:
                    for entry in _entries(src, path):
                        if counts.files + counts.dirs + counts.symlinks + counts.skipped >= MAX_ENTRIES:
                            raise RootFileError(f"{where}: more than {MAX_ENTRIES} entries; copy a smaller tree")
                        child = f"{path.rstrip('/')}/{entry}"
                        st = _oserr(child, os.stat, entry, dir_fd=src, follow_symlinks=False)
                        if stat.S_ISDIR(st.st_mode):
                            if depth + 1 > MAX_DEPTH:
                                raise RootFileError(f"{child}: deeper than {MAX_DEPTH} directories")
                            sub = _open_below(src, entry, DIR_FLAGS, child)
                            try:
                                made = self.writing(_make_dir, dst, entry, st.st_mode, child)
                            except BaseException:
                                os.close(sub)
                                raise
                            counts.dirs += 1
                            stack.append((sub, made, child, depth + 1))
                        elif stat.S_ISREG(st.st_mode):
                            counts.bytes += self._file(src, dst, entry, child)
                            counts.files += 1
                        elif stat.S_ISLNK(st.st_mode):
                            target = _oserr(child, os.readlink, entry, dir_fd=src)
                            self.writing(_oserr, child, lambda: os.symlink(target, entry, dir_fd=dst))
                            counts.symlinks += 1
                        else:
                            counts.skipped += 1          # FIFO, socket, device: not copied
                finally:
                    os.close(src)
                    os.close(dst)
        finally:
            for src, dst, _, _ in stack:
                os.close(src)
                os.close(dst)

    def _file(self, src_dir: int, dst_dir: int, name: str, path: str) -> int:
        src = _open_below(src_dir, name, FILE_READ, path)
        try:
            st = os.fstat(src)
            if not stat.S_ISREG(st.st_mode):      # swapped since it was listed
                raise RootFileError(f"{path}: no longer a regular file")
            dst = self.writing(_open_below, dst_dir, name, FILE_WRITE, path, 0o600)
            try:
                n = _oserr(path, copy, src, dst)
                _oserr(path, os.fchmod, dst, stat.S_IMODE(st.st_mode) & KEEP_BITS)
                return n
            finally:
                os.close(dst)
        finally:
            os.close(src)


def _entries(dirfd: int, path: str) -> list[str]:
    try:
        return sorted(os.listdir(dirfd))
    except OSError as e:
        raise RootFileError(f"{path}: {os.strerror(e.errno)}") from None


def _open_below(dirfd: int, name: str, flags: int, path: str, mode: int = 0) -> int:
    try:
        return openat2(dirfd, name, flags, BELOW, mode)
    except OSError as e:
        why = "a symlink appeared there (not followed)" if e.errno == errno.ELOOP else os.strerror(e.errno)
        raise RootFileError(f"{path}: {why}") from None


def _make_dir(parent: int, name: str, mode: int, path: str) -> int:
    _oserr(path, os.mkdir, name, 0o700, dir_fd=parent)
    fd = _open_below(parent, name, DIR_FLAGS, path)
    _oserr(path, os.fchmod, fd, stat.S_IMODE(mode) & KEEP_BITS)
    return fd


def _oserr(path: str, fn, *args, **kw):
    """fn(...), its OSError as one RootFileError line naming `path`."""
    try:
        return fn(*args, **kw)
    except OSError as e:
        raise RootFileError(f"{path}: {os.strerror(e.errno)}") from None


def _rename_noreplace(dirfd: int, old: str, new: str, where: str) -> None:
    if _libc.renameat2(dirfd, os.fsencode(old), dirfd, os.fsencode(new), RENAME_NOREPLACE) != 0:
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise RootFileError(f"{where}: exists; remove it first or copy to another name")
        raise RootFileError(f"{where}: {os.strerror(err)}")


def _remove_tree(parent: int, name: str) -> None:
    """Best effort: what a failed copy made under `name` (its own entries only: fd-relative, no symlink followed)."""
    try:
        top = openat2(parent, name, DIR_FLAGS, BELOW)
    except OSError:
        return
    try:
        for entry in os.listdir(top):
            try:
                st = os.stat(entry, dir_fd=top, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    _remove_tree(top, entry)
                else:
                    os.unlink(entry, dir_fd=top)
            except OSError:
                pass
    finally:
        os.close(top)
    try:
        os.rmdir(name, dir_fd=parent)
    except OSError:
        pass
