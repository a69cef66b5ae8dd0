"""The launcher: a single-threaded forkserver and child subreaper, and its client.

agentd is multi-threaded and must never fork; it asks this process instead.

    python3 -m agent.launcher --state-dir DIR --cgroup R/launcher [--foreground]

The launcher detaches (double fork, setsid, stdio on /dev/null, log in
DIR/launcher.log), moves itself into its cgroup, becomes the child subreaper
and serves JSON lines on DIR/launcher.sock (mode 0600). One launcher per
state dir (flock on DIR/launcher.lock). It outlives agentd; agentd reconnects.

Wire protocol, one JSON object per line:
    request   {"seq": N, "op": "spawn"|"signal"|"running"|"exits"|"ack"|"ping"|"shutdown"
               |"criu_status"|"checkpoint"|"restore" (agent/checkpoint/launcher_ops.py), ...}
    response  {"seq": N, "ok": true, "result": ...} | {"seq": N, "ok": false, "type": ..., "error": "..."}
    event     {"event": "exit", "id", "pid", "exit_code", "signal", "at"}   (pushed to every client)

A spawn's result is PID 1's host pid, or, for a spec with a user namespace,
{"pid": PID, "idmap": {mount destination: "idmapped" | why it is not}}
(LauncherClient.spawn_detail; each tree mounted without an idmap is logged
as container.not_idmapped).

Exit statuses: the launcher reaps each container's PID 1 (the intermediate
that unshared the PID namespace exits right after forking it, so PID 1 is
reparented here), writes DIR/exits/<id>-<pid>.json atomically and durably
(tmp, fsync, rename, fsync dir), and only then pushes the event. A record
stays until ack(): no exit status is lost while agentd is down.

Logs: a container's stdout/stderr are pipes (1 MiB) that the poll loop
splices into the spec's files, kernel to kernel; a pipe just copied rests
LOG_REST before it is polled again, so a flood costs one wake-up per pipe
full. A file never grows past log_max_bytes: the write that would pass it
renames the file to <file>.1 (replacing the old one) and continues in a new
file; <file>.rotated keeps the bytes rotated away (agent.logfiles), so the
bytes a container produced can be billed to it.
"""

from __future__ import annotations

import argparse
import collections
import errno
import fcntl
import itertools
import json
import os
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import NamedTuple

from agent import logfiles
from runtime import namespaces as ns
from runtime.spawn import CgroupRefused, SpawnSpec, SpecError, fork_in_cgroup, probe_clone3, run_child

SOCKET_NAME = "launcher.sock"
LOCK_NAME = "launcher.lock"
LOG_NAME = "launcher.log"
EXITS_DIR = "exits"
MAX_LINE = 4 << 20
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
SETUP_TIMEOUT = 30.0
CONTAINER_NOFILE: tuple[int, int] | None = None   # RLIMIT_NOFILE before the launcher raised it
SPLICE_FLAGS = 0x1 | 0x2          # SPLICE_F_MOVE | SPLICE_F_NONBLOCK
SPLICE_CHUNK = 1 << 20
LOG_PIPE_SIZE = 1 << 20           # F_SETPIPE_SZ: a flood moves in large chunks, few wake-ups
LOG_REST = 0.02                   # a pipe just copied waits this long before it is polled again


class LauncherError(Exception):
    """The launcher could not be reached or refused a request."""


class LaunchError(LauncherError):
    """A container could not be started; str() is one line saying why
    (e.g. "exec /bin/nope: No such file or directory")."""


class LauncherGone(LauncherError, ConnectionError):
    """The connection to the launcher was lost."""


class ExitRecord(NamedTuple):
    id: str
    pid: int
    exit_code: int        # exit status, or 128+signal when killed (as Docker shows)
    signal: int | None    # the signal that killed it, None when it exited
    at: float             # wall-clock time of the reap


# ====================================================================== server

def _log_factory(path):
    import structlog
    f = open(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600), "a", buffering=1)
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=f),
        cache_logger_on_first_use=True)
    return structlog.get_logger("launcher")


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_exit_record(exits_dir: str, rec: ExitRecord) -> str:
    """tmp, fsync, rename, fsync dir: the record is either whole or absent."""
    final = os.path.join(exits_dir, f"{rec.id}-{rec.pid}.json")
    tmp = final + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(rec._asdict()).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, final)
    _fsync_dir(exits_dir)
    return final


