"""Launching a container's first process: its log sinks and pipes, the
fork into its cgroup (runtime/cgroupfork.py), the child's setup
(runtime/spawn.py) and the wait for its PID 1 or its one-line failure; in
a user namespace, the --device nodes made for it first (outside the
cgroup's device filter, which refuses mknod) and removed once it is set up.
A part of the Launcher (agent/launcher/server.py), which owns the state."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal

from agent.launcher import terminals
from agent.launcher.logsink import LogSink
from agent.launcher.peers import describe as _describe, read_to_eof as _read_to_eof
from agent.launcher.peers import waitpid_quiet as _waitpid_quiet
from agent.launcher.protocol import SETUP_TIMEOUT, LaunchError
from runtime.cgroupfork import CgroupRefused, fork_in_cgroup
from runtime.intermediate import Fail as SetupFailed
from runtime.spawn import run_child
from runtime.spawnspec import SpawnSpec
from runtime.trees import make_device_nodes

CONTAINER_NOFILE: tuple[int, int] | None = None   # RLIMIT_NOFILE before the launcher raised it (boot.py)
DEVNODES_DIR = "devnodes"          # --device nodes made for a container's user namespace, while it is set up


class _Container:
    def __init__(self, cid, pid, pipes, spec=None):
        self.id, self.pid = cid, pid
        self.pipes = pipes          # read fd -> LogSink
        self.spec = spec            # the SpawnSpec it was started with (exec joins it as its PID 1 got it)
        self.stdin_w = -1           # spec.stdin: the write end of PID 1's stdin, until take_stdin
        self.tty = -1               # spec.tty: PID 1's terminal multiplexer (take_stdin hands dups)


class Spawning:
    def spawn(self, cid: str, spec: SpawnSpec) -> int:
        if not os.path.isfile(os.path.join(spec.cgroup, "cgroup.procs")):
            raise LaunchError(f"cgroup {spec.cgroup}: no such cgroup")
        # --device in a user namespace: nodes made here, outside the cgroup's
        # device filter (it refuses mknod), cloned by the child, then removed
        nodes_dir = os.path.join(self.state_dir, DEVNODES_DIR, cid)
        try:
            nodes = make_device_nodes(spec, nodes_dir)
            return self._spawn(cid, spec, nodes)
        except SetupFailed as e:
            raise LaunchError(str(e)) from None
        finally:
            shutil.rmtree(nodes_dir, ignore_errors=True)

    def _spawn(self, cid: str, spec: SpawnSpec, nodes: dict) -> int:
        sinks, opened = {}, []
        try:
            for path in {spec.stdout, spec.stderr}:
                sinks[path] = LogSink(path, spec.log_max_bytes)
                opened.append(sinks[path])
        except OSError as e:
            for s in opened:
                s.close()
            raise LaunchError(f"log file {e.filename}: {os.strerror(e.errno)}") from None
        if spec.tty:    # PID 1 makes its terminal and sends the multiplexer (agent/launcher/terminals.py)
            tty_sock, tty_child = terminals.pair()
            out_r, out_w = -1, os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)
            err_r, err_w = -1, os.dup(out_w)
        else:
            tty_sock = tty_child = None
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            self._set_pipe_size(out_r)
            self._set_pipe_size(err_r)
        fail_r, fail_w = os.pipe()
        pid_r, pid_w = os.pipe()
        in_r, in_w = os.pipe() if spec.stdin and not spec.tty else (None, -1)
        try:
            child, joined = fork_in_cgroup(spec.cgroup)
        except OSError as e:
            for fd in (out_r, out_w, err_r, err_w, fail_r, fail_w, pid_r, pid_w, *stdin_ends(in_r, in_w, tty_child)):
                if fd >= 0:
                    os.close(fd)
            if tty_sock is not None:
                tty_sock.close()
            for s in opened:
                s.close()
            raise LaunchError(e.strerror if isinstance(e, CgroupRefused)
                              else f"fork: {os.strerror(e.errno)}") from None
        if child == 0:
            try:
                run_child(spec, stdout_fd=out_w, stderr_fd=err_w, err_w=fail_w, pid_w=pid_w,
                          nofile=CONTAINER_NOFILE, joined=joined, stdin_fd=in_r, device_nodes=nodes,
                          tty_fd=tty_child)
            finally:
                os._exit(127)
        for fd in (out_w, err_w, fail_w, pid_w, *stdin_ends(in_r, -1, tty_child)):
            os.close(fd)
        pid_text, _, notes = _read_to_eof(pid_r, SETUP_TIMEOUT).strip().partition(" ")
        pid1 = int(pid_text) if pid_text.isdigit() else None
        if pid1 is None:                # failed or stuck before forking PID 1
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, status = os.waitpid(child, 0)
        failure = _read_to_eof(fail_r, SETUP_TIMEOUT, stop_at_newline=True)
        os.close(pid_r)
        os.close(fail_r)
        if tty_sock is not None:
            if not failure and pid1 is not None:
                out_r = terminals.received_terminal(tty_sock)
                if out_r is None:
                    failure = "container setup failed: its terminal never reached the launcher"
            tty_sock.close()
        if failure or pid1 is None:
            if pid1 is not None:
                try:
                    os.kill(pid1, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _waitpid_quiet(pid1)
            for fd in stdin_ends(out_r, err_r, in_w):
                os.close(fd)
            for s in opened:
                s.close()
            msg = failure.strip() or (f"container setup timed out after {SETUP_TIMEOUT:.0f}s"
                                      if pid1 is not None else
                                      f"container setup failed (intermediate {_describe(status)})")
            self.log.warning("launch.failed", id=cid, error=msg)
            raise LaunchError(msg)
        if spec.tty:    # one stream: the terminal's output goes to stdout.log (as Docker's)
            c = _Container(cid, pid1, {out_r: sinks[spec.stdout]}, spec)
            c.tty = os.dup(out_r)      # kept for take_stdin (the log side closes its own at EIO)
            if spec.stderr != spec.stdout:
                sinks[spec.stderr].close()
        else:
            c = _Container(cid, pid1, {out_r: sinks[spec.stdout], err_r: sinks[spec.stderr]}, spec)
        c.stdin_w = in_w
        for fd in c.pipes:
            os.set_blocking(fd, False)
            self.pipe_owner[fd] = c
        self.by_id[cid] = c
        self.by_pid[pid1] = c
        if notes:                       # "PID {json}": the idmap outcome of a user namespace
            try:
                self.idmap[cid] = json.loads(notes)
            except ValueError:
                self.idmap[cid] = {"?": notes}
            for dst, how in self.idmap[cid].items():
                if how != "idmapped":
                    self.log.warning("container.not_idmapped", id=cid, mount=dst, reason=how)
        self.log.info("container.spawned", id=cid, pid=pid1, argv=list(spec.argv))
        return pid1

    def _set_pipe_size(self, fd):
        if self.log_pipe_size:
            try:
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, self.log_pipe_size)
            except OSError:
                pass        # over the user's pipe quota: the default size still works


def stdin_ends(*fds) -> list[int]:
    return [fd for fd in fds if fd is not None and fd >= 0]
