"""The one container model of the supervisor: the in-memory record
(``Container``) every supervision module works on, over the one state enum
``agent.model.State`` (re-exported here with ACTIVE and LIVE).
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Any

from agent.model import ACTIVE, LIVE, State
from agent.spec import ContainerSpec
from agent.store import ContainerRow
from runtime.cgroupfs import Cgroup

__all__ = ["ACTIVE", "LIVE", "Container", "State", "is_container_id", "new_id", "pid_alive"]


@dataclass
class Container:
    row: ContainerRow  # row.state is a State
    spec: ContainerSpec
    cg: Cgroup
    limits: Any  # Limits as read back
    stopping: bool = False  # a user asked for stop/kill/remove: no restart
    orphan: bool = False  # running, but its pid is not the launcher's child (launcher restarted)
    removing: bool = False
    removed: bool = False
    timer: Any = None
    started_mono: float | None = None
    oom_seen: int | None = None  # memory.events oom_kill as last counted
    oom_at_start: int | None = None  # ... when this run started
    pids_hits_seen: int | None = None  # pids.events max as last looked at
    pids_logged_mono: float | None = None  # when a pids.max hit was last logged
    backoff_n: int = 0
    idmap: dict | None = None  # mount destination -> "idmapped" or why not, from the last start
    device_filter: str = ""  # "on", or "off: <reason>" (inspect); "" until first started


def new_id(taken) -> str:
    while True:
        cid = secrets.token_hex(6)
        if cid not in taken:
            return cid


def is_container_id(name: str) -> bool:
    return len(name) == 12 and all(c in "0123456789abcdef" for c in name)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
