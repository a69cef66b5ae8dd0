"""The launcher's end of a terminal made inside a container (runtime/
terminal.py): the socketpair whose other end the container's process gets,
and the multiplexer it sends back. Used by `run -t` (agent/launcher/
spawning.py) and `exec -t` (agent/launcher/execs.py)."""

from __future__ import annotations

import os
import socket

from agent.launcher.protocol import SETUP_TIMEOUT


def pair() -> tuple[socket.socket, int]:
    """(the launcher's end, the descriptor the child keeps and sends on)."""
    mine, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return mine, child_end.detach()


def received_terminal(sock) -> int | None:
    """The pty multiplexer the process sent (it is sent before its execve,
    which is before its failure pipe read empty): None if none came."""
    sock.settimeout(SETUP_TIMEOUT)
    try:
        _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    except OSError:
        return None
    for fd in fds[1:]:
        os.close(fd)
    if not fds:
        return None
    os.set_inheritable(fds[0], False)
    return fds[0]
