"""agentctl's verbs on existing containers: ps, inspect, logs, stop, kill,
rm, limit, freeze, thaw and stats (`run` is agent/cli/run.py; Docker's
names for some of these, agent/cli/docker.py).

    ps [-a] [-q] [--filter K=V] [--format F]   GET /v1/containers
    inspect [--format T] NAME                  GET /v1/containers/NAME
    logs [-f] [-n N] [--since T] [-t] NAME     GET /v1/containers/NAME/logs (a stream)
    stop [-t S] | kill [-s SIG] | rm [-f] | freeze | thaw NAME
    limit NAME [limit flags]                   PATCH /v1/containers/NAME/limits (no flags: show them)
    stats [NAME] [--no-stream] [-a]            GET /v1/stats (agent/cli/stats_view.py draws the table)
"""
from __future__ import annotations

import json
import sys

from agent.cli import flags
from agent.cli.errors import EXIT_OK
from agent.cli.format import print_json, table, write
from agent.cli.limit_flags import add_limit_flags, limits_body
from agent.cli.ops import when

FORMAT_HELP = "json (one object per line), table, table TEMPLATE or TEMPLATE such as '{{.Name}} {{.State}}' (docs/cli.md)"


# -- parsers ------------------------------------------------------------------


def _build_ps(p) -> None:
    p.add_argument("-a", "--all", action="store_true", help="include containers that are not running")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the names")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="name=, id=, label=KEY[=VALUE] or status=STATE (repeatable; status implies -a)")
    p.add_argument("--format", metavar="FORMAT", help=FORMAT_HELP)


def build_named(p) -> None:
    p.add_argument("name", metavar="NAME", help="container name")


def _build_inspect(p) -> None:
    p.add_argument("--format", metavar="TEMPLATE", help="print TEMPLATE such as '{{.State}} {{.Pid}}' (docs/cli.md)")
    p.add_argument("name", metavar="NAME", help="container name")


def _build_logs(p) -> None:
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the container exits")
    p.add_argument("-n", "--tail", type=flags.tail, metavar="N",
                   help="only the last N lines of each stream (default: all)")
    p.add_argument("--since", metavar="T", help="only lines from T: a duration ago (10m), RFC 3339 or epoch seconds")
    p.add_argument("-t", "--timestamps", action="store_true",
                   help="prefix each line with the RFC 3339 time it arrived")
    p.add_argument("name", metavar="NAME", help="container name")


def _build_stop(p) -> None:
    p.add_argument("-t", "--time", type=flags.seconds, metavar="SECONDS",
                   help="grace period (default: the agent's stop_timeout)")
    p.add_argument("name", metavar="NAME", help="container name")


def _build_kill(p) -> None:
    p.add_argument("-s", "--signal", type=flags.signal_name, default="KILL", help="name or number (default KILL)")
    p.add_argument("name", metavar="NAME", help="container name")


def _build_rm(p) -> None:
    p.add_argument("-f", "--force", action="store_true", help="kill it first if it runs")
    p.add_argument("name", metavar="NAME", help="container name")


def build_limit(p) -> None:
    p.add_argument("name", metavar="NAME", help="container name")
    add_limit_flags(p)


def _build_stats(p) -> None:
    p.add_argument("name", nargs="?", metavar="NAME", help="one container (default: all running ones)")
    p.add_argument("--no-stream", action="store_true", help="print once and exit")
    p.add_argument("-a", "--all", action="store_true", help="include containers that are not running")


# -- commands -----------------------------------------------------------------


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


def _ps_view(c: dict) -> dict:
    """A container as `ps --format` templates see it: the API's fields (times in RFC 3339)
    plus Docker's names for what ps shows (Names, Status, Command, Restarts)."""
    from agent.cli.format import with_rfc3339

    view = with_rfc3339(c)
    view.update(names=c["name"], status=_status(c) or c.get("state"), command=" ".join(c.get("argv") or ()),
                restarts=c.get("restart_count", 0))
    return view


