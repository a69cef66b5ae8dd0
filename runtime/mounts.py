"""Mounting from descriptors: resolve once, check what was opened, mount that.

A path checked and then mounted by path is a race: between the two, whoever
owns a directory on the way (a tenant, in its own volume) can swap it for a
symlink to /etc. Here every host path is opened ONCE into a descriptor
(openat2, no /proc magic links), the descriptor itself is checked (its real
path from /proc/self/fd, its fstat), and the very tree behind it is cloned
(open_tree) and attached (move_mount). Destinations inside a rootfs are
resolved the same way, relative to the rootfs descriptor with
RESOLVE_IN_ROOT, so a symlink in a tenant-writable rootfs cannot point a
mount outside it. Mount flags reach every submount (mount_setattr
AT_RECURSIVE; on Linux < 5.12 a walk of /proc/self/mountinfo).

The rules for which host paths may reach a container live here, once:
`refusal()` (volume sources and rootfs alike) is used by agent.spec before
anything is created and again by the launcher on the descriptor.

Syscall wrappers are x86_64 (numbers below); every wrapper raises OSError
with errno set, like the os module.
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat
from dataclasses import dataclass

from . import namespaces as ns
from .parsers import unescape_mount_field

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_FSOPEN = 430
SYS_FSCONFIG = 431
SYS_FSMOUNT = 432
SYS_OPENAT2 = 437
SYS_MOUNT_SETATTR = 442

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC

MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_EMPTY_PATH = 0x40

FSOPEN_CLOEXEC = 1
FSMOUNT_CLOEXEC = 1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6

MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR_IDMAP = 0x100000        # with userns_fd (mount_setattr), Linux >= 5.12

# host trees no container gets by default (a volume source or a rootfs in or
# equal to one of them is refused)
SENSITIVE_TREES = ("/etc", "/proc", "/sys", "/dev")


class Refused(ValueError):
    """A host path may not be mounted into a container; str() is one line."""


# ------------------------------------------------------------------ syscalls

def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def _b(path: str | bytes) -> bytes:
    return path if isinstance(path, bytes) else os.fsencode(path)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    how = _OpenHow(flags=flags, mode=mode, resolve=resolve)
    return _check(_libc.syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(_b(path)),
                                ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how))), f"openat2 {path}")


def open_tree(dirfd: int, path: str, flags: int) -> int:
    return _check(_libc.syscall(ctypes.c_long(SYS_OPEN_TREE), ctypes.c_int(dirfd), ctypes.c_char_p(_b(path)),
                                ctypes.c_uint(flags)), f"open_tree {path}")


def move_mount(from_dirfd: int, from_path: str, to_dirfd: int, to_path: str, flags: int) -> None:
    _check(_libc.syscall(ctypes.c_long(SYS_MOVE_MOUNT), ctypes.c_int(from_dirfd), ctypes.c_char_p(_b(from_path)),
                         ctypes.c_int(to_dirfd), ctypes.c_char_p(_b(to_path)), ctypes.c_uint(flags)),
           f"move_mount {to_path}")


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int = 0, attr_clr: int = 0,
                  propagation: int = 0, userns_fd: int = 0) -> None:
    attr = _MountAttr(attr_set=attr_set, attr_clr=attr_clr, propagation=propagation, userns_fd=userns_fd)
    _check(_libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(dirfd), ctypes.c_char_p(_b(path)),
                         ctypes.c_uint(flags), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))),
           f"mount_setattr {path}")


def fsopen(fstype: str) -> int:
    return _check(_libc.syscall(ctypes.c_long(SYS_FSOPEN), ctypes.c_char_p(_b(fstype)),
                                ctypes.c_uint(FSOPEN_CLOEXEC)), f"fsopen {fstype}")


def fsconfig(fs_fd: int, cmd: int, key: str | None = None, value: str | None = None) -> None:
    _check(_libc.syscall(ctypes.c_long(SYS_FSCONFIG), ctypes.c_int(fs_fd), ctypes.c_uint(cmd),
                         ctypes.c_char_p(_b(key) if key is not None else None),
                         ctypes.c_char_p(_b(value) if value is not None else None), ctypes.c_int(0)),
           f"fsconfig {key or cmd}")


def fsmount(fs_fd: int, attr_flags: int) -> int:
    return _check(_libc.syscall(ctypes.c_long(SYS_FSMOUNT), ctypes.c_int(fs_fd), ctypes.c_uint(FSMOUNT_CLOEXEC),
                                ctypes.c_uint(attr_flags)), "fsmount")


# ------------------------------------------------------------------ the rules

def _is_under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


@dataclass(frozen=True)
class Protected:
    """Host paths of the agent itself that no container may see: a mount source
    or rootfs that is, holds or lies in `state_dir`, or holds `socket` (the
    control socket's path), is refused whatever else is allowed."""
    state_dir: str = ""
    socket: str = ""

    def reason(self, real: str) -> str | None:
        if self.state_dir:
            state = os.path.realpath(self.state_dir)
            if _is_under(real, state) or _is_under(state, real):
                return "holds the agent's state dir" if _is_under(state, real) else "is in the agent's state dir"
        if self.socket:
            sock = os.path.realpath(self.socket)
            if _is_under(sock, real):
                return "holds the agent's control socket"
        return None


def refusal(real: str, protected: Protected = Protected(), sensitive_ok: bool = False) -> str | None:
    """Why the resolved host path `real` may not reach a container (the end of
    a sentence: "is /etc or below it"), or None. `sensitive_ok` lifts the
    SENSITIVE_TREES and "/" rules (config security.allow_sensitive_binds, for
    volumes only); the agent's own state dir and socket stay refused."""
    if not sensitive_ok:
        if real == "/":
            return "is the host's root"
        for top in SENSITIVE_TREES:
            if _is_under(real, top):
                return f"is {top} or below it"
    return protected.reason(real)


# ------------------------------------------------------------------ resolving

@dataclass(frozen=True)
class Opened:
    """A host path opened once: `fd` (O_PATH, close-on-exec), `real` (the path
    the kernel gives for that descriptor) and `st` (its fstat)."""
    fd: int
    real: str
    st: os.stat_result

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def fd_path(fd: int) -> str:
    """The path the kernel gives for an open descriptor (its mount namespace)."""
    return os.readlink(f"/proc/self/fd/{fd}")


def open_host_path(path: str) -> Opened:
    """Open `path` once (symlinks followed, /proc magic links refused: ELOOP)
    and say what it is. OSError: it does not exist, a magic link, ..."""
    fd = openat2(AT_FDCWD, path, os.O_PATH | os.O_CLOEXEC, RESOLVE_NO_MAGICLINKS)
    try:
        st = os.fstat(fd)
        real = fd_path(fd)
        if not real.startswith("/") or st.st_nlink == 0:
            raise OSError(errno.ENOENT, f"{path}: removed while it was opened")
        return Opened(fd, real, st)
    except BaseException:
        os.close(fd)
        raise


def opened_refusal(o: Opened, protected: Protected = Protected(), sensitive_ok: bool = False) -> str | None:
    """refusal() for what `o` IS: the descriptor's own path, and its identity
    against the sensitive trees themselves (a second name for /etc, e.g. a
    bind mount of it elsewhere)."""
    why = refusal(o.real, protected, sensitive_ok)
    if why is None and not sensitive_ok:
        for top in ("/",) + SENSITIVE_TREES:
            try:
                if os.path.samestat(o.st, os.stat(top)):
                    return f"is {top} (another name for it)"
            except OSError:
                continue
    return why


def check_opened(o: Opened, protected: Protected = Protected(), sensitive_ok: bool = False) -> None:
    """Refused (one line: "<real path> <why>") when what `o` is may not reach
    a container (opened_refusal)."""
    why = opened_refusal(o, protected, sensitive_ok)
    if why:
        raise Refused(f"{o.real} {why}")


def clone_tree(o: Opened) -> int:
    """A detached copy of the mount tree at `o` (every submount with it): what
    was checked is what will be attached."""
    return open_tree(o.fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH)


def set_tree_flags(tree_fd: int, *, ro: bool = False, nosuid: bool = False, nodev: bool = False,
                   noexec: bool = False) -> bool:
    """Add ro/nosuid/nodev/noexec to EVERY mount of the tree at `tree_fd`, and
    make each private (a clone of a shared mount is its peer: what is later
    mounted on it must not propagate back to the host). True when done;
    False when the kernel has no mount_setattr (Linux < 5.12): then call
    remount_walk() once the tree is attached."""
    attrs = ((MOUNT_ATTR_RDONLY if ro else 0) | (MOUNT_ATTR_NOSUID if nosuid else 0)
             | (MOUNT_ATTR_NODEV if nodev else 0) | (MOUNT_ATTR_NOEXEC if noexec else 0))
    try:
        mount_setattr(tree_fd, "", AT_EMPTY_PATH | AT_RECURSIVE, attr_set=attrs, propagation=ns.MS_PRIVATE)
        return True
    except OSError as e:
        if e.errno != errno.ENOSYS:
            raise
        return False


def submounts(top: str, mountinfo: str | None = None) -> list[tuple[str, set[str]]]:
    """(mount point, per-mount options) of `top` and every mount below it, in
    mount order, from /proc/self/mountinfo."""
    if mountinfo is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
    out = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        point = unescape_mount_field(fields[4])
        if _is_under(point, top):
            out.append((point, set(fields[5].split(","))))
    return out


def remount_walk(top: str, *, ro: bool = False, nosuid: bool = False, nodev: bool = False,
                 noexec: bool = False) -> None:
    """The fallback of set_tree_flags for an attached tree: `top` and every
    mount below it private, then each remounted with the flags added
    (keeping the ones it has)."""
    ns.mount(None, top, None, ns.MS_REC | ns.MS_PRIVATE)
    add = ((ns.MS_RDONLY if ro else 0) | (ns.MS_NOSUID if nosuid else 0)
           | (ns.MS_NODEV if nodev else 0) | (ns.MS_NOEXEC if noexec else 0))
    names = {"ro": ns.MS_RDONLY, "nosuid": ns.MS_NOSUID, "nodev": ns.MS_NODEV, "noexec": ns.MS_NOEXEC}
    for point, opts in submounts(top):
        keep = 0
        for name, flag in names.items():
            if name in opts:
                keep |= flag
        ns.mount(None, point, None, ns.MS_REMOUNT | ns.MS_BIND | keep | add)


def new_fs(fstype: str, options: dict[str, str | None] | None = None, *, ro: bool = False, nosuid: bool = False,
           nodev: bool = False, noexec: bool = False, source: str | None = None) -> int:
    """A fresh filesystem as a detached mount (fsopen/fsconfig/fsmount); the
    mounting task's namespaces decide what it shows (pid namespace for proc,
    cgroup namespace for cgroup2). `options`: key -> string, or None for a flag."""
    attrs = ((MOUNT_ATTR_RDONLY if ro else 0) | (MOUNT_ATTR_NOSUID if nosuid else 0)
             | (MOUNT_ATTR_NODEV if nodev else 0) | (MOUNT_ATTR_NOEXEC if noexec else 0))
    fs = fsopen(fstype)
    try:
        fsconfig(fs, FSCONFIG_SET_STRING, "source", source or fstype)
        for key, value in (options or {}).items():     # None: a flag ("newinstance")
            fsconfig(fs, FSCONFIG_SET_STRING if value is not None else FSCONFIG_SET_FLAG, key, value)
        fsconfig(fs, FSCONFIG_CMD_CREATE)
        return fsmount(fs, attrs)
    finally:
        os.close(fs)


# ------------------------------------------------------------------ destinations

def resolve_in(root_fd: int, dst: str, create: str | None = None) -> int:
    """An O_PATH descriptor for `dst` resolved inside the tree at `root_fd`
    (RESOLVE_IN_ROOT: "/" and ".." stop at that root, absolute symlinks start
    from it; /proc magic links refused). `create`: "dir" or "file" makes what
    is missing (parents as directories, 0755) instead of failing with ENOENT."""
    rel = dst.strip("/")
    if not rel:
        return os.dup(root_fd)
    try:
        return openat2(root_fd, rel, os.O_PATH | os.O_CLOEXEC, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    except OSError as e:
        if e.errno != errno.ENOENT or create is None:
            raise
    parent_rel, _, name = rel.rpartition("/")
    parent = resolve_in(root_fd, parent_rel, "dir")
    try:
        try:
            if create == "dir":
                os.mkdir(name, 0o755, dir_fd=parent)
            else:
                os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 0o644, dir_fd=parent))
        except FileExistsError:
            pass               # made meanwhile, or a dangling symlink: resolved (in root) below
        # resolved again from the root: whatever changed meanwhile, it stays in it
        return openat2(root_fd, rel, os.O_PATH | os.O_CLOEXEC, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    finally:
        os.close(parent)


def attach(tree_fd: int, target_fd: int) -> None:
    """Mount the detached tree `tree_fd` on the object `target_fd` is open on."""
    move_mount(tree_fd, "", target_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)


def attach_at(tree_fd: int, path: str) -> None:
    """Mount the detached tree `tree_fd` on `path` (not followed if a symlink)."""
    target = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        attach(tree_fd, target)
    finally:
        os.close(target)


def new_overlay(lower: list[str], upper: str, work: str, *, nodev: bool = False) -> int:
    """A fresh overlayfs (lower dirs topmost first) as a detached mount. Each
    lower dir is given with "lowerdir+" (Linux >= 6.7, which refuses a
    ':'-joined "lowerdir" through fsconfig). Older kernels take the joined
    form: before 6.5 overlayfs parses its options only at creation (the
    legacy mount data), so an unknown "lowerdir+" is refused there, not
    when it is set: the whole mount is made again the old way."""
    try:
        return _overlay(lower, upper, work, nodev, one_by_one=True)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        return _overlay(lower, upper, work, nodev, one_by_one=False)


def _overlay(lower: list[str], upper: str, work: str, nodev: bool, one_by_one: bool) -> int:
    fs = fsopen("overlay")
    try:
        fsconfig(fs, FSCONFIG_SET_STRING, "source", "overlay")
        if one_by_one:
            for d in lower:
                fsconfig(fs, FSCONFIG_SET_STRING, "lowerdir+", d)
        else:
            fsconfig(fs, FSCONFIG_SET_STRING, "lowerdir", ":".join(lower))
        fsconfig(fs, FSCONFIG_SET_STRING, "upperdir", upper)
        fsconfig(fs, FSCONFIG_SET_STRING, "workdir", work)
        fsconfig(fs, FSCONFIG_CMD_CREATE)
        return fsmount(fs, MOUNT_ATTR_NODEV if nodev else 0)
    finally:
        os.close(fs)