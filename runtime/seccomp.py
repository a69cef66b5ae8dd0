"""A seccomp-BPF filter in the spirit of Docker's default profile.

Why not libseccomp bindings: the official Python binding ships only with
Debian's python3-seccomp (system Python, not ours); on PyPI `pyseccomp`
was last released in 2021 and the other bindings are one-person forks.
None is a well-kept dependency, so this module assembles a small classic
BPF program itself (about 70 instructions) and installs it with prctl.

Docker's profile is an allowlist of ~350 syscalls; the part of it that
matters for a container without CAP_SYS_ADMIN is what it refuses. This
filter is the equivalent denylist:

- any architecture other than x86_64: kill the process (no i386 or x32
  syscall-number confusion; x32 numbers on x86_64 get EPERM);
- kernel modules, kexec, reboot, swap, accounting, quotas, clocks,
  keyrings, bpf, perf, userfaultfd, mount API, pivot_root, namespaces
  (unshare, setns; clone with any CLONE_NEW* flag), open_by_handle_at,
  iopl/ioperm, NUMA policy calls, io_uring (setup, enter, register),
  obsolete syscalls: EPERM;
- clone3: ENOSYS (its flags live in memory BPF cannot read; libc falls back
  to clone, which is checked), as Docker does;
- personality other than the harmless personas Docker allows: EPERM;
- socket(AF_VSOCK): EPERM.

The filter is installed after the container's mounts are done (mount is
blocked by it) and before execve.
"""

from __future__ import annotations

import ctypes
import errno
import struct
from typing import NamedTuple

from . import namespaces as ns

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000

# BPF opcodes (linux/filter.h)
LD_W_ABS = 0x20
JEQ_K = 0x15
JGE_K = 0x35
JSET_K = 0x45
RET_K = 0x06

# struct seccomp_data offsets
OFF_NR = 0
OFF_ARCH = 4


def off_arg_low(i: int) -> int:
    return 16 + 8 * i


# x86_64 numbers (asm/unistd_64.h)
DENIED = {
    "acct": 163, "add_key": 248, "bpf": 321, "clock_adjtime": 305,
    "clock_settime": 227, "create_module": 174, "delete_module": 176,
    "finit_module": 313, "get_kernel_syms": 177, "get_mempolicy": 239,
    "init_module": 175, "ioperm": 173, "iopl": 172, "kcmp": 312,
    "kexec_file_load": 320, "kexec_load": 246, "keyctl": 250,
    "lookup_dcookie": 212, "mbind": 237, "mount": 165, "move_pages": 279,
    "name_to_handle_at": 303, "nfsservctl": 180, "open_by_handle_at": 304,
    "perf_event_open": 298, "pivot_root": 155, "query_module": 178,
    "quotactl": 179, "quotactl_fd": 443, "reboot": 169, "request_key": 249,
    "set_mempolicy": 238, "setns": 308, "settimeofday": 164, "swapon": 167,
    "swapoff": 168, "sysfs": 139, "_sysctl": 156, "umount2": 166,
    "unshare": 272, "uselib": 134, "userfaultfd": 323, "ustat": 136,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "open_tree": 428, "move_mount": 429, "mount_setattr": 442,
    "syslog": 103, "vhangup": 153, "afs_syscall": 183,
    # io_uring runs I/O from kernel workers that this filter never sees, and
    # has been a steady source of privilege escalations: Docker's profile
    # leaves all three out (so they get its default EPERM)
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
}
NR_CLONE = 56
NR_CLONE3 = 435
NR_PERSONALITY = 135
NR_SOCKET = 41
AF_VSOCK = 40
# personas Docker allows: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32,
# and 0xffffffff (query)
ALLOWED_PERSONAS = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)


class Insn(NamedTuple):
    code: int
    jt: int
    jf: int
    k: int