def cmd_ps(args, client) -> int:
    from agent.cli.format import check, matches, parse_filters, render, rfc3339

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
        print_json(items)
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
    from agent.cli.format import Template, with_rfc3339

    template = Template(args.format) if args.format and not args.json else None
    info = client.call("GET", f"/v1/containers/{args.name}")
    if template is not None:
        print(template.render(with_rfc3339(info)))
        return EXIT_OK
    print_json(info)
    return EXIT_OK


def done(args, info) -> int:
    """What a verb on one container prints: its name, or with --json the container."""
    if getattr(args, "json", False):
        print_json(info)
    else:
        print(args.name)
    return EXIT_OK


def cmd_stop(args, client) -> int:
    q = {"timeout": args.time} if args.time is not None else None
    return done(args, client.call("POST", f"/v1/containers/{args.name}/stop", q))


def cmd_kill(args, client) -> int:
    return done(args, client.call("POST", f"/v1/containers/{args.name}/kill", {"signal": args.signal}))


def cmd_rm(args, client) -> int:
    from agent.cli.client import ApiError

    try:
        info = client.call("DELETE", f"/v1/containers/{args.name}", {"force": "1" if args.force else "0"})
    except ApiError as e:
        if e.status == 409 and not args.force and "stop it first" in e.message:  # name the flag
            raise ApiError(409, f"{e.message}: agentctl rm -f {args.name}", e.reason) from None
        raise
    return done(args, info)


def cmd_freeze(args, client) -> int:
    return done(args, client.call("POST", f"/v1/containers/{args.name}/freeze"))


def cmd_thaw(args, client) -> int:
    return done(args, client.call("POST", f"/v1/containers/{args.name}/thaw"))


def cmd_logs(args, client) -> int:
    from agent.cli.client import STDERR, STDOUT

    q = {}
    if args.since is not None:  # times from the launcher's index (agent/logtimes.py)
        import time

        q["since"] = repr(when("--since", args.since, time.time()))
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
            write(sys.stdout, data)
        elif stream == STDERR:
            write(sys.stderr, data)
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
    body = limits_body(args)
    if body:
        held = client.call("PATCH", f"/v1/containers/{args.name}/limits", body=body)
    else:  # no flags: show what is applied
        held = client.call("GET", f"/v1/containers/{args.name}").get("limits") or {}
    if args.json:
        print_json(held)
        return EXIT_OK
    lines = describe_limits(held)
    if not lines:
        print(f"{args.name}: no limits set")
    for k, v in lines:
        print(f"{k}: {v}")
    return EXIT_OK


def cmd_stats(args, client) -> int:
    from agent.cli import stats_view

    path = f"/v1/containers/{args.name}/stats" if args.name else "/v1/stats"
    query = None if args.name else {"all": "1" if args.all else "0"}
    return stats_view.run(lambda: client.call("GET", path, query), stream=not args.no_stream,
                          as_json=args.json, out=sys.stdout)


# name -> (help, has --json, builder, command)
VERBS = {
    "ps": ("list containers", True, _build_ps, cmd_ps),
    "inspect": ("show a container as JSON", True, _build_inspect, cmd_inspect),
    "logs": ("print a container's output", True, _build_logs, cmd_logs),
    "stop": ("stop a container: SIGTERM, then cgroup.kill after the grace period", True, _build_stop, cmd_stop),
    "kill": ("send a signal to a container", True, _build_kill, cmd_kill),
    "rm": ("remove a container", True, _build_rm, cmd_rm),
    "limit": ("change a running container's limits; shows what the kernel holds", True, build_limit, cmd_limit),
    "freeze": ("freeze a container (cgroup.freeze)", True, build_named, cmd_freeze),
    "thaw": ("thaw a frozen container", True, build_named, cmd_thaw),
    "stats": ("live resource usage: CPU, memory, IO, pids, throttling", True, _build_stats, cmd_stats),
}
