"""Per-interface traffic counters of a process's network namespace.

The kernel keeps, for every interface, the counters that ``/proc/<pid>/net/dev``
lists (the namespace is the one of <pid>). This module parses that file and
keeps it open: a ``NetDevReader`` opened once re-reads it with pread at offset
0, one syscall per pass (bench/net_counters.py measures it against an
open/read/close of the file and against a netlink RTM_GETLINK dump).

The open descriptor pins the network namespace it was opened in: the
counters stay readable after the namespace's last process exited (the final
figure of a container), and the namespace lives until ``close()``. Close it
when the container is gone.

Which interfaces are counted is cAdvisor's rule (``is_ignored``): names that
start with lo, veth, docker or nerdctl (any case) are left out; loopback
traffic never leaves the namespace, the others are host-side ends of
containers' links.

    r = NetDevReader.open(pid, cgroup_rel)   # None: host network or pid gone
    ifaces = r.read()                         # tuple[IfStats], counted ones only
    r.close()
"""
from __future__ import annotations

import errno
import os
from typing import NamedTuple

# cAdvisor's ignoredDevicePrefixes (container/libcontainer/handler.go), compared lower-cased
IGNORED_PREFIXES = ("lo", "veth", "docker", "nerdctl")
_PREAD_SIZE = 65536


class IfStats(NamedTuple):
    """One interface's counters, as /proc/net/dev gives them."""

    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


class NetGone(OSError):
    """The process (and with it our view of its namespace) is gone."""


def is_ignored(name: str) -> bool:
    return name.lower().startswith(IGNORED_PREFIXES)


def parse_net_dev(text: str) -> tuple[IfStats, ...]:
    """Every interface of a /proc/net/dev text (ValueError if malformed)."""
    if not isinstance(text, str):
        raise ValueError(f"net/dev contents must be text, not {type(text).__name__}")
    out = []
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        if not sep:
            raise ValueError(f"net/dev line without an interface name: {line!r}")
        f = rest.split()
        if len(f) != 16:
            raise ValueError(f"net/dev line of {len(f)} fields, 16 expected: {line!r}")
        # receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes packets errs drop ...
        out.append(IfStats(name.strip(), int(f[0]), int(f[1]), int(f[2]), int(f[3]),
                           int(f[8]), int(f[9]), int(f[10]), int(f[11])))
    return tuple(out)


def counted(ifaces) -> tuple[IfStats, ...]:
    """The interfaces cAdvisor reports (``is_ignored`` ones left out), by name."""
    return tuple(sorted((i for i in ifaces if not is_ignored(i.name)), key=lambda i: i.name))


def totals(ifaces) -> tuple[int, int]:
    """(rx_bytes, tx_bytes) summed over ``ifaces``."""
    return sum(i.rx_bytes for i in ifaces), sum(i.tx_bytes for i in ifaces)


def netns_inode(pid: int | str) -> int:
    """The inode of a process's network namespace (``"self"`` for ours)."""
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def _in_cgroup(pid: int, cgroup_rel: str) -> bool:
    """The process is in the cgroup v2 ``cgroup_rel`` (path below the mount, leading /)."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].rstrip("\n") == cgroup_rel
    return False


class NetDevReader:
    """/proc/<pid>/net/dev of one namespace, kept open and re-read with pread."""

    __slots__ = ("fd", "pid", "netns", "_raw", "_ifaces")

    def __init__(self, fd: int, pid: int, netns: int):
        self.fd = fd
        self.pid = pid
        self.netns = netns
        self._raw = None
        self._ifaces: tuple = ()

    @classmethod
    def open(cls, pid: int, cgroup_rel: str | None = None, host_netns: int | None = None):
        """The reader of ``pid``'s namespace; None when the process shares ``host_netns``
        (the host's network: no figures of its own). NetGone when the process is gone or,
        with ``cgroup_rel``, is no longer in that cgroup (its pid was reused)."""
        try:
            ns = netns_inode(pid)
            if host_netns is not None and ns == host_netns:
                return None
            fd = os.open(f"/proc/{pid}/net/dev", os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError) as exc:
            raise NetGone(errno.ESRCH, f"process {pid} is gone") from exc
        try:
            # opened first, checked after: a pid reused in between is caught here
            if netns_inode(pid) != ns or (cgroup_rel is not None and not _in_cgroup(pid, cgroup_rel)):
                raise NetGone(errno.ESRCH, f"process {pid} is gone or left its cgroup")
        except FileNotFoundError as exc:
            os.close(fd)
            raise NetGone(errno.ESRCH, f"process {pid} is gone") from exc
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, pid, ns)

    def read(self) -> tuple[IfStats, ...]:
        """The counted interfaces now (the same tuple object while the text is unchanged)."""
        if self.fd < 0:
            raise NetGone(errno.EBADF, "reader is closed")
        data = os.pread(self.fd, _PREAD_SIZE, 0)
        if len(data) == _PREAD_SIZE:      # a namespace of many interfaces: the rest
            parts = [data]
            while len(parts[-1]) == _PREAD_SIZE:
                parts.append(os.pread(self.fd, _PREAD_SIZE, _PREAD_SIZE * len(parts)))
            data = b"".join(parts)
        if data != self._raw:
            self._ifaces = counted(parse_net_dev(data.decode()))
            self._raw = data
        return self._ifaces

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1

    def __del__(self):
        self.close()


def read_net_dev(pid: int | str) -> tuple[IfStats, ...]:
    """One open/read/close of /proc/<pid>/net/dev, counted interfaces only."""
    with open(f"/proc/{pid}/net/dev") as f:
        return counted(parse_net_dev(f.read()))
