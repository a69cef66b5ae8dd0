"""What a checkpoint leaves outside CRIU's images, and how the restore gives it back.

A bridged container's network namespace is agentd's (a bound nsfs file,
agent/network/service.py), not the container's: the dump names it external
(`--external net[INODE]:extnet`) so CRIU records no interface, address or
rule of it, and the restore hands CRIU the new container's namespace,
attached by agentd as at any create (same address when free), opened here
and passed as a descriptor (`--inherit-fd fd[N]:extnet`); the restored tree
joins it. Its veth, address and nftables rules are agentd's as for any
container.

Files agentd bind-mounts into the container (the bridged container's
/etc/hosts, /etc/resolv.conf, /etc/hostname, written per container id) are
external mounts by destination: `--external mnt[DST]:KEY` at the dump,
`--ext-mount-map KEY:SRC` at the restore, SRC being the new container's
file of that destination in its spawn spec.

Volumes are external mounts too (key v0, v1, ...), restored from a staged
clone of their source checked as at create (volumes.py).

Runs in the launcher (it opens the namespaces; agentd never forks CRIU).
"""
from __future__ import annotations

import os

from runtime import namespaces as ns

NET_KEY = "extnet"


class ExternalError(Exception):
    """An external resource of the checkpoint is not what it should be (one line)."""


def open_netns(path: str) -> int:
    """A descriptor of the network namespace bound on `path`, checked to be one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        raise ExternalError(f"network namespace {path}: {e.strerror}") from None
    if ns.ns_type(fd) != ns.CLONE_NEWNET:
        os.close(fd)
        raise ExternalError(f"network namespace {path}: not a bound network namespace")
    return fd


def netns_inode(pid: int) -> int:
    """The inode of the network namespace `pid` is in."""
    link = os.readlink(f"/proc/{pid}/ns/net")          # net:[INODE]
    return int(link[link.index("[") + 1:-1])


def dump_args(pid: int, netns: str | None, mounts: dict) -> list[str]:
    """CRIU dump options for the container whose init is `pid`: its bound
    network namespace `netns` (checked to be the one pid is in) and the
    external mounts {destination: key}."""
    argv = []
    if netns:
        fd = open_netns(netns)
        try:
            ino = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        if netns_inode(pid) != ino:
            raise ExternalError(f"network namespace {netns}: the container (pid {pid}) is not in it")
        argv += ["--external", f"net[{ino}]:{NET_KEY}"]
    for dst, key in sorted(mounts.items()):
        argv += ["--external", f"mnt[{dst}]:{key}"]
    return argv


def restore_args(netns: str | None, mounts: dict, spawn_mounts: list,
                 staged: dict | None = None) -> tuple[list[str], list[int]]:
    """CRIU restore options and the descriptors to pass (the caller closes
    them): the new container's network namespace for the one the dump named
    external, and each external mount {destination: key} mapped onto the
    source of that destination in the new spawn spec's mounts, or onto
    `staged[key]` (a volume staged by volumes.py)."""
    argv, fds = [], []
    src_of = {m.get("dst"): m.get("src") for m in spawn_mounts or [] if isinstance(m, dict)}
    for dst, key in sorted(mounts.items()):
        src = (staged or {}).get(key) or src_of.get(dst)
        if not isinstance(src, str) or not os.path.isabs(src):
            raise ExternalError(f"external mount {dst}: the new container has no source for it")
        argv += ["--ext-mount-map", f"{key}:{src}"]
    if netns:
        fd = open_netns(netns)
        fds.append(fd)
        argv += ["--inherit-fd", f"fd[{fd}]:{NET_KEY}"]
    return argv, fds
