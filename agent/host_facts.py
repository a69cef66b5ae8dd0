"""What the collector knows of the host itself: the machine facts (read once),
the root cgroup's sample (the host as a whole, completed from /proc where
cgroup v2 has no root files) and the names of block devices.
"""
from __future__ import annotations

import structlog

from agent import selfmetrics
from agent.cgroup_sampling import Tracked, reader_fds
from runtime import machine
from runtime.errors import CgroupError

log = structlog.get_logger("agent.collector")


def read_machine():
    """runtime.machine.MachineInfo, or None when it cannot be read (machine_* then absent)."""
    try:
        return machine.read_machine()
    except Exception as exc:  # noqa: BLE001 - machine_* absent, everything else goes on
        log.warning("collector.machine_info_failed", error=str(exc))
        return None


class RootCgroup:
    """The root cgroup (not in ``Snapshot.samples``: it is the host, not a watched cgroup)."""

    def __init__(self, mount: str):
        self.mount = mount
        self._t = None   # Tracked of the root cgroup, False when unreadable

    def read(self, sampler, n: int):
        """The root's sample on pass ``n``, with what cgroup v2 lacks at the root
        taken from /proc; None when unreadable."""
        if self._t is None:
            from runtime.reader import CgroupReader
            try:
                reader = CgroupReader(self.mount)
            except (CgroupError, OSError) as exc:
                log.warning("collector.root_unreadable", path=self.mount, error=str(exc))
                self._t = False
                return None
            self._t = Tracked(self.mount, reader, reader_fds(reader), reader.inode)
        if self._t is False:
            return None
        try:
            return machine.fill_root(sampler.read(self._t, n))
        except (CgroupError, OSError) as exc:
            selfmetrics.inc("collection_errors_total", reason="read")
            log.warning("collector.read_failed", path=self.mount, error=str(exc))
            return None

    def close(self) -> None:
        if self._t:
            self._t.close()
        self._t = None


def device_name(maj: int, mnr: int) -> str:
    try:
        with open(f"/sys/dev/block/{maj}:{mnr}/uevent") as f:
            for line in f:
                if line.startswith("DEVNAME="):
                    return "/dev/" + line.split("=", 1)[1].strip()
    except OSError:
        pass
    return f"{maj}:{mnr}"


class DeviceNames(dict):
    """(major, minor) -> "/dev/name", each looked up once."""

    def name(self, key: tuple) -> str:
        if key not in self:
            self[key] = device_name(*key)
        return self[key]

    def note_io(self, samples) -> None:
        """Name every device that appears in the io.stat of ``samples``."""
        for sample in samples:
            if sample is not None and sample.io:
                for dev in sample.io:
                    if dev not in self:
                        self[dev] = device_name(*dev)
