"""The small value types a ContainerSpec holds: a volume, a device, a
restart policy (and the one parser of a restart policy's text)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.errors import UserError
from agent.rules import RESTART_RE  # one rule, shared with agentctl and the API
from agent.specparts.fields import quote


@dataclass(frozen=True)
class Volume:
    src: str  # resolved absolute host path
    dst: str  # absolute path inside the container
    ro: bool = False
    noexec: bool = False  # JSON {"noexec": true} or a bundle mount's "noexec" option

    def __str__(self) -> str:
        return f"{self.src}:{self.dst}" + (":ro" if self.ro else "")


@dataclass(frozen=True)
class Device:
    """A host device node granted to the container (--device)."""
    src: str  # resolved host path of the node
    dst: str  # path inside the container (under /dev)
    type: str  # "c" or "b"
    major: int
    minor: int
    access: str = "rwm"

    def __str__(self) -> str:
        return f"{self.src}:{self.dst}:{self.access}"

    def to_dict(self) -> dict:
        return {"src": self.src, "dst": self.dst, "type": self.type, "major": self.major,
                "minor": self.minor, "access": self.access}


@dataclass(frozen=True)
class RestartPolicy:
    mode: str = "no"  # no | on-failure | always
    max_retries: int | None = None  # on-failure:N; None = unbounded

    def __str__(self) -> str:
        if self.mode == "on-failure" and self.max_retries is not None:
            return f"on-failure:{self.max_retries}"
        return self.mode

    def should_restart(self, exit_code: int | None, exit_signal: int | None, restarts_so_far: int,
                       oom_killed: bool = False) -> bool:
        if self.mode == "always":
            return True
        if self.mode == "on-failure":
            failed = exit_signal is not None or (exit_code or 0) != 0 or oom_killed
            return failed and (self.max_retries is None or restarts_so_far < self.max_retries)
        return False


def parse_restart(v: Any, fieldname: str = "restart") -> RestartPolicy:
    if v is None or v == "":
        return RestartPolicy()
    m = RESTART_RE.fullmatch(v) if isinstance(v, str) else None
    if not m or (m.group(2) is not None and m.group(1) != "on-failure"):
        raise UserError(f"{fieldname}: {quote(v)} is not a restart policy; use no, on-failure, on-failure:N or always")
    return RestartPolicy(m.group(1), int(m.group(2)) if m.group(2) is not None else None)
