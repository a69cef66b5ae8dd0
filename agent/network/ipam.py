"""IPv4 addresses of a network's subnet: .1 (the first host) is the bridge's
(the gateway); containers get the lowest free one, or the one they ask for.
What is taken is what the agent's containers hold in their stored specs, so
an allocation lives exactly as long as its container's row (and survives an
agentd restart with it)."""
from __future__ import annotations

import ipaddress

from agent.errors import Conflict, UserError


def gateway(subnet: str) -> str:
    return str(next(ipaddress.IPv4Network(subnet).hosts()))


def allocate(subnet: str, taken: dict[str, str], want: str = "") -> str:
    """An address for a container; `taken`: {ip: container name}."""
    net = ipaddress.IPv4Network(subnet)
    gw = gateway(subnet)
    if want:
        addr = ipaddress.IPv4Address(want)
        if addr not in net or addr in (net.network_address, net.broadcast_address):
            raise UserError(f"ip: {want} is not a host address of the network's subnet {subnet}")
        if want == gw:
            raise UserError(f"ip: {want} is the network's gateway (the bridge); use another address of {subnet}")
        if want in taken:
            raise Conflict(f"ip: {want} is already held by container {taken[want]!r}")
        return want
    for addr in net.hosts():
        s = str(addr)
        if s != gw and s not in taken:
            return s
    raise Conflict(f"ip: no address left in {subnet} ({len(taken)} containers hold one); "
                   "remove a container or use a network with a larger subnet")