class _Asm:
    """Forward-only label assembler for classic BPF."""

    def __init__(self):
        self.items: list[tuple] = []   # (code, jt_label|int, jf_label|int, k) or ("label", name)

    def label(self, name):
        self.items.append(("label", name))

    def ld(self, offset):
        self.items.append((LD_W_ABS, 0, 0, offset))

    def jmp(self, code, k, jt, jf):
        self.items.append((code, jt, jf, k))

    def ret(self, k):
        self.items.append((RET_K, 0, 0, k))

    def assemble(self) -> list[Insn]:
        where, n = {}, 0
        for item in self.items:
            if item[0] == "label":
                where[item[1]] = n
            else:
                n += 1
        out: list[Insn] = []
        for item in self.items:
            if item[0] == "label":
                continue
            code, jt, jf, k = item
            here = len(out)

            def rel(target):
                if isinstance(target, int):
                    return target
                off = where[target] - here - 1
                if not 0 <= off <= 255:
                    raise ValueError(f"seccomp: jump to {target} out of range ({off})")
                return off
            out.append(Insn(code, rel(jt), rel(jf), k))
        return out


def build_filter(denied=None) -> list[Insn]:
    """The filter program as a list of instructions."""
    nrs = sorted(set((denied or DENIED).values()))
    a = _Asm()
    a.ld(OFF_ARCH)
    a.jmp(JEQ_K, AUDIT_ARCH_X86_64, 0, "kill")
    a.ld(OFF_NR)
    a.jmp(JGE_K, X32_SYSCALL_BIT, "eperm", 0)
    for nr in nrs:
        a.jmp(JEQ_K, nr, "eperm", 0)
    a.jmp(JEQ_K, NR_CLONE, "clone", 0)
    a.jmp(JEQ_K, NR_CLONE3, "enosys", 0)
    a.jmp(JEQ_K, NR_PERSONALITY, "personality", 0)
    a.jmp(JEQ_K, NR_SOCKET, "socket", 0)
    a.ret(RET_ALLOW)
    a.label("clone")
    a.ld(off_arg_low(0))
    a.jmp(JSET_K, ns.NAMESPACE_FLAGS, "eperm", "allow")
    a.label("personality")
    a.ld(off_arg_low(0))
    for p in ALLOWED_PERSONAS:
        a.jmp(JEQ_K, p, "allow", 0)
    a.ret(RET_ERRNO | errno.EPERM)
    a.label("socket")
    a.ld(off_arg_low(0))
    a.jmp(JEQ_K, AF_VSOCK, "eperm", "allow")
    a.label("allow")
    a.ret(RET_ALLOW)
    a.label("eperm")
    a.ret(RET_ERRNO | errno.EPERM)
    a.label("enosys")
    a.ret(RET_ERRNO | errno.ENOSYS)
    a.label("kill")
    a.ret(RET_KILL_PROCESS)
    return a.assemble()


def evaluate(program: list[Insn], nr: int, arch: int = AUDIT_ARCH_X86_64,
             args=(0, 0, 0, 0, 0, 0)) -> int:
    """Run the program on one seccomp_data (for tests and for reading)."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *[a & 0xFFFFFFFFFFFFFFFF for a in args])
    acc, pc = 0, 0
    while True:
        ins = program[pc]
        if ins.code == LD_W_ABS:
            acc = struct.unpack_from("<I", data, ins.k)[0]
        elif ins.code == RET_K:
            return ins.k
        elif ins.code in (JEQ_K, JGE_K, JSET_K):
            taken = {JEQ_K: acc == ins.k, JGE_K: acc >= ins.k,
                     JSET_K: bool(acc & ins.k)}[ins.code]
            pc += ins.jt if taken else ins.jf
        else:
            raise ValueError(f"unknown opcode {ins.code:#x}")
        pc += 1


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8),
                ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def install(program: list[Insn] | None = None) -> None:
    """Install the filter on the calling thread (needs no_new_privs or
    CAP_SYS_ADMIN). It is inherited across fork and kept across execve."""
    program = program or build_filter()
    arr = (_SockFilter * len(program))(*[_SockFilter(*i) for i in program])
    prog = _SockFprog(len(program), arr)
    ns.prctl_ptr(ns.PR_SET_SECCOMP, ns.SECCOMP_MODE_FILTER, ctypes.pointer(prog))
