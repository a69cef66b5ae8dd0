"""The networks: "bridge" (the default one, from the config's [network]
section) and those made by `network create`, kept in
state_dir/network/networks.json (written atomically: temp file, fsync,
rename)."""
from __future__ import annotations

import ipaddress
import json
import os
import time
from dataclasses import asdict, dataclass

from agent.errors import Conflict, NotFound, UserError
from agent.network import names, netspec

DEFAULT = "bridge"
AUTO_POOL = "10.192.0.0/10"   # user networks without --subnet get a /24 from here


@dataclass(frozen=True)
class Network:
    name: str
    subnet: str
    bridge: str
    created_at: float = 0.0

    @property
    def gateway(self) -> str:
        from agent.network import ipam
        return ipam.gateway(self.subnet)


def parse_subnet(v) -> str:
    try:
        net = ipaddress.IPv4Network(v, strict=True)
    except (ValueError, TypeError):
        raise UserError(f"subnet: {v!r} is not an IPv4 CIDR like 10.90.0.0/24 (host bits zero)") from None
    if not 8 <= net.prefixlen <= 29:
        raise UserError(f"subnet: /{net.prefixlen} is not accepted; use a prefix from /8 to /29")
    if not net.is_private:
        raise UserError(f"subnet: {net} is not a private range; use one of 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16")
    return str(net)


class Registry:
    def __init__(self, state_dir: str, tag: str, default_bridge: str, default_subnet: str):
        self.dir = os.path.join(state_dir, "network")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(self.dir, "networks.json")
        self.tag = tag
        self.default = Network(DEFAULT, default_subnet, default_bridge)
        self._user = self._load()

    def _load(self) -> dict[str, Network]:
        try:
            with open(self.path) as f:
                raw = json.load(f)
        except FileNotFoundError:
            return {}
        return {k: Network(**v) for k, v in raw.items()}

    def _save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({k: asdict(v) for k, v in self._user.items()}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def all(self) -> list[Network]:
        return [self.default, *sorted(self._user.values(), key=lambda n: n.name)]

    def get(self, name: str) -> Network:
        if name == DEFAULT:
            return self.default
        n = self._user.get(name)
        if n is None:
            raise NotFound(f"network: no network named {name!r}; see `agentctl network ls`")
        return n

    def _overlap(self, subnet: str, host_nets: list) -> str | None:
        new = ipaddress.IPv4Network(subnet)
        for n in self.all():
            if new.overlaps(ipaddress.IPv4Network(n.subnet)):
                return f"network {n.name!r} ({n.subnet})"
        for dev, cidr in host_nets:
            if new.overlaps(ipaddress.IPv4Network(cidr, strict=False)):
                return f"the host's {dev} ({cidr})"
        return None

    def create(self, name, subnet, host_nets: list) -> Network:
        name = netspec.check_network_name(name)
        if name in netspec.BUILTIN:
            raise Conflict(f"network: {name!r} is built in; choose another name")
        if name in self._user:
            raise Conflict(f"network: a network named {name!r} already exists")
        if subnet:
            subnet = parse_subnet(subnet)
            clash = self._overlap(subnet, host_nets)
            if clash:
                raise Conflict(f"subnet: {subnet} overlaps {clash}; choose a subnet no network uses")
        else:
            for cand in ipaddress.IPv4Network(AUTO_POOL).subnets(new_prefix=24):
                if self._overlap(str(cand), host_nets) is None:
                    subnet = str(cand)
                    break
            else:
                raise Conflict(f"subnet: no free /24 left in {AUTO_POOL}; give --subnet")
        n = Network(name, subnet, names.network_bridge(self.tag, name), time.time())
        self._user[name] = n
        self._save()
        return n

    def remove(self, name: str) -> Network:
        n = self.get(name)
        if name == DEFAULT:
            raise Conflict("network: 'bridge' is built in and cannot be removed")
        del self._user[name]
        self._save()
        return n
