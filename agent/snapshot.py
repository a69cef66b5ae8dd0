"""The Snapshot: one collection pass, immutable, shared by every reader.

The collector (agent/collector.py) publishes one per pass; the ledger, the
API, the budgets and the /metrics renderer read it and never wait for a pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from agent.labels import cgroup_id
from runtime import stats

EMPTY = MappingProxyType({})


@dataclass(frozen=True)
class Snapshot:
    """One collection pass. Immutable: share it freely between threads."""

    taken_at: float                        # wall clock (time.time()) at the start of the pass
    monotonic: float                       # time.monotonic() at the start of the pass
    duration: float                        # seconds the pass took
    samples: Mapping[str, stats.CgroupSample]   # absolute cgroup path -> sample
    containers: Mapping[str, object]       # container id -> agent.model.ContainerInfo
    errors: int = 0                        # read errors (incl. vanished cgroups) in this pass
    mount: str = ""                        # cgroup2 mount point, for relative ids
    devices: Mapping = field(default_factory=lambda: EMPTY)   # (major, minor) -> "/dev/name"
    seq: int = 0                           # 1 for the first pass, +1 each pass
    machine: object = None                 # runtime.machine.MachineInfo (read once at start)
    root: stats.CgroupSample | None = None # the root cgroup (id "/"), completed from /proc
    # image containers: container id -> (device of the filesystem, bytes in its upper dir at the
    # end of its last completed walk); absent until a first walk completed (runtime/fsusage.py)
    fs_usage: Mapping = field(default_factory=lambda: EMPTY)

    def sample_for(self, info) -> stats.CgroupSample | None:
        """The sample of a container's cgroup (None if not read this pass)."""
        return self.samples.get(info.cgroup)

    def rel_id(self, path: str) -> str:
        """cgroup path relative to the mount, with a leading "/" (cAdvisor's id)."""
        return cgroup_id(path, self.mount)
