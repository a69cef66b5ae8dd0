"""The network endpoints of the control API (a mixin of agent.api.router's handler).

    GET    /v1/networks           list: {name, subnet, gateway, bridge, builtin, containers: [{name, ip}]}
    POST   /v1/networks           {"name", "subnet"}: a network with its own bridge (made on first use)
    GET    /v1/networks/{name}    one network
    DELETE /v1/networks/{name}    remove a network no container uses ("bridge" is built in)
"""
from __future__ import annotations

from agent.api.backend import Networks
from agent.api.resource import backend, collection_routes, no_query
from agent.errors import UserError, json_object

ROUTES = collection_routes("networks", list="networks_list", create="network_create", one="network_inspect",
                           remove="network_rm")

QUERY_PARAMS = no_query(ROUTES)


class NetworkHandlers:
    def _net(self) -> Networks:
        return backend(self.sup, "net", UserError("networks: this agent runs without network support"))

    def h_networks_list(self, query, body):
        self._send_json(200, self._net().networks())

    def h_network_create(self, query, body):
        json_object(body, ("name", "subnet"), "request body", ', e.g. {"name": "front", "subnet": "10.192.1.0/24"}')
        self._send_json(201, self._net().create_network(body.get("name"), body.get("subnet")))

    def h_network_inspect(self, name, query, body):
        self._send_json(200, self._net().network(name))

    def h_network_rm(self, name, query, body):
        self._send_json(200, self._net().remove_network(name))
