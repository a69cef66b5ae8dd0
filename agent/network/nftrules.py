"""The agent's nftables table, rendered as one `nft -j` batch (applied
atomically: the whole table is replaced in one transaction, or nothing).

Only the table this agent owns (names.table) is ever named: the host's
other tables and rules are neither read nor touched.

    nat prerouting / output   published ports: DNAT to the container
                              (to a local address of the host, or the one
                              the port names; output: the host's own
                              clients, 127.0.0.1 included)
    nat postrouting           masquerade of each subnet leaving its bridge;
                              of 127.0.0.0/8 entering a bridge (the reply
                              of a DNATed loopback connection comes back)
    filter forward / input    networks isolated from each other; a
                              container with an egress allow-list reaches
                              only those CIDR[:PORT]s (and its replies);
                              no container reaches a service of the host
                              itself (its bridge address or any other of
                              its addresses) unless its allow-list names it
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from agent.network import netspec

FAMILY = "ip"


@dataclass(frozen=True)
class Net:
    name: str
    bridge: str
    subnet: str


@dataclass(frozen=True)
class Member:
    name: str
    ip: str
    bridge: str
    ports: tuple = ()            # netspec.Port
    egress_allow: tuple = ()     # "CIDR[:PORT]"


def _m(left, right, op="=="):
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key):
    return {"meta": {"key": key}}


def _ip(fld):
    return {"payload": {"protocol": "ip", "field": fld}}


def _prefix(cidr: str):
    addr, _, n = cidr.partition("/")
    return {"prefix": {"addr": addr, "len": int(n or 32)}}


def _rule(table: str, chain: str, *expr, comment: str = ""):
    r = {"family": FAMILY, "table": table, "chain": chain, "expr": list(expr)}
    if comment:
        r["comment"] = comment[:128]
    return {"add": {"rule": r}}


def _chain(table: str, name: str, kind: str, hook: str, prio: int):
    return {"add": {"chain": {"family": FAMILY, "table": table, "name": name, "type": kind, "hook": hook,
                              "prio": prio, "policy": "accept"}}}


def render(table: str, nets: list[Net], members: list[Member]) -> dict:
    """The batch replacing `table` with the rules for `members`; with no
    member, the batch deletes the table (nothing of ours stays)."""
    tbl = {"family": FAMILY, "name": table}
    cmds: list = [{"add": {"table": tbl}}, {"delete": {"table": tbl}}]
    if not members:
        return {"nftables": cmds}
    cmds.append({"add": {"table": tbl}})
    for name, kind, hook, prio in (("prerouting", "nat", "prerouting", -100), ("output", "nat", "output", -100),
                                   ("postrouting", "nat", "postrouting", 100),
                                   ("forward", "filter", "forward", 0), ("input", "filter", "input", 0)):
        cmds.append(_chain(table, name, kind, hook, prio))
    bridges = sorted({n.bridge for n in nets})
    for m in members:
        for p in m.ports:
            dest = _m(_ip("daddr"), p.host_ip) if p.host_ip else \
                _m({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
            dport = _m({"payload": {"protocol": p.proto, "field": "dport"}}, p.host_port)
            for chain in ("prerouting", "output"):
                cmds.append(_rule(table, chain, dest, dport, {"dnat": {"addr": m.ip, "port": p.container_port}},
                                  comment=f"{m.name} {p}"))
    for n in nets:
        cmds.append(_rule(table, "postrouting", _m(_ip("saddr"), _prefix(n.subnet)),
                          _m(_meta("oifname"), n.bridge, "!="), {"masquerade": None}, comment=f"network {n.name}"))
        cmds.append(_rule(table, "postrouting", _m(_meta("oifname"), n.bridge),
                          _m(_ip("saddr"), _prefix("127.0.0.0/8")), {"masquerade": None},
                          comment=f"loopback to network {n.name}"))
    for b in bridges:
        others = [o for o in bridges if o != b]
        if others:
            cmds.append(_rule(table, "forward", _m(_meta("iifname"), b), _m(_meta("oifname"), {"set": others}),
                              {"drop": None}, comment="networks are isolated"))
    for m in members:
        if not m.egress_allow:
            continue
        src = (_m(_meta("iifname"), m.bridge), _m(_ip("saddr"), m.ip))
        for chain in ("forward", "input"):
            cmds.append(_rule(table, chain, *src, _m({"ct": {"key": "state"}}, ["established", "related"], "in"),
                              {"accept": None}))
            for rule in m.egress_allow:
                cidr, port = netspec.split_egress(rule)
                extra = [] if port is None else [
                    _m(_meta("l4proto"), {"set": ["tcp", "udp"]}),
                    _m({"payload": {"protocol": "th", "field": "dport"}}, port)]
                cmds.append(_rule(table, chain, *src, _m(_ip("daddr"), _prefix(cidr)), *extra, {"accept": None},
                                  comment=f"{m.name} egress {rule}"))
            cmds.append(_rule(table, chain, *src, {"drop": None}, comment=f"{m.name} egress: nothing else"))
    for b in bridges:    # after the allow-lists: --egress-allow GATEWAY[:PORT] opens one host service
        cmds.append(_rule(table, "input", _m(_meta("iifname"), b),
                          _m({"ct": {"key": "state"}}, ["established", "related"], "in"), {"accept": None},
                          comment="replies to the host's own connections"))
        cmds.append(_rule(table, "input", _m(_meta("iifname"), b), {"drop": None},
                          comment="containers do not reach the host's own services"))
    return {"nftables": cmds}


def dumps(batch: dict) -> str:
    return json.dumps(batch, separators=(",", ":"))