def read_exit_records(exits_dir: str) -> list[ExitRecord]:
    out = []
    try:
        names = sorted(os.listdir(exits_dir))
    except FileNotFoundError:
        return out
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(exits_dir, name)) as f:
                d = json.load(f)
            out.append(ExitRecord(d["id"], d["pid"], d["exit_code"], d["signal"], d["at"]))
        except (OSError, ValueError, KeyError):
            continue
    out.sort(key=lambda r: r.at)
    return out


class LogSink:
    """A log file that never passes max_bytes: the write that would pass it
    renames the file to <path>.1 (replacing the old one) and goes on in a new
    file. Pipes are copied in with splice(2), kernel to kernel, no Python
    byte loop. ``produced`` counts every byte the container wrote to it,
    kept or rotated away; agent.logfiles keeps the rotated part on disk."""

    def __init__(self, path: str, max_bytes: int):
        self.path, self.max_bytes = path, max_bytes
        self.fd = -1
        self.rotated = 0
        self.produced = 0
        self._open()

    def _open(self):
        # not O_APPEND: splice(2) refuses a file opened for appending; the
        # launcher is the only writer and keeps its own offset at the end
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self.size = os.lseek(self.fd, 0, os.SEEK_END)
        ino = os.fstat(self.fd).st_ino
        side = logfiles.read_rotated(self.path)
        if side is not None and side[0] == ino:
            self.rotated = side[1]      # a restarted container or launcher: go on counting
        try:
            logfiles.write_rotated(self.path, ino, self.rotated)
        except OSError:
            pass

    def _room(self, want: int) -> int:
        if self.max_bytes and self.size >= self.max_bytes:
            self.rotate()
        return min(want, self.max_bytes - self.size) if self.max_bytes else want

    def write(self, data: bytes) -> None:
        self.produced += len(data)
        while data:
            room = self._room(len(data))
            chunk, data = data[:room], data[room:]
            try:
                n = os.write(self.fd, chunk)
            except OSError:
                return          # disk full or file gone: drop, never crash
            self.size += n

    def splice_from(self, fd: int) -> int:
        """Move what waits in pipe ``fd`` into the file; returns the bytes
        moved (0: end of file). Raises BlockingIOError when the pipe is empty."""
        moved = 0
        while True:
            room = self._room(SPLICE_CHUNK)
            try:
                n = os.splice(fd, self.fd, room, flags=SPLICE_FLAGS)
            except BlockingIOError:
                if moved:
                    return moved
                raise
            except OSError as e:
                try:
                    data = os.read(fd, room)
                except BlockingIOError:
                    data = b""
                if e.errno == errno.EINVAL:     # a file system without splice: copy it
                    self.write(data)
                    return moved + len(data)
                self.produced += len(data)      # disk full, file gone: drop, never crash
                return moved + len(data)
            if n == 0:
                return moved
            self.size += n
            self.produced += n
            moved += n

    def rotate(self) -> None:
        os.close(self.fd)
        self.rotated += self.size
        try:
            os.replace(self.path, self.path + ".1")
        except OSError:
            self.rotated -= self.size   # still the same file: reopened at its end
        self._open()

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Container:
    def __init__(self, cid, pid, pipes):
        self.id, self.pid = cid, pid
        self.pipes = pipes          # read fd -> LogSink


class _Client:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""


