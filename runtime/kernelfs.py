"""The kernel filesystems a container gets, attached by PID 1 from inside
its new namespaces: a fresh /proc, a minimal /dev (rootfs only: device
nodes bound from the host's, --device nodes checked as granted), /sys
read-only, its cgroup read-only at /sys/fs/cgroup (in its cgroup
namespace), Docker's masked and read-only paths. Every destination is
resolved inside the mounts' descriptors (runtime/trees.py), never by a
joined path.
"""

from __future__ import annotations

import errno
import os
import stat

from . import mounts as mountsmod
from .intermediate import Fail, step
from .spawnspec import SpawnSpec
from .trees import Tree, attach, check_granted, dst_fd, flagged, fresh, host_tree

DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
# as Docker's defaults (moby oci/defaults.go): read-only and masked kernel files
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
MASKED_PATHS = ("/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                "/sys/devices/virtual/powercap")


def mount(root: int, fresh_sys: bool, own_cgroup: bool, spec: SpawnSpec | None = None,
          made: dict | None = None) -> None:
    """/proc (mounted from inside the new PID namespace), /dev (rootfs only),
    /sys read-only, Docker's masked and read-only paths; `own_cgroup`: the
    container's cgroup (its cgroup namespace's root) read-only at /sys/fs/cgroup.
    `made`: --device nodes made for a user namespace (trees.make_device_nodes)."""
    proc = fresh("/proc", "proc", nosuid=True, nodev=True, noexec=True)
    attach(Tree(proc, "mount /proc"), dst_fd(root, "/proc", "mount /proc", "dir" if fresh_sys else None))
    if fresh_sys:
        _mount_dev(root, spec.devices if spec else (), made)
        try:
            sys_ = mountsmod.new_fs("sysfs", None, ro=True, nosuid=True, nodev=True, noexec=True)
        except OSError as e:
            if e.errno != errno.EPERM:
                raise Fail(f"mount /sys: {os.strerror(e.errno)}") from None
            # a user namespace that does not own the network namespace
            # (network host) gets no sysfs of its own: the host's, with its
            # submounts (it may not uncover what they hide), read-only below
            sys_ = step("bind /sys", mountsmod.open_tree, mountsmod.AT_FDCWD, "/sys",
                        mountsmod.OPEN_TREE_CLONE | mountsmod.OPEN_TREE_CLOEXEC | mountsmod.AT_RECURSIVE)
    else:
        # the kernel refuses the same sysfs again on its own mount point
        # (EBUSY): the host's, without its submounts, read-only
        sys_ = host_tree("/sys", "bind /sys")
    attach(flagged(sys_, "mount /sys", ro=True, nosuid=True, nodev=True, noexec=True),
           dst_fd(root, "/sys", "mount /sys", "dir" if fresh_sys else None))
    if own_cgroup:
        cg = fresh("/sys/fs/cgroup", "cgroup2", ro=True, nosuid=True, nodev=True, noexec=True)
        attach(Tree(cg, "mount /sys/fs/cgroup"), dst_fd(sys_, "/fs/cgroup", "mount /sys/fs/cgroup", None))
        os.close(cg)
    _harden(root, proc, sys_, spec)
    os.close(proc)
    os.close(sys_)


def _harden(root: int, proc: int, sys_: int, spec: SpawnSpec | None = None) -> None:
    """Docker's readonlyPaths and maskedPaths (or the spec's own lists: an OCI
    bundle's linux.readonlyPaths/maskedPaths) under the fresh /proc and /sys,
    resolved inside those mounts (their descriptors), or inside the root for
    a listed path elsewhere; never by a joined path."""
    readonly = READONLY_PATHS if spec is None or spec.readonly_paths is None else spec.readonly_paths
    masked = MASKED_PATHS if spec is None or spec.masked_paths is None else spec.masked_paths
    tops = {"/proc/": proc, "/sys/": sys_}

    def where(rel: str) -> tuple[int, str]:
        return next(((fd, rel[len(t) - 1:]) for t, fd in tops.items() if rel.startswith(t)), (root, rel))

    def present(paths):
        """(path, descriptor of it inside the container) for each that exists."""
        for rel in paths:
            top, sub = where(rel)
            try:
                yield rel, mountsmod.resolve_in(top, sub)
            except FileNotFoundError:
                continue

    for rel, target in present(readonly):
        tree = step(f"bind {rel}", mountsmod.open_tree, target, "",
                    mountsmod.OPEN_TREE_CLONE | mountsmod.OPEN_TREE_CLOEXEC
                    | mountsmod.AT_RECURSIVE | mountsmod.AT_EMPTY_PATH)
        attach(flagged(tree, f"remount {rel} read-only", ro=True, nosuid=True, nodev=True, noexec=True),
               target)
        os.close(tree)
    for rel, target in present(masked):
        if stat.S_ISDIR(os.fstat(target).st_mode):
            mask = fresh(f"mask {rel}", "tmpfs", {"size": "0"}, ro=True)
        else:
            mask = host_tree("/dev/null", f"mask {rel}")
        attach(Tree(mask, f"mask {rel}"), target)
        os.close(mask)


def _mount_dev(root: int, devices=(), made: dict | None = None) -> None:
    # nodev: the null/zero/... binds below are mounts of their own and keep
    # working; a node made with mknod in this tmpfs does not
    dev = fresh("/dev", "tmpfs", {"mode": "755", "size": "65536k"}, nosuid=True, nodev=True)
    attach(Tree(dev, "mount /dev"), dst_fd(root, "/dev", "mount /dev", "dir"))
    try:
        for name in DEV_NODES:
            node = host_tree(f"/dev/{name}", f"bind /dev/{name}")
            attach(Tree(node, f"bind /dev/{name}"), dst_fd(dev, name, f"bind /dev/{name}", "file"))
            os.close(node)
        for name, to in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                         ("ptmx", "pts/ptmx")):
            os.symlink(to, name, dir_fd=dev)
        for name, mode in (("shm", 0o1777), ("pts", 0o755)):
            os.mkdir(name, mode, dir_fd=dev)
            os.chmod(name, mode, dir_fd=dev)      # past the umask
        shm = fresh("/dev/shm", "tmpfs", {"mode": "1777", "size": "65536k"},
                    nosuid=True, nodev=True, noexec=True)
        attach(Tree(shm, "mount /dev/shm"), dst_fd(dev, "shm", "mount /dev/shm", None))
        os.close(shm)
        pts = fresh("/dev/pts", "devpts", {"newinstance": None, "ptmxmode": "0666", "mode": "0620"},
                    nosuid=True, noexec=True)
        attach(Tree(pts, "mount /dev/pts"), dst_fd(dev, "pts", "mount /dev/pts", None))
        os.close(pts)
        for d in devices:   # --device: the host's node, checked to still be what was granted
            if made and d.dst in made:   # or, in a user namespace, its own node made for it
                t = made[d.dst]
                try:
                    attach(t, dst_fd(dev, d.dst[len("/dev/"):], t.what, "file"))
                finally:
                    os.close(t.fd)
            else:
                _bind_device(d, dev)
    finally:
        os.close(dev)


def _bind_device(d, dev: int) -> None:
    """One granted host node, opened once, checked as the descriptor, bound
    from that descriptor onto its name in the container's /dev."""
    fd = step(f"open device {d.src}", os.open, d.src, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        check_granted(d, os.fstat(fd))
        node = step(f"bind device {d.src}", mountsmod.open_tree, fd, "",
                    mountsmod.OPEN_TREE_CLONE | mountsmod.OPEN_TREE_CLOEXEC | mountsmod.AT_EMPTY_PATH)
        try:
            attach(Tree(node, f"bind device {d.src} on {d.dst}", d.dst, is_dir=False),
                   dst_fd(dev, d.dst[len("/dev/"):], f"bind device {d.src} on {d.dst}", "file"))
        finally:
            os.close(node)
    finally:
        os.close(fd)
