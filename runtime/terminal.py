"""A pseudo-terminal of the container's own devpts instance, made by the
process that gets it (a container's PID 1 with `run -t`, runtime/
container_init.py; a process of `exec -t`, runtime/execin.py), inside the
container's mount namespace and root:

  - its /dev/ptmx opened and checked to be the pty multiplexer (5:2): a
    node of another device there (a tenant's, or a --device/volume laid on
    it) is refused in one line naming the device
  - the other end unlocked (TIOCSPTLCK) and opened from the multiplexer
    itself (TIOCGPTPEER: no path lookup in a /dev/pts the tenant controls)
  - the multiplexer end sent to the launcher on a unix socket (SCM_RIGHTS),
    the other end made stdin, stdout and stderr
  - then (`control`) a new session whose controlling terminal it is, owned
    by the user the process runs as.

So `tty` inside names /dev/pts/N of the container's devpts, never one of the
host's ptys, and the launcher never opens a path of the container's.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
import struct
import termios

from .intermediate import Fail, step

PTMX = (5, 2)                 # the pty multiplexer's device numbers
SIZE_MAX = 65535              # a window's rows or columns (struct winsize: unsigned short)
TIOCSPTLCK = 0x40045431       # unlock the pty's other end
TIOCGPTPEER = 0x5441          # open the other end from the multiplexer (Linux 4.13)


def check_size(size, where: str) -> tuple[int, int]:
    """(rows, cols) from [rows, cols]; ValueError (one line naming `where`) otherwise."""
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= SIZE_MAX for n in size)):
        raise ValueError(f"{where}: {size!r} is not [rows, cols], each 0..{SIZE_MAX}")
    return int(size[0]), int(size[1])


def make(tty_fd: int, size: tuple[int, int] | tuple = ()) -> None:
    """A pty of the container's devpts as stdio, of `size` (rows, cols) when
    given; its multiplexer end sent on `tty_fd` (closed)."""
    master = step("open the container's /dev/ptmx", os.open, "/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    st = os.fstat(master)
    if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != PTMX:
        what = (f"device {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" if stat.S_ISCHR(st.st_mode)
                or stat.S_ISBLK(st.st_mode) else "not a device")
        raise Fail(f"the container's /dev/ptmx is not the pty multiplexer ({what}): no terminal can be made")
    step("unlock the terminal", fcntl.ioctl, master, TIOCSPTLCK, struct.pack("i", 0))
    peer = step("open the terminal", fcntl.ioctl, master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    if size:    # before anything runs on it: the client's size from the first instruction
        step("set the terminal's size", fcntl.ioctl, peer, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
    with socket.socket(fileno=tty_fd) as sock:
        step("hand the terminal to the launcher", socket.send_fds, sock, [b"t"], [master])
    os.close(master)
    for target in (0, 1, 2):
        os.dup2(peer, target)
    if peer > 2:
        os.close(peer)


def control(uid: int | None = None) -> None:
    """The terminal on stdin becomes this process's controlling terminal, in
    a session of its own (one it leads already is kept), owned by `uid`."""
    try:
        os.setsid()
    except OSError as e:
        if os.getsid(0) != os.getpid():
            raise Fail(f"setsid: {os.strerror(e.errno)}") from None
    step("set controlling terminal", fcntl.ioctl, 0, termios.TIOCSCTTY, 0)
    if uid is not None:
        step("give the terminal to the user", os.fchown, 0, uid, -1)