class Launcher:
    log_rest = LOG_REST
    log_pipe_size = LOG_PIPE_SIZE

    def __init__(self, state_dir: str, log):
        self.state_dir = state_dir
        self.exits_dir = os.path.join(state_dir, EXITS_DIR)
        os.makedirs(self.exits_dir, 0o700, exist_ok=True)
        self.log = log
        self.by_id: dict[str, _Container] = {}
        self.by_pid: dict[int, _Container] = {}
        self.idmap: dict[str, dict] = {}    # id -> idmap outcome of its last spawn (userns)
        self.pipe_owner: dict[int, _Container] = {}
        self.resting: dict[int, float] = {}   # log pipe -> monotonic time it is polled again
        self.clients: dict[int, _Client] = {}
        self.listener: socket.socket | None = None
        self.stopping = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    # ------------------------------------------------------------- set-up
    def listen(self) -> None:
        path = os.path.join(self.state_dir, SOCKET_NAME)
        try:
            os.unlink(path)          # stale: we hold the lock, so nobody serves it
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            s.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        s.listen(16)
        s.setblocking(False)
        self.listener = s

    def install_signals(self) -> None:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_term)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _on_term(self, *_):
        self.stopping = True

    # ------------------------------------------------------------- loop
    def serve(self) -> None:
        self.log.info("launcher.serving", pid=os.getpid(), state_dir=self.state_dir,
                      clone3_into_cgroup=getattr(self, "clone3", None))
        while not self.stopping:
            try:
                self._iterate()
            except Exception:           # a bug must not take the containers' reaper down
                self.log.exception("launcher.loop_error")
                time.sleep(0.1)
        self.log.info("launcher.stopping", containers=len(self.by_id))
        for c in list(self.clients.values()):
            c.sock.close()
        self.listener.close()

    def _iterate(self) -> None:
        self.reap()
        # poll, not select: a few hundred containers pass FD_SETSIZE (1024)
        poller = select.poll()
        listen_fd = self.listener.fileno()
        timeout = 5000
        if self.resting:
            now = time.monotonic()
            for fd, until in list(self.resting.items()):
                if until <= now:
                    del self.resting[fd]
                else:
                    timeout = min(timeout, max(1, int((until - now) * 1000) + 1))
        for fd in (listen_fd, self.wake_r, *self.clients, *self.pipe_owner):
            if fd not in self.resting:
                poller.register(fd, select.POLLIN)
        ready = [fd for fd, _ev in poller.poll(timeout)]
        for r in ready:
            if r == listen_fd:
                self._accept()
            elif r == self.wake_r:
                try:
                    while os.read(self.wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            elif r in self.clients:
                self._client_readable(r)
            elif r in self.pipe_owner:
                self._pipe_readable(r)

    def _accept(self):
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        refused = _refuse_peer(sock)
        if refused:
            self.log.warning("client.refused", reason=refused)
            sock.close()
            return
        sock.setblocking(False)
        self.clients[sock.fileno()] = _Client(sock)
        self.log.debug("client.connected", fd=sock.fileno())

    def _drop_client(self, fd):
        c = self.clients.pop(fd, None)
        if c:
            c.sock.close()

    def _client_readable(self, fd):
        c = self.clients[fd]
        try:
            data = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop_client(fd)
            return
        c.buf += data
        while b"\n" in c.buf:
            line, c.buf = c.buf.split(b"\n", 1)
            if line.strip():
                self._send(fd, self._handle(line))
                if fd not in self.clients:
                    return
        if len(c.buf) > MAX_LINE:
            self._send(fd, {"seq": None, "ok": False, "type": "BadRequest",
                            "error": "request line too long"})
            self._drop_client(fd)

    def _send(self, fd, obj):
        c = self.clients.get(fd)
        if c is None:
            return
        data = (json.dumps(obj) + "\n").encode()
        try:
            c.sock.setblocking(True)
            c.sock.settimeout(5.0)
            c.sock.sendall(data)
            c.sock.setblocking(False)
        except OSError:
            self._drop_client(fd)

    def _broadcast(self, obj):
        for fd in list(self.clients):
            self._send(fd, obj)

    # ------------------------------------------------------------- requests
    def _handle(self, line: bytes) -> dict:
        seq = None
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError("not an object")
            seq = req.get("seq")
            op = req.get("op")
            fn = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
            if fn is None:
                return {"seq": seq, "ok": False, "type": "BadRequest",
                        "error": f"op: unknown {op!r}; accepted: spawn, signal, running, exits, ack, ping, shutdown, "
                                 "criu_status, checkpoint, restore"}
            return {"seq": seq, "ok": True, "result": fn(req)}
        except LaunchError as e:
            return {"seq": seq, "ok": False, "type": "LaunchError", "error": str(e)}
        except (SpecError, ValueError, TypeError, KeyError) as e:
            return {"seq": seq, "ok": False, "type": "BadRequest", "error": str(e)}
        except ProcessLookupError as e:
            return {"seq": seq, "ok": False, "type": "ProcessLookupError", "error": str(e)}
        except Exception as e:      # never die on a request
            self.log.exception("request.failed")
            return {"seq": seq, "ok": False, "type": "LauncherError", "error": f"{type(e).__name__}: {e}"}

    def op_ping(self, req):
        return {"pid": os.getpid(), "containers": len(self.by_id)}

    def op_running(self, req):
        return {c.id: c.pid for c in self.by_id.values()}

    def op_exits(self, req):
        return [r._asdict() for r in read_exit_records(self.exits_dir)]

    def op_ack(self, req):
        cid, pid = _cid(req.get("id")), req.get("pid")
        if not isinstance(pid, int):
            raise ValueError("pid: must be an integer")
        try:
            os.unlink(os.path.join(self.exits_dir, f"{cid}-{pid}.json"))
            _fsync_dir(self.exits_dir)
            return True
        except FileNotFoundError:
            return False

    def op_signal(self, req):
        pid, signum = req.get("pid"), req.get("signum")
        if not isinstance(pid, int) or not isinstance(signum, int):
            raise ValueError("pid, signum: must be integers")
        if pid not in self.by_pid:
            raise ProcessLookupError(f"pid {pid}: no running container has this pid")
        os.kill(pid, signum)
        return True

    def op_shutdown(self, req):
        self.stopping = True
        return True

    def op_spawn(self, req):
        cid = _cid(req.get("id"))
        spec = SpawnSpec.from_dict(req.get("spec"))
        if cid in self.by_id:
            raise LaunchError(f"container {cid} is already running with pid {self.by_id[cid].pid}")
        pid = self.spawn(cid, spec)
        if getattr(spec, "userns", None) is None:
            return pid                  # what a launcher without user namespaces answered
        return {"pid": pid, "idmap": self.idmap.pop(cid, None)}

    # checkpoint/restore (agent/checkpoint/launcher_ops.py runs CRIU here)
    def op_criu_status(self, req):
        from agent.checkpoint import launcher_ops
        return launcher_ops.criu_status()

    def op_checkpoint(self, req):
        from agent.checkpoint import launcher_ops
        _cid(req.get("id"))
        return launcher_ops.checkpoint(self, req, sys.modules[__name__])

    def op_restore(self, req):
        from agent.checkpoint import launcher_ops
        _cid(req.get("id"))
        return launcher_ops.restore(self, req, sys.modules[__name__], self._adopt, LogSink)

    def _adopt(self, cid: str, pid: int, pipes: dict) -> None:
        c = _Container(cid, pid, pipes)
        for fd in c.pipes:
            os.set_blocking(fd, False)
            self.pipe_owner[fd] = c
        self.by_id[cid] = c
        self.by_pid[pid] = c

    # ------------------------------------------------------------- spawning
    def spawn(self, cid: str, spec: SpawnSpec) -> int:
        if not os.path.isfile(os.path.join(spec.cgroup, "cgroup.procs")):
            raise LaunchError(f"cgroup {spec.cgroup}: no such cgroup")
        sinks, opened = {}, []
        try:
            for path in {spec.stdout, spec.stderr}:
                sinks[path] = LogSink(path, spec.log_max_bytes)
                opened.append(sinks[path])
        except OSError as e:
            for s in opened:
                s.close()
            raise LaunchError(f"log file {e.filename}: {os.strerror(e.errno)}") from None
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        self._set_pipe_size(out_r)
        self._set_pipe_size(err_r)
        fail_r, fail_w = os.pipe()
        pid_r, pid_w = os.pipe()
        try:
            child, joined = fork_in_cgroup(spec.cgroup)
        except OSError as e:
            for fd in (out_r, out_w, err_r, err_w, fail_r, fail_w, pid_r, pid_w):
                os.close(fd)
            for s in opened:
                s.close()
            raise LaunchError(e.strerror if isinstance(e, CgroupRefused)
                              else f"fork: {os.strerror(e.errno)}") from None
        if child == 0:
            try:
                run_child(spec, stdout_fd=out_w, stderr_fd=err_w, err_w=fail_w, pid_w=pid_w,
                          nofile=CONTAINER_NOFILE, joined=joined)
            finally:
                os._exit(127)
        for fd in (out_w, err_w, fail_w, pid_w):
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
        if failure or pid1 is None:
            if pid1 is not None:
                try:
                    os.kill(pid1, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _waitpid_quiet(pid1)
            os.close(out_r)
            os.close(err_r)
            for s in opened:
                s.close()
            msg = failure.strip() or (f"container setup timed out after {SETUP_TIMEOUT:.0f}s"
                                      if pid1 is not None else
                                      f"container setup failed (intermediate {_describe(status)})")
            self.log.warning("launch.failed", id=cid, error=msg)
            raise LaunchError(msg)
        c = _Container(cid, pid1, {out_r: sinks[spec.stdout], err_r: sinks[spec.stderr]})
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

    # ------------------------------------------------------------- logs
    def _pipe_readable(self, fd):
        if self._copy_log(self.pipe_owner[fd], fd) and self.log_rest:
            # let the pipe fill before the next copy: a flood then costs one
            # wake-up per LOG_PIPE_SIZE, not one per write() of the container
            self.resting[fd] = time.monotonic() + self.log_rest

    def _copy_log(self, c, fd) -> bool:
        """Copy what waits in a container's pipe into its log; closes the pipe
        at EOF. True when something was copied (more may follow)."""
        try:
            n = c.pipes[fd].splice_from(fd)
        except BlockingIOError:
            return False
        if n:
            return True
        self._close_pipe(c, fd)
        return False

    def _close_pipe(self, c, fd):
        sink = c.pipes.pop(fd)
        self.pipe_owner.pop(fd, None)
        self.resting.pop(fd, None)
        os.close(fd)
        if sink not in c.pipes.values():
            sink.close()

    def _drain(self, c):
        for fd in list(c.pipes):
            while fd in c.pipes and self._copy_log(c, fd):
                pass

    def _set_pipe_size(self, fd):
        if self.log_pipe_size:
            try:
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, self.log_pipe_size)
            except OSError:
                pass        # over the user's pipe quota: the default size still works

    # ------------------------------------------------------------- reaping
    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            c = self.by_pid.pop(pid, None)
            if c is None:
                self.log.info("orphan.reaped", pid=pid, status=_describe(status))
                continue
            self.by_id.pop(c.id, None)
            self._drain(c)
            if os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                code = 128 + sig
            else:
                sig, code = None, os.waitstatus_to_exitcode(status)
            rec = ExitRecord(c.id, pid, code, sig, time.time())
            try:
                write_exit_record(self.exits_dir, rec)
            except OSError as e:
                self.log.error("exit.record_failed", id=c.id, pid=pid, error=str(e))
            self.log.info("container.exited", **rec._asdict())
            self._broadcast({"event": "exit", **rec._asdict()})


def _refuse_peer(sock: socket.socket) -> str | None:
    """Only our own user, and never a process inside a container: every
    container has its own PID namespace, so a peer whose PID namespace is not
    ours is refused (a host-root container could otherwise reach this socket
    through the filesystem and ask for an unconfined sibling)."""
    pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                         struct.calcsize("3i")))
    if uid != os.geteuid():
        return f"peer uid {uid} is not {os.geteuid()}"
    if pid <= 0:
        return "peer pid unknown (peer in another PID namespace)"
    try:
        if os.stat(f"/proc/{pid}/ns/pid").st_ino != os.stat("/proc/self/ns/pid").st_ino:
            return f"peer pid {pid} is in another PID namespace"
    except OSError:
        return f"peer pid {pid} vanished"
    return None


