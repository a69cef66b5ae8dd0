"""The limit flags of `run`, `limit` and `update`, and the request body they make.

Our spellings (--memory, --cpus, ...) and Docker's (docs/cli.md has the
whole table):

    --pids-limit N          = --pids N (-1 or 0: unlimited, as in Docker)
    --cpuset-cpus LIST      = --cpuset LIST
    --memory-reservation S  = --memory-low S (what Docker writes on cgroup v2)
    --cpu-shares N          Docker's 2..262144 shares, converted to cpu.weight as Docker does
                            on cgroup v2: 1 + (N - 2) * 9999 / 262142
    --blkio-weight N        Docker's 10..1000, converted to io.weight: 1 + (N - 10) * 9999 / 990
    -m S                    = --memory S
    --memory-swap S         Docker's meaning: memory + swap in total, so it needs --memory in
                            the same command; -1 = unlimited swap; swap alone is --swap S

Values are checked with runtime.limits (imported by the check, when a flag
is given) and passed on as the user wrote them.
"""
from __future__ import annotations

import argparse

from agent.cli.errors import UsageError

# (flag, Limits.parse key, runtime.limits checker, help)
LIMIT_FLAGS = (
    ("--memory", "memory", "parse_size", "memory limit, memory.max (e.g. 512M, or max)"),
    ("--memory-high", "memory_high", "parse_size", "memory throttling threshold, memory.high"),
    ("--memory-low", "memory_low", "parse_size", "memory protection, memory.low"),
    ("--cpus", "cpus", "parse_cpus", "CPU cores (e.g. 0.5, 150%%, 50000/100000), cpu.max"),
    ("--cpu-weight", "cpu_weight", "parse_weight", "CPU weight 1..10000 (default 100), cpu.weight"),
    ("--cpuset", "cpuset", "parse_cpuset_list", "CPUs allowed (e.g. 0-1,3), cpuset.cpus"),
    ("--pids", "pids", "parse_pids", "process limit, pids.max"),
    ("--io-weight", "io_weight", "parse_weight", "IO weight 1..10000, io.weight"),
)


def _check(fn, value: str, key: str):
    from runtime import limits as rl
    from runtime.errors import LimitError

    try:
        return getattr(rl, fn)(value, key)
    except LimitError as e:
        raise argparse.ArgumentTypeError(f'"{value}" {e.accepted}') from None


def limit(key: str, parser_name: str):
    """A type= callable that checks a limit with runtime.limits and keeps the user's text."""

    def check(value: str) -> str:
        _check(parser_name, value, key)
        return value

    check.__name__ = key  # argparse names the type in its messages
    return check


# -- Docker's spellings -------------------------------------------------------


def _pids_limit(value: str) -> str:
    if value.strip() in ("-1", "0"):
        return "max"
    _check("parse_pids", value, "pids")
    return value


def _docker_int(value: str, lo: int, hi: int, what: str, note: str) -> int:
    """An integer in Docker's range lo..hi, or the one-line usage error."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not lo <= n <= hi:
        raise argparse.ArgumentTypeError(f"{value!r} is not {what}; use {lo}..{hi} ({note})")
    return n


def _cpu_shares(value: str) -> int:
    n = _docker_int(value, 2, 262144, "a number of CPU shares", "Docker's default 1024")
    return 1 + (n - 2) * 9999 // 262142


def _blkio_weight(value: str) -> int:
    from runtime.limits import blkio_weight_to_io_weight

    return blkio_weight_to_io_weight(_docker_int(value, 10, 1000, "a block IO weight", "Docker's range"))


def _memory_swap(value: str) -> str:
    if value.strip() == "-1":
        return "-1"
    _check("parse_size", value, "memory_swap")
    return value


_pids_limit.__name__ = "pids-limit"
_cpu_shares.__name__ = "cpu-shares"
_blkio_weight.__name__ = "blkio-weight"
_memory_swap.__name__ = "memory-swap"


def _add_docker_flags(g) -> None:
    """Docker's spellings, in the same `limits` group."""
    g.add_argument("-m", dest="limit_memory", metavar="VALUE", type=limit("memory", "parse_size"),
                   help="the same as --memory (Docker's short form)")
    g.add_argument("--blkio-weight", dest="limit_io_weight", metavar="N", type=_blkio_weight,
                   help="Docker's block IO weight 10..1000, converted to --io-weight as Docker does on cgroup v2")
    g.add_argument("--swap", dest="limit_memory_swap", metavar="VALUE", type=limit("memory_swap", "parse_size"),
                   help="swap limit alone, memory.swap.max (Docker has no such flag)")
    g.add_argument("--memory-swap", dest="docker_memory_swap", metavar="VALUE", type=_memory_swap,
                   help="Docker's meaning: memory + swap in total (needs --memory; -1: unlimited swap)")
    g.add_argument("--pids-limit", dest="limit_pids", metavar="N", type=_pids_limit,
                   help="the same as --pids (Docker's name; -1 or 0: unlimited)")
    g.add_argument("--cpuset-cpus", dest="limit_cpuset", metavar="LIST", type=limit("cpuset", "parse_cpuset_list"),
                   help="the same as --cpuset (Docker's name)")
    g.add_argument("--memory-reservation", dest="limit_memory_low", metavar="VALUE",
                   type=limit("memory_low", "parse_size"),
                   help="the same as --memory-low (what Docker writes on cgroup v2)")
    g.add_argument("--cpu-shares", dest="limit_cpu_weight", metavar="N", type=_cpu_shares,
                   help="Docker's CPU shares 2..262144, converted to --cpu-weight as Docker does on cgroup v2")


def add_limit_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("limits")
    for flag, key, checker, help_text in LIMIT_FLAGS:
        g.add_argument(flag, dest="limit_" + key, metavar="VALUE", type=limit(key, checker), help=help_text)
    g.add_argument("--io-max", dest="limit_io_max", metavar="DEV:KEY=VAL,...", action="append",
                   type=limit("io_max", "parse_io_max"),
                   help="IO rate limit, io.max (e.g. /dev/vda:rbps=10M,wiops=100); repeatable")
    _add_docker_flags(g)


def _docker_memory_swap(args, out: dict) -> None:
    """Turn Docker's --memory-swap (memory + swap) into memory_swap (swap alone) in ``out``."""
    total = getattr(args, "docker_memory_swap", None)
    if total is None:
        return
    out.pop("docker_memory_swap", None)
    memory = out.get("memory")
    if memory is None:
        raise UsageError("--memory-swap is Docker's memory + swap total and needs --memory in the same "
                         "command; to set swap alone use --swap SIZE (memory.swap.max)")
    if total == "-1":
        out["memory_swap"] = "max"
        return
    from runtime.limits import parse_size

    mem, tot = parse_size(memory, "memory"), parse_size(total, "memory_swap")
    if mem == "max" or tot == "max":
        out["memory_swap"] = "max"
        return
    if tot < mem:
        raise UsageError(f"--memory-swap {total} is smaller than --memory {memory}; it is memory + swap "
                         "in total (Docker's meaning), so it must be at least --memory")
    out["memory_swap"] = str(tot - mem)


def limits_body(args) -> dict:
    """The limits the flags set, as the API's limits object (the user's text)."""
    out = {}
    for key, value in vars(args).items():
        if key.startswith("limit_") and value is not None:
            out[key[len("limit_"):]] = value
    _docker_memory_swap(args, out)
    return out
