"""agentctl: command-line client of the agent's control API.

Exit status: 0 ok, 1 failure (the agent said no, the container failed, the
socket is unreachable), 2 bad usage (a malformed flag, found here or by the
server's 400). `run` without -d exits with the container's exit code
(128 + signal number when a signal ended it), as `docker run` does; when
the program cannot be executed, 127 (not found) or 126 (not executable),
as shells do.

Starts fast: only argparse, json and the small socket client are imported
up front; runtime.limits (flag checks), the stats view and `usage` are
imported by the commands that need them.

Docker's verbs (start, restart, wait, pause, unpause, update) and Docker's
limit flags live in agent/cli_docker.py; output shaping (RFC 3339 times,
--format templates, ps --filter) in agent/cli_format.py. Global options
(--socket, --host, --json) are accepted before or after the subcommand;
--host ssh://... reaches another host's agent over OpenSSH (agent/ssh_transport.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from agent import cli_images
from agent import cli_network
from agent import cli_checkpoint
from agent import cli_docker
from agent import cli_exec
from agent import cli_ops
from agent import cli_system
from agent.cli_errors import UsageError  # noqa: F401  (the verb modules raise it as cli.UsageError)
from agent.rules import NAME_RE, RESTART_RE  # pure: re only

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
EXEC_EXIT = {"exec_not_found": 127, "exec_not_executable": 126}  # the API error's "reason"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of usage + error."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


# -- flag value checks (argparse `type=` callables: raise -> exit 2) -----------


def _name(value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a container name; use [a-zA-Z0-9][a-zA-Z0-9_.-]{{0,62}} (no / and no ..)")
    return value


def _limit(key: str, parser_name: str):
    """A type= callable that checks a limit with runtime.limits and keeps the user's text."""

    def check(value: str) -> str:
        from runtime import limits as rl
        from runtime.errors import LimitError

        try:
            getattr(rl, parser_name)(value, key)
        except LimitError as e:
            raise argparse.ArgumentTypeError(f'"{value}" {e.accepted}') from None
        return value

    check.__name__ = key  # argparse names the type in its messages
    return check


def _pair(what: str):
    def check(value: str) -> str:
        key, sep, _ = value.partition("=")
        if not key or "\n" in value or "\0" in value:
            raise argparse.ArgumentTypeError(f"{value!r} is not {what}; use KEY=VALUE")
        if not sep:
            if what == "an environment variable":  # -e NAME takes NAME from this environment, as docker does
                if key not in os.environ:
                    raise argparse.ArgumentTypeError(f"{key!r} has no =VALUE and is not set here; use KEY=VALUE")
                return f"{key}={os.environ[key]}"
            raise argparse.ArgumentTypeError(f"{value!r} is not {what}; use KEY=VALUE")
        return value

    check.__name__ = what
    return check


def _capability(value: str) -> str:
    from runtime.caps import CapabilityError, normalize_changes
    try:
        return normalize_changes([value], "capability")[0]
    except CapabilityError as e:
        raise argparse.ArgumentTypeError(str(e).replace("capability[0]: ", "")) from None


def _volume(value: str) -> str:
    parts = value.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1] or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise argparse.ArgumentTypeError(f"{value!r} is not a volume; use SRC:DST or SRC:DST:ro")
    if not parts[1].startswith("/"):
        raise argparse.ArgumentTypeError(f"{value!r}: the destination must be an absolute path inside the container")
    if not parts[0].startswith("/"):  # relative host paths are relative to where agentctl runs, not agentd
        parts[0] = os.path.abspath(parts[0])
    return ":".join(parts)


