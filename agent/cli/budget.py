"""`agentctl budget`: spend limits that act while the bill runs (agent/budgets.py).

    agentctl budget set NAME --match label:K=V|name:GLOB --limit AMOUNT
                        --per day|month|DURATION --action alert|throttle[:CPUS]|freeze|stop [--warn 50,80]
                        [--scope host|fleet]
    agentctl budget ls | inspect NAME | rm NAME

`set` creates or updates. The agent validates everything; a bad value exits
2 with one line naming the field.
"""
from __future__ import annotations

import json
import sys

from agent.cli.errors import UsageError
from agent.cli.format import table

HELP = "spend limits on containers: alert, throttle, freeze or stop when crossed"


VERBS = ("set", "ls", "inspect", "rm")
SET_FLAGS = ("match", "limit", "per", "action")


def add_parser(subparsers):
    p = subparsers.add_parser("budget", help=HELP, description=__doc__.split("\n\n")[1])
    p.add_argument("verb", choices=VERBS, metavar="set|ls|inspect|rm")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("--match", metavar="SEL", help="set: label:KEY=VALUE or name:GLOB")
    p.add_argument("--limit", metavar="AMOUNT", help="set: spend limit per window, in the ledger currency")
    p.add_argument("--per", metavar="WINDOW", help="set: day, month or a duration (1h, 7d)")
    p.add_argument("--action", metavar="ACTION", help="set: alert, throttle[:CPUS], freeze or stop")
    p.add_argument("--warn", metavar="PCTS", help="set: percents of the limit that log budget.warned, e.g. 50,80")
    p.add_argument("--scope", metavar="SCOPE", help="set: host (default) or fleet (spend of every host shipping "
                                                    "to the PostgreSQL table; this host acts on its own containers)")
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def run(args, client) -> int:

    cmd = args.verb
    if cmd != "ls" and not args.name:
        raise UsageError(f"budget {cmd}: NAME is missing")
    if cmd == "set":
        missing = [f"--{f}" for f in SET_FLAGS if getattr(args, f) is None]
        if missing:
            raise UsageError(f"budget set: {', '.join(missing)} missing; set needs --match, --limit, --per and --action")
        body = {"name": args.name, "match": args.match, "limit": args.limit, "per": args.per, "action": args.action}
        if args.warn:
            body["warn"] = args.warn
        if args.scope:
            body["scope"] = args.scope
        out = client.call("POST", "/v1/budgets", body=body)
    elif cmd == "ls":
        out = client.call("GET", "/v1/budgets")
        if not args.json:
            rows = [(b["name"], b["match"], b["spent"], f"{b['limit']} {b['currency']}", b["per"], b["action"],
                     ",".join(b["acted_on"]) or "-") for b in out["budgets"]]
            print(table(["NAME", "MATCH", "SPENT", "LIMIT", "PER", "ACTION", "ACTED ON"], rows))
            return 0
    elif cmd == "inspect":
        out = client.call("GET", f"/v1/budgets/{args.name}")
    else:
        out = client.call("DELETE", f"/v1/budgets/{args.name}")
    if cmd in ("set", "rm") and not args.json:
        print(out["name"])
        return 0
    sys.stdout.write(json.dumps(out, indent=2, sort_keys=True) + "\n")
    return 0
