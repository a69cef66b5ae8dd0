"""Test hygiene: the network objects of agents that no longer run (a
fixture that stops agentd, kills the cgroups and removes its temp dir
leaves its bridged containers' namespaces, veths, bridge and nftables
table behind: the agent never got to remove them). An agent runs while a
process holds its state.db open; every object carries the tag of its
state dir (agent/network/names.py), so anything whose tag is no running
agent's is removed: bound namespaces (mount points under
<state_dir>/network/ns/), links by alias, tables cgroup_agent_<tag>."""
from __future__ import annotations

import json
import os
import re
import subprocess

from agent.network import names

TABLE_RE = re.compile(r"cgroup_agent_([0-9a-f]{8})")


def live_tags() -> set[str]:
    held = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.endswith("/state.db"):
                held.add(names.tag(os.path.dirname(target)))
    return held


def remove_abandoned() -> int:
    """Remove what belongs to no running agent; the number of objects removed."""
    from runtime import netns
    live = live_tags()
    removed = 0
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].replace("\\040", " ") for line in f]
    for point in points:
        for kind in ("/network/ns/", "/network/userns/"):
            head, sep, _cid = point.rpartition(kind)
            if sep and names.tag(head) not in live:
                netns.remove(point.removesuffix("//deleted"))
                removed += 1
    links = json.loads(subprocess.run(["ip", "-j", "-d", "link", "show"], capture_output=True,
                                      text=True).stdout or "[]")
    for link in links:
        parts = (link.get("ifalias") or "").split(":")
        if len(parts) == 4 and parts[0] == names.ALIAS_PREFIX and parts[1] not in live:
            subprocess.run(["ip", "link", "del", link["ifname"]], capture_output=True)
            removed += 1
    tables = subprocess.run(["nft", "list", "tables", "ip"], capture_output=True, text=True).stdout.split()
    for t in tables:
        m = TABLE_RE.fullmatch(t)
        if m and m.group(1) not in live:
            subprocess.run(["nft", "delete", "table", "ip", t], capture_output=True)
            removed += 1
    return removed
