"""Container networks: bridges, veth pairs, addresses, NAT, published ports,
egress filters and rates, /etc/hosts (see docs/architecture.md, Networks).

netspec: what a request asks for (parsing, one rule each); names: the
agent's tag and the names of its links and nftables table; ipam: addresses;
registry: the networks (the default one and `network create`'s);
nftrules: the nftables ruleset, rendered as nft's JSON; holders: who holds
a host port; etcfiles: /etc/hosts, /etc/resolv.conf, /etc/hostname;
service: the whole of it, called by the supervisor.
"""
