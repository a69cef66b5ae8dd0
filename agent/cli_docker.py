"""agentctl's Docker verbs and Docker's spelling of limit flags.

    start NAME              POST /v1/containers/NAME/start
    restart [-t S] NAME     stop (grace S) if it runs, then start
    wait NAME               block until it exited; print its exit status
    pause / unpause NAME    the same as freeze / thaw
    update [flags] NAME     the same as limit

Docker's limit flags (docs/cli.md has the whole table):

    --pids-limit N          = --pids N (-1 or 0: unlimited, as in Docker)
    --cpuset-cpus LIST      = --cpuset LIST
    --memory-reservation S  = --memory-low S (what Docker writes on cgroup v2)
    --cpu-shares N          Docker's 2..262144 shares, converted to cpu.weight as Docker does
                            on cgroup v2: 1 + (N - 2) * 9999 / 262142
    --blkio-weight N        Docker's 10..1000, converted to io.weight: 1 + (N - 10) * 9999 / 990
    -m S                    = --memory S
    --memory-swap S         Docker's meaning: memory + swap in total, so it needs --memory in
                            the same command; -1 = unlimited swap; swap alone is --swap S

`install(cli)` adds the subcommands to agent/cli.py's tables; nothing here is
imported by anything else.
"""
from __future__ import annotations

import argparse

_cli = None  # agent.cli (or __main__ when run as python -m agent.cli), set by install()


def _check(fn, value: str, key: str):
    from runtime import limits as rl
    from runtime.errors import LimitError

    try:
        return getattr(rl, fn)(value, key)
    except LimitError as e:
        raise argparse.ArgumentTypeError(f'"{value}" {e.accepted}') from None


def _pids_limit(value: str) -> str:
    if value.strip() in ("-1", "0"):
        return "max"
    _check("parse_pids", value, "pids")
    return value


def _cpu_shares(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 2 <= n <= 262144:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of CPU shares; use 2..262144 (Docker's default 1024)")
    return 1 + (n - 2) * 9999 // 262142


def _blkio_weight(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 10 <= n <= 1000:
        raise argparse.ArgumentTypeError(f"{value!r} is not a block IO weight; use 10..1000 (Docker's range)")
    return 1 + (n - 10) * 9999 // 990


def _memory_swap(value: str) -> str:
    if value.strip() == "-1":
        return "-1"
    _check("parse_size", value, "memory_swap")
    return value


_pids_limit.__name__ = "pids-limit"
_cpu_shares.__name__ = "cpu-shares"
_blkio_weight.__name__ = "blkio-weight"
_memory_swap.__name__ = "memory-swap"


def add_limit_flags(g) -> None:
    """Docker's spellings, in the `limits` group of run/limit/update."""
    g.add_argument("-m", dest="limit_memory", metavar="VALUE", type=_cli._limit("memory", "parse_size"),
                   help="the same as --memory (Docker's short form)")
    g.add_argument("--blkio-weight", dest="limit_io_weight", metavar="N", type=_blkio_weight,
                   help="Docker's block IO weight 10..1000, converted to --io-weight as Docker does on cgroup v2")
    g.add_argument("--swap", dest="limit_memory_swap", metavar="VALUE", type=_cli._limit("memory_swap", "parse_size"),
                   help="swap limit alone, memory.swap.max (Docker has no such flag)")
    g.add_argument("--memory-swap", dest="docker_memory_swap", metavar="VALUE", type=_memory_swap,
                   help="Docker's meaning: memory + swap in total (needs --memory; -1: unlimited swap)")
    g.add_argument("--pids-limit", dest="limit_pids", metavar="N", type=_pids_limit,
                   help="the same as --pids (Docker's name; -1 or 0: unlimited)")
    g.add_argument("--cpuset-cpus", dest="limit_cpuset", metavar="LIST", type=_cli._limit("cpuset", "parse_cpuset_list"),
                   help="the same as --cpuset (Docker's name)")
    g.add_argument("--memory-reservation", dest="limit_memory_low", metavar="VALUE",
                   type=_cli._limit("memory_low", "parse_size"),
                   help="the same as --memory-low (what Docker writes on cgroup v2)")
    g.add_argument("--cpu-shares", dest="limit_cpu_weight", metavar="N", type=_cpu_shares,
                   help="Docker's CPU shares 2..262144, converted to --cpu-weight as Docker does on cgroup v2")


def docker_limits(args, out: dict) -> None:
    """Turn Docker's --memory-swap (memory + swap) into memory_swap (swap alone) in ``out``."""
    total = getattr(args, "docker_memory_swap", None)
    if total is None:
        return
    out.pop("docker_memory_swap", None)
    memory = out.get("memory")
    if memory is None:
        raise _cli.UsageError("--memory-swap is Docker's memory + swap total and needs --memory in the same "
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
        raise _cli.UsageError(f"--memory-swap {total} is smaller than --memory {memory}; it is memory + swap "
                              "in total (Docker's meaning), so it must be at least --memory")
    out["memory_swap"] = str(tot - mem)


# -- the verbs ----------------------------------------------------------------


def _build_start(p) -> None:
    p.add_argument("name", metavar="NAME", help="container name")


def _build_restart(p) -> None:
    p.add_argument("-t", "--time", type=_cli._seconds, metavar="SECONDS",
                   help="grace period before cgroup.kill (default: the agent's stop_timeout)")
    p.add_argument("name", metavar="NAME", help="container name")


def cmd_start(args, client) -> int:
    return _cli._done(args, client.call("POST", f"/v1/containers/{args.name}/start"))


def cmd_restart(args, client) -> int:
    info = client.call("GET", f"/v1/containers/{args.name}")
    if info.get("state") in ("running", "paused", "restarting"):
        q = {"timeout": args.time} if args.time is not None else None
        client.call("POST", f"/v1/containers/{args.name}/stop", q)
    return _cli._done(args, client.call("POST", f"/v1/containers/{args.name}/start"))


def cmd_wait(args, client) -> int:
    from agent.client import Client

    waiter = Client(client.path, timeout=None, host=client.host)  # blocks as long as the container runs
    info = waiter.call("GET", f"/v1/containers/{args.name}/wait")
    if args.json:
        _cli._print_json(info)
    elif info.get("state") == "created" and info.get("exit_code") is None and not info.get("exit_signal"):
        print(f"agentctl: container {args.name} was created but never started", file=__import__("sys").stderr)
        return _cli.EXIT_FAIL
    else:
        print(_cli.exit_status(info))
    return _cli.EXIT_OK


def install(cli) -> None:
    global _cli
    _cli = cli
    cli.SUBCOMMANDS.update({
        "start": ("start a created or stopped container", True, _build_start),
        "restart": ("stop a container (if it runs), then start it again", True, _build_restart),
        "wait": ("wait until a container exited; print its exit status", True, _build_start),
        "pause": ("the same as freeze (docker pause)", True, cli._build_named),
        "unpause": ("the same as thaw (docker unpause)", True, cli._build_named),
        "update": ("the same as limit (docker update)", True, cli._build_limit),
    })
    cli.COMMANDS.update({"start": cmd_start, "restart": cmd_restart, "wait": cmd_wait,
                         "pause": cli.cmd_freeze, "unpause": cli.cmd_thaw, "update": cli.cmd_limit})
