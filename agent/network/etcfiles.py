"""The files a bridge container gets on /etc/hosts, /etc/resolv.conf and
/etc/hostname (bind-mounted read-only by the launcher, like volumes).

/etc/hosts lists every container of the same network (so names resolve
without the host's resolver) and the --add-host entries; it is rewritten
in place (same inode: the bind mount keeps showing it) as containers come
and go. /etc/resolv.conf: --dns, else the host's nameservers that are not
loopback addresses (those cannot be reached from another namespace)."""
from __future__ import annotations

import ipaddress
import os

HEADER = "# written by cgroup-agent: containers of network {net}\n"
BASE = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


# where each file is bind-mounted in the container -> its name in the container's files dir
MOUNTED = {"/etc/hosts": "hosts", "/etc/resolv.conf": "resolv.conf", "/etc/hostname": "hostname"}


def hosts(net: str, peers: list[tuple[str, str, str]], extra: list) -> str:
    """peers: (ip, hostname, name) of every container on `net`."""
    lines = [HEADER.format(net=net), BASE]
    for ip, hostname, name in sorted(peers, key=lambda p: ipaddress.IPv4Address(p[0])):
        names = " ".join(dict.fromkeys(n for n in (hostname, name) if n))
        lines.append(f"{ip}\t{names}\n")
    for name, ip in extra:
        lines.append(f"{ip}\t{name}\n")
    return "".join(lines)


def host_nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    try:
                        if not ipaddress.ip_address(parts[1]).is_loopback:
                            out.append(parts[1])
                    except ValueError:
                        continue
    except OSError:
        pass
    return out


def resolv(dns: list[str]) -> str:
    servers = dns or host_nameservers()
    if not servers:
        return "# written by cgroup-agent: the host has no nameserver a container can reach\n"
    return "".join(f"nameserver {s}\n" for s in servers)


def write_in_place(path: str, text: str) -> None:
    """Same inode (a bind mount of it keeps showing the new text)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        data = text.encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)
