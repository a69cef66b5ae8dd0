"""What one client may hold of the control API: connection caps and read deadlines.

    gate = ConnectionGate(max_total=256, max_per_peer=32)
    reason = gate.admit(conn, key, admin=False)   # None: admitted; "total"/"peer": refused
    gate.release(conn)                            # when its handler thread ends

    reader = DeadlineReader(sock)                 # the handler's rfile
    reader.limit(seconds, max_bytes)              # a deadline for the whole head (or body)
    reader.readline(65537) / reader.read(n)       # TimeoutError past it, HeadTooLarge past max_bytes

The gate is consulted in the accept loop, before any thread exists for the
connection: a refused connection costs one non-blocking write and a close.
``key`` says who the peer is (agent.api.access.Access.classify: the container for a
process inside one, else the uid). Host admins (``admin=True``: root and the
admin group, outside containers) are exempt from the per-peer cap, and the
last eighth of ``max_total`` is kept for them: however many tenants fill
their share, agentctl as root still gets in.

The reader enforces a deadline for the whole request head and then for the
whole body, not per recv(): each recv() waits at most until the deadline,
so a client trickling one byte at a time cannot hold a thread longer than
that.
"""
from __future__ import annotations

import socket
import threading
import time


class HeadTooLarge(Exception):
    """The request head went past its byte budget."""


class ConnectionGate:
    def __init__(self, max_total: int, max_per_peer: int):
        self.max_total = max_total
        self.max_per_peer = max_per_peer
        self.admin_reserve = max_total // 8
        self._lock = threading.Lock()
        self._open: dict[socket.socket, object] = {}   # connection -> peer key
        self._per_peer: dict[object, int] = {}

    def admit(self, conn, key, admin: bool = False) -> str | None:
        with self._lock:
            if len(self._open) >= self.max_total - (0 if admin else self.admin_reserve):
                return "total"
            held = self._per_peer.get(key, 0)
            if not admin and held >= self.max_per_peer:
                return "peer"
            self._open[conn] = key
            self._per_peer[key] = held + 1
            return None

    def release(self, conn) -> None:
        with self._lock:
            key = self._open.pop(conn, None)
            if key is None:
                return
            left = self._per_peer.get(key, 1) - 1
            if left > 0:
                self._per_peer[key] = left
            else:
                self._per_peer.pop(key, None)

    def count(self) -> int:
        with self._lock:
            return len(self._open)


def refuse_now(conn: socket.socket, status_line: bytes, message: str) -> None:
    """Answer a refused connection with one short response without ever blocking, then close it."""
    body = ('{"error":"' + message.replace("\\", "\\\\").replace('"', '\\"') + '"}\n').encode()
    data = (status_line + b"\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    try:
        conn.setblocking(False)
        conn.send(data)
    except OSError:
        pass


class DeadlineReader:
    """A read side for one connection with an overall deadline and byte budget per phase."""

    def __init__(self, sock: socket.socket, idle_timeout: float | None):
        self.sock = sock
        self.idle_timeout = idle_timeout  # per recv() when no deadline is set
        self.buf = bytearray()
        self.deadline: float | None = None
        self.budget: int | None = None
        self.eof = False
        self.closed = False

    def limit(self, seconds: float | None, max_bytes: int | None = None) -> None:
        """From now on, reads fail with TimeoutError after `seconds` and HeadTooLarge past `max_bytes`."""
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.budget = max_bytes

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _fill(self) -> bool:
        if self.eof:
            return False
        if self.deadline is None:
            timeout = self.idle_timeout
        else:
            timeout = self.deadline - time.monotonic()
            if timeout <= 0:
                raise TimeoutError("deadline passed")
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _take(self, n: int) -> bytes:
        out = bytes(self.buf[:n])
        del self.buf[:n]
        if self.budget is not None:
            self.budget -= len(out)
            if self.budget < 0:
                raise HeadTooLarge()
        return out

    def readline(self, limit: int = -1) -> bytes:
        start = 0
        while True:
            i = self.buf.find(b"\n", start)
            if i >= 0 and (limit < 0 or i < limit):
                return self._take(i + 1)
            if limit >= 0 and len(self.buf) >= limit:
                return self._take(limit)
            if self.budget is not None and len(self.buf) > self.budget:
                raise HeadTooLarge()
            start = len(self.buf)
            if not self._fill():
                return self._take(len(self.buf))

    def read(self, n: int = -1) -> bytes:
        while (n < 0 or len(self.buf) < n) and self._fill():
            pass
        return self._take(len(self.buf) if n < 0 else min(n, len(self.buf)))

    def close(self) -> None:
        self.closed = True
        self.buf.clear()
