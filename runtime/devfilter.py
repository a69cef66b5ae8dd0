"""A container's device allow-list: a BPF_PROG_TYPE_CGROUP_DEVICE program on its cgroup.

cgroup v2 has no devices.allow file; the kernel instead runs the BPF programs
attached to a task's cgroup (and its ancestors) on every open of a device node
and every mknod, with (type, major, minor, access), and refuses with EPERM
when one answers 0. The access check comes before the mount's nodev check, so
a node a container makes with CAP_MKNOD (or finds on a mount without nodev)
stays unusable whatever the mount flags.

- `Rule` / `DEFAULT_RULES`: the allow-list (everything not listed is denied,
  for read, write and mknod alike).
- `compile_rules(rules)`: the program, as raw instructions (our own encoder:
  load the context, one block per rule, allow on the first match, deny at the
  end). Pure; unit-tested by executing it in a small interpreter.
- `install(cgroup_path, rules)`: load (bpf(2) BPF_PROG_LOAD) and attach
  (BPF_PROG_ATTACH, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI) to the cgroup's
  directory, unless a device program is attached there already (the program
  stays with the cgroup: container restarts and agentd restarts keep it).
- `attached(cgroup_path)` (BPF_PROG_QUERY), `detach(...)`, `program_info(id)`.

Failures raise `Unavailable` whose str() is one line naming the call and
the reason (EPERM without CAP_BPF/CAP_SYS_ADMIN, ENOSYS, ...).

x86_64 only (bpf is syscall 321).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import struct
from dataclasses import dataclass

SYS_BPF = 321

# bpf(2) commands (linux/bpf.h)
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6                # attach type
BPF_F_ALLOW_MULTI = 2

# the program's context (struct bpf_cgroup_dev_ctx): u32 access_type
# ((access << 16) | type), u32 major, u32 minor
DEV_TYPES = {"b": 1, "c": 2}         # BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR
ACCESS_BITS = {"m": 1, "r": 2, "w": 4}   # BPF_DEVCG_ACC_MKNOD, _READ, _WRITE
ACCESS_RE = re.compile(r"(?!.*(.).*\1)[rwm]{1,3}")   # each of r, w, m at most once
PROG_NAME = b"cga_devices"
LICENSE = b"Apache-2.0"
MAX_RULES = 1024
MAX_MAJOR, MAX_MINOR = (1 << 12) - 1, (1 << 20) - 1   # the kernel's dev_t: 12 + 20 bits

# opcodes (linux/bpf_common.h, linux/bpf.h): class | op | source
OP_LDX_W = 0x61        # BPF_LDX | BPF_MEM | BPF_W:   dst = *(u32 *)(src + off)
OP_MOV32_REG = 0xbc    # BPF_ALU | BPF_MOV | BPF_X:   w_dst = w_src
OP_AND32_IMM = 0x54    # BPF_ALU | BPF_AND | BPF_K:   w_dst &= imm
OP_RSH32_IMM = 0x74    # BPF_ALU | BPF_RSH | BPF_K:   w_dst >>= imm
OP_JNE_IMM = 0x55      # BPF_JMP | BPF_JNE | BPF_K:   if dst != imm: pc += off
OP_MOV64_IMM = 0xb7    # BPF_ALU64 | BPF_MOV | BPF_K: dst = imm
OP_EXIT = 0x95         # BPF_JMP | BPF_EXIT:          return r0
INSN = struct.Struct("<BBhi")        # code, dst:4|src:4, off, imm

# registers of the program: r1 = context; these hold what it says
R_CTX, R_TYPE, R_ACCESS, R_MAJOR, R_MINOR, R_TMP = 1, 3, 4, 5, 6, 7


class Unavailable(Exception):
    """The kernel or the host refused the device filter; str() is one line
    naming the call and the reason, .errno the error number."""

    def __init__(self, message: str, err: int = 0):
        super().__init__(message)
        self.errno = err


@dataclass(frozen=True)
class Rule:
    """Allow `access` (a subset of "rwm") on devices of `type` ("c", "b" or
    "a" for both) with this major and minor (None: any)."""
    type: str
    major: int | None
    minor: int | None
    access: str = "rwm"

    def __post_init__(self):
        if self.type not in ("a", "b", "c"):
            raise ValueError(f"device type {self.type!r}: use c, b or a")
        for what, top in ((self.major, MAX_MAJOR), (self.minor, MAX_MINOR)):
            if what is not None and not (isinstance(what, int) and 0 <= what <= top):
                raise ValueError(f"device number {what!r}: use 0..{top} or None (any)")
        check_access(self.access)

    def __str__(self) -> str:
        major, minor = ("*" if n is None else str(n) for n in (self.major, self.minor))
        return f"{self.type} {major}:{minor} {self.access}"


def check_access(access) -> str:
    """The one check of an access string: r, w, m, each at most once."""
    if not isinstance(access, str) or not ACCESS_RE.fullmatch(access):
        raise ValueError(f"access {access!r}: use r, w and m, each at most once (e.g. rwm, rw, r)")
    return access


# Docker's default device set (runc's list of allowed devices, which Docker
# containers get), minus mknod of any device and /dev/net/tun (grant it with
# --device /dev/net/tun): read, write and mknod of these, nothing else.
DEFAULT_RULES = (
    Rule("c", 1, 3),      # /dev/null
    Rule("c", 1, 5),      # /dev/zero
    Rule("c", 1, 7),      # /dev/full
    Rule("c", 1, 8),      # /dev/random
    Rule("c", 1, 9),      # /dev/urandom
    Rule("c", 5, 0),      # /dev/tty
    Rule("c", 5, 2),      # /dev/ptmx
    Rule("c", 136, None),  # /dev/pts/*
)


# ---------------------------------------------------------------- the program

def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return INSN.pack(code, (src << 4) | dst, off, imm)


def compile_rules(rules) -> bytes:
    """The program allowing exactly `rules` (first match allows, no match
    denies), as raw struct bpf_insn bytes."""
    rules = tuple(rules)
    if len(rules) > MAX_RULES:
        raise ValueError(f"{len(rules)} device rules: at most {MAX_RULES}")
    prog = [
        _insn(OP_LDX_W, R_TYPE, R_CTX, 0),          # access_type
        _insn(OP_MOV32_REG, R_ACCESS, R_TYPE),
        _insn(OP_AND32_IMM, R_TYPE, imm=0xFFFF),     # low half: b/c
        _insn(OP_RSH32_IMM, R_ACCESS, imm=16),       # high half: m/r/w bits
        _insn(OP_LDX_W, R_MAJOR, R_CTX, 4),
        _insn(OP_LDX_W, R_MINOR, R_CTX, 8),
    ]
    for rule in rules:
        tests = []   # (code, dst, imm) of conditional jumps to the next rule, plus plain insns
        if rule.type != "a":
            tests.append(("jne", R_TYPE, DEV_TYPES[rule.type]))
        allowed = sum(ACCESS_BITS[c] for c in rule.access)
        if allowed != 7:
            # any requested bit outside the allowed ones: not this rule
            tests.append(("mov", R_TMP, R_ACCESS))
            tests.append(("and", R_TMP, 7 & ~allowed))
            tests.append(("jne", R_TMP, 0))
        if rule.major is not None:
            tests.append(("jne", R_MAJOR, rule.major))
        if rule.minor is not None:
            tests.append(("jne", R_MINOR, rule.minor))
        block_len = len(tests) + 2                   # + "r0 = 1; exit"
        for i, (op, dst, arg) in enumerate(tests):
            if op == "jne":
                prog.append(_insn(OP_JNE_IMM, dst, off=block_len - (i + 1), imm=arg))
            elif op == "mov":
                prog.append(_insn(OP_MOV32_REG, dst, arg))
            else:
                prog.append(_insn(OP_AND32_IMM, dst, imm=arg))
        prog += [_insn(OP_MOV64_IMM, 0, imm=1), _insn(OP_EXIT)]
    prog += [_insn(OP_MOV64_IMM, 0, imm=0), _insn(OP_EXIT)]
    return b"".join(prog)


# ---------------------------------------------------------------- bpf(2)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long
ATTR_SIZE = 144   # >= every field used; the kernel checks the tail is zero


def _bpf(cmd: int, attr: bytes, what: str) -> tuple[int, bytes]:
    buf = ctypes.create_string_buffer(attr.ljust(ATTR_SIZE, b"\0"), ATTR_SIZE)
    ret = _libc.syscall(ctypes.c_long(SYS_BPF), ctypes.c_int(cmd), buf, ctypes.c_uint(ATTR_SIZE))
    if ret < 0:
        err = ctypes.get_errno()
        raise Unavailable(f"bpf({what}): {os.strerror(err)}{_HINTS.get(err, '')}", err)
    return ret, buf.raw


_HINTS = {errno.EPERM: " (needs CAP_BPF or CAP_SYS_ADMIN, and CAP_NET_ADMIN)",
          errno.ENOSYS: " (this kernel has no bpf(2))",
          errno.EINVAL: " (this kernel has no cgroup device programs)"}


def load(rules) -> int:
    """Load the program for `rules`; returns its fd (close-on-exec)."""
    code = compile_rules(rules)
    insns = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(LICENSE)
    log = ctypes.create_string_buffer(1 << 16)
    # prog_type, insn_cnt, insns, license, log_level, log_size, log_buf,
    # kern_version, prog_flags, prog_name, prog_ifindex, expected_attach_type
    attr = struct.pack("<IIQQIIQII16sII", BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // INSN.size,
                       ctypes.addressof(insns), ctypes.addressof(lic), 0, 0, 0, 0, 0,
                       PROG_NAME, 0, BPF_CGROUP_DEVICE)
    try:
        fd, _ = _bpf(BPF_PROG_LOAD, attr, "BPF_PROG_LOAD")
    except Unavailable as e:
        if e.errno != errno.EACCES:      # EACCES: the verifier said no; ask it why
            raise
        attr = attr[:24] + struct.pack("<IIQ", 1, len(log), ctypes.addressof(log)) + attr[40:]
        try:
            fd, _ = _bpf(BPF_PROG_LOAD, attr, "BPF_PROG_LOAD")
        except Unavailable:
            last = log.value.decode(errors="replace").strip().splitlines()[-1:] or ["no log"]
            raise Unavailable(f"bpf(BPF_PROG_LOAD): the verifier refused the program: {last[0]}",
                              e.errno) from None
    return fd


def _cgroup_fd(cgroup_path: str) -> int:
    try:
        return os.open(cgroup_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise Unavailable(f"open cgroup {cgroup_path}: {e.strerror}", e.errno) from None


def attached(cgroup_path: str) -> list[int]:
    """Ids of the device programs attached directly to this cgroup."""
    fd = _cgroup_fd(cgroup_path)
    try:
        return _query(fd)
    finally:
        os.close(fd)


def _query(cgroup_fd: int) -> list[int]:
    ids = (ctypes.c_uint32 * 64)()
    # target_fd, attach_type, query_flags, attach_flags, prog_ids, prog_cnt
    attr = struct.pack("<IIIIQI", cgroup_fd, BPF_CGROUP_DEVICE, 0, 0, ctypes.addressof(ids), len(ids))
    _, raw = _bpf(BPF_PROG_QUERY, attr, "BPF_PROG_QUERY")
    count = struct.unpack_from("<I", raw, 24)[0]
    return list(ids[:min(count, len(ids))])


def install(cgroup_path: str, rules=DEFAULT_RULES) -> tuple[int, bool]:
    """Make sure a device program filters `cgroup_path`: (program id, True)
    when this call loaded and attached one, (id, False) when one was attached
    already (it stays with the cgroup across restarts of the container and of
    agentd). Unavailable (one line) when the kernel or host refuses."""
    fd = _cgroup_fd(cgroup_path)
    try:
        have = _query(fd)
        if have:
            return have[0], False
        prog = load(rules)
        try:
            # target_fd, attach_bpf_fd, attach_type, attach_flags
            _bpf(BPF_PROG_ATTACH, struct.pack("<IIII", fd, prog, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI),
                 "BPF_PROG_ATTACH")
            return _prog_id(prog), True
        finally:
            os.close(prog)       # the attachment holds the program now
    finally:
        os.close(fd)


def detach(cgroup_path: str, prog_id: int) -> None:
    """Detach program `prog_id` from the cgroup (tests; a removed cgroup drops its programs)."""
    fd = _cgroup_fd(cgroup_path)
    try:
        prog = _prog_fd(prog_id)
        try:
            _bpf(BPF_PROG_DETACH, struct.pack("<IIII", fd, prog, BPF_CGROUP_DEVICE, 0), "BPF_PROG_DETACH")
        finally:
            os.close(prog)
    finally:
        os.close(fd)


def _prog_fd(prog_id: int) -> int:
    fd, _ = _bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("<I", prog_id), "BPF_PROG_GET_FD_BY_ID")
    return fd


# struct bpf_prog_info: the fields read here
_INFO_SIZE = 256
_INFO_TYPE, _INFO_ID, _INFO_XLATED_LEN, _INFO_XLATED_PTR, _INFO_NAME = 0, 4, 20, 32, 64


def _info(prog_fd: int, xlated=None) -> bytes:
    info = ctypes.create_string_buffer(_INFO_SIZE)
    if xlated is not None:
        struct.pack_into("<I", info, _INFO_XLATED_LEN, len(xlated))
        struct.pack_into("<Q", info, _INFO_XLATED_PTR, ctypes.addressof(xlated))
    # bpf_fd, info_len, info
    _bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("<IIQ", prog_fd, _INFO_SIZE, ctypes.addressof(info)),
         "BPF_OBJ_GET_INFO_BY_FD")
    return info.raw


def _prog_id(prog_fd: int) -> int:
    return struct.unpack_from("<I", _info(prog_fd), _INFO_ID)[0]


def program_info(prog_id: int) -> dict:
    """{"id", "type", "name", "insns"} of a loaded program; insns are the
    instructions as the kernel holds them (for tests and inspection)."""
    fd = _prog_fd(prog_id)
    try:
        first = _info(fd)
        size = struct.unpack_from("<I", first, _INFO_XLATED_LEN)[0]
        buf = ctypes.create_string_buffer(size)
        raw = _info(fd, buf)
    finally:
        os.close(fd)
    return {"id": prog_id, "type": struct.unpack_from("<I", raw, _INFO_TYPE)[0],
            "name": raw[_INFO_NAME:_INFO_NAME + 16].split(b"\0")[0].decode(), "insns": buf.raw}
