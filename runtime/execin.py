"""A process started inside a running container (agentctl exec), run in a
freshly forked child of the launcher. `run_exec()` never returns:

  intermediate (forked by the launcher, see cgroupfork.fork_in_cgroup;
  runtime/intermediate.py's protocol, as a container's start):
    1. born in the container's cgroup (clone3 CLONE_INTO_CGROUP), or its
       first step joins it: the process is metered from its first
       instruction, never outside the container's meter
    2. stdio onto the pipes (or the terminal) the launcher made, every other
       descriptor closed but the namespace descriptors
    3. setns into each namespace of the container's PID 1 that is not the
       launcher's own, from descriptors the launcher opened on /proc/PID/ns/*
       while PID 1 was its unreaped child (so a recycled pid cannot hand it
       another process's namespaces): the user namespace first (entered as
       its root, as PID 1 was), then ipc, uts, net, cgroup, pid, mnt (the
       mount namespace sets root and cwd to the container's root)
    4. fork the process (it is in the container's PID namespace), write its
       host pid to `pid_w`, _exit(0): it is reparented to the launcher
  the process:
    5. a terminal (-t): opened in the container's own devpts instance
       (runtime/terminal.py), its multiplexer end sent to the launcher over
       `tty_fd`; then a new session, the terminal its controlling one and
       its stdio, owned by the user. So the terminal is the container's
       (`tty` names it, as /dev/pts/N inside), never one of the host's ptys.
    6. the user (-u) resolved in the container's own /etc/passwd and
       /etc/group; the environment is the container's with -e on top
    7. as the container's PID 1 got them (privileges.drop): no_new_privs,
       the seccomp filter, rlimits, bounding set, setgroups/setgid/setuid,
       capabilities (or the OCI capability sets)
    8. working dir; signals; execve (execve.finish)

Any failure before execve is one line on `err_w` (close-on-exec) and exit 127.
"""

from __future__ import annotations

import dataclasses
import os

from . import execve, intermediate, privileges, terminal
from . import namespaces as ns
from . import userns as usernsmod
from .intermediate import Fail, step
from .spawnspec import SpawnSpec

# setns order: net first, as the host's root (a bridge container's namespace
# is made by agentd and owned by the host's user namespace, so it cannot be
# joined from inside the container's), then the user namespace, then the
# ones it owns; mnt last (it moves root and cwd)
NS_ORDER = ("net", "user", "ipc", "uts", "cgroup", "pid", "mnt")
NS_FLAGS = {"user": ns.CLONE_NEWUSER, "ipc": ns.CLONE_NEWIPC, "uts": ns.CLONE_NEWUTS,
            "net": ns.CLONE_NEWNET, "cgroup": ns.CLONE_NEWCGROUP, "pid": ns.CLONE_NEWPID,
            "mnt": ns.CLONE_NEWNS}


@dataclasses.dataclass(frozen=True)
class ExecSpec:
    """What `agentctl exec` asks for, on top of the container's SpawnSpec."""
    argv: tuple[str, ...]
    env: dict                   # added to (and overriding) the container's
    cwd: str | None = None      # None: the container's working dir
    user: str | None = None     # "name|uid[:group|gid]"; None: the container's user
    tty: bool = False
    tty_size: tuple = ()        # (rows, cols) the terminal starts with (the client's); () leaves it 0x0


def open_namespaces(pid: int) -> dict[str, int]:
    """O_RDONLY descriptors of /proc/PID/ns/* for each namespace `pid` does
    not share with the caller. Call it while `pid` cannot be recycled (the
    caller's unreaped child)."""
    out: dict[str, int] = {}
    try:
        for name in NS_ORDER:
            fd = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            if os.fstat(fd).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                os.close(fd)
            else:
                out[name] = fd
    except OSError:
        for fd in out.values():
            os.close(fd)
        raise
    return out


def run_exec(spec: SpawnSpec, ex: ExecSpec, nsfds: dict[str, int], *, stdin_fd: int, stdout_fd: int,
             stderr_fd: int, err_w: int, pid_w: int, nofile=None, joined: bool = False,
             tty_fd: int | None = None) -> None:
    """Executed in the launcher's forked child. Never returns. `tty_fd`
    (with ex.tty): a unix socket the terminal's multiplexer end is sent on."""
    keep = (err_w, pid_w, *nsfds.values(), *(() if tty_fd is None else (tty_fd,)))

    def setup():
        intermediate.begin(spec.cgroup, joined=joined, nofile=nofile, stdin_fd=stdin_fd,
                           stdout_fd=stdout_fd, stderr_fd=stderr_fd, keep=keep)
        for name in NS_ORDER:
            fd = nsfds.get(name)
            if fd is None:
                continue
            if name == "user":
                step("enter user namespace", usernsmod.enter, fd)
            else:
                step(f"enter {name} namespace", ns.setns, fd, NS_FLAGS[name])
            os.close(fd)
        return None, ""

    intermediate.run("exec setup", err_w=err_w, pid_w=pid_w, setup=setup, fork_what="fork",
                     child=lambda _: _process(spec, ex, tty_fd))


def _process(spec: SpawnSpec, ex: ExecSpec, tty_fd: int | None = None) -> None:
    if ex.tty and tty_fd is not None:
        terminal.make(tty_fd, ex.tty_size)
    uid, gid, home = resolve_user(ex.user, spec.uid, spec.gid)
    if ex.tty:
        terminal.control(uid if tty_fd is not None else None)
    env = dict(spec.env)
    env.setdefault("HOME", home)
    env.update(ex.env)
    if ex.tty:
        env.setdefault("TERM", "xterm")
    privileges.drop(spec, uid, gid)
    execve.finish(ex.cwd or spec.cwd, ex.argv, env)


def resolve_user(user: str | None, uid: int, gid: int) -> tuple[int, int, str]:
    """(uid, gid, home) for "-u name|uid[:group|gid]", read from /etc/passwd
    and /etc/group of the current root (the container's, after setns)."""
    if not user:
        return uid, gid, _passwd_home(uid)
    who, _, grp = user.partition(":")
    entry = _lookup("/etc/passwd", who)
    if who.isdigit():
        uid = int(who)
        gid = int(entry[3]) if entry and entry[3].isdigit() else 0
    elif entry is None:
        raise Fail(f"user {who}: no such user in the container's /etc/passwd")
    else:
        uid, gid = int(entry[2]), int(entry[3])
    if grp:
        if grp.isdigit():
            gid = int(grp)
        else:
            g = _lookup("/etc/group", grp)
            if g is None:
                raise Fail(f"group {grp}: no such group in the container's /etc/group")
            gid = int(g[2])
    if not (0 <= uid < 2**32 - 1 and 0 <= gid < 2**32 - 1):
        raise Fail(f"user {user}: ids are 0 to 4294967294")
    return uid, gid, _passwd_home(uid)


def _lookup(path: str, key: str) -> list[str] | None:
    """The entry of `path` whose name (or, for a number, id) is `key`."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) >= 4 and (parts[0] == key or (key.isdigit() and parts[2] == key)):
                    return parts
    except OSError:
        return None
    return None


def _passwd_home(uid: int) -> str:
    entry = _lookup("/etc/passwd", str(uid))
    return entry[5] if entry and len(entry) > 5 and entry[5].startswith("/") else "/"
