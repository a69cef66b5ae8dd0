"""When each part of a container's log file arrived (logs -t, logs --since).

The launcher copies a container's output into its log file a pipe-full at a
time; for every copy it appends one record to <file>.times: the offset in
the file of the copy's first byte and the wall-clock time of the copy
(struct RECORD, 16 bytes). A line's time is the time of the copy that
brought its first byte (within LOG_REST, 20 ms, of when it was written).
The sidecar is renamed with its file at rotation (<file>.1.times), so the
offsets always describe the file beside them.

The reader side (`TimedTail`) is what the logs endpoint uses when asked for
times: complete lines, each optionally prefixed by its RFC 3339 time,
those before `since` skipped.
"""
from __future__ import annotations

import bisect
import os
import struct
import time

SUFFIX = ".times"
RECORD = struct.Struct("<Qd")
CHUNK = 65536


def sidecar(path: str) -> str:
    return path + SUFFIX


class TimeIndex:
    """The writer: one record per copy into the log file."""

    def __init__(self, path: str):
        self.path = sidecar(path)
        self.fd = -1
        self._open()

    def _open(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError:
            self.fd = -1            # no times for this file; the log itself still works

    def note(self, offset: int) -> None:
        if self.fd >= 0:
            try:
                os.write(self.fd, RECORD.pack(offset, time.time()))
            except OSError:
                pass

    def rotate(self, log_path: str) -> None:
        """The log file was renamed to <file>.1: its index goes with it."""
        self.close()
        try:
            os.replace(self.path, sidecar(log_path + ".1"))
        except OSError:
            pass
        self._open()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def stamp(t: float) -> bytes:
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z ").encode()


class TimedTail:
    """Complete lines of a growing log file with their times; survives rotation."""

    def __init__(self, path: str, tail: int | None, since: float | None, timestamps: bool):
        self.path, self.tail, self.since, self.timestamps = path, tail, since, timestamps
        self.f = None
        self.ino = None
        self.offsets: list[int] = []
        self.times: list[float] = []
        self.index_pos = 0
        self.pending = b""
        self.pending_at = 0

    def _load_index(self) -> None:
        try:
            with open(sidecar(self.path), "rb") as f:
                f.seek(self.index_pos)
                data = f.read()
        except OSError:
            return
        whole = len(data) - len(data) % RECORD.size
        for off, t in RECORD.iter_unpack(data[:whole]):
            self.offsets.append(off)
            self.times.append(t)
        self.index_pos += whole

    def _time_of(self, offset: int) -> float | None:
        i = bisect.bisect_right(self.offsets, offset) - 1
        if i < 0 and self.offsets:
            i = 0
        return self.times[i] if i >= 0 else None

    def read(self, final: bool = False) -> bytes:
        if self.f is None:
            try:
                self.f = open(self.path, "rb")  # noqa: SIM115 - kept open between reads
            except FileNotFoundError:
                return b""
            self.ino = os.fstat(self.f.fileno()).st_ino
            self.offsets, self.times, self.index_pos = [], [], 0
            if self.tail is not None:
                from agent.logtail import start_of_last_lines
                self.f.seek(start_of_last_lines(self.f, self.tail))
                self.tail = None
            self.pending, self.pending_at = b"", self.f.tell()
        data = self.f.read(CHUNK)
        if not data:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                st = None
            if st is not None and st.st_ino != self.ino:     # rotated: the rest of the old file, then the new
                rest = self._lines(final=True)
                self.close()
                return rest + self.read(final)
            return self._lines(final)
        self.pending += data
        return self._lines(final)

    def _lines(self, final: bool) -> bytes:
        self._load_index()
        out = []
        start = 0
        while True:
            nl = self.pending.find(b"\n", start)
            if nl < 0:
                break
            out.append(self._one(self.pending[start:nl + 1], self.pending_at + start))
            start = nl + 1
        if final and start < len(self.pending):
            out.append(self._one(self.pending[start:], self.pending_at + start))
            start = len(self.pending)
        self.pending = self.pending[start:]
        self.pending_at += start
        return b"".join(out)

    def _one(self, line: bytes, offset: int) -> bytes:
        t = self._time_of(offset)
        if self.since is not None and (t is None or t < self.since):
            return b""
        if not self.timestamps:
            return line
        return (stamp(t) if t is not None else b"-" * 30 + b" ") + line

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
