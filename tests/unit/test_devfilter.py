"""runtime.devfilter.compile_rules: the generated cgroup device program, decoded
and run by a small eBPF interpreter written here from the instruction set
(not from the encoder), over (type, major, minor, access) cases."""
from __future__ import annotations

import struct

import pytest

from runtime import devfilter as df

BLOCK, CHAR = 1, 2
MKNOD, READ, WRITE = 1, 2, 4


def run(prog: bytes, dev_type: int, major: int, minor: int, access: int) -> int:
    """Execute `prog` on struct bpf_cgroup_dev_ctx; the subset of eBPF a
    device program needs. Anything else fails the test."""
    assert len(prog) % 8 == 0
    insns = [struct.unpack_from("<BBhi", prog, i) for i in range(0, len(prog), 8)]
    ctx = struct.pack("<III", (access << 16) | dev_type, major, minor)
    regs = [0] * 11
    regs[1] = "ctx"
    mask64, mask32 = (1 << 64) - 1, (1 << 32) - 1
    pc, steps = 0, 0
    while True:
        steps += 1
        assert steps <= len(insns), "a backward jump: the program must be a DAG"
        code, regbyte, off, imm = insns[pc]
        dst, src = regbyte & 0xF, regbyte >> 4
        cls = code & 0x07
        pc += 1
        if cls == 0x01:                                   # LDX
            assert code & 0xE0 == 0x60 and code & 0x18 == 0x00, f"LDX {code:#x}"  # MEM, W
            assert regs[src] == "ctx" and off in (0, 4, 8)
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif cls in (0x04, 0x07):                         # ALU (32-bit) / ALU64
            op, use_reg = code & 0xF0, code & 0x08
            b = regs[src] if use_reg else imm
            assert b != "ctx" and regs[dst] != "ctx" or op == 0xB0
            a = regs[dst]
            if op == 0xB0:
                val = b
            elif op == 0x50:
                val = a & b
            elif op == 0x70:
                val = a >> b
            else:
                raise AssertionError(f"ALU op {op:#x}")
            regs[dst] = val & (mask32 if cls == 0x04 else mask64)
        elif cls == 0x05:                                 # JMP
            op = code & 0xF0
            if op == 0x90:                                # EXIT
                assert regs[0] in (0, 1)
                return regs[0]
            assert not code & 0x08, "only comparisons with imm"
            a, b = regs[dst], imm & mask64
            if op == 0x50:
                taken = a != b
            elif op == 0x10:
                taken = a == b
            elif op == 0x00:
                taken = True
            else:
                raise AssertionError(f"JMP op {op:#x}")
            if taken:
                assert off >= 0
                pc += off
        else:
            raise AssertionError(f"class {cls:#x}")
        assert 0 <= pc < len(insns), "fell off the program"


DEFAULT = df.compile_rules(df.DEFAULT_RULES)


@pytest.mark.parametrize("case, want", [
    ((CHAR, 1, 3, READ), 1),           # /dev/null
    ((CHAR, 1, 3, READ | WRITE), 1),
    ((CHAR, 1, 3, MKNOD), 1),
    ((CHAR, 1, 5, WRITE), 1),          # zero
    ((CHAR, 1, 7, READ), 1),           # full
    ((CHAR, 1, 8, READ), 1),           # random
    ((CHAR, 1, 9, READ), 1),           # urandom
    ((CHAR, 5, 0, READ | WRITE), 1),   # tty
    ((CHAR, 5, 2, READ | WRITE), 1),   # ptmx
    ((CHAR, 136, 0, READ), 1),         # pts/0
    ((CHAR, 136, 4095, WRITE), 1),     # any pts
    ((BLOCK, 1, 3, READ), 0),          # right numbers, wrong type
    ((BLOCK, 8, 0, READ), 0),          # sda
    ((BLOCK, 8, 0, MKNOD), 0),
    ((BLOCK, 7, 0, WRITE), 0),         # loop0
    ((BLOCK, 259, 0, READ), 0),        # nvme0n1
    ((BLOCK, 254, 0, READ | WRITE), 0),  # vda
    ((CHAR, 1, 1, READ), 0),           # /dev/mem
    ((CHAR, 1, 2, READ), 0),           # /dev/kmem
    ((CHAR, 1, 11, WRITE), 0),         # /dev/kmsg
    ((CHAR, 1, 4, READ), 0),           # /dev/port
    ((CHAR, 10, 200, READ), 0),        # /dev/net/tun: not by default
    ((CHAR, 10, 229, READ), 0),        # /dev/fuse
    ((CHAR, 5, 1, READ), 0),           # /dev/console
    ((CHAR, 4, 0, READ), 0),           # /dev/tty0
    ((CHAR, 137, 0, READ), 0),
    ((CHAR, 0, 0, MKNOD), 0),
])
def test_default_program_allows_only_dockers_minimal_set(case, want):
    assert run(DEFAULT, *case) == want


