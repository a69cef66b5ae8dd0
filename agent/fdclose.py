"""Closing descriptors a component owns when it shuts down."""
from __future__ import annotations

import os


def close_quietly(*fds: int) -> None:
    """Close each of `fds`, ignoring one that is already closed or invalid
    (shutdown paths: a second stop() or a half-built object must not raise)."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
