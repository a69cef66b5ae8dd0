"""Image containers' disk use: the bytes in each one's overlay upper dir
(state_dir/containers/<id>/upper), walked at a bounded cost by
runtime.fsusage: at most ``budget`` directory entries per pass over all
upper dirs together; a figure is published when its walk completed
(``Snapshot.fs_usage``: container id -> (device, bytes); exported as
container_fs_usage_bytes; the ledger bills disk byte-seconds from it).
"""
from __future__ import annotations

import os
from types import MappingProxyType
from typing import Mapping

import structlog

from agent import selfmetrics
from agent.snapshot import EMPTY
from runtime import fsusage

log = structlog.get_logger("agent.collector")

# directory entries examined per pass over all image containers' upper dirs (bench/fs_usage.py)
FS_BUDGET = 4096


class UpperDirUsage:
    def __init__(self, state_dir: str, devices, budget: int = FS_BUDGET):
        self.budget = max(1, int(budget))
        self._uppers = os.path.join(state_dir, "containers")
        self._devices = devices          # agent.host_facts.DeviceNames
        self._walks = fsusage.Walks()

    def advance(self, infos) -> Mapping:
        """Walk the image containers' upper dirs on, within the budget; the figures so far."""
        trees = {}
        for info in infos:
            upper = os.path.join(self._uppers, info.id, "upper")
            if os.path.isdir(upper):
                trees[info.id] = upper
        if not trees:
            return EMPTY
        try:
            self._walks.advance(trees, self.budget)
        except OSError as exc:
            selfmetrics.inc("collection_errors_total", reason="read")
            log.warning("collector.fs_usage_failed", error=str(exc))
        out = {}
        for cid, (nbytes, dev) in self._walks.figures().items():
            out[cid] = (self._devices.name((os.major(dev), os.minor(dev))), nbytes)
        return MappingProxyType(out)