def _device(value: str) -> str:
    from agent.spec import split_device  # Docker's syntax, parsed in one place
    try:
        split_device(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def _tmpfs(value: str) -> str:
    from runtime.tmpfs import TmpfsError, parse  # Docker's syntax, parsed in one place
    try:
        parse(value, "--tmpfs")
    except TmpfsError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def _restart(value: str) -> str:
    if not RESTART_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a restart policy; use no, always, on-failure or on-failure:N")
    return value


def _seconds(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        f = -1.0
    if not (0 <= f <= 86400 * 365):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds >= 0")
    return f


def _signal(value: str) -> str:
    from runtime.rules import signal_number  # the one signal rule (the daemon checks it again)

    try:
        signal_number(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    text = value.strip()
    if text.isdigit():
        return text
    name = text.upper()
    return name[3:] if name.startswith("SIG") else name


def _dir(value: str) -> str:
    if not value:
        raise argparse.ArgumentTypeError("must not be empty")
    return os.path.abspath(value)


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


def _add_limit_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("limits")
    for flag, key, checker, help_text in LIMIT_FLAGS:
        g.add_argument(flag, dest="limit_" + key, metavar="VALUE", type=_limit(key, checker), help=help_text)
    g.add_argument("--io-max", dest="limit_io_max", metavar="DEV:KEY=VAL,...", action="append",
                   type=_limit("io_max", "parse_io_max"),
                   help="IO rate limit, io.max (e.g. /dev/vda:rbps=10M,wiops=100); repeatable")
    cli_docker.add_limit_flags(g)


def _limits_body(args) -> dict:
    out = {}
    for key, value in vars(args).items():
        if key.startswith("limit_") and value is not None:
            out[key[len("limit_"):]] = value
    cli_docker.docker_limits(args, out)
    return out


# -- the parser ---------------------------------------------------------------
#
# One builder per subcommand. build_parser() builds in full only the one the
# command line names (argparse costs ~2 ms per subcommand, ~20 ms for all):
# the others get a stub that lists their name and help. With no command
# named (agentctl --help, tests), every one is built.


def _build_run(r) -> None:
    r.add_argument("-d", "--detach", action="store_true", help="start it in the background and print its id")
    r.add_argument("--rm", action="store_true", help="remove it once it exited")
    r.add_argument("--name", type=_name, help="container name (default: generated)")
    _add_limit_flags(r)
    r.add_argument("--restart", type=_restart, metavar="POLICY", help="no (default), always, on-failure[:N]")
    r.add_argument("-l", "--label", action="append", type=_pair("a label"), metavar="K=V", default=[],
                   help="label KEY=VALUE (repeatable)")
    r.add_argument("-e", "--env", action="append", type=_pair("an environment variable"), metavar="K=V", default=[],
                   help="environment variable KEY=VALUE, or KEY to copy it from here (repeatable)")
    r.add_argument("-w", "--workdir", metavar="DIR", help="working directory inside the container")
    r.add_argument("-u", "--user", metavar="UID[:GID]", help="user (and group) to run as, by number or name")
    r.add_argument("--hostname", metavar="NAME", help="host name in its UTS namespace")
    r.add_argument("-i", "--interactive", action="store_true",
                   help="forward stdin to the container (an attached run; its end is the container's EOF)")
    src = r.add_mutually_exclusive_group()
    src.add_argument("--rootfs", type=_dir, metavar="DIR", help="root filesystem directory (default: the host's /)")
    src.add_argument("--bundle", type=_dir, metavar="DIR", help="OCI bundle directory (config.json)")
    cli_images.add_run_flags(r, src)
    r.add_argument("-v", "--volume", action="append", type=_volume, metavar="SRC:DST[:ro]", default=[],
                   help="bind-mount host path SRC at DST, read-only with :ro (repeatable)")
    cli_network.add_run_flags(r)  # --network, --ip, -p, --egress-allow, --egress-rate, --ingress-rate, --dns, --add-host
    r.add_argument("--cap-add", action="append", type=_capability, metavar="CAP", default=[],
                   help="add a capability (Docker's names, with or without CAP_, or ALL); "
                        "NET_RAW is left out by default on the host's network")
    r.add_argument("--cap-drop", action="append", type=_capability, metavar="CAP", default=[],
                   help="drop a capability (or ALL)")
    r.add_argument("--userns", choices=("auto", "host"),
                   help="user namespace: auto (default with --rootfs/--bundle/--image: container ids 0..65535 map "
                        "to 65536 host ids of the agent's own; root inside is not root outside) or host (the "
                        "host's ids: container root is host root; always so on the host's root)")
    r.add_argument("--device", action="append", type=_device, metavar="/dev/X[:/dev/Y][:rwm]", default=[],
                   help="grant a host device (Docker's syntax); others are denied by the device filter")
    r.add_argument("--read-only", action="store_true",
                   help="its root read-only (with --rootfs, --bundle or --image); write into --tmpfs or volumes")
    r.add_argument("--tmpfs", action="append", type=_tmpfs, metavar="DST[:OPTIONS]", default=[],
                   help="a fresh tmpfs at DST (Docker's options: size=, mode=, uid=, gid=, ro, exec, suid; "
                        "nosuid,nodev,noexec by default)")
    r.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]", help="command to run")


FORMAT_HELP = "json (one object per line), table, table TEMPLATE or TEMPLATE such as '{{.Name}} {{.State}}' (docs/cli.md)"


def _tail(value: str):
    if value == "all":
        return None
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of lines; use N >= 0 or all")
    return int(value)


def _build_ps(p) -> None:
    p.add_argument("-a", "--all", action="store_true", help="include containers that are not running")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the names")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="name=, id=, label=KEY[=VALUE] or status=STATE (repeatable; status implies -a)")
    p.add_argument("--format", metavar="FORMAT", help=FORMAT_HELP)


def _build_named(p) -> None:
    p.add_argument("name", metavar="NAME", help="container name")


def _build_inspect(p) -> None:
    p.add_argument("--format", metavar="TEMPLATE", help="print TEMPLATE such as '{{.State}} {{.Pid}}' (docs/cli.md)")
    p.add_argument("name", metavar="NAME", help="container name")


def _build_logs(p) -> None:
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the container exits")
    p.add_argument("-n", "--tail", type=_tail, metavar="N", help="only the last N lines of each stream (default: all)")
    p.add_argument("--since", metavar="T", help="only lines from T: a duration ago (10m), RFC 3339 or epoch seconds")
    p.add_argument("-t", "--timestamps", action="store_true",
                   help="prefix each line with the RFC 3339 time it arrived")
    p.add_argument("name", metavar="NAME", help="container name")


def _build_stop(p) -> None:
    p.add_argument("-t", "--time", type=_seconds, metavar="SECONDS", help="grace period (default: the agent's stop_timeout)")
    p.add_argument("name", metavar="NAME", help="container name")


def _build_kill(p) -> None:
    p.add_argument("-s", "--signal", type=_signal, default="KILL", help="name or number (default KILL)")
    p.add_argument("name", metavar="NAME", help="container name")


def _build_rm(p) -> None:
    p.add_argument("-f", "--force", action="store_true", help="kill it first if it runs")
    p.add_argument("name", metavar="NAME", help="container name")


def _build_limit(p) -> None:
    p.add_argument("name", metavar="NAME", help="container name")
    _add_limit_flags(p)


def _build_stats(p) -> None:
    p.add_argument("name", nargs="?", metavar="NAME", help="one container (default: all running ones)")
    p.add_argument("--no-stream", action="store_true", help="print once and exit")
    p.add_argument("-a", "--all", action="store_true", help="include containers that are not running")


def _command_in(argv: list[str]) -> str | None:
    """The subcommand word in argv (skipping global options), without parsing."""
    it = iter(argv)
    for a in it:
        if a in GLOBAL_VALUE_OPTIONS:
            next(it, None)
        elif a.startswith("-"):
            continue
        else:
            return a
    return None


# name -> (help, has --json, builder)
SUBCOMMANDS = {
    "run": ("create and start a container", False, _build_run),
    "ps": ("list containers", True, _build_ps),
    "inspect": ("show a container as JSON", True, _build_inspect),
    "logs": ("print a container's output", True, _build_logs),
    "stop": ("stop a container: SIGTERM, then cgroup.kill after the grace period", True, _build_stop),
    "kill": ("send a signal to a container", True, _build_kill),
    "rm": ("remove a container", True, _build_rm),
    "limit": ("change a running container's limits; shows what the kernel holds", True, _build_limit),
    "freeze": ("freeze a container (cgroup.freeze)", True, _build_named),
    "thaw": ("thaw a frozen container", True, _build_named),
    "stats": ("live resource usage: CPU, memory, IO, pids, throttling", True, _build_stats),
}
USAGE_HELP = "billing usage records: totals, CSV, JSON lines, FOCUS (see agentctl usage --help)"
GLOBAL_VALUE_OPTIONS = ("--socket", "--host")
SOCKET_HELP = "control socket (default: $AGENT_SOCKET or /run/cgroup-agent/agent.sock)"
JSON_HELP = "print one JSON document instead of text (times in RFC 3339 UTC)"
HOST_HELP = ("the agent of another host, over OpenSSH: ssh://[USER@]HOST[:PORT] (default: $AGENT_HOST, "
             "else this host's socket)")


def _add_global_options(sp, json_flag: bool) -> None:
    """Global options again after the subcommand (SUPPRESS: given only before, they keep their value)."""
    sp.add_argument("--socket", metavar="PATH", default=argparse.SUPPRESS, help=SOCKET_HELP)
    sp.add_argument("--host", metavar="URL", default=argparse.SUPPRESS, help=HOST_HELP)
    if json_flag:
        sp.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)


def build_parser(argv: list[str] | None = None, full: bool = False) -> Parser:
    """The parser for argv's subcommand (others are stubs); full=True builds every one (completion)."""
    p = Parser(prog="agentctl", description="Drive cgroup-agent (agentd) over its control socket.",
               epilog="Exit status: 0 ok, 1 failure, 2 bad usage. `run` without -d exits with the container's status; "
                      "127/126 when its program is not found / not executable.")
    p.add_argument("--socket", metavar="PATH", help=SOCKET_HELP)
    p.add_argument("--host", metavar="URL", help=HOST_HELP)
    p.add_argument("--json", action="store_true", help=JSON_HELP + " (for the commands that read)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    chosen = _command_in(sys.argv[1:] if argv is None else argv)
    build_all = full or (chosen not in SUBCOMMANDS and chosen != "usage")
    for name, (help_text, json_flag, build) in SUBCOMMANDS.items():
        if not build_all and name != chosen:
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        sp = sub.add_parser(name, help=help_text, description=help_text)
        _add_global_options(sp, json_flag)
        build(sp)
    # `usage` belongs to the billing side (agent/cli_usage.py): imported only when named.
    if chosen == "usage" or full:
        import agent.cli_usage as cli_usage

        _add_global_options(cli_usage.add_parser(sub), True)
    else:
        sub.add_parser("usage", help=USAGE_HELP, add_help=False)
    # `budget` too (agent/cli_budget.py)
    import agent.cli_budget as cli_budget
    if chosen == "budget":
        cli_budget.add_parser(sub)
    else:
        sub.add_parser("budget", help=cli_budget.HELP, add_help=False)
    return p


# -- output helpers -----------------------------------------------------------


def _print_json(obj) -> None:
    from agent.cli_format import with_rfc3339

    print(json.dumps(with_rfc3339(obj), indent=2, sort_keys=True))


def _status(c: dict) -> str:
    if c.get("oom_killed") and c.get("state") in ("exited", "restarting"):
        return "OOM killed"
    if c.get("exit_signal"):
        try:
            import signal

            return f"signal {signal.Signals(c['exit_signal']).name}"
        except ValueError:
            return f"signal {c['exit_signal']}"
    if c.get("exit_code") is not None and c.get("state") != "running":
        return f"exit {c['exit_code']}"
    return ""


def table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells)


def exit_status(event: dict) -> int:
    """The exit status `run` returns for the container's final state (docker run's convention)."""
    if event.get("exit_code") is not None:
        return int(event["exit_code"])
    if event.get("exit_signal"):
        return 128 + int(event["exit_signal"])
    return EXIT_FAIL


def _write(fd_stream, data: bytes) -> None:
    fd_stream.buffer.write(data)
    fd_stream.flush()


# -- commands ----------------------------------------------------------------


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
            "limits": _limits_body(args) or None, "restart": args.restart, "rm": args.rm or None,
            "cap_add": args.cap_add or None, "cap_drop": args.cap_drop or None,
            "detach": args.detach, "devices": args.device or None,
            "read_only": args.read_only or None, "tmpfs": args.tmpfs or None}
    body = {k: v for k, v in body.items() if v is not None}
    cli_network.run_body(args, body)
    cli_images.run_body(args, client, body)
    if args.detach:
        info = client.call("POST", "/v1/containers", body=body)
        print(info.get("id") or info.get("name"))
        return EXIT_OK
    if args.interactive:  # its stdin forwarded on the same connection (agent/cli_exec.py)
        body["stdin"] = True
        return _attach(client, name, cli_exec.stream_with_input(client, "POST", "/v1/containers", body, True))
    return _attach(client, name, client.stream("POST", "/v1/containers", body=body))


