"""A container's log file, fed from its pipe by splice(2), capped in size."""

from __future__ import annotations

import errno
import os

from agent import logfiles
from agent.logtimes import TimeIndex

SPLICE_FLAGS = 0x1 | 0x2          # SPLICE_F_MOVE | SPLICE_F_NONBLOCK
SPLICE_CHUNK = 1 << 20


class LogSink:
    """A log file that never passes max_bytes: the write that would pass it
    renames the file to <path>.1 (replacing the old one) and goes on in a new
    file. Pipes are copied in with splice(2), kernel to kernel, no Python
    byte loop. ``produced`` counts every byte the container wrote to it,
    kept or rotated away; agent.logfiles keeps the rotated part on disk."""

    def __init__(self, path: str, max_bytes: int):
        self.path, self.max_bytes = path, max_bytes
        self.fd = -1
        self.rotated = 0
        self.produced = 0
        self._open()
        self.times = TimeIndex(path)    # when each copy arrived (logs -t, --since)

    def _open(self):
        # not O_APPEND: splice(2) refuses a file opened for appending; the
        # launcher is the only writer and keeps its own offset at the end
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.size = os.lseek(self.fd, 0, os.SEEK_END)
        ino = os.fstat(self.fd).st_ino
        side = logfiles.read_rotated(self.path)
        if side is not None and side[0] == ino:
            self.rotated = side[1]      # a restarted container or launcher: go on counting
        elif side is not None and _inode(self.path + ".1") == side[0]:
            # a copier killed between the rename and the sidecar's update
            # (agent/launcher/logcopier.py): the rotated file is the one it describes
            self.rotated = side[1] + os.path.getsize(self.path + ".1")
        try:
            logfiles.write_rotated(self.path, ino, self.rotated)
        except OSError:
            pass

    def _room(self, want: int) -> int:
        if self.max_bytes and self.size >= self.max_bytes:
            self.rotate()
        return min(want, self.max_bytes - self.size) if self.max_bytes else want

    def write(self, data: bytes) -> None:
        self.produced += len(data)
        while data:
            room = self._room(len(data))
            chunk, data = data[:room], data[room:]
            try:
                n = os.write(self.fd, chunk)
            except OSError:
                return          # disk full or file gone: drop, never crash
            self.times.note(self.size)
            self.size += n

    def splice_from(self, fd: int) -> int:
        """Move what waits in pipe ``fd`` into the file; returns the bytes
        moved (0: end of file). Raises BlockingIOError when the pipe is empty.
        A terminal's multiplexer (run -t) is read, not spliced (EINVAL); its
        EIO once every other end is closed is its end of file."""
        moved = 0
        while True:
            room = self._room(SPLICE_CHUNK)
            try:
                n = os.splice(fd, self.fd, room, flags=SPLICE_FLAGS)
            except BlockingIOError:
                if moved:
                    return moved
                raise
            except OSError as e:
                if e.errno == errno.EINVAL:     # a terminal, or a file system without splice: copy it
                    try:
                        return moved + self._copy_from(fd, room)
                    except BlockingIOError:
                        if moved:
                            return moved
                        raise
                try:
                    data = os.read(fd, room)
                except BlockingIOError:
                    data = b""
                self.produced += len(data)      # disk full, file gone: drop, never crash
                return moved + len(data)
            if n == 0:
                return moved
            self.times.note(self.size)
            self.size += n
            self.produced += n
            moved += n

    def _copy_from(self, fd: int, room: int) -> int:
        """read(2) and write(2) what waits in `fd` (up to `room` bytes; a
        terminal gives a few KiB a read): splice_from's answers. A terminal's
        EIO (its other end closed) is its end of file."""
        moved = 0
        while moved < room:
            try:
                data = os.read(fd, room - moved)
            except BlockingIOError:
                if moved:
                    break
                raise
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
                data = b""
            if not data:
                break
            self.write(data)
            moved += len(data)
        return moved

    def rotate(self) -> None:
        os.close(self.fd)
        self.rotated += self.size
        try:
            os.replace(self.path, self.path + ".1")
            self.times.rotate(self.path)
        except OSError:
            self.rotated -= self.size   # still the same file: reopened at its end
        self._open()

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.times.close()


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None
