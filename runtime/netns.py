"""Persistent network namespaces kept as bind-mounted nsfs files.

`create(path[, owner])`: a new network namespace, its loopback up, kept alive
by a bind mount of its nsfs file on `path` (made empty first), so that it
outlives every process (with `owner`, made inside a new user namespace,
bound too, that owns it): a container joins it (setns, runtime/spawn.py)
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


def setup() -> None:
    """Loopback up and NETNS_SYSCTLS, in the calling thread's network namespace."""
    _lo_up()
    for key, value in NETNS_SYSCTLS.items():
        with open(f"/proc/sys/{key}", "w") as f:   # this thread's namespace
            f.write(value)


def create(path: str, owner: tuple[str, dict] | None = None) -> None:
    """A new network namespace bound on `path` (which must not exist).
    `owner` (user_path, mapping): the namespace is made inside a new user
    namespace with that mapping, bound on user_path, which owns it (a
    container in that user namespace owns its network namespace, as CRIU
    needs to dump it); otherwise the host's user namespace owns it."""
    made = [path] if owner is None else [path, owner[0]]
    try:
        for p in made:
            os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
        if owner is None:
            def make():
                ns.unshare(ns.CLONE_NEWNET)
                setup()
                ns.mount(f"/proc/self/task/{threading.get_native_id()}/ns/net", path, None, ns.MS_BIND)
            _in_thread(make)
        else:
            _make_owned(path, *owner)
            run_in(path, setup)
    except BaseException:
        for p in made:
            try:
                remove(p)
            except OSError:
                pass
        raise


# made by a child process (a threaded daemon cannot unshare a user namespace):
# it reports once both namespaces exist and waits until they are bound
_OWNED_HELPER = ["unshare", "--user", "--net", "sh", "-c", "echo made; read go"]


def _make_owned(path: str, user_path: str, mapping: dict) -> None:
    import subprocess
    from . import userns
    try:
        proc = subprocess.Popen(_OWNED_HELPER, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, close_fds=True)
    except OSError as e:
        raise OSError(e.errno, f"unshare user and network namespaces: {e.strerror}") from None
    try:
        if proc.stdout.readline().strip() != b"made":
            proc.stdin.close()
            err = proc.stderr.read().decode(errors="replace").strip().splitlines()
            raise OSError(errno.EIO, f"unshare user and network namespaces: {err[-1] if err else 'no answer'}")
        userns.write_maps(proc.pid, mapping)
        ns.mount(f"/proc/{proc.pid}/ns/user", user_path, None, ns.MS_BIND)
        ns.mount(f"/proc/{proc.pid}/ns/net", path, None, ns.MS_BIND)
    finally:
        for f in (proc.stdin, proc.stdout, proc.stderr):
            try:
                f.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def owned_by(path: str, user_path: str) -> bool:
    """Whether the network namespace bound on `path` is owned by the user
    namespace bound on `user_path`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        owner = ns.owner_inode(fd)
    finally:
        os.close(fd)
    try:
        return is_bound(user_path) and owner is not None and os.stat(user_path).st_ino == owner
    except OSError:
        return False


def rebind(path: str, source: str) -> None:
    """Bind the namespace file `source` (e.g. /proc/PID/ns/net) on `path` in
    place of what was bound there (a restored container's namespaces)."""
    remove(path)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
    try:
        ns.mount(source, path, None, ns.MS_BIND)
    except BaseException:
        os.unlink(path)
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
