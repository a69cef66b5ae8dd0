"""Where a restored container goes on this agentd: its network address and
its user namespace's host ids, decided before its create.

- address: a bridged container keeps the address of its checkpoint when it
  is a free host address of that network here (always so for a restore in
  place: the old instance is removed first); otherwise (an import onto an
  agentd whose network has another subnet, or where another container holds
  it) the network allocates a new one. The restore's result says which.
- user namespace: CRIU gives the restored tree the user namespace of the
  dump, with the same mapping, so the container holds the same host ids
  here: claimed as at any create (agent/userns_alloc.py, against this
  agentd's containers and every other agentd's of the host). When that
  block is held here, a container whose root and volumes were all idmapped
  (its files on disk are as it sees them) gets a free block and its
  images are moved onto it (remap.py); any other is refused in one line
  naming the holder (file ownership in its root is not remapped).
"""
from __future__ import annotations

from agent.errors import Conflict, NotFound, UserError
from agent.network import ipam


def address(net, spec_d: dict) -> tuple[dict, dict | None]:
    """(spec_d with its net.ip kept or dropped, {"ip": old, "kept": bool}); no
    change for a container off the bridge networks. `net`: the agentd's
    NetworkService (None: networks are off here)."""
    network = spec_d.get("network")
    if network in ("host", "none") or not spec_d.get("net"):
        return spec_d, None
    old = (spec_d.get("net") or {}).get("ip", "")
    if net is None:
        raise UserError(f"the checkpoint is on the {network} network and this agentd has no networks")
    try:
        n = net.registry.get(network)
    except (NotFound, UserError):
        raise UserError(f"the checkpoint is on network {network!r}, which this agentd does not have; "
                        f"create it with `agentctl network create {network}`") from None
    taken = {m.net["ip"]: m.name for m in list(net.members.values()) if m.network == network and m.net}
    try:
        ipam.allocate(n.subnet, taken, old)
        return spec_d, {"ip": old, "kept": True}
    except (Conflict, UserError, ValueError):
        pass
    return dict(spec_d, net={k: v for k, v in spec_d["net"].items() if k != "ip"}), {"ip": old, "kept": False}


def userns_refusal(spec_d: dict, err: Exception) -> str | None:
    """The one-line reason a restore cannot claim the checkpoint's host ids, from
    the create's Conflict, or None when `err` is not about them."""
    if not isinstance(spec_d.get("userns"), dict) or not str(err).startswith("userns."):
        return None
    m = spec_d["userns"]["uid"][0]
    return (f"its user namespace maps host uids {m[1]}-{m[1] + m[2] - 1}, which are not free here ({err}); "
            "CRIU restores that mapping and file ownership is not remapped (only a container whose root and "
            "volumes are all idmapped moves to another block): free them or restore on another host")
