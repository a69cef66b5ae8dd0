"""The launcher's server: a single-threaded forkserver and child subreaper.

agentd is multi-threaded and must never fork; it asks this process instead
(the package docstring, agent/launcher/__init__.py, tells the whole story;
agent/launcher/protocol.py is the wire).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import time

from agent.checkpoint import launcher_ops
from agent.launcher import protocol as wire
from agent.launcher.execs import Execs, parse as parse_exec
from agent.launcher.logcopier import COPIER_THRESHOLD, LogCopiers
from agent.launcher.logsink import LogSink
from agent.launcher.peers import describe as _describe, read_to_eof as _read_to_eof, refuse_peer as _refuse_peer
from agent.launcher.protocol import (EXITS_DIR, MAX_LINE, SOCKET_NAME, ExitRecord,
                                     LaunchError, check_id as _cid)
from agent.launcher import spawning
from agent.launcher.spawning import Spawning, _Container
from agent.launcher.records import fsync_dir as _fsync_dir, read_exit_records, write_exit_record
from runtime.spawnspec import SpawnSpec, SpecError

LOG_PIPE_SIZE = 1 << 20           # F_SETPIPE_SZ: a flood moves in large chunks, few wake-ups
LOG_REST = 0.02                   # a pipe just copied waits this long before it is polled again


class _Client:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""


class Launcher(Spawning):
    log_rest = LOG_REST
    log_pipe_size = LOG_PIPE_SIZE
    log_copier_threshold = COPIER_THRESHOLD     # 0: the launcher copies every log itself

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
        self.execs = Execs(log)
        self.copiers = LogCopiers(self, self.log_copier_threshold)
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
        lines, c.buf = wire.split_lines(c.buf + data)
        for line in lines:
            resp = self._handle(line)
            if "_pending" in resp:      # CRIU runs on: answered when it is reaped (launcher_ops.reaped)
                resp["_pending"].client_fd, resp["_pending"].client = fd, self.clients[fd]
                continue
            fds = resp.pop("_fds", ())
            try:
                self._send(fd, resp, fds)
            finally:
                for x in fds:
                    os.close(x)
            if fd not in self.clients:
                return
        if len(c.buf) > MAX_LINE:
            self._send(fd, wire.error(None, "BadRequest", "request line too long"))
            self._drop_client(fd)

    def _send(self, fd, obj, fds=()):
        c = self.clients.get(fd)
        if c is None:
            return
        data = wire.encode(obj)
        try:
            c.sock.setblocking(True)
            c.sock.settimeout(5.0)
            if fds:     # the descriptors ride on the line's first byte
                data = data[socket.send_fds(c.sock, [data[:1]], list(fds)):]
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
            fn = getattr(self, f"op_{op}", None) if op in wire.OPS else None
            if fn is None:
                return wire.error(seq, "BadRequest", f"op: unknown {op!r}; accepted: {', '.join(wire.OPS)}")
            result = fn(req)
            if isinstance(result, launcher_ops.Pending):
                return {"_pending": result.answering(seq)}
            if isinstance(result, wire.WithFds):
                return {**wire.ok(seq, result.result), "fds": len(result.fds), "_fds": result.fds}
            return wire.ok(seq, result)
        except LaunchError as e:
            return wire.error(seq, "LaunchError", str(e))
        except (SpecError, ValueError, TypeError, KeyError) as e:
            return wire.error(seq, "BadRequest", str(e))
        except ProcessLookupError as e:
            return wire.error(seq, "ProcessLookupError", str(e))
        except Exception as e:      # never die on a request
            self.log.exception("request.failed")
            return wire.error(seq, "LauncherError", f"{type(e).__name__}: {e}")

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

    # checkpoint/restore: agent/checkpoint/launcher_ops.py runs CRIU here
    def op_criu_status(self, req):
        return launcher_ops.criu_status()

    def op_cpuinfo_check(self, req):
        return launcher_ops.cpuinfo_check(req, wire)

    def op_checkpoint(self, req):
        _cid(req.get("id"))
        if req.get("id") in self.by_id:
            self.copiers.recall(self.by_id[req["id"]])  # CRIU must find only the container's tree
        return launcher_ops.checkpoint(self, req, wire)

    def op_restore(self, req):
        _cid(req.get("id"))
        return launcher_ops.restore(self, req, wire, self._adopt, LogSink)

    def _adopt(self, cid: str, pid: int, pipes: dict) -> None:
        """A tree CRIU restored (reparented to this launcher): reaped and logged like a spawned one."""
        c = _Container(cid, pid, pipes)
        for fd in c.pipes:
            os.set_blocking(fd, False)
            self.pipe_owner[fd] = c
        self.by_id[cid] = c
        self.by_pid[pid] = c

    def op_exec(self, req):
        cid = _cid(req.get("id"))
        ex, want_stdin = parse_exec(req)
        c = self.by_id.get(cid)
        if c is None or c.spec is None:
            raise LaunchError(f"container {cid} is not running under this launcher"
                              + (" (started by an earlier launcher)" if c is not None else ""))
        result, fds = self.execs.start(cid, c.pid, c.spec, ex, want_stdin, spawning.CONTAINER_NOFILE, _read_to_eof)
        return wire.WithFds(result, fds)

    def op_take_stdin(self, req):
        """The write end of a running container's stdin (spec.stdin), once:
        the launcher keeps no copy, so closing it is the container's EOF.
        With a terminal (spec.tty): a copy of its multiplexer, each time
        (input, and TIOCSWINSZ for the client's window size)."""
        cid = _cid(req.get("id"))
        c = self.by_id.get(cid)
        if c is not None and c.tty >= 0:
            return wire.WithFds(True, [os.dup(c.tty)])
        if c is None or c.stdin_w < 0:
            raise LaunchError(f"container {cid}: no stdin to hand over (not running, not started "
                              "with stdin, or already taken)")
        fd, c.stdin_w = c.stdin_w, -1
        return wire.WithFds(True, [fd])

    # ------------------------------------------------------------- spawning
    # ------------------------------------------------------------- logs
    def _pipe_readable(self, fd):
        c = self.pipe_owner[fd]
        if self._copy_log(c, fd) and self.log_rest and c.tty < 0:
            # let the pipe fill before the next copy: a flood then costs one
            # wake-up per LOG_PIPE_SIZE, not one per write() of the container
            # (a terminal holds a few KiB: it is read on, or a copier takes it)
            self.resting[fd] = time.monotonic() + self.log_rest

    def _copy_log(self, c, fd) -> bool:
        """Copy what waits in a container's pipe into its log; closes the pipe
        at EOF. True when something was copied (more may follow)."""
        try:
            n = c.pipes[fd].splice_from(fd)
        except BlockingIOError:
            return False
        if n:       # a flood: its pipes go to a copier in its cgroup
            return not self.copiers.note(c, n, full=bool(self.log_pipe_size) and n >= self.log_pipe_size)
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
            if c is None and self.execs.reaped(pid, status):
                continue
            if c is None and self.copiers.reaped(pid, status):
                continue
            if c is None and launcher_ops.reaped(self, pid, status, wire):
                continue
            if c is None:
                self.log.info("orphan.reaped", pid=pid, status=_describe(status))
                continue
            self.by_id.pop(c.id, None)
            if c.stdin_w >= 0:
                os.close(c.stdin_w)
            if c.tty >= 0:
                os.close(c.tty)
            self.copiers.recall(c)
            self.copiers.forget(c)
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