def _attach(client, name: str, frames) -> int:
    """Copy a run stream to stdout/stderr; forward SIGINT/SIGTERM/SIGHUP to the container."""
    import signal

    from agent.client import EVENT, STDERR, STDOUT

    def forward(signum, frame):
        try:
            client.call("POST", f"/v1/containers/{name}/kill", {"signal": str(signum)})
        except Exception:  # noqa: BLE001 - best effort, like docker's sig-proxy
            pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    status = None
    try:
        for stream, data in frames:
            if stream == STDOUT:
                _write(sys.stdout, data)
            elif stream == STDERR:
                _write(sys.stderr, data)
            elif stream == EVENT:
                ev = json.loads(data)
                if ev.get("event") == "exited":
                    if ev.get("oom_killed"):
                        print(f"agentctl: container {name} was OOM killed", file=sys.stderr)
                    # read on to the end of the stream: with --rm, agentd removes the
                    # container before it ends the stream, so once run returns it is gone
                    status = exit_status(ev)
                if ev.get("event") == "error":
                    print(f"agentctl: error: {ev.get('error')}", file=sys.stderr)
                    return EXIT_FAIL
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if status is not None:
        return status
    print(f"agentctl: the output stream of {name} ended before it exited (agentd stopped?)", file=sys.stderr)
    return EXIT_FAIL


