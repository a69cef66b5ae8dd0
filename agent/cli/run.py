"""agentctl run: create and start a container, attached (its output copied
here, signals forwarded, its exit status returned) or detached (-d: its id
printed).

    run [-d] [--rm] [--name N] [limit flags] [--image REF | --rootfs DIR | --bundle DIR]
        [network flags] ... -- CMD [ARG...]      POST /v1/containers

The image flags are agent/cli/images.py's, the network flags
agent/cli/network.py's, the limit flags agent/cli/limit_flags.py's; `-i`
forwards stdin on the same connection (agent/cli/exec.py); `-t` puts PID 1
on a terminal of its own (this terminal's size passed on, raw with -i, the
detach keys end an -it session: agent/cli/detachkeys.py).
"""
from __future__ import annotations

import argparse
import os
import sys

from agent.cli import exec as exec_verb
from agent.cli import detachkeys, flags, images, network
from agent.cli.errors import EXIT_FAIL, EXIT_OK, UsageError, exit_status
from agent.cli.format import copy_output
from agent.cli.limit_flags import add_limit_flags, limits_body


def _build_run(r) -> None:
    r.add_argument("-d", "--detach", action="store_true", help="start it in the background and print its id")
    r.add_argument("--rm", action="store_true", help="remove it once it exited")
    r.add_argument("--name", type=flags.name, help="container name (default: generated)")
    add_limit_flags(r)
    r.add_argument("--restart", type=flags.restart, metavar="POLICY", help="no (default), always, on-failure[:N]")
    r.add_argument("-l", "--label", action="append", type=flags.pair("a label"), metavar="K=V", default=[],
                   help="label KEY=VALUE (repeatable)")
    r.add_argument("-e", "--env", action="append", type=flags.pair("an environment variable"), metavar="K=V",
                   default=[], help="environment variable KEY=VALUE, or KEY to copy it from here (repeatable)")
    r.add_argument("-w", "--workdir", metavar="DIR", help="working directory inside the container")
    r.add_argument("-u", "--user", metavar="UID[:GID]", help="user (and group) to run as, by number or name")
    r.add_argument("--hostname", metavar="NAME", help="host name in its UTS namespace")
    r.add_argument("-i", "--interactive", action="store_true",
                   help="forward stdin to the container (an attached run; its end is the container's EOF)")
    r.add_argument("-t", "--tty", action="store_true",
                   help="PID 1 on a terminal of the container's own /dev/pts (with --rootfs, --bundle or --image); "
                        "attached: this terminal's size passed on, raw mode with -i")
    detachkeys.add_flag(r)
    src = r.add_mutually_exclusive_group()
    src.add_argument("--rootfs", type=flags.directory, metavar="DIR",
                     help="root filesystem directory (default: the host's /)")
    src.add_argument("--bundle", type=flags.directory, metavar="DIR", help="OCI bundle directory (config.json)")
    images.add_run_flags(r, src)
    r.add_argument("-v", "--volume", action="append", type=flags.volume, metavar="SRC:DST[:ro]", default=[],
                   help="bind-mount host path SRC at DST, read-only with :ro (repeatable)")
    network.add_run_flags(r)  # --network, --ip, -p, --egress-allow, --egress-rate, --ingress-rate, --dns, --add-host
    r.add_argument("--cap-add", action="append", type=flags.capability, metavar="CAP", default=[],
                   help="add a capability (Docker's names, with or without CAP_, or ALL); "
                        "NET_RAW is left out by default on the host's network")
    r.add_argument("--cap-drop", action="append", type=flags.capability, metavar="CAP", default=[],
                   help="drop a capability (or ALL)")
    r.add_argument("--userns", choices=("auto", "host"),
                   help="user namespace: auto (default with --rootfs/--bundle/--image: container ids 0..65535 map "
                        "to 65536 host ids of the agent's own; root inside is not root outside) or host (the "
                        "host's ids: container root is host root; always so on the host's root)")
    r.add_argument("--device", action="append", type=flags.device, metavar="/dev/X[:/dev/Y][:rwm]", default=[],
                   help="grant a host device (Docker's syntax); others are denied by the device filter")
    r.add_argument("--read-only", action="store_true",
                   help="its root read-only (with --rootfs, --bundle or --image); write into --tmpfs or volumes")
    r.add_argument("--tmpfs", action="append", type=flags.tmpfs, metavar="DST[:OPTIONS]", default=[],
                   help="a fresh tmpfs at DST (Docker's options: size=, mode=, uid=, gid=, ro, exec, suid; "
                        "nosuid,nodev,noexec by default)")
    r.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]", help="command to run")


def cmd_run(args, client) -> int:
    argv = list(args.argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv and not args.bundle and not args.image:
        raise UsageError("run: give the command after --, e.g. agentctl run -- /bin/echo hi")
    if args.interactive and args.detach:
        raise UsageError("run -i: not with -d (nobody would write to its stdin); run it attached")
    name = args.name or "c-" + os.urandom(4).hex()
    body = {"name": name, "argv": argv or None, "env": args.env or None, "labels": args.label or None,
            "workdir": args.workdir, "user": args.user, "hostname": args.hostname, "rootfs": args.rootfs,
            "bundle": args.bundle, "volumes": args.volume or None, "network": args.network, "userns": args.userns,
            "limits": limits_body(args) or None, "restart": args.restart, "rm": args.rm or None,
            "cap_add": args.cap_add or None, "cap_drop": args.cap_drop or None,
            "detach": args.detach, "devices": args.device or None,
            "read_only": args.read_only or None, "tmpfs": args.tmpfs or None, "tty": args.tty or None}
    body = {k: v for k, v in body.items() if v is not None}
    if args.tty:
        exec_verb.add_console_size(body)
    network.run_body(args, body)
    images.run_body(args, client, body)
    if args.detach:
        info = client.call("POST", "/v1/containers", body=body)
        print(info.get("id") or info.get("name"))
        return EXIT_OK
    if args.interactive or args.tty:  # stdin, the terminal's size: on the same connection (agent/cli/exec.py)
        if args.interactive:
            body["stdin"] = True
        return attach(client, name, exec_verb.stream_with_input(
            client, "POST", "/v1/containers", body, args.interactive, args.tty, args.detach_keys,
            raw=args.interactive))
    return attach(client, name, client.stream("POST", "/v1/containers", body=body))


def attach(client, name: str, frames) -> int:
    """Copy a run stream to stdout/stderr; forward SIGINT/SIGTERM/SIGHUP to the container."""
    import signal

    def forward(signum, frame):
        try:
            client.call("POST", f"/v1/containers/{name}/kill", {"signal": str(signum)})
        except Exception:  # noqa: BLE001 - best effort, like docker's sig-proxy
            pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    status = None
    try:
        for ev in copy_output(frames):  # (-it: the detach keys end it, the container runs on)
            if ev.get("event") == "exited":
                if ev.get("oom_killed"):
                    print(f"agentctl: container {name} was OOM killed", file=sys.stderr)
                # read on to the end of the stream: with --rm, agentd removes the
                # container before it ends the stream, so once run returns it is gone
                status = exit_status(ev)
            if ev.get("event") == "error":
                print(f"agentctl: error: {ev.get('error')}", file=sys.stderr)
                return EXIT_FAIL
    except detachkeys.Detached:
        return exec_verb.detached()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if status is not None:
        return status
    print(f"agentctl: the output stream of {name} ended before it exited (agentd stopped?)", file=sys.stderr)
    return EXIT_FAIL


VERBS = {"run": ("create and start a container", False, _build_run, cmd_run)}
