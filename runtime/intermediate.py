"""The intermediate process's protocol, shared by a container's start
(runtime/spawn.py, run_child) and a process started inside it
(runtime/execin.py, run_exec).

The launcher forks the intermediate (runtime/cgroupfork.py) with two pipes:
`err_w` (close-on-exec) and `pid_w`. The intermediate:
  1. `begin`: joins the cgroup first where it was not born in it, takes the
     RLIMIT_NOFILE it is given, puts stdio on the launcher's descriptors,
     signal dispositions back to default, every other descriptor closed
  2. its own steps (`setup`: namespaces made or joined)
  3. forks the process, writes "<host pid>[ <note>]\\n" to `pid_w` and
     exits 0: the process is reparented to the launcher (its subreaper)
The process closes `pid_w` and runs `child` up to its execve. Any failure
before execve is one line on `err_w` (`Fail`: the step's own line; anything
else: "<what>: <exception type>: <message>") and exit 127; an execve that
succeeds closes `err_w`, so the launcher reads EOF without a line.
"""

from __future__ import annotations

import os
import resource
import signal
from typing import Callable, NoReturn


class Fail(Exception):
    """A setup step failed; str() is the line reported to the launcher."""


def step(what, fn, *args):
    try:
        return fn(*args)
    except OSError as e:
        raise Fail(f"{what}: {os.strerror(e.errno) if e.errno else e}") from None


def report(fd: int, line: str) -> None:
    data = (line.replace("\n", " ") + "\n").encode(errors="replace")
    try:
        os.write(fd, data)
    except OSError:
        pass


def run(what: str, *, err_w: int, pid_w: int, setup: Callable[[], tuple[object, str]],
        fork_what: str, child: Callable[[object], None]) -> NoReturn:
    """The intermediate, from its first step to its exit; never returns.
    `setup()` does the intermediate's steps (`begin` first) and returns
    (state for `child`, note written after the pid, "" for none); then
    `fork_what` names the fork in its failure line; `child(state)` runs in
    the forked process and returns only on failure (it ends in execve)."""
    try:
        try:
            state, note = setup()
            pid = step(fork_what, os.fork)
        except Fail as e:
            report(err_w, str(e))
            os._exit(127)
        except BaseException as e:     # a bug in here must still be one line
            report(err_w, f"{what}: {type(e).__name__}: {e}")
            os._exit(127)
        if pid:
            os.write(pid_w, f"{pid}{' ' + note if note else ''}\n".encode())
            os._exit(0)
        os.close(pid_w)
        try:
            child(state)
        except Fail as e:
            report(err_w, str(e))
        except BaseException as e:     # a bug in here must still be one line
            report(err_w, f"{what}: {type(e).__name__}: {e}")
    finally:
        os._exit(127)


def begin(cgroup: str, *, joined: bool, nofile: tuple[int, int] | None, stdin_fd: int | None,
          stdout_fd: int, stderr_fd: int, keep) -> None:
    """The intermediate's first steps. `joined`: born in `cgroup` already
    (cgroupfork.fork_in_cgroup); `nofile`: the RLIMIT_NOFILE the process
    gets (the launcher raises its own); `stdin_fd` None: /dev/null; `keep`:
    the descriptors left open besides stdio."""
    if not joined:
        join_cgroup(cgroup)      # the very first thing we do
    if nofile is not None:
        step("set RLIMIT_NOFILE", resource.setrlimit, resource.RLIMIT_NOFILE, nofile)
    setup_stdio(stdin_fd, stdout_fd, stderr_fd, keep)


def join_cgroup(cgroup: str) -> None:
    path = os.path.join(cgroup, "cgroup.procs")
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
    except OSError as e:
        raise Fail(f"join cgroup {cgroup}: {os.strerror(e.errno)}") from None


def setup_stdio(stdin_fd: int | None, stdout_fd: int, stderr_fd: int, keep) -> None:
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass
    if stdin_fd is None:
        stdin_fd = os.open("/dev/null", os.O_RDWR)
    for target, fd in ((0, stdin_fd), (1, stdout_fd), (2, stderr_fd)):
        os.dup2(fd, target)
    low = 3
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, 1 << 20)
