"""Persistent network namespaces kept as bind-mounted nsfs files.

`create(path)`: a new network namespace, its loopback up, kept alive by a
bind mount of its nsfs file on `path` (made empty first), so that it
outlives every process: a container joins it (setns, runtime/spawn.py)
each time it starts and keeps its interface, address and routes across
restarts. `remove(path)`: the bind mount detached and the file unlinked;
the kernel frees the namespace (and the veth end inside it, whose peer
goes with it) once nothing else holds it. `run_in(path, fn)`: fn() called
in a short-lived thread that joined the namespace; a netlink socket opened
there (pyroute2.IPRoute) talks to that namespace.

Threads are used instead of forked children: unshare(CLONE_NEWNET) and
setns() act on the calling thread only, and the daemon that calls these is
threaded (a fork there could inherit a lock held by another thread).
"""
from __future__ import annotations

import errno
import os
import threading
from typing import Callable, TypeVar

from . import namespaces as ns

T = TypeVar("T")


def _in_thread(fn: Callable[[], T]) -> T:
    box: dict = {}

    def body():
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the caller
            box["error"] = e

    t = threading.Thread(target=body, name="netns", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _lo_up() -> None:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname="lo")
        if idx:
            ipr.link("set", index=idx[0], state="up")


# written in every namespace made here: ICMP echo sockets (SOCK_DGRAM) for
# every group, as Docker does, so ping works without CAP_NET_RAW (which a
# container's user namespace does not hold over a namespace the host's root owns)
# and every port bindable (a container root in its own user namespace holds no
# CAP_NET_BIND_SERVICE over it either): as Docker does, since the namespace is
# the container's alone
NETNS_SYSCTLS = {"net/ipv4/ping_group_range": "0 2147483647", "net/ipv4/ip_unprivileged_port_start": "0"}


def create(path: str) -> None:
    """A new network namespace bound on `path` (which must not exist)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)

    def make():
        ns.unshare(ns.CLONE_NEWNET)
        _lo_up()
        for key, value in NETNS_SYSCTLS.items():
            with open(f"/proc/sys/{key}", "w") as f:   # this thread's namespace
                f.write(value)
        ns.mount(f"/proc/self/task/{threading.get_native_id()}/ns/net", path, None, ns.MS_BIND)

    try:
        _in_thread(make)
    except BaseException:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise


def is_bound(path: str) -> bool:
    """Whether `path` is an nsfs file (a namespace bound there), not a plain file."""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    # nsfs files report no blocks; a plain empty file on the state dir's file
    # system does not share nsfs's device: compare with the parent's device
    try:
        return os.stat(path).st_dev != os.stat(os.path.dirname(path) or ".").st_dev and st is not None
    except OSError:
        return False


def remove(path: str) -> None:
    """Detach the namespace bound on `path` and unlink it; missing is fine."""
    try:
        ns.umount2(path, ns.MNT_DETACH)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOENT):
            raise
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def run_in(path: str, fn: Callable[[], T]) -> T:
    """fn() run by a thread that joined the network namespace bound on `path`."""
    def joined():
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            ns.setns(fd, ns.CLONE_NEWNET)
        finally:
            os.close(fd)
        return fn()

    return _in_thread(joined)
