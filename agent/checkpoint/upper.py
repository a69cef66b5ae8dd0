"""An image container's writable layer (its overlay's upper dir) kept with its checkpoint.

CRIU dumps processes, not files: what an image container wrote to its root
lives in its upper dir (agent/supervision/launchspec.py), which its removal
deletes. So the checkpoint keeps a copy (`save`, once the dumped tree is
dead: the copy is what the dump saw), and a restore gives a copy to the new
container's empty upper dir before CRIU runs (`give`), so one checkpoint can
be restored more than once.

An upper dir holds what a plain copy would lose: whiteouts (0:0 character
devices), opaque and redirect directories (trusted.overlay.* attributes),
owners, modes, hard links. `cp -a` (GNU coreutils, run as root) keeps all of
them; `--reflink=auto` shares the blocks where the file system can.
"""
from __future__ import annotations

import os
import subprocess

CP = ("cp", "-a", "--reflink=auto", "--no-target-directory")
TIMEOUT = 3600.0


class UpperError(Exception):
    """The upper dir could not be copied (one line)."""


def copy(src: str, dst: str) -> None:
    """Copy the tree `src` as `dst` (which must not exist, or be an empty dir)."""
    if not os.path.isdir(src):
        raise UpperError(f"{src}: not a directory")
    try:
        if os.path.isdir(dst):
            os.rmdir(dst)           # empty (a new container's): cp makes it again, with src's owner and mode
        p = subprocess.run([*CP, src, dst], capture_output=True, text=True, timeout=TIMEOUT,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise UpperError(f"copying {src} did not finish within {TIMEOUT:.0f}s") from None
    except OSError as e:
        raise UpperError(f"copying {src} to {dst}: {e.strerror or e}") from None
    if p.returncode != 0:
        lines = [ln for ln in (p.stderr or "").splitlines() if ln.strip()]
        raise UpperError(f"copying {src} to {dst}: {lines[0] if lines else f'cp exited {p.returncode}'}")
