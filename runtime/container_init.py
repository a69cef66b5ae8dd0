"""What a container's PID 1 does, in its new namespaces, up to execve:
its namespaced sysctls; the detached trees attached (runtime/trees.py) with
the kernel filesystems (runtime/kernelfs.py) and pivot_root; a session of
its own (spec.tty: a terminal of its own devpts, runtime/terminal.py);
hostname; loopback up in a network namespace of its own; the privilege
drop (runtime/privileges.py); execve (runtime/execve.py).
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

from . import execve, kernelfs, privileges, sysctl, terminal
from . import namespaces as ns
from . import trees as treesmod
from .intermediate import step
from .spawnspec import SpawnSpec
from .trees import Trees


def run(spec: SpawnSpec, trees: Trees, tty_fd: int | None = None) -> None:
    """PID 1's steps; returns only by raising (intermediate.Fail or a bug).
    `tty_fd` (spec.tty): where its terminal's multiplexer end is sent."""
    if spec.sysctl:
        # the kernel writes into the namespaces of the writing task: this
        # process's IPC (and, with network none, network) namespace
        step("sysctl", sysctl.apply, spec.sysctl)
    # the detached trees (made before the namespaces, open_trees) attached,
    # every destination resolved inside the container's root
    if trees.rootfs is not None and spec.userns:
        # the rootfs came from the host's mount namespace, where its origin
        # stays: it goes on this namespace's "/" (pivot_root moves it into
        # place), reached without a path the namespace's root may not walk
        tree, origin = trees.rootfs
        os.close(origin)
        trees.rootfs = (tree, step("open /", os.open, "/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
    if trees.rootfs is not None:
        root = treesmod.attach_rootfs(trees.rootfs)
        points = treesmod.tmpfs_points(root, spec.tmpfs)   # made while the root can still be written
        if spec.readonly_rootfs:
            treesmod.readonly_rootfs(root, trees.volumes)
        kernelfs.mount(root, fresh_sys=True, own_cgroup=spec.cgroupns, spec=spec, made=trees.devices)
        treesmod.attach_volumes(root, trees.volumes, create=True)
        treesmod.mount_tmpfs(points, spec.tmpfs)
        treesmod.pivot(root)
        _stdin_from_own_dev_null()
    else:
        # host root: a fresh /proc, and a read-only /sys without its submounts,
        # which also hides the host's cgroupfs (root could otherwise move
        # itself out of its cgroup by writing another cgroup.procs)
        root = step("open /", os.open, "/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        kernelfs.mount(root, fresh_sys=False, own_cgroup=False, spec=spec)
        treesmod.attach_volumes(root, trees.volumes, create=False)
        os.close(root)
    try:
        # a session of its own, led by the container's PID 1 (as runc's init):
        # CRIU cannot dump a tree whose session leader is outside its PID namespace
        os.setsid()
    except OSError:
        pass            # already a session leader
    if tty_fd is not None:   # run -t: in the container's root, its own /dev/pts mounted
        terminal.make(tty_fd, spec.tty_size)
        terminal.control(spec.uid)
    if spec.hostname:
        step(f"sethostname {spec.hostname}", ns.sethostname, spec.hostname)
    if spec.network == "none" and not spec.netns:   # a joined one: its maker did
        step("bring up lo", _loopback_up)
    privileges.drop(spec, spec.uid, spec.gid)
    execve.finish(spec.cwd, spec.argv, spec.env)


def _stdin_from_own_dev_null() -> None:
    """stdin was the host's /dev/null (opened before the namespaces): reopen it
    from the container's own /dev, so that none of its descriptors points
    into a mount it cannot see (CRIU cannot dump such a file)."""
    try:
        null = os.open("/dev/null", os.O_RDONLY)
    except OSError:
        return
    os.dup2(null, 0)
    os.close(null)


SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack_from("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
