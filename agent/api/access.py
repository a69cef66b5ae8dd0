"""Who may use the control API: the peer's credentials and the one Access that decides.

Per connection, from SO_PEERCRED (and SO_PEERGROUPS for its supplementary
groups):

- uid 0, the agent's own uid, and members of ``admin_group`` may do anything;
- members of ``read_group`` may send GET requests; when ``read_group`` is
  empty, anyone who can open the socket (mode 0660, group ``socket_group``)
  may read;
- everyone else gets 403.

A process inside one of the agent's containers never gets access (its cgroup
is below R/containers): ``containers_cgroup(supervisor)`` places that cgroup,
and the server builds its Access with it, at start and on reload.
"""
from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
from typing import NamedTuple

from agent.api.errors import ApiSetupError
from runtime.cgroupfs import find_mount

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13; not exported by Python 3.11


class Peer(NamedTuple):
    pid: int
    uid: int
    gid: int
    groups: frozenset  # primary and supplementary gids


def peer_credentials(sock: socket.socket) -> Peer:
    """The connecting process's pid/uid/gid (SO_PEERCRED) and its groups."""
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    groups: set[int] = {gid}
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * 4096)
        groups.update(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    except OSError:  # old kernel or too many groups: ask the group database
        try:
            groups.update(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
        except (KeyError, OSError):
            pass
    return Peer(pid, uid, gid, frozenset(groups))


def group_id(key: str, name: str) -> int | None:
    """The gid of group ``name`` (a number is accepted), None for ""; ApiSetupError naming agent.<key>."""
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        if name.isdigit():
            return int(name)
        raise ApiSetupError(f"agent.{key}: group {name!r} does not exist on this host") from None


def peer_cgroup(pid: int) -> str | None:
    """The peer's cgroup2 path (relative to the mount), None if unknown."""
    try:
        with open(f"/proc/{pid}/cgroup", "rb") as f:
            for line in f.read().decode(errors="replace").splitlines():
                if line.startswith("0::"):
                    return line[3:]
    except OSError:
        pass
    return None


class Access:
    """Maps a peer to "admin", "read" or None (no access), and to who it is for the connection caps.

    A process inside one of our own containers never gets access, whatever
    its uid: a container on the host root can reach the socket by path, and
    root inside it is uid 0 here (no user namespaces). `containers_cgroup`
    (R/containers as /proc/PID/cgroup shows it, None when the API serves no
    real supervisor) has no default: whoever builds an Access must say it."""

    def __init__(self, admin_group: str, read_group: str, containers_cgroup: str | None):
        self.admin_gid = group_id("admin_group", admin_group)
        self.read_gid = group_id("read_group", read_group)
        self.own_uid = os.geteuid()
        self.containers_cgroup = containers_cgroup.rstrip("/") + "/" if containers_cgroup else None

    def _container_of(self, peer: Peer) -> str | None:
        """The peer's container (first cgroup component below R/containers), "?" when unknown, None outside."""
        if self.containers_cgroup is None:
            return None
        if peer.pid <= 0:  # the peer's pid is invisible from here: another PID namespace
            return "?"
        cg = peer_cgroup(peer.pid)
        if cg is None:
            return "?"
        cg = cg.rstrip("/") + "/"
        if not cg.startswith(self.containers_cgroup):
            return None
        return cg[len(self.containers_cgroup):].split("/", 1)[0] or "?"

    def in_container(self, peer: Peer) -> bool:
        return self._container_of(peer) is not None

    def _level(self, peer: Peer, container: str | None) -> str | None:
        if container is not None:
            return None
        if peer.uid in (0, self.own_uid):
            return "admin"
        if self.admin_gid is not None and self.admin_gid in peer.groups:
            return "admin"
        if self.read_gid is None or self.read_gid in peer.groups:
            return "read"
        return None

    def level(self, peer: Peer) -> str | None:
        return self._level(peer, self._container_of(peer))

    def classify(self, peer: Peer) -> tuple[str | None, tuple]:
        """(level, key): key is ("container", id) for a process inside one, else ("uid", uid)."""
        container = self._container_of(peer)
        key = ("container", container) if container is not None else ("uid", peer.uid)
        return self._level(peer, container), key


def containers_cgroup(supervisor) -> str | None:
    """R/containers relative to the cgroup2 mount (as /proc/PID/cgroup shows it).

    None only without a cgroup layout (an API over a stand-in supervisor); a
    real one whose containers cgroup cannot be placed is refused: the API never
    serves without the in-container guard."""
    layout = getattr(supervisor, "layout", None)
    if layout is None:
        return None
    path = layout.containers.path
    try:
        mount = find_mount().rstrip("/")
    except Exception as e:  # noqa: BLE001
        raise ApiSetupError(f"cannot find the cgroup2 mount ({e}); refusing to serve without the in-container guard") from None
    if not path.startswith(mount + "/"):
        raise ApiSetupError(f"containers cgroup {path} is not below the cgroup2 mount {mount}; "
                            "refusing to serve without the in-container guard")
    return path[len(mount):]
