"""Who holds a host port: the listening (tcp) or bound (udp) sockets of
/proc/net/{tcp,tcp6,udp,udp6} and the process whose descriptor is that
socket, named "pid N (COMM)"."""
from __future__ import annotations

import os

TCP_LISTEN = "0A"


def _inodes(proto: str, port: int, ip: str) -> set[int]:
    out = set()
    for suffix in ("", "6"):
        try:
            with open(f"/proc/net/{proto}{suffix}") as f:
                next(f)
                for line in f:
                    cols = line.split()
                    local, state, inode = cols[1], cols[3], int(cols[9])
                    addr, _, hexport = local.rpartition(":")
                    if int(hexport, 16) != port or (proto == "tcp" and state != TCP_LISTEN):
                        continue
                    if ip and suffix == "" and addr not in ("00000000", _hex4(ip)):
                        continue
                    out.add(inode)
        except FileNotFoundError:
            continue
    return out


def _hex4(ip: str) -> str:
    return "".join(f"{int(x):02X}" for x in reversed(ip.split(".")))


def holder(proto: str, port: int, ip: str = "") -> str | None:
    """"pid N (COMM)" (or "a socket of another network namespace's owner"
    when no process of ours shows it), or None when the port is free."""
    inodes = _inodes(proto, port, ip)
    if not inodes:
        return None
    want = {f"socket:[{i}]" for i in inodes}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in want:
                    with open(f"/proc/{pid}/comm") as f:
                        return f"pid {pid} ({f.read().strip()})"
            except OSError:
                continue
    return "a socket whose process is not visible"