def _cid(value) -> str:
    if not isinstance(value, str) or not ID_RE.match(value):
        raise ValueError("id: 1-128 characters [A-Za-z0-9_.-], starting with a letter or digit")
    return value


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def _waitpid_quiet(pid):
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _read_to_eof(fd: int, timeout: float, stop_at_newline: bool = False) -> str:
    deadline = time.monotonic() + timeout
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(left * 1000):
            break
        data = os.read(fd, 4096)
        if not data:
            break
        buf += data
        if stop_at_newline and b"\n" in buf:
            break
    return buf.decode(errors="replace")


def _join_cgroup(path: str) -> None:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "cgroup.procs"), "w") as f:
        f.write("0")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="agent.launcher",
                                 description="cgroup-agent launcher (forkserver and child subreaper)")
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--cgroup", required=True, help="absolute cgroupfs path of R/launcher")
    ap.add_argument("--foreground", action="store_true", help="do not detach")
    args = ap.parse_args(argv)
    state_dir = os.path.abspath(args.state_dir)
    if not os.path.isabs(args.cgroup):
        print("launcher: --cgroup must be an absolute cgroupfs path", file=sys.stderr)
        return 2
    os.makedirs(state_dir, 0o700, exist_ok=True)
    global CONTAINER_NOFILE
    CONTAINER_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = CONTAINER_NOFILE
    if soft < hard:                 # three descriptors per container; containers keep the original
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    ready_r = ready_w = None
    if not args.foreground:
        ready_r, ready_w = os.pipe()
        if os.fork():
            os.close(ready_w)
            # EOF comes when the daemon is ready or has died; the caller
            # bounds the wait (a slow VM under load can take half a minute)
            msg = _read_to_eof(ready_r, 24 * 3600.0).strip()
            if msg in ("ready", "already running"):
                return 0
            print(f"launcher: {msg or 'exited while starting; see ' + os.path.join(state_dir, LOG_NAME)}",
                  file=sys.stderr)
            return 1
        os.close(ready_r)
        os.setsid()

    def tell(msg):
        if ready_w is not None:
            os.write(ready_w, (msg + "\n").encode())

    try:
        lock = open(os.open(os.path.join(state_dir, LOCK_NAME), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            tell("already running")
            return 0
        os.chdir("/")
        log = _log_factory(os.path.join(state_dir, LOG_NAME))
        if not args.foreground:
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.close(null)
        try:
            _join_cgroup(args.cgroup)
        except OSError as e:
            raise LauncherError(f"join cgroup {args.cgroup}: {os.strerror(e.errno)}") from None
        clone3 = probe_clone3(args.cgroup)   # a stopped (cgroup.kill) container must start again
        ns.set_child_subreaper()
        launcher = Launcher(state_dir, log)
        launcher.clone3 = clone3
        launcher.listen()
        launcher.install_signals()
    except Exception as e:
        tell(str(e) or type(e).__name__)
        return 1
    tell("ready")
    if ready_w is not None:
        os.close(ready_w)
    launcher.serve()
    return 0


# ====================================================================== client

class LauncherClient:
    """Thread-safe client. Calls are serialized by one lock and matched to
    responses by sequence number; a reader thread queues pushed events,
    which make fileno() readable until read_events() takes them."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._lock = threading.Lock()
        self._cv = threading.Condition()
        self._responses: dict[int, dict] = {}
        self._seq = itertools.count(1)
        self._closed = False
        self._events: collections.deque = collections.deque()
        self._ev_r, self._ev_w = os.pipe()
        os.set_blocking(self._ev_r, False)
        os.set_blocking(self._ev_w, False)
        self._reader = threading.Thread(target=self._read_loop, name="launcher-client", daemon=True)
        self._reader.start()

    # -------------------------------------------------------------- connect
    @classmethod
    def connect(cls, state_dir: str) -> "LauncherClient":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(os.path.join(state_dir, SOCKET_NAME))
        except OSError:
            s.close()
            raise
        return cls(s)

    @classmethod
    def connect_or_start(cls, state_dir: str, cgroup_path: str, timeout: float = 5) -> "LauncherClient":
        try:
            return cls.connect(state_dir)
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "agent.launcher", "--state-dir", state_dir,
                 "--cgroup", cgroup_path],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                env=env, cwd="/", timeout=max(timeout * 6, 120), start_new_session=True)
        except subprocess.TimeoutExpired:
            raise LauncherError("launcher did not start in time") from None
        if proc.returncode != 0:
            lines = proc.stderr.decode(errors="replace").strip().splitlines()
            raise LauncherError(lines[-1] if lines else f"launcher exited with {proc.returncode}")
        deadline = time.monotonic() + timeout
        while True:
            try:
                return cls.connect(state_dir)
            except (FileNotFoundError, ConnectionRefusedError) as e:
                if time.monotonic() > deadline:
                    raise LauncherError(f"launcher socket not ready: {e}") from None
                time.sleep(0.02)

    # -------------------------------------------------------------- plumbing
    def _read_loop(self):
        buf = b""
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if "event" in msg:
                    self._events.append(msg)
                    self._poke()
                else:
                    with self._cv:
                        self._responses[msg.get("seq")] = msg
                        self._cv.notify_all()
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._events.append({"event": "disconnected"})
        self._poke()

    def _poke(self):
        try:
            os.write(self._ev_w, b"!")
        except (BlockingIOError, OSError):
            pass

    def _call(self, op: str, timeout: float = 30.0, **kw):
        with self._lock:
            seq = next(self._seq)
            data = (json.dumps({"seq": seq, "op": op, **kw}) + "\n").encode()
            with self._cv:
                if self._closed:
                    raise LauncherGone("launcher connection closed")
            try:
                self._sock.sendall(data)
            except OSError as e:
                raise LauncherGone(f"launcher connection lost: {e}") from None
            deadline = time.monotonic() + timeout
            with self._cv:
                while seq not in self._responses:
                    if self._closed:
                        raise LauncherGone("launcher connection lost")
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise LauncherError(f"launcher did not answer {op} within {timeout:.0f}s")
                    self._cv.wait(left)
                resp = self._responses.pop(seq)
        if resp.get("ok"):
            return resp.get("result")
        kind, err = resp.get("type"), resp.get("error", "launcher error")
        if kind == "LaunchError":
            raise LaunchError(err)
        if kind == "ProcessLookupError":
            raise ProcessLookupError(err)
        if kind == "BadRequest":
            raise ValueError(err)
        raise LauncherError(err)

    # -------------------------------------------------------------- API
    def spawn(self, container_id: str, spec: dict) -> int:
        """Start a container; returns the host pid of its PID 1. Raises
        LaunchError (one line) when anything before exec failed, ValueError
        for a malformed spec."""
        return self.spawn_detail(container_id, spec)["pid"]

    def spawn_detail(self, container_id: str, spec: dict) -> dict:
        """spawn(), answering {"pid": PID, "idmap": {mount destination:
        "idmapped" or the one-line reason it is not}} (idmap only with a
        user namespace)."""
        res = self._call("spawn", timeout=SETUP_TIMEOUT + 30, id=container_id, spec=spec)
        return res if isinstance(res, dict) else {"pid": res}

    def signal(self, pid: int, signum: int) -> None:
        self._call("signal", pid=int(pid), signum=int(signum))

    def running(self) -> dict[str, int]:
        return dict(self._call("running"))

    def exits(self) -> list[ExitRecord]:
        return [ExitRecord(**d) for d in self._call("exits")]

    def ack(self, container_id: str, pid: int) -> bool:
        return bool(self._call("ack", id=container_id, pid=int(pid)))

    def criu_status(self) -> dict:
        return self._call("criu_status", timeout=300.0)

    def checkpoint(self, container_id: str, **kw) -> dict:
        return self._call("checkpoint", timeout=900.0, id=container_id, **kw)

    def restore(self, container_id: str, **kw) -> int:
        return self._call("restore", timeout=900.0, id=container_id, **kw)

    def ping(self) -> dict:
        return self._call("ping", timeout=10)

    def shutdown(self) -> None:
        self._call("shutdown", timeout=10)

    def fileno(self) -> int:
        return self._ev_r

    def read_events(self) -> list[dict]:
        try:
            while os.read(self._ev_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        out = []
        while self._events:
            out.append(self._events.popleft())
        return out

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        if self._reader is not threading.current_thread():
            self._reader.join(timeout=5)
        for fd in (self._ev_r, self._ev_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._ev_r = self._ev_w = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


if __name__ == "__main__":
    sys.exit(main())
