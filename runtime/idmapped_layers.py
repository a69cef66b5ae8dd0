"""Idmapped layers for an image container's overlayfs (user namespaces).

An overlayfs mount cannot itself be idmapped, but it accepts idmapped
layers (Linux >= 5.19). `overmount(dirs, userns_fd)` gives each directory
(every lower layer, and the directory holding the upper and work dirs, so
that those two share one mount as overlayfs requires) an idmapped clone of
itself (open_tree OPEN_TREE_CLONE + mount_setattr MOUNT_ATTR_IDMAP with the
container's user namespace) attached ON that very directory. The caller
does this in its private mount namespace, so the idmapped views exist only
there: the host keeps seeing the layers as they are on disk, and no path
changes (the overlay is then made from the usual paths).

Through the clones, on-disk owner 0 shows as the container's root (its host
uid H) and a file created with fsuid H is stored with owner 0. overlayfs
works on its layers with the credentials of whoever created it
(FSCONFIG_CMD_CREATE), including when it makes its own "work/work" dir;
those credentials must be mapped by the layers' idmap, so `as_creator(H, G)`
runs the creation with fsuid/fsgid H/G (setfsuid) and every capability the
caller had kept effective (setfsuid from 0 drops the file capabilities).
Result: the container's root owns its image root as it would without a user
namespace, and what it writes lands in its upper dir with the on-disk ids
it would have without one (container uid 0 -> on-disk 0).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os

from . import caps
from . import mounts
from . import namespaces as ns
from .userns import MOUNT_ATTR_IDMAP, fs_type

_libc = ctypes.CDLL(None, use_errno=True)


def overmount(dirs, userns_fd: int) -> str | None:
    """Attach an idmapped clone of each directory on itself (in the caller's
    mount namespace). None when every one is done; otherwise the one-line
    reason, with nothing left mounted."""
    done: list[str] = []
    try:
        for d in dirs:
            # one lookup: the clone and its mount point are the same directory
            target = os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                tree = mounts.open_tree(target, "", mounts.OPEN_TREE_CLONE | mounts.OPEN_TREE_CLOEXEC
                                        | mounts.AT_EMPTY_PATH)
            except BaseException:
                os.close(target)
                raise
            try:
                try:
                    mounts.mount_setattr(tree, "", mounts.AT_EMPTY_PATH, attr_set=MOUNT_ATTR_IDMAP,
                                         userns_fd=userns_fd, propagation=ns.MS_PRIVATE)
                except OSError as e:
                    release = os.uname().release
                    if e.errno == errno.ENOSYS:
                        return f"no idmapped mounts on Linux {release} (needs 5.12)"
                    return (f"image layer {d}: {fs_type(tree)} refuses idmapped mounts on Linux {release}: "
                            f"{os.strerror(e.errno)}")
                mounts.attach(tree, target)
                done.append(d)
            finally:
                os.close(tree)
                os.close(target)
        done.clear()
        return None
    except OSError as e:
        return f"idmapped image layers: {e.strerror or os.strerror(e.errno)}"
    finally:
        undo(done)


def undo(dirs) -> None:
    """Detach what `overmount` attached on `dirs` (the on-disk view returns)."""
    for d in reversed(list(dirs)):
        try:
            ns.umount2(d, ns.MNT_DETACH)
        except OSError:
            pass


def _cap_sets() -> tuple[int, int, int]:
    with open("/proc/self/status", encoding="ascii") as f:
        text = f.read()
    return tuple(caps.parse_status_mask(text, k) for k in ("CapEff", "CapPrm", "CapInh"))


def _set_fsids(uid: int, gid: int) -> None:
    # setfsuid/setfsgid report no error; their effect is checked by the caller's syscalls
    _libc.setfsgid(ctypes.c_uint(gid))
    _libc.setfsuid(ctypes.c_uint(uid))


@contextlib.contextmanager
def as_creator(uid: int, gid: int):
    """Run the body with fsuid/fsgid uid/gid and the caller's effective
    capabilities unchanged; fsuid/fsgid 0 and the same capabilities after."""
    sets = _cap_sets()
    _set_fsids(uid, gid)
    try:
        ns.capset(*sets)
        yield
    finally:
        _set_fsids(0, 0)
        ns.capset(*sets)
