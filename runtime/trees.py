"""A container's mount trees, made from descriptors (runtime/mounts.py).

Before its namespaces, in the intermediate's private mount namespace: each
host path (the rootfs, each volume source) opened once, checked as what was
opened, cloned with its submounts and flagged (`open_trees`), or an image
container's overlay made fresh; with a user namespace, every tree given its
idmap before the namespace is entered (`enter_userns`). In PID 1: the trees
attached on descriptors, every destination resolved inside the container's
root (RESOLVE_IN_ROOT), never by a joined path; the root read-only, tmpfs
mounts, pivot_root. The kernel filesystems are runtime/kernelfs.py's.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

from . import mounts as mountsmod
from . import namespaces as ns
from . import userns as usernsmod
from . import idmapped_layers as idlayers
from .intermediate import Fail, step
from .spawnspec import Overlay, SpawnSpec


@dataclass
class Tree:
    """A detached mount tree waiting to be attached; `what` names it in errors."""
    fd: int
    what: str
    dst: str = "/"
    is_dir: bool = True
    flags: dict = field(default_factory=dict)
    walk: bool = False       # no mount_setattr: remount_walk once attached


@dataclass
class Trees:
    """What open_trees made: the rootfs (tree, the directory it came from),
    or None for the host's root; the volumes, in spec order."""
    rootfs: tuple[Tree, int] | None
    volumes: list[Tree]
    # an image container in a user namespace: why its layers are not
    # idmapped (None: they are, or no user namespace)
    overlay_idmap: str | None = None
    # --device nodes made for a user namespace (make_device_nodes), by destination
    devices: dict = field(default_factory=dict)


def open_trees(spec: SpawnSpec, userns_fd: int = -1, device_nodes: dict | None = None) -> Trees:
    """Each host path opened once, checked as the descriptor, cloned with its
    submounts and flagged: nothing is attached yet. `userns_fd`: the
    container's user namespace (an image container's layers get its idmap)."""
    why = None
    if spec.overlay is not None:
        rootfs, why = _open_overlay(spec.overlay, userns_fd, spec.userns)
    else:
        rootfs = _open_rootfs(spec) if spec.rootfs else None
    trees = Trees(rootfs, _open_volumes(spec), why)
    if device_nodes and rootfs is not None:
        trees.devices = _open_device_nodes(spec, device_nodes)
    return trees


