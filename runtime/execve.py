"""The last step of a container's PID 1 and of an exec'd process: working
dir, signal dispositions and mask back to default, execve with a PATH
search (the spec's PATH, else the default one); `exec_failure` tells the
launcher's reader what a failed execve's line means.
"""

from __future__ import annotations

import errno
import os
import signal

from .intermediate import Fail, step
from .rules import DEFAULT_PATH  # one rule, shared with the agent


def finish(cwd: str, argv, env) -> None:
    """chdir, signals, execve: returns only by raising Fail."""
    step(f"cwd {cwd}", os.chdir, cwd)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    _exec(argv, env)


def exec_failure(message: str) -> str | None:
    """What a setup failure message written by _exec says went wrong:
    "exec_not_found" (no such program: a shell's 127), "exec_not_executable"
    (found but cannot run: a shell's 126), or None (another setup step)."""
    if not message.startswith("exec "):
        return None
    if message.endswith(("executable file not found in $PATH", os.strerror(errno.ENOENT),
                         os.strerror(errno.ENOTDIR))):
        return "exec_not_found"
    return "exec_not_executable"


def _exec(argv, env) -> None:
    prog = argv[0]
    envb = {k: v for k, v in env.items()}
    if "/" in prog:
        candidates = [prog]
    else:
        path = env.get("PATH", DEFAULT_PATH)
        candidates = [os.path.join(d or ".", prog) for d in path.split(":")]
    first_err = None
    for cand in candidates:
        try:
            os.execve(cand, list(argv), envb)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTDIR) and first_err is None:
                first_err = (cand, e)
            if len(candidates) == 1:
                first_err = first_err or (cand, e)
    if first_err is not None:
        raise Fail(f"exec {first_err[0]}: {os.strerror(first_err[1].errno)}")
    raise Fail(f"exec {prog}: executable file not found in $PATH")
