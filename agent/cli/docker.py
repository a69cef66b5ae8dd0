"""agentctl's Docker verbs (Docker's spelling of limit flags is agent/cli/limit_flags.py).

    start NAME              POST /v1/containers/NAME/start
    restart [-t S] NAME     stop (grace S) if it runs, then start
    wait NAME               block until it exited; print its exit status
    pause / unpause NAME    the same as freeze / thaw
    update [flags] NAME     the same as limit
"""
from __future__ import annotations

from agent.cli import containers, flags
from agent.cli.containers import done
from agent.cli.errors import EXIT_FAIL, EXIT_OK, exit_status
from agent.cli.format import print_json


def _build_start(p) -> None:
    p.add_argument("name", metavar="NAME", help="container name")


def _build_restart(p) -> None:
    p.add_argument("-t", "--time", type=flags.seconds, metavar="SECONDS",
                   help="grace period before cgroup.kill (default: the agent's stop_timeout)")
    p.add_argument("name", metavar="NAME", help="container name")


def cmd_start(args, client) -> int:
    return done(args, client.call("POST", f"/v1/containers/{args.name}/start"))


def cmd_restart(args, client) -> int:
    info = client.call("GET", f"/v1/containers/{args.name}")
    if info.get("state") in ("running", "paused", "restarting"):
        q = {"timeout": args.time} if args.time is not None else None
        client.call("POST", f"/v1/containers/{args.name}/stop", q)
    return done(args, client.call("POST", f"/v1/containers/{args.name}/start"))


def cmd_wait(args, client) -> int:
    from agent.cli.client import Client

    waiter = Client(client.path, timeout=None, host=client.host)  # blocks as long as the container runs
    info = waiter.call("GET", f"/v1/containers/{args.name}/wait")
    if args.json:
        print_json(info)
    elif info.get("state") == "created" and info.get("exit_code") is None and not info.get("exit_signal"):
        print(f"agentctl: container {args.name} was created but never started", file=__import__("sys").stderr)
        return EXIT_FAIL
    else:
        print(exit_status(info))
    return EXIT_OK


SUBCOMMANDS = {
    "start": ("start a created or stopped container", True, _build_start),
    "restart": ("stop a container (if it runs), then start it again", True, _build_restart),
    "wait": ("wait until a container exited; print its exit status", True, _build_start),
    "pause": ("the same as freeze (docker pause)", True, containers.build_named),
    "unpause": ("the same as thaw (docker unpause)", True, containers.build_named),
    "update": ("the same as limit (docker update)", True, containers.build_limit),
}
COMMANDS = {"start": cmd_start, "restart": cmd_restart, "wait": cmd_wait,
            "pause": containers.cmd_freeze, "unpause": containers.cmd_thaw, "update": containers.cmd_limit}
