"""Network request parsing, addresses and the nftables batch (pure functions;
the kernel side is tests/host/test_network.py)."""
from __future__ import annotations

import pytest

from agent.errors import Conflict, UserError
from agent.network import ipam, names, netspec, nftrules


@pytest.mark.parametrize("raw,want", [
    ("8080:80", netspec.Port("", 8080, 80, "tcp")),
    ("127.0.0.1:8080:80/udp", netspec.Port("127.0.0.1", 8080, 80, "udp")),
    ("0.0.0.0:1:65535", netspec.Port("", 1, 65535, "tcp")),
])
def test_ports_parse_as_docker(raw, want):
    assert netspec.parse_port(0, raw) == want


@pytest.mark.parametrize("raw", ["80", "a:80", "70000:80", "1:0", "8080:80/sctp", "1.2.3:8080:80", 8080])
def test_bad_ports_are_one_line_naming_the_syntax(raw):
    with pytest.raises(UserError) as e:
        netspec.parse_port(3, raw)
    assert str(e.value).startswith("ports[3]: ") and "\n" not in str(e.value)


def test_keys_need_a_bridge_network_and_host_root_defaults_to_host():
    assert netspec.choose_mode({}, has_root=True, default="bridge") == "bridge"
    assert netspec.choose_mode({}, has_root=False, default="bridge") == "host"
    with pytest.raises(UserError, match="^ports: needs a bridge network"):
        netspec.parse({"ports": ["1:1"]}, "host")
    with pytest.raises(UserError, match="published twice"):
        netspec.parse({"ports": ["80:80", "127.0.0.1:80:81"]}, "bridge")


@pytest.mark.parametrize("key,raw", [("egress_allow", ["10.0.0.0/33"]), ("egress_allow", ["10.0.0.0/8:0"]),
                                     ("egress_rate", "fast"), ("ingress_rate", "0mbit"), ("dns", ["x"]),
                                     ("add_hosts", ["db"]), ("ip", "10.0.0.300")])
def test_each_bad_network_field_is_named(key, raw):
    with pytest.raises(UserError) as e:
        netspec.parse({key: raw}, "bridge")
    assert str(e.value).startswith(key)


def test_ipam_skips_the_gateway_and_refuses_what_is_held():
    assert ipam.gateway("10.9.0.0/24") == "10.9.0.1"
    assert ipam.allocate("10.9.0.0/24", {"10.9.0.2": "a"}) == "10.9.0.3"
    with pytest.raises(Conflict, match="held by container 'a'"):
        ipam.allocate("10.9.0.0/24", {"10.9.0.2": "a"}, "10.9.0.2")
    with pytest.raises(UserError, match="gateway"):
        ipam.allocate("10.9.0.0/24", {}, "10.9.0.1")
    with pytest.raises(Conflict, match="no address left"):
        ipam.allocate("10.9.0.0/30", {"10.9.0.2": "a"})


def test_names_fit_ifnamsiz_and_differ_between_state_dirs():
    a, b = names.tag("/var/lib/a"), names.tag("/var/lib/b")
    assert a != b
    for t in (a, b):
        for n in (names.default_bridge(t), names.network_bridge(t, "x" * 63), names.host_veth(t, "0" * 12)):
            assert len(n) <= 15
    assert names.parse_alias(names.alias(a, "veth", "abc"), a) == ("veth", "abc")
    assert names.parse_alias(names.alias(a, "veth", "abc"), b) is None


def _table_of(cmd: dict) -> str:
    (_op, obj), = cmd.items()
    (kind, body), = obj.items()
    return body["name"] if kind == "table" else body["table"]


def test_the_batch_replaces_only_our_table_and_deletes_it_when_empty():
    empty = nftrules.render("cgroup_agent_x", [], [])["nftables"]
    assert empty == [{"add": {"table": {"family": "ip", "name": "cgroup_agent_x"}}},
                     {"delete": {"table": {"family": "ip", "name": "cgroup_agent_x"}}}]
    batch = nftrules.render("cgroup_agent_x", [nftrules.Net("bridge", "b1", "10.9.0.0/24"),
                                                nftrules.Net("n2", "b2", "10.9.1.0/24")],
                            [nftrules.Member("a", "10.9.0.2", "b1", (netspec.Port("", 8080, 80),), ("10.5.0.0/24",))])
    assert {_table_of(c) for c in batch["nftables"]} == {"cgroup_agent_x"}
    text = nftrules.dumps(batch)
    assert '"dnat":{"addr":"10.9.0.2","port":80}' in text and '"masquerade":null' in text
    assert '"oifname"}},"right":{"set":["b2"]}' in text   # b1 -> b2 dropped
