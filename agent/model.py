"""Read-only views shared between the supervisor, collector, ledger and exporters."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STATES = ("created", "running", "paused", "exited", "restarting")


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    cgroup: str
    limits: Any  # runtime.limits.Limits
    state: str = "created"
    labels: dict = field(default_factory=dict)
    image: str = ""
    pid: int | None = None
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    oom_killed: bool = False
    oom_kills: int = 0
    restart_count: int = 0
    restart_policy: str = "no"
    # added by the supervisor (containers issue):
    argv: tuple = ()  # the command it runs
    auto_remove: bool = False  # removed once it exited for good (run --rm)
    cgroup_inode: int | None = None  # identifies this cgroup instance
    # added by billing: bytes of output the container produced into
    # its log files, kept or rotated away (agent.logfiles); None = unknown now
    log_bytes: int | None = None
