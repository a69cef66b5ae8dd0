"""The network endpoints of the control API (a mixin of agent.api.router's handler).

    GET    /v1/networks           list: {name, subnet, gateway, bridge, builtin, containers: [{name, ip}]}
    POST   /v1/networks           {"name", "subnet"}: a network with its own bridge (made on first use)
    GET    /v1/networks/{name}    one network
    DELETE /v1/networks/{name}    remove a network no container uses ("bridge" is built in)
"""
from __future__ import annotations

from agent.errors import UserError

_NAME = "{name}"

ROUTES = [
    (("v1", "networks"), {"GET": "networks_list", "POST": "network_create"}),
    (("v1", "networks", _NAME), {"GET": "network_inspect", "DELETE": "network_rm"}),
]

QUERY_PARAMS = {"networks_list": {}, "network_create": {}, "network_inspect": {}, "network_rm": {}}


class NetworkHandlers:
    def _net(self):
        net = getattr(self.sup, "net", None)
        if net is None:
            raise UserError("networks: this agent runs without network support")
        return net

    def h_networks_list(self, query, body):
        self._send_json(200, self._net().networks())

    def h_network_create(self, query, body):
        if not isinstance(body, dict):
            raise UserError("body: must be a JSON object {\"name\", \"subnet\"}")
        unknown = sorted(set(body) - {"name", "subnet"})
        if unknown:
            raise UserError(f"{unknown[0]}: unknown field; use name, subnet")
        self._send_json(201, self._net().create_network(body.get("name"), body.get("subnet")))

    def h_network_inspect(self, name, query, body):
        self._send_json(200, self._net().network(name))

    def h_network_rm(self, name, query, body):
        self._send_json(200, self._net().remove_network(name))