def _ps_view(c: dict) -> dict:
    """A container as `ps --format` templates see it: the API's fields (times in RFC 3339)
    plus Docker's names for what ps shows (Names, Status, Command, Restarts)."""
    from agent.cli_format import with_rfc3339

    view = with_rfc3339(c)
    view.update(names=c["name"], status=_status(c) or c.get("state"), command=" ".join(c.get("argv") or ()),
                restarts=c.get("restart_count", 0))
    return view


def cmd_ps(args, client) -> int:
    from agent.cli_format import check, matches, parse_filters, render, rfc3339

    filters = parse_filters(args.filter)  # FormatError (exit 2) before asking the agent
    if args.format:
        check(args.format)
    show_all = args.all or "status" in filters
    items = [c for c in client.call("GET", "/v1/containers", {"all": "1" if show_all else "0"})
             if matches(filters, c)]
    if args.quiet:
        for c in items:
            print(c["name"])
        return EXIT_OK
    if args.json:
        _print_json(items)
        return EXIT_OK

    def plain() -> str:
        rows = [[c["name"], c["id"], c["state"], c.get("pid") or "-", _status(c) or "-", c.get("restart_count", 0),
                 rfc3339(c.get("created_at")) or "-", c.get("image") or "/"] for c in items]
        return table(["NAME", "ID", "STATE", "PID", "STATUS", "RESTARTS", "CREATED", "IMAGE"], rows)

    if args.format:
        sys.stdout.write(render(args.format, [_ps_view(c) for c in items], plain, table))
    else:
        print(plain())
    return EXIT_OK


