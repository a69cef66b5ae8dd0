"""What a container asks of its network, checked once (one line per error).

The request keys (API body; the CLI flags of the same names):
    "network": "host" | "none" | "bridge" | NAME     default: "bridge" (the
               config's [network] default) for rootfs and image containers,
               "host" for host-root ones; a bundle follows its config.json
    "ip": "10.88.0.5"                    an address of the network's subnet
    "ports": ["[IP:]HOST:CONTAINER[/tcp|udp]"]
    "egress_allow": ["CIDR[:PORT]"]      absent: everything allowed
    "egress_rate": "10mbit", "ingress_rate": "10mbit"   tc on the veth
    "dns": ["IP"], "add_hosts": ["NAME:IP"]

`parse(body, mode)` returns the dict stored as ContainerSpec.net (None for
host and none networks, which take none of these keys).
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from agent.errors import UserError
from agent.rules import NAME_RE   # networks are named as containers are
from runtime.rules import HOSTNAME_RE   # an add_hosts name: the one host-name rule

KEYS = ("ip", "ports", "egress_allow", "egress_rate", "ingress_rate", "dns", "add_hosts")
BUILTIN = ("host", "none", "bridge")
PORT_SYNTAX = "[IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], e.g. 8080:80 or 127.0.0.1:8080:80/tcp"
PORT_RE = re.compile(r"(?:(?P<ip>\d{1,3}(?:\.\d{1,3}){3}):)?(?P<host>\d{1,5}):(?P<cont>\d{1,5})(?:/(?P<proto>tcp|udp))?")
EGRESS_SYNTAX = "CIDR[:PORT], e.g. 10.1.2.0/24 or 10.1.2.3/32:443"
RATE_RE = re.compile(r"(?P<n>\d{1,12})(?P<unit>bit|kbit|mbit|gbit)")
RATE_SYNTAX = "a rate in bits per second: NUMBER followed by bit, kbit, mbit or gbit, e.g. 10mbit"
RATE_UNITS = {"bit": 1, "kbit": 1000, "mbit": 1000 ** 2, "gbit": 1000 ** 3}


@dataclass(frozen=True)
class Port:
    host_ip: str      # "" = every local address
    host_port: int
    container_port: int
    proto: str = "tcp"

    def __str__(self) -> str:
        return f"{self.host_ip + ':' if self.host_ip else ''}{self.host_port}:{self.container_port}/{self.proto}"

    def clashes(self, other: "Port") -> bool:
        return (self.proto == other.proto and self.host_port == other.host_port
                and (not self.host_ip or not other.host_ip or self.host_ip == other.host_ip))


def parse_port(i: int, v) -> Port:
    m = PORT_RE.fullmatch(v) if isinstance(v, str) else None
    if m is None:
        raise UserError(f"ports[{i}]: {v!r} is not {PORT_SYNTAX}")
    host, cont = int(m["host"]), int(m["cont"])
    for what, n in (("host port", host), ("container port", cont)):
        if not 1 <= n <= 65535:
            raise UserError(f"ports[{i}]: {what} {n} is out of range; use 1-65535")
    ip = m["ip"] or ""
    if ip:
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError:
            raise UserError(f"ports[{i}]: {ip!r} is not an IPv4 address") from None
        if addr.is_unspecified:
            ip = ""
    return Port(ip, host, cont, m["proto"] or "tcp")


def ports_from(raw) -> tuple[Port, ...]:
    return tuple(Port(**p) for p in raw or ())


def parse_egress(i: int, v) -> str:
    if not isinstance(v, str):
        raise UserError(f"egress_allow[{i}]: {v!r} is not {EGRESS_SYNTAX}")
    cidr, _, port = v.partition(":")
    try:
        net = ipaddress.IPv4Network(cidr, strict=False)
    except ValueError:
        raise UserError(f"egress_allow[{i}]: {v!r} is not {EGRESS_SYNTAX}") from None
    if port:
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise UserError(f"egress_allow[{i}]: port {port!r} is not 1-65535 ({EGRESS_SYNTAX})")
        return f"{net}:{int(port)}"
    return str(net)


def split_egress(rule: str) -> tuple[str, int | None]:
    cidr, _, port = rule.partition(":")
    return cidr, int(port) if port else None


def parse_rate(key: str, v) -> int:
    """bits per second; 0 = unlimited."""
    if v in (None, "", 0):
        return 0
    m = RATE_RE.fullmatch(v.strip().lower()) if isinstance(v, str) else None
    if m is None or int(m["n"]) == 0:
        raise UserError(f"{key}: {v!r} is not {RATE_SYNTAX}")
    return int(m["n"]) * RATE_UNITS[m["unit"]]


def parse_ip(key: str, v) -> str:
    try:
        return str(ipaddress.IPv4Address(v))
    except (ValueError, TypeError):
        raise UserError(f"{key}: {v!r} is not an IPv4 address, e.g. 10.88.0.5") from None


def parse_add_host(i: int, v) -> tuple[str, str]:
    name, sep, ip = v.partition(":") if isinstance(v, str) else ("", "", "")
    if not sep or not HOSTNAME_RE.fullmatch(name):
        raise UserError(f"add_hosts[{i}]: {v!r} is not NAME:IP, e.g. db:10.1.2.3")
    return name, parse_ip(f"add_hosts[{i}]", ip)


def check_network_name(v) -> str:
    if not isinstance(v, str) or not NAME_RE.fullmatch(v):
        raise UserError(f"network: {v!r} is not host, none, bridge or a network name "
                        "([a-zA-Z0-9][a-zA-Z0-9_.-], at most 63)")
    return v


def _list(key: str, v) -> list:
    if v in (None, ""):
        return []
    if not isinstance(v, list):
        raise UserError(f"{key}: must be a list")
    return v


def choose_mode(body: dict, has_root: bool, default: str) -> str:
    """The network a request gets: its own "network", else `default` for a
    rootfs or image container and "host" for a host-root one."""
    v = body.get("network")
    if v in (None, ""):
        return default if has_root else "host"
    return check_network_name(v)


def parse(body: dict, mode: str) -> dict | None:
    """The ContainerSpec.net dict of a bridge (or named) network; None for
    host and none, which refuse every key of this module."""
    given = [k for k in KEYS if body.get(k) not in (None, "", [], {})]
    if mode in ("host", "none"):
        if given:
            raise UserError(f"{given[0]}: needs a bridge network (network is {mode})")
        return None
    ports = [parse_port(i, p) for i, p in enumerate(_list("ports", body.get("ports")))]
    for i, p in enumerate(ports):
        for q in ports[:i]:
            if p.clashes(q):
                raise UserError(f"ports[{i}]: host port {p.host_port}/{p.proto} is published twice")
    out = {
        "ip": parse_ip("ip", body["ip"]) if body.get("ip") else "",
        "ports": [p.__dict__ for p in ports],
        "egress_allow": [parse_egress(i, e) for i, e in enumerate(_list("egress_allow", body.get("egress_allow")))],
        "egress_rate": parse_rate("egress_rate", body.get("egress_rate")),
        "ingress_rate": parse_rate("ingress_rate", body.get("ingress_rate")),
        "dns": [parse_ip(f"dns[{i}]", d) for i, d in enumerate(_list("dns", body.get("dns")))],
        "add_hosts": [list(parse_add_host(i, h)) for i, h in enumerate(_list("add_hosts", body.get("add_hosts")))],
    }
    return out


def view(mode: str, net: dict | None) -> dict:
    """What inspect shows: {name, ip, mac, ports}."""
    from agent.network.names import mac_of
    ip = (net or {}).get("ip") or None
    return {"name": mode, "ip": ip, "mac": mac_of(ip) if ip else None,
            "ports": [str(p) for p in ports_from((net or {}).get("ports"))]}
