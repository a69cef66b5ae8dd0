"""Where the last N lines of a log file start (`agentctl logs --tail N`).

A line is what ends in "\\n"; text after the last newline (a line still being
written) counts as one more line. Reads backwards in blocks, so the cost is
the size of the tail, not of the file.
"""
from __future__ import annotations

import os

BLOCK = 65536


def start_of_last_lines(f, n: int) -> int:
    """The offset in the binary file ``f`` where its last ``n`` lines begin (0: the whole file)."""
    end = f.seek(0, os.SEEK_END)
    if n <= 0:
        return end
    pos = end
    # a trailing newline ends the last line; it does not start one more
    skip_last = False
    if end:
        f.seek(end - 1)
        skip_last = f.read(1) == b"\n"
    seen = 0
    while pos > 0:
        size = min(BLOCK, pos)
        pos -= size
        f.seek(pos)
        block = f.read(size)
        i = len(block)
        while True:
            i = block.rfind(b"\n", 0, i)
            if i < 0:
                break
            if skip_last and pos + i == end - 1:
                skip_last = False
                continue
            seen += 1
            if seen == n:
                return pos + i + 1
    return 0
