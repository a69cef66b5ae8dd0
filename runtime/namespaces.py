"""ctypes wrappers for the Linux calls Python 3.11 lacks, and their constants.

Python 3.11 has no os.unshare/os.setns (3.12 added them), no mount, no
pivot_root, no prctl and no capset. Every wrapper raises OSError with errno
set and a message naming the call, like the os module does.

x86_64 only (syscall numbers for pivot_root and seccomp).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

# clone/unshare flags (linux/sched.h)
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
NAMESPACE_FLAGS = (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC
                   | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWTIME)

# nsfs ioctls (linux/nsfs.h)
NS_GET_USERNS = 0xB701          # _IO(0xb7, 0x1): a descriptor of the owning user namespace
NS_GET_NSTYPE = 0xB703          # _IO(0xb7, 0x3): the CLONE_NEW* type of an nsfs descriptor

# mount flags (linux/mount.h)
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 2

# prctl options (linux/prctl.h)
PR_SET_PDEATHSIG = 1
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_SECCOMP = 22
PR_GET_SECCOMP = 21
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_CAP_AMBIENT_RAISE = 2
PR_SET_KEEPCAPS = 8
SECCOMP_MODE_FILTER = 2

# x86_64 syscall numbers used directly
SYS_PIVOT_ROOT = 155
SYS_CLONE3 = 435

CLONE_INTO_CGROUP = 0x200000000  # clone3 only, Linux >= 5.7

_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc.syscall.restype = ctypes.c_long
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong, ctypes.c_ulong]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                        ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def _check(ret: int, what: str) -> int:
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def _b(s: str | bytes | None) -> bytes | None:
    if s is None or isinstance(s, bytes):
        return s
    return os.fsencode(s)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def ns_type(fd: int) -> int | None:
    """The CLONE_NEW* type of the namespace descriptor `fd`, None when it is not one."""
    import fcntl
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        return None


def owner_inode(fd: int) -> int | None:
    """The inode of the user namespace owning the namespace `fd` (None: unknown)."""
    import fcntl
    try:
        owner = fcntl.ioctl(fd, NS_GET_USERNS)
    except OSError:
        return None
    try:
        return os.fstat(owner).st_ino
    finally:
        os.close(owner)


def mount(source: str | None, target: str, fstype: str | None = None,
          flags: int = 0, data: str | None = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)),
           f"mount {source or fstype or ''} on {target}")


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(SYS_PIVOT_ROOT, _b(new_root), _b(put_old)),
           f"pivot_root {new_root}")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), f"sethostname {name}")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0,
          arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl {option}")


def prctl_ptr(option: int, arg2: int, pointer) -> int:
    """prctl whose third argument is a pointer (PR_SET_SECCOMP)."""
    fn = _libc.prctl
    ret = fn(option, arg2, ctypes.cast(pointer, ctypes.c_void_p).value or 0, 0, 0)
    return _check(ret, f"prctl {option}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capget(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) as 64-bit masks."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(hdr), data), "capget")
    return tuple((data[1].__getattribute__(f) << 32) | data[0].__getattribute__(f)
                 for f in ("effective", "permitted", "inheritable"))


def capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in (0, 1):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(hdr), data), "capset")


class _CloneArgs(ctypes.Structure):
    """struct clone_args (linux/sched.h), CLONE_ARGS_SIZE_VER2: 88 bytes."""
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack",
        "stack_size", "tls", "set_tid", "set_tid_size", "cgroup")]


# The GIL stays held across clone3, as os.fork holds it across fork(): the
# child must not start with another thread owning the interpreter.
_libc_gil = ctypes.PyDLL(_libc._name, use_errno=True)
_libc_gil.syscall.restype = ctypes.c_long
for _fn in ("PyOS_BeforeFork", "PyOS_AfterFork_Parent", "PyOS_AfterFork_Child"):
    getattr(ctypes.pythonapi, _fn).restype = None
    getattr(ctypes.pythonapi, _fn).argtypes = []


def fork_into_cgroup(cgroup_fd: int) -> int:
    """fork() whose child is born in the cgroup open as `cgroup_fd` (a cgroup2
    directory): clone3(CLONE_INTO_CGROUP). Returns 0 in the child and the
    child's pid in the parent, like os.fork, and keeps the interpreter's fork
    protocol (PyOS_BeforeFork / AfterFork_*: locks, at-fork hooks). Only for
    a single-threaded process (the launcher): glibc's own fork handlers do
    not run.

    Why not fork + write "0" to cgroup.procs: a migration takes the cgroup
    threadgroup lock for writing, which waits for an RCU grace period (about
    10 ms per launch here, measured); being born in the cgroup takes it for
    reading only. OSError ENOSYS (no clone3, or a seccomp filter refusing it),
    E2BIG or EINVAL (no CLONE_INTO_CGROUP: Linux < 5.7) mean "fork instead";
    anything else (EBUSY, ENOENT, EAGAIN at pids.max, ...) is the cgroup's
    answer, as the write would have got it."""
    args = _CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=signal.SIGCHLD, cgroup=cgroup_fd)
    ctypes.pythonapi.PyOS_BeforeFork()
    pid = _libc_gil.syscall(ctypes.c_long(SYS_CLONE3), ctypes.byref(args),
                            ctypes.c_size_t(ctypes.sizeof(args)))
    if pid == 0:
        ctypes.pythonapi.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    ctypes.pythonapi.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone3 into cgroup: {os.strerror(err)}")
    return pid


def set_child_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


SYS_SETFSUID = 122
SYS_SETFSGID = 123


def setfsid(uid: int, gid: int) -> tuple[int, int]:
    """The calling THREAD's file-system uid and gid (raw syscalls: glibc's
    setuid family changes every thread, these change only the caller);
    returns the previous pair. The kernel gives no error: the caller checks
    with a second call where it matters."""
    old_gid = _libc.syscall(SYS_SETFSGID, ctypes.c_uint(gid))
    old_uid = _libc.syscall(SYS_SETFSUID, ctypes.c_uint(uid))
    return old_uid, old_gid