def granted_node(d) -> os.stat_result:
    """The host's node of a --device grant, opened once and checked as the
    descriptor: still the type and numbers that were granted."""
    fd = step(f"open device {d.src}", os.open, d.src, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return check_granted(d, os.fstat(fd))
    finally:
        os.close(fd)


def check_granted(d, st: os.stat_result) -> os.stat_result:
    kind = "c" if stat.S_ISCHR(st.st_mode) else "b" if stat.S_ISBLK(st.st_mode) else "?"
    if (kind, os.major(st.st_rdev), os.minor(st.st_rdev)) != (d.type, d.major, d.minor):
        raise Fail(f"device {d.src}: is no longer {d.type} {d.major}:{d.minor} as when it was granted")
    return st


def make_device_nodes(spec: SpawnSpec, directory: str) -> dict:
    """--device in a user namespace: the host's node would show as nobody's
    there (devtmpfs cannot be idmapped), so the container's root could open
    only a world-accessible one. {destination: path} of a node made for the
    container in `directory` (root's, under the launcher's state dir): the
    granted node, checked as above, made anew with the same type, numbers and
    mode, owned by the ids its host owner has inside (root:disk stays 0:6).
    Called by the launcher, outside the container's cgroup (whose device
    filter refuses mknod); the child clones each node (open_trees) and the
    launcher removes the directory once the container is set up. The device
    filter still decides what may be opened."""
    if not (spec.userns and spec.devices and (spec.rootfs or spec.overlay)):
        return {}
    os.makedirs(directory, mode=0o700, exist_ok=True)
    root_uid, root_gid = (usernsmod.host_id(spec.userns[k], 0) for k in ("uid", "gid"))
    out = {}
    for i, d in enumerate(spec.devices):
        st = granted_node(d)
        uid = usernsmod.host_id(spec.userns["uid"], st.st_uid)
        gid = usernsmod.host_id(spec.userns["gid"], st.st_gid)
        path = os.path.join(directory, str(i))
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        try:
            os.mknod(path, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev)
            os.chown(path, root_uid if uid is None else uid, root_gid if gid is None else gid,
                     follow_symlinks=False)
            os.chmod(path, stat.S_IMODE(st.st_mode))   # past the umask
        except OSError as e:
            raise Fail(f"device {d.src} on {d.dst}: cannot make its node: {os.strerror(e.errno)}") from None
        out[d.dst] = path
    return out


def _open_device_nodes(spec: SpawnSpec, nodes: dict) -> dict:
    """The nodes make_device_nodes made, each checked as its descriptor and
    cloned as a detached tree of that one file."""
    out = {}
    for d in spec.devices:
        path = nodes.get(d.dst)
        if path is None:
            continue
        what = f"device {d.src} on {d.dst}"
        fd = step(what, os.open, path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            check_granted(d, os.fstat(fd))
            node = step(what, mountsmod.open_tree, fd, "",
                        mountsmod.OPEN_TREE_CLONE | mountsmod.OPEN_TREE_CLOEXEC | mountsmod.AT_EMPTY_PATH)
        finally:
            os.close(fd)
        out[d.dst] = Tree(node, what, d.dst, is_dir=False)
    return out


def _open_checked(path: str, what: str, spec: SpawnSpec, sensitive_ok: bool,
                  want_dir: bool = False) -> mountsmod.Opened:
    try:
        o = mountsmod.open_host_path(path)
    except OSError as e:
        if want_dir and e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise Fail(f"{what}: not a directory") from None
        raise Fail(f"{what}: {os.strerror(e.errno)}") from None
    try:
        if want_dir and not o.is_dir:
            raise Fail(f"{what}: not a directory")
        mountsmod.check_opened(o, spec.protected, sensitive_ok)
    except mountsmod.Refused as e:
        o.close()
        raise Fail(f"{what}: refused: {e}") from None
    except BaseException:
        o.close()
        raise
    return o


def flagged(fd: int, what: str, dst: str = "/", is_dir: bool = True, **flags) -> Tree:
    """A detached tree with mount flags on every mount in it (or, on Linux <
    5.12, a note to walk its submounts once it is attached)."""
    done = step(what, lambda: mountsmod.set_tree_flags(fd, **flags))
    return Tree(fd, what, dst, is_dir, flags, walk=not done)


def _clone(o: mountsmod.Opened, what: str, dst: str = "/", **flags) -> Tree:
    return flagged(step(what, mountsmod.clone_tree, o), what, dst, o.is_dir, **flags)


def _open_rootfs(spec: SpawnSpec) -> tuple[Tree, int]:
    """(the rootfs as a detached tree, the directory it was cloned from)."""
    what = f"rootfs {spec.rootfs}"
    o = _open_checked(spec.rootfs, what, spec, sensitive_ok=False, want_dir=True)
    # nodev everywhere the container can write, submounts included: CAP_MKNOD
    # (Docker's set) can create a node for the host's disk, and cgroup v2 has
    # no device allowlist file; nodev makes such a node unusable
    try:
        return _clone(o, what, nodev=True), o.fd
    except BaseException:
        o.close()
        raise


def _open_overlay(o: Overlay, userns_fd: int = -1, mapping: dict | None = None
                  ) -> tuple[tuple[Tree, int], str | None]:
    """((the image container's overlayfs as a detached mount, the directory
    it is attached on), why its layers are not idmapped): made fresh in this
    private mount namespace, so no host mount is left behind when the
    container ends. With a user namespace (`userns_fd`), its layers and its
    upper dir are idmapped clones (runtime/idmapped_layers.py) seen only in
    this mount namespace, and the overlay is made as the container's root;
    where that cannot be, the overlay is made of the plain layers (the
    container keeps its user namespace; the image's files are nobody's
    inside) and the reason is returned. The mount points every container
    gets (/proc, /dev, /sys) are made in it here, as its creator."""
    what = "overlay root of the image"
    why = None
    if userns_fd >= 0:
        uid0, gid0 = (usernsmod.host_id(mapping[k], 0) for k in ("uid", "gid"))
        rw = os.path.dirname(o.upper)
        dirs = tuple(dict.fromkeys((*o.lower, rw)))     # an image may repeat a layer
        if uid0 is None or gid0 is None:
            why = "container uid/gid 0 is not mapped: image layers not idmapped"
        elif os.path.dirname(o.work) != rw:
            why = "upper and work dirs are not siblings: image layers not idmapped"
        else:
            why = idlayers.overmount(dirs, userns_fd)
        if why is None:
            try:
                with idlayers.as_creator(uid0, gid0):
                    fd = mountsmod.new_overlay(list(o.lower), o.upper, o.work, nodev=True)
                    _make_mount_points(fd)
                return (Tree(fd, what), _open_target(o)), None
            except OSError as e:
                idlayers.undo(dirs)
                why = (f"overlayfs refused the idmapped layers on Linux {os.uname().release} "
                       f"(it takes them from 5.19): {os.strerror(e.errno)}")
    fd = step(f"mount {what}", lambda: mountsmod.new_overlay(list(o.lower), o.upper, o.work, nodev=True))
    _make_mount_points(fd)
    return (Tree(fd, what), _open_target(o)), why


def _open_target(o: Overlay) -> int:
    return step(f"open {o.target}", os.open, o.target, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def _make_mount_points(root: int) -> None:
    for dst in ("/proc", "/dev", "/sys"):
        os.close(dst_fd(root, dst, f"mount {dst}", "dir"))


def _open_volumes(spec: SpawnSpec) -> list[Tree]:
    trees = []
    for m in spec.mounts:
        what = f"bind mount {m.src} on {m.dst}"
        o = _open_checked(m.src, what, spec, sensitive_ok=spec.allow_sensitive_binds)
        try:
            device_tree = o.real == "/dev" or o.real.startswith("/dev/")
            trees.append(_clone(o, what, m.dst, ro=m.ro, nosuid=True, nodev=not device_tree,
                                noexec=m.noexec))
        finally:
            o.close()
    return trees


def attach(tree: Tree, target: int) -> None:
    """Attach `tree` on what `target` is open on; closes `target`."""
    try:
        step(tree.what, mountsmod.attach, tree.fd, target)
        if tree.walk:
            step(tree.what, lambda: mountsmod.remount_walk(mountsmod.fd_path(tree.fd), **tree.flags))
    finally:
        os.close(target)


def attach_rootfs(rootfs: tuple[Tree, int]) -> int:
    """The rootfs tree on the very directory it was cloned from (in this
    private mount namespace: only the container sees it); returns the
    descriptor of the attached root, the base of every later resolution."""
    tree, origin = rootfs
    attach(tree, origin)
    return tree.fd


def dst_fd(root: int, dst: str, what: str, create: str | None) -> int:
    try:
        return mountsmod.resolve_in(root, dst, create)
    except OSError as e:
        raise Fail(f"{what}: mount point {dst}: {os.strerror(e.errno)}") from None


def attach_volumes(root: int, trees: list[Tree], create: bool) -> None:
    for t in trees:
        attach(t, dst_fd(root, t.dst, t.what, ("dir" if t.is_dir else "file") if create else None))
        os.close(t.fd)


def tmpfs_points(root: int, mounts) -> list[int]:
    return [dst_fd(root, t.dst, f"tmpfs {t.dst}", "dir") for t in mounts]


def mount_tmpfs(points: list[int], mounts) -> None:
    """--tmpfs: a fresh tmpfs on each point, always nodev (a node made in it
    by CAP_MKNOD is unusable); nosuid/noexec/ro as the spec says."""
    for fd, t in zip(points, mounts):
        what = f"tmpfs {t.dst}"
        new = fresh(what, "tmpfs", dict(t.options), ro=t.ro, nosuid=t.nosuid, nodev=True, noexec=t.noexec)
        attach(Tree(new, what, t.dst), fd)   # closes fd
        os.close(new)


def fresh(what: str, fstype: str, options: dict | None = None, **flags) -> int:
    """A new filesystem as a detached mount (fsopen/fsmount)."""
    return step(f"mount {what}", lambda: mountsmod.new_fs(fstype, options, **flags))


def host_tree(path: str, what: str) -> int:
    """A detached copy of one trusted host mount point or file (/sys,
    /dev/null: root's, not a tenant's), without its submounts."""
    return step(what, mountsmod.open_tree, mountsmod.AT_FDCWD, path,
                mountsmod.OPEN_TREE_CLONE | mountsmod.OPEN_TREE_CLOEXEC)


def readonly_rootfs(root: int, volumes: list) -> None:
    """root.readonly: the rootfs and every mount it brought along read-only,
    before anything is attached on it (what the container is given on top,
    /proc, /dev, /sys and the volumes, keeps its own flags). The mount points
    those need are made first, while it can still be written."""
    for dst in ("/proc", "/dev", "/sys"):
        os.close(dst_fd(root, dst, f"mount point {dst}", "dir"))
    for t in volumes:
        os.close(dst_fd(root, t.dst, t.what, "dir" if t.is_dir else "file"))
    step("rootfs read-only", lambda: mountsmod.mount_setattr(
        root, "", mountsmod.AT_EMPTY_PATH | mountsmod.AT_RECURSIVE, attr_set=mountsmod.MOUNT_ATTR_RDONLY))


def pivot(root: int) -> None:
    step("chdir to the rootfs", os.fchdir, root)
    os.close(root)
    # pivot_root(".", "."): the old root ends up stacked on "/", detach it
    step("pivot_root", ns.pivot_root, ".", ".")
    step("detach old root", ns.umount2, ".", ns.MNT_DETACH)
    step("chdir /", os.chdir, "/")


def enter_userns(spec: SpawnSpec, trees: Trees, userns_fd: int) -> dict:
    """Give the detached trees the mapping of the container's user namespace
    (`userns_fd`, made with spec.userns) and enter it as its root; closes
    `userns_fd`. Returns {destination: "idmapped" or the one-line reason the
    tree is mounted without}. Before, as the host's root: the mount points
    every rootfs container gets (a rootfs that cannot be idmapped is
    nobody's inside, and its root could not make them; an image container's
    overlay got them when it was made, _open_overlay)."""
    tree, origin = trees.rootfs
    try:
        idmap = {}
        if spec.overlay is None:
            for dst in ("/proc", "/dev", "/sys"):
                os.close(dst_fd(origin, dst, f"mount {dst}", "dir"))
            for v in trees.volumes:   # a file volume's mount point (e.g. /etc/hosts) too
                if not v.is_dir:
                    os.close(dst_fd(origin, v.dst, v.what, "file"))
            idmap["/"] = usernsmod.idmap_tree(tree.fd, userns_fd) or "idmapped"
        else:
            idmap["/"] = trees.overlay_idmap or "idmapped"
        for v in trees.volumes:
            idmap[v.dst] = usernsmod.idmap_tree(v.fd, userns_fd) or "idmapped"
        step("enter user namespace", usernsmod.enter, userns_fd)
    finally:
        os.close(userns_fd)
    return idmap
