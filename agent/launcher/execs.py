"""The launcher's side of `agentctl exec`: a process started inside a running
container it spawned (runtime/execin.py does the joining).

The exec op answers {"pid": PID} with descriptors (SCM_RIGHTS), in this order:
    stdin (write end; only when asked for), stdout, stderr (read ends), status
or, with a terminal: the terminal's master, status.
`status` is the read end of a pipe on which the launcher writes one JSON
line, {"exit_code", "signal"}, when it reaps the process, then closes it.
The process is the launcher's (reparented) child, not the container's: its
exit is never an exit record; its CPU, memory and pids are the container's.
"""

from __future__ import annotations

import json
import os
import signal

from agent.launcher.protocol import SETUP_TIMEOUT, LaunchError
from agent.launcher.terminals import pair, received_terminal
from runtime.execin import ExecSpec, open_namespaces, run_exec
from runtime.cgroupfork import CgroupRefused, fork_in_cgroup
from runtime import terminal
from runtime.spawnspec import SpawnSpec

FIELDS = ("op", "seq", "id", "argv", "env", "cwd", "user", "tty", "stdin", "tty_size")


def parse(req: dict) -> tuple[ExecSpec, bool]:
    """(ExecSpec, stdin wanted) from an exec request; ValueError names the field."""
    unknown = sorted(set(req) - set(FIELDS))
    if unknown:
        raise ValueError(f"exec.{unknown[0]}: unknown field; accepted: {', '.join(FIELDS[2:])}")
    argv = req.get("argv")
    if (not isinstance(argv, list) or not argv or not argv[0]
            or not all(isinstance(a, str) and "\0" not in a for a in argv)):
        raise ValueError("exec.argv: must be a non-empty list of strings without NUL bytes")
    env = req.get("env") or {}
    if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and "=" not in k and "\0" not in k + v
            for k, v in env.items()):
        raise ValueError("exec.env: must map names (no '=', no NUL) to strings")
    cwd = req.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not cwd.startswith("/") or "\0" in cwd):
        raise ValueError("exec.cwd: must be null or an absolute path")
    user = req.get("user")
    if user is not None and (not isinstance(user, str) or not user or "\0" in user or "\n" in user):
        raise ValueError("exec.user: must be null or name|uid[:group|gid]")
    flags = {}
    for key in ("tty", "stdin"):
        flags[key] = req.get(key, False)
        if not isinstance(flags[key], bool):
            raise ValueError(f"exec.{key}: must be true or false")
    size = ()
    if req.get("tty_size") is not None:
        if not flags["tty"]:
            raise ValueError("exec.tty_size: only with tty")
        size = terminal.check_size(req["tty_size"], "exec.tty_size")
    return ExecSpec(tuple(argv), dict(env), cwd, user, flags["tty"], size), flags["stdin"]


class Execs:
    """The exec'd processes this launcher started: pid -> (container id, status write end)."""

    def __init__(self, log):
        self.log = log
        self.by_pid: dict[int, tuple[str, int]] = {}

    def start(self, cid: str, pid1: int, spec: SpawnSpec, ex: ExecSpec, want_stdin: bool,
              nofile, read_to_eof) -> tuple[dict, list[int]]:
        """Start `ex` in the container whose PID 1 is `pid1` (an unreaped
        child: its pid cannot be recycled meanwhile). Returns the result and
        the descriptors to hand over (closed here once sent, by the caller)."""
        try:
            nsfds = open_namespaces(pid1)
        except OSError as e:
            raise LaunchError(f"container {cid}: its namespaces are gone ({os.strerror(e.errno)}): "
                              "it is exiting") from None
        mine: list[int] = []        # the child's ends, closed here after the fork
        theirs: list[int] = []      # handed to the caller
        try:
            tty_sock = tty_child = None
            if ex.tty:   # the terminal is made inside the container, its multiplexer end sent here
                tty_sock, tty_child = pair()
                mine.append(tty_child)
                null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
                mine.append(null)
                stdio = (null, null, null)
            else:
                if want_stdin:
                    in_r, in_w = os.pipe()
                    theirs.append(in_w)
                    mine.append(in_r)
                else:
                    in_r = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
                    mine.append(in_r)
                out_r, out_w = os.pipe()
                err_r, err_w = os.pipe()
                theirs += [out_r, err_r]
                mine += [out_w, err_w]
                stdio = (in_r, out_w, err_w)
            status_r, status_w = os.pipe()
            theirs.append(status_r)
            fail_r, fail_w = os.pipe()
            pid_r, pid_w = os.pipe()
            mine += [fail_w, pid_w]
            try:
                child, joined = fork_in_cgroup(spec.cgroup)
            except OSError as e:
                for fd in (fail_r, pid_r, status_w):
                    os.close(fd)
                raise LaunchError(e.strerror if isinstance(e, CgroupRefused)
                                  else f"fork: {os.strerror(e.errno)}") from None
            if child == 0:
                try:
                    run_exec(spec, ex, nsfds, stdin_fd=stdio[0], stdout_fd=stdio[1], stderr_fd=stdio[2],
                             err_w=fail_w, pid_w=pid_w, nofile=nofile, joined=joined,
                             tty_fd=tty_child)
                finally:
                    os._exit(127)
        except BaseException:
            for fd in theirs:
                os.close(fd)
            if tty_sock is not None:
                tty_sock.close()
            raise
        finally:
            for fd in (*mine, *nsfds.values()):
                os.close(fd)
        pid_text = read_to_eof(pid_r, SETUP_TIMEOUT).strip()
        pid = int(pid_text) if pid_text.isdigit() else None
        if pid is None:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.waitpid(child, 0)
        # registered before anything can reap it (the loop reaps between requests)
        if pid is not None:
            self.by_pid[pid] = (cid, status_w)
        failure = read_to_eof(fail_r, SETUP_TIMEOUT, stop_at_newline=True).strip()
        os.close(pid_r)
        os.close(fail_r)
        if not failure and pid is not None and tty_sock is not None:
            master = received_terminal(tty_sock)
            if master is None:
                failure = "exec setup failed: the container's terminal never reached the launcher"
            else:
                theirs.insert(0, master)
        if tty_sock is not None:
            tty_sock.close()
        if failure or pid is None:
            if pid is None:
                os.close(status_w)
            for fd in theirs:
                os.close(fd)
            msg = failure or "exec setup failed"
            self.log.warning("exec.failed", id=cid, error=msg)
            raise LaunchError(msg)
        self.log.info("exec.started", id=cid, pid=pid, argv=list(ex.argv), tty=ex.tty)
        return {"pid": pid}, theirs

    def reaped(self, pid: int, status: int) -> bool:
        """True when `pid` was an exec'd process: its status goes to its pipe."""
        entry = self.by_pid.pop(pid, None)
        if entry is None:
            return False
        cid, status_w = entry
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            code = 128 + sig
        else:
            sig, code = None, os.waitstatus_to_exitcode(status)
        try:
            os.write(status_w, (json.dumps({"exit_code": code, "signal": sig}) + "\n").encode())
        except OSError:
            pass            # nobody reads it any more (agentd went away)
        os.close(status_w)
        self.log.info("exec.exited", id=cid, pid=pid, exit_code=code, signal=sig)
        return True
