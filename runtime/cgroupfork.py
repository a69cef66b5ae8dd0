"""Forking the launcher's child into a container's cgroup.

`fork_in_cgroup` forks the intermediate (runtime/intermediate.py) already in
the cgroup with clone3(CLONE_INTO_CGROUP) where this kernel and this process
allow it, else with a plain fork whose child joins the cgroup as its first
step; `probe_clone3` drops clone3 on a kernel that gets cgroup.kill wrong.
"""

from __future__ import annotations

import errno
import os
import signal

from . import namespaces as ns

_clone3_works = True   # until the kernel says it has no clone3 / CLONE_INTO_CGROUP


class CgroupRefused(OSError):
    """fork_in_cgroup: the cgroup refused the new child; strerror is one line
    ("join cgroup <path>: <reason>"), as the child's own join would report it."""


def fork_in_cgroup(cgroup: str) -> tuple[int, bool]:
    """Fork the intermediate (run_child, run_exec): (pid, joined), pid 0 in the
    child. joined: the child was born in `cgroup` (clone3 CLONE_INTO_CGROUP,
    Linux >= 5.7, no migration: ~10 ms faster, see namespaces.fork_into_cgroup);
    False: a plain fork (no clone3 here, or this process has other threads),
    the child joins it as its first step. OSError: the
    cgroup refused the child: CgroupRefused (EBUSY, ENOENT, EAGAIN at
    pids.max, ...); the fork itself failed: OSError."""
    global _clone3_works
    if _clone3_works and _single_threaded():
        try:
            fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                return ns.fork_into_cgroup(fd), True
            finally:
                os.close(fd)
        except OSError as e:
            if e.errno not in (errno.ENOSYS, errno.E2BIG, errno.EINVAL):
                raise CgroupRefused(e.errno, f"join cgroup {cgroup}: {os.strerror(e.errno)}") from None
            _clone3_works = False
    return os.fork(), False


def _single_threaded() -> bool:
    """clone3 is a raw syscall: glibc's fork handlers (malloc arenas, stdio)
    do not run, which is only safe when no other thread can hold their
    locks. The launcher is single-threaded; any other caller forks."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def probe_clone3(scratch: str) -> bool:
    """Keep clone3(CLONE_INTO_CGROUP) only if this kernel gets cgroup.kill right.

    Some kernels (this project's 6.18 hosts) SIGKILL every child that clone3
    puts into a cgroup which once received cgroup.kill (the kill sequence is
    compared against the parent's cgroup instead of the target's): a
    container stopped with cgroup.kill could never start again. One probe in
    a scratch child cgroup of ``scratch`` (the caller's own cgroup: empty
    child, killed once, one clone3 into it that exits at once); on such a
    kernel fork_in_cgroup forks and joins with cgroup.procs instead. Call it
    while single-threaded. Returns whether clone3 stays in use."""
    global _clone3_works
    if not _clone3_works:
        return False
    probe = os.path.join(scratch, "clone3-probe")
    try:
        os.mkdir(probe)
    except FileExistsError:
        pass
    except OSError:
        return _clone3_works        # cannot probe here: keep what we have
    try:
        try:
            with open(os.path.join(probe, "cgroup.kill"), "w") as f:
                f.write("1")
        except OSError:
            return _clone3_works    # no cgroup.kill: no kill sequence to get wrong
        fd = os.open(probe, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            pid = ns.fork_into_cgroup(fd)
        except OSError as e:
            if e.errno in (errno.ENOSYS, errno.E2BIG, errno.EINVAL):
                _clone3_works = False
            return _clone3_works
        finally:
            if fd >= 0:
                os.close(fd)
        if pid == 0:
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            _clone3_works = False
        return _clone3_works
    finally:
        try:
            os.rmdir(probe)
        except OSError:
            pass
