"""A container's privileges: the capability defaults and cap_add/cap_drop,
the launcher's privilege keys, and its user namespace."""
from __future__ import annotations

from typing import Any

from agent.errors import UserError
from agent.specparts.fields import quote

# Docker's default set, less what a container on the host's network must not
# have unless it asks (--cap-add): NET_RAW there opens AF_PACKET sockets on
# the host's interfaces, loopback included, and sniffs other processes' traffic
HOST_NETWORK_DROPS = ("NET_RAW",)


def spawn_security(spec) -> dict:
    """The launcher spawn-spec keys for privileges: capabilities (Docker's
    default set, less HOST_NETWORK_DROPS on the host's network, then
    cap_add/cap_drop as Docker applies them), or a bundle's capability
    sets with cap_add/cap_drop applied; no_new_privs (on unless a bundle
    says false); the other honoured bundle fields."""
    from runtime import caps
    out = {"no_new_privs": True, **{k: v for k, v in spec.oci.items() if k != "capability_sets"}}
    sets = spec.oci.get("capability_sets")
    if sets is not None:
        grow = ("bounding", "effective", "permitted")
        out["capabilities"] = None
        out["capability_sets"] = {name: list(caps.tweak(sets.get(name, ()), spec.cap_add if name in grow else (),
                                                        spec.cap_drop)) for name in caps.SETS}
    else:
        base = caps.DOCKER_DEFAULT
        if spec.network == "host":
            base = tuple(c for c in base if c not in HOST_NETWORK_DROPS)
        out["capabilities"] = list(caps.tweak(base, spec.cap_add, spec.cap_drop))
    return out


def parse_cap_changes(add: Any, drop: Any) -> tuple[tuple, tuple]:
    """cap_add / cap_drop: lists of Docker's capability names (or ALL)."""
    from runtime import caps
    try:
        return caps.normalize_changes(add, "cap_add"), caps.normalize_changes(drop, "cap_drop")
    except caps.CapabilityError as e:
        raise UserError(str(e)) from None


def parse_userns(v: Any, rootfs: str, uid: int, gid: int) -> Any:
    """"auto" | "host" | a mapping -> what ContainerSpec.userns holds.
    `rootfs`: the container's own root (a rootfs path, or an image id). The
    default is "auto" with one, "host" for the host's root (a host-root
    container shares the host's files, which a user namespace would show
    as owned by nobody)."""
    from runtime.userns import CONTAINER_IDS, UsernsError, check_mapping, host_id
    if v in (None, ""):
        return "auto" if rootfs else "host"
    if v == "host":
        return "host"
    if not rootfs and (v == "auto" or isinstance(v, dict)):
        raise UserError("userns: a user namespace needs a rootfs, bundle or image; a container on the host's "
                        "root runs in the host's user namespace (userns \"host\")")
    if v == "auto":
        if uid >= CONTAINER_IDS or gid >= CONTAINER_IDS:
            raise UserError(f"user: {uid}:{gid} is outside the container's ids 0..{CONTAINER_IDS - 1} "
                            "of userns \"auto\"; use a smaller id or userns \"host\"")
        return "auto"
    if not isinstance(v, dict):
        raise UserError(f"userns: {quote(v)} is not \"auto\", \"host\" or "
                        "{\"uid\": [[inside, host, count], ...], \"gid\": [...]}")
    try:
        mapping = check_mapping(v)
    except UsernsError as e:
        raise UserError(str(e)) from None
    for side, val in (("uid", uid), ("gid", gid)):
        if host_id(mapping[side], val) is None:
            raise UserError(f"user: {side} {val} is not mapped by userns.{side}; map it or run as a mapped id")
    return mapping
