"""agentctl's operator verbs: cp, top, events (agent/api/ops.py serves them).

    cp NAME:PATH HOSTPATH | HOSTPATH NAME:PATH   a file or a directory out of / into a running container
    top NAME                                     the processes of its cgroup
    events [--since T] [--until T] [--filter K=V] [--json]   the lifecycle stream
    rename OLD NEW                               a new name; id, cgroup, logs, billing stay
"""
from __future__ import annotations

import os
import re

from agent.cli.errors import EXIT_OK, UsageError
from agent.cli.format import print_json, table


CONTAINER_ARG = re.compile(r"^([a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}):(/.*)$")
EVENT_FILTERS = ("name", "id", "event")
POLL = 0.5      # seconds between two polls of a followed event stream


def _build_cp(p) -> None:
    p.add_argument("src", metavar="SRC", help="NAME:/path in a running container, or a host path")
    p.add_argument("dst", metavar="DST", help="a host path, or NAME:/path in a running container")


def _build_top(p) -> None:
    p.add_argument("name", help="container name or id")


def _build_rename(p) -> None:
    p.add_argument("old", metavar="OLD", help="container name or id")
    p.add_argument("new", metavar="NEW", help="its new name")


def cmd_rename(args, client) -> int:
    info = client.call("POST", f"/v1/containers/{args.old}/rename", body={"name": args.new})
    if args.json:
        print_json(info)
    return EXIT_OK


def _build_events(p) -> None:
    p.add_argument("--since", metavar="T", help="events from T: 10m (ago), RFC 3339, or epoch seconds "
                                                "(default: only new ones)")
    p.add_argument("--until", metavar="T", help="stop at T (same forms), instead of following")
    p.add_argument("--filter", action="append", default=[], metavar="K=V",
                   help="name=NAME, id=ID or event=EVENT (create, start, die, oom, stop, remove, ...); repeatable")


def when(flag: str, value: str, now: float) -> float:
    from datetime import datetime, timezone

    from agent.config import parse_duration

    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{flag} {value!r}: give a duration ago (10m, 2h), RFC 3339 "
                              "(2026-12-03T07:36:27Z) or epoch seconds") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def cmd_cp(args, client) -> int:
    src, dst = CONTAINER_ARG.match(args.src), CONTAINER_ARG.match(args.dst)
    if bool(src) == bool(dst):
        raise UsageError("cp: give exactly one side as NAME:/path in a container, e.g. "
                              "agentctl cp web:/etc/hosts ./hosts or agentctl cp ./conf web:/etc/app.conf")
    local = client.host is None
    # agentd copies into the destination when it is a directory there, else as it
    if src:
        name, cpath, hpath, direction = src.group(1), src.group(2), args.dst, "out"
    else:
        name, cpath, hpath, direction = dst.group(1), dst.group(2), args.src, "in"
    if local:
        hpath = os.path.abspath(hpath)
    elif not hpath.startswith("/"):
        raise UsageError(f"cp: {hpath!r}: with --host, give an absolute path on that host")
    r = client.call("POST", f"/v1/containers/{name}/cp",
                    body={"direction": direction, "container_path": cpath, "host_path": hpath})
    if args.json:
        print_json(r)
    return EXIT_OK


def cmd_top(args, client) -> int:
    doc = client.call("GET", f"/v1/containers/{args.name}/top")
    if args.json:
        print_json(doc)
        return EXIT_OK
    from agent.cli.format import rfc3339

    rows = [(p["user"], p["pid"], p["ppid"], rfc3339(p["started_at"]), f"{p['cpu_seconds']:.2f}s", p["rss_bytes"],
             " ".join(p["command"])) for p in doc["processes"]]
    print(table(["UID", "PID", "PPID", "STIME", "TIME", "RSS", "CMD"], rows, ragged_last=True))
    return EXIT_OK


def _event_filters(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in EVENT_FILTERS or not value:
            raise UsageError(f"--filter {item!r}: give {', '.join(k + '=...' for k in EVENT_FILTERS)}")
        out.setdefault(key, set()).add(value)
    return out


def cmd_events(args, client) -> int:
    import json
    import time

    from agent.cli.format import rfc3339

    filters = _event_filters(args.filter)
    now = time.time()
    since = when("--since", args.since, now) if args.since else None
    until = when("--until", args.until, now) if args.until else None
    if since is not None and until is not None and until < since:
        raise UsageError("--until: must not be before --since")
    seq = 0
    if since is None:               # only what happens from now on
        while batch := client.call("GET", "/v1/events", {"since": str(seq), "limit": "10000"}):
            seq = batch[-1]["seq"]
    while True:
        batch = client.call("GET", "/v1/events", {"since": str(seq), "limit": "1000"})
        for ev in batch:
            seq = ev["seq"]
            if since is not None and ev["at"] < since:
                continue
            if until is not None and ev["at"] > until:
                return EXIT_OK
            if any(ev.get(k) not in v for k, v in filters.items()):
                continue
            if args.json:
                print(json.dumps({**ev, "time": rfc3339(ev["at"])}), flush=True)
            else:
                detail = {k: v for k, v in ev.items() if k not in ("seq", "at", "id", "name", "kind", "event")}
                extra = "".join(f", {k}={v}" for k, v in detail.items())
                print(f"{rfc3339(ev['at'])} container {ev['event']} {ev['name']} (id={ev['id']}{extra})", flush=True)
        if not batch:
            if until is not None and time.time() > until:
                return EXIT_OK
            time.sleep(POLL)


VERBS = {
    "cp": ("copy a file or a directory between a running container and the host (resolved inside its root)", True,
           _build_cp, cmd_cp),
    "top": ("the processes of a container (its cgroup)", True, _build_top, cmd_top),
    "events": ("the containers' lifecycle events (create, start, die, oom, stop, remove, ...)", True,
               _build_events, cmd_events),
    "rename": ("give a container a new name (id, cgroup, logs and billing stay)", True, _build_rename, cmd_rename),
}
