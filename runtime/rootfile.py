"""Files inside a running container, opened from the host without ever
leaving the container's root (agentctl cp).

The root is the container's PID 1's (/proc/PID/root: its mount namespace's
tree, volumes and tmpfs included); every path is resolved from that
descriptor with openat2 RESOLVE_IN_ROOT ("/" and ".." stop at the root,
absolute symlinks start from it) and RESOLVE_NO_MAGICLINKS, in one call, so
a symlink the container swaps in at any moment leads inside the container,
never to a host path. Only regular files: a FIFO or device is refused
(opened non-blocking, checked on the descriptor).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from . import namespaces as ns
from .mounts import RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, openat2

CHUNK = 1 << 20
O_LARGEFILE = 0o100000      # x86_64 kernel value; glibc adds it to open(), a raw openat2 must too


class RootFileError(Exception):
    """One line naming the path and what is wrong with it."""


def open_root(pid: int) -> int:
    """An O_PATH descriptor of the root of process `pid`."""
    return os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def open_file(root: int, path: str, write: bool = False, mode: int = 0o644,
              as_ids: tuple[int, int] | None = None) -> int:
    """A regular file at `path` inside `root`, for reading, or created /
    truncated for writing. RootFileError when it is not a regular file or
    cannot be opened. `as_ids`: the host uid and gid writing (this thread's
    fsuid/fsgid meanwhile): a container's root in its user namespace, so a
    file made through its idmapped root belongs to it."""
    if not path.startswith("/") or "\0" in path:
        raise RootFileError(f"{path!r}: give an absolute path inside the container")
    rel = path.strip("/")
    if not rel:
        raise RootFileError(f"{path}: is a directory; give a file")
    flags = os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK | O_LARGEFILE
    flags |= (os.O_WRONLY | os.O_CREAT) if write else os.O_RDONLY
    old = ns.setfsid(*as_ids) if write and as_ids else None
    try:
        fd = openat2(root, rel, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS, mode if write else 0)
    except OSError as e:
        raise RootFileError(f"{path}: {os.strerror(e.errno)} inside the container") from None
    finally:
        if old is not None:
            ns.setfsid(*old)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise RootFileError(f"{path}: is a directory inside the container; give a file")
        if not stat.S_ISREG(st.st_mode):
            raise RootFileError(f"{path}: not a regular file inside the container (only files are copied)")
        if write:
            os.ftruncate(fd, 0)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def copy(src: int, dst: int) -> int:
    """Bytes copied from `src` to `dst` (regular files), kernel to kernel."""
    total = 0
    while True:
        try:
            n = os.copy_file_range(src, dst, CHUNK)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            n = _copy_rw(src, dst)
            return total + n
        if n == 0:
            return total
        total += n


def _copy_rw(src: int, dst: int) -> int:
    total = 0
    while data := os.read(src, CHUNK):
        view = memoryview(data)
        while view:
            view = view[os.write(dst, view):]
        total += len(data)
    return total


def root_id(pid: int) -> tuple[int, int]:
    """The host uid and gid of uid/gid 0 inside `pid`'s user namespace
    ((0, 0) without one): a copied-in file belongs to the container's root."""
    out = []
    for name in ("uid_map", "gid_map"):
        host = 0
        try:
            with open(f"/proc/{pid}/{name}") as f:
                for line in f:
                    inside, outside, count = (int(x) for x in line.split())
                    if inside <= 0 < inside + count:
                        host = outside - inside
                        break
        except (OSError, ValueError):
            pass
        out.append(host)
    return out[0], out[1]
