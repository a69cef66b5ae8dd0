"""Small helpers of the launcher's loop: who may connect, how a child ended,
reading a child's setup pipe with a deadline."""

from __future__ import annotations

import os
import select
import socket
import struct
import time


def refuse_peer(sock: socket.socket) -> str | None:
    """Only our own user, and never a process inside a container: every
    container has its own PID namespace, so a peer whose PID namespace is not
    ours is refused (a host-root container could otherwise reach this socket
    through the filesystem and ask for an unconfined sibling)."""
    pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                         struct.calcsize("3i")))
    if uid != os.geteuid():
        return f"peer uid {uid} is not {os.geteuid()}"
    if pid <= 0:
        return "peer pid unknown (peer in another PID namespace)"
    try:
        if os.stat(f"/proc/{pid}/ns/pid").st_ino != os.stat("/proc/self/ns/pid").st_ino:
            return f"peer pid {pid} is in another PID namespace"
    except OSError:
        return f"peer pid {pid} vanished"
    return None


def describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def waitpid_quiet(pid):
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def read_to_eof(fd: int, timeout: float, stop_at_newline: bool = False) -> str:
    deadline = time.monotonic() + timeout
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(left * 1000):
            break
        data = os.read(fd, 4096)
        if not data:
            break
        buf += data
        if stop_at_newline and b"\n" in buf:
            break
    return buf.decode(errors="replace")

