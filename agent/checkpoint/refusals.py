"""What a checkpoint cannot take, each as one line naming what was wrong and
what is accepted. Checked by agentd before the launcher runs CRIU, so a
refused checkpoint leaves the container as it was."""
from __future__ import annotations

import os
import stat

ACCEPTED = ("checkpoint takes rootfs containers on a bridge network or --network none, with or without a user "
            "namespace, and image containers with --userns host without --leave-running; "
            "with volumes and --tmpfs, without --device nodes, "
            "whose processes hold no terminal, no unix socket and no established TCP connection "
            "(unless --tcp-established)")
TCP_ESTABLISHED = "01"          # the st column of /proc/net/tcp
TTY_MAJORS = {4, 5, 136}     # tty/ttyS, /dev/tty /dev/console /dev/ptmx, pts


def spec_refusal(spec, leave_running: bool = False) -> str | None:
    """Why this container's spec cannot be checkpointed, or None."""
    what = None
    image = bool(getattr(spec, "image_id", ""))
    if image and leave_running:
        what = ("it is an image container, whose writable layer is saved once its processes stopped: "
                "checkpoint it without --leave-running")
    elif image and spec.userns not in ("host", None, ""):
        what = ("it is an image container in a user namespace, whose image layers are idmapped for it "
                "(CRIU does not dump a mount's idmap)")
    elif not (spec.rootfs or image):
        what = "it runs on the host's root file system, whose mounts CRIU cannot take along"
    elif spec.devices:
        what = "it has --device nodes"
    elif spec.network == "host":
        what = "it is on the host's network (its sockets are the host's, which CRIU cannot take along)"
    if what is None:
        return None
    return f"checkpoint {spec.name}: {what}; {ACCEPTED}"


def idmapped(userns_view) -> list[str]:
    """The destinations a user-namespace container's last start mounted idmapped."""
    idmap = userns_view.get("idmap") if isinstance(userns_view, dict) else None
    return sorted(dst for dst, how in (idmap or {}).items() if how == "idmapped")


def _tcp_established(pid: int) -> dict[int, str]:
    """{socket inode: remote address} of the established TCP connections in pid's network namespace."""
    out = {}
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) >= 10 and parts[3] == TCP_ESTABLISHED and parts[9].isdigit():
                        out[int(parts[9])] = parts[2]
        except OSError:
            pass
    return out


def _address(hex_addr: str) -> str:
    """'0100007F:1B58' (/proc/net/tcp) -> '127.0.0.1:7000'; IPv6 as [addr]:port (an IPv4-mapped one
    as IPv4); the text as it is if unreadable."""
    import ipaddress
    import socket
    try:
        host, port = hex_addr.split(":")
        raw = bytes.fromhex(host)
        if len(raw) == 4:
            return f"{socket.inet_ntop(socket.AF_INET, raw[::-1])}:{int(port, 16)}"
        addr = ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
        if addr.ipv4_mapped:            # a dual-stack socket's IPv4 peer
            return f"{addr.ipv4_mapped}:{int(port, 16)}"
        return f"[{addr}]:{int(port, 16)}"
    except (ValueError, OSError):
        return hex_addr


def _unix_inodes(pid: int) -> set[int]:
    """Inodes of the unix sockets in the network namespace of pid."""
    out = set()
    try:
        with open(f"/proc/{pid}/net/unix") as f:
            next(f, None)
            for line in f:
                parts = line.split()
                if len(parts) >= 7 and parts[6].isdigit():
                    out.add(int(parts[6]))
    except OSError:
        pass
    return out


def process_refusal(name: str, pids, tcp_established: bool = False) -> str | None:
    """A terminal, a unix socket or (unless tcp_established) an established
    TCP connection held by one of the container's processes."""
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        unix = tcp = None
        for fd in fds:
            try:
                link = os.readlink(f"{fd_dir}/{fd}")
                st = os.stat(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in TTY_MAJORS:
                return (f"checkpoint {name}: process {pid} holds a terminal ({link} on fd {fd}); "
                        f"{ACCEPTED}")
            if link.startswith("socket:["):
                if unix is None:
                    unix = _unix_inodes(pid)
                if int(link[8:-1]) in unix:
                    return (f"checkpoint {name}: process {pid} holds a unix socket ({link} on fd {fd}), "
                            f"possibly connected outside the container; {ACCEPTED}")
                if tcp_established:
                    continue
                if tcp is None:
                    tcp = _tcp_established(pid)
                if int(link[8:-1]) in tcp:
                    return (f"checkpoint {name}: process {pid} holds an established TCP connection ({link} on fd "
                            f"{fd}) to {_address(tcp[int(link[8:-1])])}; pass --tcp-established to take it "
                            f"along (its peer must keep it until the restore, at the same address), or close it "
                            f"first; {ACCEPTED}")
    return None