def cmd_inspect(args, client) -> int:
    from agent.cli_format import Template, with_rfc3339

    template = Template(args.format) if args.format and not args.json else None
    info = client.call("GET", f"/v1/containers/{args.name}")
    if template is not None:
        print(template.render(with_rfc3339(info)))
        return EXIT_OK
    _print_json(info)
    return EXIT_OK


def _done(args, info) -> int:
    if getattr(args, "json", False):
        _print_json(info)
    else:
        print(args.name)
    return EXIT_OK


def cmd_stop(args, client) -> int:
    q = {"timeout": args.time} if args.time is not None else None
    return _done(args, client.call("POST", f"/v1/containers/{args.name}/stop", q))


def cmd_kill(args, client) -> int:
    return _done(args, client.call("POST", f"/v1/containers/{args.name}/kill", {"signal": args.signal}))


def cmd_rm(args, client) -> int:
    from agent.client import ApiError

    try:
        info = client.call("DELETE", f"/v1/containers/{args.name}", {"force": "1" if args.force else "0"})
    except ApiError as e:
        if e.status == 409 and not args.force and "stop it first" in e.message:  # name the flag
            raise ApiError(409, f"{e.message}: agentctl rm -f {args.name}", e.reason) from None
        raise
    return _done(args, info)


def cmd_freeze(args, client) -> int:
    return _done(args, client.call("POST", f"/v1/containers/{args.name}/freeze"))


def cmd_thaw(args, client) -> int:
    return _done(args, client.call("POST", f"/v1/containers/{args.name}/thaw"))


def cmd_logs(args, client) -> int:
    from agent.client import STDERR, STDOUT

    q = {}
    if args.since is not None:  # times from the launcher's index (agent/logtimes.py)
        import time

        q["since"] = repr(cli_ops.when("--since", args.since, time.time()))
    if args.timestamps:
        q["timestamps"] = "1"
    if args.follow:
        q["follow"] = "1"
    if args.tail is not None:
        q["tail"] = str(args.tail)
    first = True
    for stream, data in client.stream("GET", f"/v1/containers/{args.name}/logs", q or None):
        if args.json:  # one JSON array, written as it grows (valid once the stream ends)
            label = {STDOUT: "stdout", STDERR: "stderr"}.get(stream, "event")
            item = json.dumps({"stream": label, "data": data.decode("utf-8", "replace")})
            sys.stdout.write(("[\n  " if first else ",\n  ") + item)
            sys.stdout.flush()
            first = False
        elif stream == STDOUT:
            _write(sys.stdout, data)
        elif stream == STDERR:
            _write(sys.stderr, data)
    if args.json:
        print("[]" if first else "\n]")
    return EXIT_OK


