"""How many bytes of output a container produced into its log files.

The launcher writes a container's stdout/stderr into files that never pass
log_max_bytes: the write that would pass it renames the file to <file>.1
and goes on in a new one. What the container *produced* is therefore the
current file's size plus every byte rotated away before it. The launcher
keeps that second number in a sidecar, <file>.rotated, holding
"<inode of the current file> <bytes rotated away>", written (atomically:
tmp + rename) when it opens a file and at every rotation, so copying costs
no extra system call per byte. Anyone (agentd's supervisor) can then read
the cumulative count with two stats and a small read; the inode ties the
sidecar to the file it describes, so a reader racing a rotation gets None
(try again at the next pass), never a count that goes back or counts twice.
"""
from __future__ import annotations

import os

SIDECAR_SUFFIX = ".rotated"


def sidecar(path: str) -> str:
    return path + SIDECAR_SUFFIX


def read_rotated(path: str) -> tuple[int, int] | None:
    """(inode of the file it describes, bytes rotated away) or None when absent/unreadable."""
    try:
        with open(sidecar(path), "rb") as f:
            ino, total = f.read(64).split()
        return int(ino), int(total)
    except (OSError, ValueError):
        return None


def write_rotated(path: str, ino: int, total: int) -> None:
    tmp = sidecar(path) + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        os.write(fd, f"{ino} {total}\n".encode())
    finally:
        os.close(fd)
    os.replace(tmp, sidecar(path))


def produced(path: str) -> int | None:
    """Bytes ever written to the log file at ``path`` (kept or rotated away);
    0 when it does not exist yet; None when a rotation is under way."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        # between a rotation's rename and the new file's creation the file is
        # missing but its sidecar is not: a 0 there would read as a counter
        # reset, and the ledger would bill everything produced so far twice
        return None if read_rotated(path) is not None else 0
    except OSError:
        return None
    side = read_rotated(path)
    if side is None:
        return st.st_size              # never rotated (or written by an older launcher)
    ino, total = side
    if ino != st.st_ino:
        return None
    return total + st.st_size


def produced_by(paths) -> int | None:
    """The sum of produced() over distinct files (stdout and stderr may be one file)."""
    total = 0
    for p in dict.fromkeys(paths):
        n = produced(p)
        if n is None:
            return None
        total += n
    return total
