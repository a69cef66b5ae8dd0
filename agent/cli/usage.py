"""`agentctl usage`: billing usage from the agent's ledger (GET /v1/usage).

    agentctl usage [--since T] [--until T] [--name N] [--label K=V ...]
                   [--group-by name|label:K|hour|day] [--format table|csv|jsonl|focus] [--open]

T is ISO 8601 (2026-11-01, 2026-11-01T00:00:00Z), epoch seconds, or a
duration ago (90m, 24h, 7d). Records are selected by period_start in
[since, until). Without --group-by, table groups by name and csv/jsonl
print one line per record; focus prints FOCUS 1.2 rows (one per container,
meter and closed hour; --open adds the current hour). The ledger validates everything; a bad value exits 2 with
one line naming the flag.
"""
from __future__ import annotations

import sys

FORMATS = ("table", "csv", "jsonl", "focus")


def add_parser(subparsers):
    p = subparsers.add_parser("usage", help="billing usage records: totals, CSV, JSON lines, FOCUS",
                              description=__doc__.split("\n\n")[2])
    p.add_argument("--since", metavar="T", help="first period start included (default: the oldest record)")
    p.add_argument("--until", metavar="T", help="period starts before this (default: no end)")
    p.add_argument("--name", metavar="N", help="only containers with this name")
    p.add_argument("--label", metavar="K=V", action="append", default=[],
                   help="only containers with this label (repeatable: all must match)")
    p.add_argument("--group-by", metavar="G", dest="group_by",
                   help="name, label:KEY, hour or day (default for table: name)")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    p.add_argument("--open", action="store_true",
                   help="focus: also the open (current) hour, marked x_ChargePeriodStatus=Open")
    return p


def query_params(args) -> dict:
    params = {"format": args.format}
    for key in ("since", "until", "name", "group_by"):
        v = getattr(args, key, None)
        if v is not None:
            params[key] = v
    if getattr(args, "open", False):
        params["open"] = "1"
    if args.label:
        # one query parameter (the API keeps the last of repeated ones): comma-joined
        params["label"] = ",".join(args.label)
    return params


def run(args, client) -> int:
    from exporters.billing import render

    result = client.call("GET", "/v1/usage", query_params(args))
    sys.stdout.write(render(result, args.format))
    sys.stdout.flush()
    return 0
