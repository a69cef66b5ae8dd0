"""Network counters of each container, added to its CgroupSample on every pass.

A container with a network namespace of its own (``--network none``, a
bridge) has its interfaces' counters read from its init process's
``/proc/<pid>/net/dev``, kept open (runtime.netstat.NetDevReader: one pread
per container per pass). The sample gets ``net_rx_bytes``/``net_tx_bytes``
(summed over the counted interfaces: cAdvisor's rule leaves out lo, veth*,
docker*, nerdctl*) and ``network`` (each counted interface's IfStats, for the
container_network_* families).

A container on the host's network (its namespace is agentd's) has no figures
of its own: the fields stay None, and no container_network_* series is
exported for it (never a 0). The root cgroup (id "/") gets the host's
interfaces from /proc/1/net/dev, as cAdvisor (or agentd's own, when pid 1's
is not ours to read).

The descriptor pins the namespace, so a container whose process exited
keeps its figures, and they keep moving: the kernel still sends what the
process left in its sockets' send queues (up to several MiB per socket,
retransmits too) after the process is gone, and that traffic is the
container's. So the namespace of an exited container is read on every pass
while the container is listed, and at its final reading (removal); only a
namespace with nothing counted in it (a loopback alone: nothing billable can
move) is closed at the first pass after the exit. A restart (new pid) opens
the new namespace: its counters start again from 0, as cAdvisor's do (a
bridge container's namespace is kept across restarts, so they go on).

A process that is gone, or whose pid now belongs to another cgroup, is not
read: counted once per pid in cgroup_agent_collection_errors_total{reason="network"}
and logged; the pass goes on. ``attach`` returns the very same sample object
while neither the cgroup's sample nor the counters changed (the renderer's
cache relies on it).
"""
from __future__ import annotations

import threading

import structlog

from agent import selfmetrics
from runtime import netstat

log = structlog.get_logger("agent.netmeter")

# the root cgroup's interfaces: the host's, read where cAdvisor reads them (pid 1), else from
# agentd's own namespace (the host's too: a pid 1 we may not look at, in a container or a sandbox)
ROOT_PIDS = (1, "self")


class _Entry:
    __slots__ = ("pid", "reader", "ifaces")

    def __init__(self, pid, reader, ifaces=None):
        self.pid = pid
        self.reader = reader      # NetDevReader, or None (host network, gone, or closed)
        self.ifaces = ifaces      # the last counted interfaces read (None: never read)


class NetMeter:
    """Per-container NetDevReaders, owned by the collector; thread-safe."""

    def __init__(self, mount: str):
        self.mount = mount.rstrip("/")
        self._host_ns = netstat.netns_inode("self")   # agentd runs in the host's network namespace
        self._entries: dict[str, _Entry] = {}          # container cgroup path -> entry
        self._merged: dict[str, tuple] = {}            # cgroup path -> (base sample, ifaces, result)
        self._root: netstat.NetDevReader | None | bool = None
        self._lock = threading.Lock()

    def attach(self, infos, samples: dict) -> None:
        """Put each container's network counters into its sample in ``samples`` (in place)."""
        with self._lock:
            listed = set()
            for info in infos:
                cg = getattr(info, "cgroup", None)
                if not cg:
                    continue
                listed.add(cg)
                base = samples.get(cg)
                if base is None:
                    continue
                samples[cg] = self._merge(cg, base, self._read(info))
            for cg in [c for c in self._entries if c not in listed]:
                self._drop(cg)
            for cg in [c for c in self._merged if c not in listed and c != "/"]:
                del self._merged[cg]

    def attach_one(self, info, sample):
        """The same for one sample read outside a pass (the supervisor's final
        read): only through a namespace a pass opened while the process ran.
        A container no pass saw running (created and removed between two
        passes, or its pid gone) gets no figures and counts no error: its
        process is gone by the final read, nothing can be opened for it."""
        if sample is None:
            return None
        with self._lock:
            e = self._entries.get(info.cgroup)
            pid = getattr(info, "pid", None)
            if e is None or (pid is not None and e.pid != pid):
                return sample
            return _with_network(sample, self._read(info))

    def attach_root(self, sample):
        """The root cgroup's sample with the host's interfaces (cAdvisor reads /proc/1/net/dev)."""
        if sample is None:
            return None
        with self._lock:
            if self._root is None:
                for pid in ROOT_PIDS:
                    try:
                        self._root = netstat.NetDevReader.open(pid)
                        break
                    except OSError as exc:
                        log.info("netmeter.root_unreadable", pid=pid, error=str(exc))
                        self._root = False
            if self._root is False:
                return sample
            try:
                ifaces = self._root.read()
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                selfmetrics.inc("collection_errors_total", reason="network")
                log.warning("netmeter.root_read_failed", error=str(exc))
                return sample
            return self._merge("/", sample, ifaces)

    def close(self) -> None:
        with self._lock:
            for cg in list(self._entries):
                self._drop(cg)
            if self._root:
                self._root.close()
            self._root = None

    # -- inside the lock ---------------------------------------------------

    def _read(self, info):
        cg = info.cgroup
        pid = getattr(info, "pid", None)
        e = self._entries.get(cg)
        if e is not None and pid is not None and e.pid != pid:   # restarted: a new namespace
            self._drop(cg)
            e = None
        if e is None:
            if pid is None:
                return None
            e = self._entries[cg] = _Entry(pid, None)
            rel = cg[len(self.mount):] if cg.startswith(self.mount + "/") else None
            try:
                e.reader = netstat.NetDevReader.open(pid, rel, self._host_ns)
            except OSError as exc:
                self._vanished(info, pid, exc)
                return None
            if e.reader is None:
                return None       # the host's network: nothing of its own to report
        if e.reader is not None:
            try:
                e.ifaces = e.reader.read()
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                e.reader.close()
                e.reader = None
                self._vanished(info, pid, exc)
            if pid is None and e.reader is not None and not e.ifaces:
                e.reader.close()   # exited with only a loopback: nothing billable can move, free it
                e.reader = None
        return e.ifaces

    def _merge(self, key, base, ifaces):
        prev = self._merged.get(key)
        if prev is not None and prev[0] is base and prev[1] is ifaces:
            return prev[2]
        out = _with_network(base, ifaces)
        self._merged[key] = (base, ifaces, out)
        return out

    def _drop(self, cg: str) -> None:
        e = self._entries.pop(cg, None)
        if e is not None and e.reader is not None:
            e.reader.close()
        self._merged.pop(cg, None)

    @staticmethod
    def _vanished(info, pid, exc) -> None:
        selfmetrics.inc("collection_errors_total", reason="network")
        log.info("netmeter.container_unreadable", id=getattr(info, "id", None), pid=pid,
                 cgroup=info.cgroup, error=str(exc))


def _with_network(sample, ifaces):
    """``sample`` with the interfaces' counters and their totals (unchanged when ``ifaces`` is None)."""
    if ifaces is None:
        return sample
    rx, tx = netstat.totals(ifaces)
    return sample._replace(net_rx_bytes=rx, net_tx_bytes=tx, network=ifaces)