def test_access_subset_and_wildcards():
    rules = (df.Rule("b", 7, 3, "r"), df.Rule("c", 10, None, "rw"), df.Rule("a", None, 9, "m"))
    prog = df.compile_rules(rules)
    assert run(prog, BLOCK, 7, 3, READ) == 1
    assert run(prog, BLOCK, 7, 3, WRITE) == 0              # r only
    assert run(prog, BLOCK, 7, 3, READ | WRITE) == 0       # rw asks more than r
    assert run(prog, BLOCK, 7, 3, MKNOD) == 0
    assert run(prog, BLOCK, 7, 4, READ) == 0
    assert run(prog, CHAR, 7, 3, READ) == 0                # c 7:3 is another device
    assert run(prog, CHAR, 10, 1, READ | WRITE) == 1       # c 10:* rw
    assert run(prog, CHAR, 10, 200, MKNOD) == 0
    assert run(prog, BLOCK, 10, 1, READ) == 0
    assert run(prog, BLOCK, 99, 9, MKNOD) == 1             # a *:9 m
    assert run(prog, CHAR, 42, 9, MKNOD) == 1
    assert run(prog, CHAR, 42, 9, READ) == 0


def test_empty_list_denies_everything_and_all_allows_everything():
    deny = df.compile_rules(())
    allow = df.compile_rules((df.Rule("a", None, None, "rwm"),))
    for case in ((CHAR, 1, 3, READ), (BLOCK, 8, 0, MKNOD), (CHAR, 136, 1, WRITE)):
        assert run(deny, *case) == 0
        assert run(allow, *case) == 1
    assert len(deny) == 8 * 8   # context loads, then r0 = 0; exit


def test_large_device_numbers():
    prog = df.compile_rules((df.Rule("c", 4095, (1 << 20) - 1, "rwm"),))
    assert run(prog, CHAR, 4095, (1 << 20) - 1, READ) == 1
    assert run(prog, CHAR, 4095, (1 << 20) - 2, READ) == 0


def test_default_set_is_dockers_minus_tun_and_blanket_mknod():
    got = {str(r) for r in df.DEFAULT_RULES}
    assert got == {"c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
                   "c 5:0 rwm", "c 5:2 rwm", "c 136:* rwm"}


@pytest.mark.parametrize("bad", ["", "x", "rr", "rwmr", "RW", "r w", None, 7])
def test_access_strings_are_checked_in_one_place(bad):
    with pytest.raises(ValueError, match="use r, w and m, each at most once"):
        df.check_access(bad)


@pytest.mark.parametrize("kw", [dict(type="x", major=1, minor=1), dict(type="c", major=-1, minor=1),
                                dict(type="c", major=1, minor=1 << 20),
                                dict(type="b", major=4096, minor=0), dict(type="c", major=1, minor=1, access="")])
def test_bad_rules_are_refused(kw):
    with pytest.raises(ValueError):
        df.Rule(**kw)
