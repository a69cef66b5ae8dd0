"""The names this agent gives what it makes in the kernel, so that two
agents on one host (each with its own state dir) never touch each other's.

`tag(state_dir)`: 8 hex digits of the state dir's SHA-256. Every link the
agent makes carries the alias "cgroup-agent:<tag>:<kind>:<id>" (what the
boot sweep looks for); the interface names are derived from the tag too.
"""
from __future__ import annotations

import hashlib
import os

ALIAS_PREFIX = "cgroup-agent"


def tag(state_dir: str) -> str:
    return hashlib.sha256(os.path.realpath(state_dir).encode()).hexdigest()[:8]


def alias(t: str, kind: str, ident: str) -> str:
    return f"{ALIAS_PREFIX}:{t}:{kind}:{ident}"


def parse_alias(a: str | None, t: str) -> tuple[str, str] | None:
    """(kind, id) of a link alias this agent (tag `t`) set, else None."""
    if not a:
        return None
    parts = a.split(":")
    if len(parts) != 4 or parts[0] != ALIAS_PREFIX or parts[1] != t:
        return None
    return parts[2], parts[3]


def _h(*parts: str) -> str:
    return hashlib.sha256(":".join(parts).encode()).hexdigest()


def default_bridge(t: str) -> str:
    return f"cga{t}"                       # 11 characters (IFNAMSIZ: 15)


def network_bridge(t: str, network: str) -> str:
    return f"cgn{_h(t, network)[:10]}"


def host_veth(t: str, cid: str) -> str:
    return f"ve{_h(t, cid)[:12]}"          # the host end; the container's is eth0


def peer_veth(t: str, cid: str) -> str:
    return f"vp{_h(t, cid)[:12]}"          # its name until it is moved and renamed


def table(t: str) -> str:
    return f"cgroup_agent_{t}"


def default_subnet(t: str) -> str:
    """A /20 in 10.128.0.0/10 picked by the tag (a config key overrides it)."""
    h = int(t, 16)
    return f"10.{128 + (h % 64)}.{((h >> 8) % 16) * 16}.0/20"


def mac_of(ip: str) -> str:
    """A locally administered MAC derived from the IPv4 address (as Docker does)."""
    b = [int(x) for x in ip.split(".")]
    return "02:42:" + ":".join(f"{x:02x}" for x in b)
