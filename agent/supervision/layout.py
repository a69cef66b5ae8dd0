"""The cgroup layout under the agent's root R: R/agentd, R/launcher,
R/containers (every controller the host offers handed down), and why a
controller is missing when it is not."""
from __future__ import annotations

import os
from dataclasses import dataclass

import structlog

from runtime import cgroupfs
from runtime.cgroupfs import Cgroup
from runtime.errors import CgroupError

log = structlog.get_logger("agentd.supervisor")


@dataclass(frozen=True)
class Layout:
    root: Cgroup
    agentd: Cgroup
    launcher: Cgroup
    containers: Cgroup
    enabled: frozenset  # controllers R/containers hands to each container
    missing: dict  # controller -> reason


def layout_cgroups(root_path: str, move_self: bool = True) -> Layout:
    """Create R/agentd, R/launcher, R/containers; move agentd into R/agentd;
    enable every controller the host offers down to the containers."""
    root = Cgroup(root_path)
    mount = cgroupfs.find_mount()
    parent = root.parent()
    if parent.path == mount.rstrip("/") and parent.controllers() - parent.subtree_control():
        # R sits right below the hierarchy root (no systemd to have done this):
        # hand R every controller the kernel offers on cgroup2. The root cgroup
        # is exempt from the no-internal-process rule, so this moves nothing.
        enabled = parent.enable_controllers(sorted(parent.controllers()))
        log.info("cgroup.root_controllers_enabled", cgroup=parent.path, controllers=sorted(enabled))
    root.create(exist_ok=True)
    agentd = root.child("agentd").create()
    launcher = root.child("launcher").create()
    containers = root.child("containers").create()
    if move_self and os.path.join(cgroupfs.find_mount(), cgroupfs.own_cgroup().lstrip("/")).rstrip("/") != agentd.path:
        agentd.add_pid(os.getpid())
    cgroupfs.prepare_root(root, self_leaf="agentd")
    containers.enable_controllers(sorted(containers.controllers()))
    enabled = frozenset(containers.subtree_control())
    missing = {}
    for name in ("cpu", "memory", "io", "pids", "cpuset"):
        if name not in enabled:
            missing[name] = missing_reason(containers, name)
    return Layout(root, agentd, launcher, containers, enabled, missing)


def missing_reason(containers: Cgroup, name: str) -> str:
    try:
        status = cgroupfs.controller_status(containers).get(name, "not offered by this kernel")
    except CgroupError as e:
        return str(e)
    if status == "enabled":
        return f"not in {containers.file('cgroup.subtree_control')}"
    return status