def describe_limits(doc: dict) -> list[tuple[str, str]]:
    """Limits JSON (runtime Limits.to_json) -> (field, human value) lines."""
    try:
        from runtime.limits import Limits

        return sorted(Limits.from_json(doc).describe().items())
    except Exception:  # noqa: BLE001 - show the raw values rather than nothing
        return sorted((k, json.dumps(v) if not isinstance(v, str) else v) for k, v in doc.items())


def cmd_limit(args, client) -> int:
    body = _limits_body(args)
    if body:
        held = client.call("PATCH", f"/v1/containers/{args.name}/limits", body=body)
    else:  # no flags: show what is applied
        held = client.call("GET", f"/v1/containers/{args.name}").get("limits") or {}
    if args.json:
        _print_json(held)
        return EXIT_OK
    lines = describe_limits(held)
    if not lines:
        print(f"{args.name}: no limits set")
    for k, v in lines:
        print(f"{k}: {v}")
    return EXIT_OK


def cmd_stats(args, client) -> int:
    from agent import stats_view

    path = f"/v1/containers/{args.name}/stats" if args.name else "/v1/stats"
    query = None if args.name else {"all": "1" if args.all else "0"}
    return stats_view.run(lambda: client.call("GET", path, query), stream=not args.no_stream,
                          as_json=args.json, out=sys.stdout)


def cmd_usage(args, client) -> int:
    import agent.cli_usage as cli_usage

    if args.json:  # the API's answer as one JSON document
        _print_json(client.call("GET", "/v1/usage", cli_usage.query_params(args)))
        return EXIT_OK
    rc = cli_usage.run(args, client)
    return EXIT_OK if rc is None else rc


def cmd_budget(args, client) -> int:
    import agent.cli_budget as cli_budget

    return cli_budget.run(args, client)


COMMANDS = {"run": cmd_run, "ps": cmd_ps, "inspect": cmd_inspect, "logs": cmd_logs, "stop": cmd_stop,
            "kill": cmd_kill, "rm": cmd_rm, "limit": cmd_limit, "freeze": cmd_freeze, "thaw": cmd_thaw,
            "stats": cmd_stats, "usage": cmd_usage}
cli_images.install(sys.modules[__name__])  # pull, images, rmi, image, login, logout
cli_network.install(sys.modules[__name__])  # network create, ls, rm, inspect
cli_docker.install(sys.modules[__name__])  # start, restart, wait, pause, unpause, update
COMMANDS["budget"] = cmd_budget
cli_system.install(sys.modules[__name__])  # system info, df, prune, dial-stdio
cli_exec.install(sys.modules[__name__])  # exec
cli_ops.install(sys.modules[__name__])  # cp, top, events
cli_checkpoint.install(sys.modules[__name__])  # checkpoint, restore


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.json and args.command in SUBCOMMANDS and not SUBCOMMANDS[args.command][1]:
        print(f"agentctl: error: {args.command} has no --json output; --json is for the commands that read "
              "(ps, inspect, logs, stats, usage, ...)", file=sys.stderr)
        return EXIT_USAGE
    from agent.cli_format import FormatError
    from agent.client import ApiError, Client, ConnectError, ProtocolError

    try:
        # dial-stdio is the remote end of --host: always this host's socket
        local = args.command == "system" and args.system_command == "dial-stdio"
        client = Client(args.socket, host=None if local else args.host) if not local else None
        return COMMANDS[args.command](args, client)
    except (UsageError, FormatError) as e:
        print(f"agentctl: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ApiError as e:
        if e.status == 403:
            print(f"agentctl: {e.message}" if e.message.startswith("permission denied")
                  else f"agentctl: permission denied: {e.message}", file=sys.stderr)
            return EXIT_FAIL
        print(f"agentctl: error: {e.message}", file=sys.stderr)
        if e.reason in EXEC_EXIT:  # as shells and docker run do
            return EXEC_EXIT[e.reason]
        return EXIT_USAGE if e.status == 400 else EXIT_FAIL
    except (ConnectError, ProtocolError) as e:
        print(f"agentctl: {e}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # agentctl ps | head
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
