"""agentctl network create|ls|rm|inspect, and run's network flags
(--network, --ip, -p/--publish, --egress-allow, --egress-rate,
--ingress-rate, --dns, --add-host). The values are checked by agentd
(agent/network/netspec.py), once."""
from __future__ import annotations

import argparse

from agent.cli.errors import EXIT_OK
from agent.cli.flags import Parser
from agent.cli.format import print_json, table



def _network(value: str) -> str:
    from agent.errors import UserError
    from agent.network.netspec import check_network_name
    try:
        return check_network_name(value)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e).replace("network: ", "", 1)) from None


def add_run_flags(r) -> None:
    r.add_argument("--network", metavar="NET", type=_network,
                   help="bridge (default with --rootfs/--image: own interface and address, NAT out), "
                        "a network made by `network create`, none, or host (default on the host's root)")
    r.add_argument("--ip", metavar="IPV4", help="with a bridge network: this address of its subnet")
    r.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:]HOST:CONTAINER[/tcp|udp]",
                   help="publish a container port on the host (repeatable)")
    r.add_argument("--egress-allow", action="append", default=[], metavar="CIDR[:PORT]",
                   help="only these destinations are reachable (repeatable; default: all)")
    r.add_argument("--egress-rate", metavar="RATE", help="cap what it sends, e.g. 10mbit")
    r.add_argument("--ingress-rate", metavar="RATE", help="cap what it receives, e.g. 10mbit")
    r.add_argument("--dns", action="append", default=[], metavar="IP", help="nameserver in its /etc/resolv.conf")
    r.add_argument("--add-host", action="append", default=[], metavar="NAME:IP", help="a line of its /etc/hosts")


def run_body(args, body: dict) -> None:
    extra = {"ip": args.ip, "ports": args.publish or None, "egress_allow": args.egress_allow or None,
             "egress_rate": args.egress_rate, "ingress_rate": args.ingress_rate, "dns": args.dns or None,
             "add_hosts": args.add_host or None}
    body.update({k: v for k, v in extra.items() if v is not None})


def _build_network(p) -> None:
    sub = p.add_subparsers(dest="network_command", metavar="SUBCOMMAND", parser_class=Parser, required=True)
    cr = sub.add_parser("create", help="a network of its own bridge and subnet, isolated from the others")
    cr.add_argument("--subnet", metavar="CIDR", help="IPv4 subnet (default: a free /24 of 10.192.0.0/10)")
    cr.add_argument("name", metavar="NAME", help="network name ([a-zA-Z0-9][a-zA-Z0-9_.-], at most 63)")
    ls = sub.add_parser("ls", help="list networks")
    ls.add_argument("-q", "--quiet", action="store_true", help="print only names")
    rm = sub.add_parser("rm", help="remove networks no container uses")
    rm.add_argument("names", nargs="+", metavar="NAME", help="network name")
    ins = sub.add_parser("inspect", help="a network with its containers and their addresses, as JSON")
    ins.add_argument("name", metavar="NAME", help="network name")
    for nested in (cr, ls, rm, ins):
        nested.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document")


def cmd_network(args, client) -> int:
    sub = args.network_command
    as_json = getattr(args, "json", False)
    if sub == "create":
        body = {"name": args.name, **({"subnet": args.subnet} if args.subnet else {})}
        n = client.call("POST", "/v1/networks", body=body)
        print_json(n) if as_json else print(n["name"])
    elif sub == "ls":
        nets = client.call("GET", "/v1/networks")
        if as_json:
            print_json(nets)
        elif args.quiet:
            for n in nets:
                print(n["name"])
        else:
            print(table(["NAME", "SUBNET", "BRIDGE", "CONTAINERS"],
                        [(n["name"], n["subnet"], n["bridge"], len(n["containers"])) for n in nets]))
    elif sub == "rm":
        for name in args.names:
            client.call("DELETE", f"/v1/networks/{name}")
            print(name)
    elif sub == "inspect":
        print_json(client.call("GET", f"/v1/networks/{args.name}"))
    return EXIT_OK


VERBS = {"network": ("manage networks: create, ls, rm, inspect", True, _build_network, cmd_network)}
