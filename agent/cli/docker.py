"""agentctl's Docker verbs (Docker's spelling of limit flags is agent/cli/limit_flags.py).

    start NAME              POST /v1/containers/NAME/start
    restart [-t S] NAME     stop (grace S) if it runs, then start
    wait NAME               block until it exited; print its exit status
    pause / unpause NAME    the same as freeze / thaw
    update [flags] NAME     the same as limit
    port NAME [PORT[/PROTO]]
                            the published ports, as Docker prints them
"""
from __future__ import annotations

import sys

from agent.cli import containers, flags
from agent.cli.containers import done
from agent.cli.errors import EXIT_FAIL, EXIT_OK, UsageError, exit_status
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
        print(f"agentctl: container {args.name} was created but never started", file=sys.stderr)
        return EXIT_FAIL
    else:
        print(exit_status(info))
    return EXIT_OK


def _build_port(p) -> None:
    p.add_argument("name", metavar="NAME", help="container name")
    p.add_argument("port", nargs="?", metavar="PORT[/PROTO]",
                   help="only this container port (tcp unless /udp), printing its host addresses")


def cmd_port(args, client) -> int:
    """Docker's `port`: "80/tcp -> 0.0.0.0:8080" per published port, or with
    PORT only "0.0.0.0:8080"; the ports are inspect's network.ports, in the
    -p syntax (the network's one rule, agent/network/netspec.py, reads them)."""
    from agent.network.netspec import parse_port   # here: only `port` pays for its import

    want = None
    if args.port is not None:
        num, _, proto = args.port.partition("/")
        proto = proto or "tcp"
        if not num.isdigit() or not 1 <= int(num) <= 65535 or proto not in ("tcp", "udp"):
            raise UsageError(f"port: {args.port!r} is not PORT[/PROTO] (1-65535, tcp or udp)")
        want = (int(num), proto)
    info = client.call("GET", f"/v1/containers/{args.name}")
    ports = [parse_port(i, v) for i, v in enumerate((info.get("network") or {}).get("ports") or ())]
    if want is not None:
        ports = [p for p in ports if (p.container_port, p.proto) == want]
        if not ports:
            print(f"agentctl: no public port '{want[0]}/{want[1]}' published for {args.name}", file=sys.stderr)
            return EXIT_FAIL
    if args.json:
        print_json([{"container_port": p.container_port, "proto": p.proto, "host_ip": p.host_ip or "0.0.0.0",
                     "host_port": p.host_port} for p in ports])
        return EXIT_OK
    for p in ports:
        addr = f"{p.host_ip or '0.0.0.0'}:{p.host_port}"
        print(addr if want is not None else f"{p.container_port}/{p.proto} -> {addr}")
    return EXIT_OK


VERBS = {
    "start": ("start a created or stopped container", True, _build_start, cmd_start),
    "restart": ("stop a container (if it runs), then start it again", True, _build_restart, cmd_restart),
    "wait": ("wait until a container exited; print its exit status", True, _build_start, cmd_wait),
    "pause": ("the same as freeze (docker pause)", True, containers.build_named, containers.cmd_freeze),
    "unpause": ("the same as thaw (docker unpause)", True, containers.build_named, containers.cmd_thaw),
    "update": ("the same as limit (docker update)", True, containers.build_limit, containers.cmd_limit),
    "port": ("the ports a container publishes (docker port)", True, _build_port, cmd_port),
}
