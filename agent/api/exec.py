"""The exec endpoint of the control API (a mixin of agent.api.router's handler).

    POST /v1/containers/NAME/exec
         {"command": [..], "env": {K: V}, "workdir": "/dir", "user": "name|uid[:group|gid]",
          "stdin": false, "tty": false}

A process started inside the running container by the launcher (agentd never
forks): in its cgroup, its namespaces, with its PID 1's security (see
runtime/execin.py). The answer is a stream (agent/wire.py): an EVENT
{"event": "started", "pid"}, STDOUT/STDERR frames (a terminal's output is
STDOUT), then an EVENT {"event": "exited", "exit_code", "exit_signal"}.
With "stdin" (or "tty"), once the answer's headers are sent the client sends
raw frames on the same connection: STDIN (an empty one is end of input) and,
for a terminal, RESIZE {"rows", "cols"}.
"""
from __future__ import annotations

import fcntl
import json
import os
import select
import struct
import termios
import threading

import structlog

from agent.errors import CannotExecute, Conflict, UserError, json_object
from agent.spec import parse_console_size
from agent.specparts.fields import refuse_unrenderable
from agent.wire import FRAME_HEADER, RESIZE, STDERR, STDIN, STDOUT

log = structlog.get_logger("agent.api")

ROUTES = [
    (("v1", "containers", "{name}", "exec"), {"POST": "exec"}),
]
QUERY_PARAMS = {"exec": {}}
FIELDS = ("command", "env", "workdir", "user", "stdin", "tty", "console_size")
DRAIN_WAIT_MS = 100    # after the exit: output still arriving is sent until the pipes are quiet this long


def exec_request(body) -> dict:
    """The launcher's exec arguments from a request body; UserError names the field."""
    json_object(body, FIELDS, "request body", ', e.g. {"command": ["/bin/sh", "-c", "id"]}')
    cmd = body.get("command")
    if not isinstance(cmd, list) or not cmd or not all(isinstance(a, str) and "\0" not in a for a in cmd) or not cmd[0]:
        raise UserError("command: a non-empty list of strings (the program and its arguments)")
    env = body.get("env") or {}
    if isinstance(env, list):
        pairs = [e.partition("=") for e in env if isinstance(e, str)]
        if len(pairs) != len(env) or not all(k and sep for k, sep, _ in pairs):
            raise UserError("env: KEY=VALUE strings (or an object of strings)")
        env = {k: v for k, _, v in pairs}
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) and k and "=" not in k
                                            and "\0" not in k + v for k, v in env.items()):
        raise UserError("env: an object mapping names (no '=', no NUL) to strings, or KEY=VALUE strings")
    workdir = body.get("workdir")
    if workdir is not None and (not isinstance(workdir, str) or not workdir.startswith("/") or "\0" in workdir):
        raise UserError(f"workdir: {workdir!r} is not an absolute path inside the container")
    user = body.get("user")
    if user is not None and (not isinstance(user, str) or not user or "\0" in user or "\n" in user):
        raise UserError("user: name|uid[:group|gid], as in the container's /etc/passwd and /etc/group")
    out = {"argv": cmd, "env": env, "cwd": workdir, "user": user}
    for key, where in (("argv", "command"), ("env", "env"), ("cwd", "workdir"), ("user", "user")):
        refuse_unrenderable(where, out[key])   # a lone surrogate: the spec's one rule
    for key in ("stdin", "tty"):
        v = body.get(key, False)
        if not isinstance(v, bool):
            raise UserError(f"{key}: {v!r} is not a boolean; use true or false")
        out[key] = v
    size = parse_console_size(body.get("console_size"), out["tty"])    # its terminal's size from the start
    if size:
        out["tty_size"] = list(size)
    return out


def check_stdin(spec, detach: bool) -> None:
    """run -i: stdin is forwarded on an attached run only."""
    if spec.stdin and detach:
        raise UserError("stdin: only with an attached run (detach false): nobody would write to it")


def forward_stdin(h, info, stdin: bool = True, tty: bool = False) -> None:
    """run -i: the client's STDIN frames (after the answer's headers, on the
    same connection) into the container's PID 1 stdin, by a thread, while
    the handler streams its output; an empty frame or a closed client is
    its end of input. A container that already exited has no stdin to feed.
    run -t: the launcher hands a copy of PID 1's terminal instead; RESIZE
    frames set its window size, STDIN frames are typed into it with -i."""
    from agent.launcher import LauncherError

    try:
        fd = h.sup.launcher.take_stdin(info.id)
    except (LauncherError, ValueError) as e:
        log.info("api.stdin_unavailable", name=info.name, error=str(e))
        return
    pending = bytes(h.rfile.buf)
    h.rfile.buf.clear()
    # its own descriptor of the connection: never a number the handler's
    # close could hand to another connection meanwhile
    conn = os.dup(h.connection.fileno())
    threading.Thread(target=_stdin_loop, args=(conn, fd, pending, stdin, tty), daemon=True,
                     name=f"api-stdin-{info.name}").start()


def _stdin_loop(conn: int, fd: int, buf: bytes, stdin: bool = True, tty: bool = False) -> None:
    poller = select.poll()
    poller.register(conn, select.POLLIN)
    try:
        while True:
            used = _complete(buf)
            at = 0
            while at < used:
                sid, n = FRAME_HEADER.unpack_from(buf, at)
                data = buf[at + FRAME_HEADER.size:at + FRAME_HEADER.size + n]
                at += FRAME_HEADER.size + n
                if sid == RESIZE and tty:
                    _resize(fd, data)
                if sid != STDIN or not stdin:
                    continue
                if not data:
                    if tty:
                        continue    # a terminal has no end of input: ctrl-D is typed
                    return
                _write_all(fd, data)
            buf = buf[used:]
            poller.poll()
            try:
                data = os.read(conn, 65536)
            except BlockingIOError:     # the handler's socket is non-blocking (it has a timeout)
                continue
            if not data:
                return
            buf += data
    except OSError:         # the client went away, or the container closed its stdin
        return
    finally:
        os.close(fd)
        os.close(conn)


class ExecHandlers:
    def h_exec(self, name, query, body):
        from agent.launcher import LaunchError
        from runtime.execve import exec_failure

        req = exec_request(body)
        info = self.sup.get(name)
        if info.state != "running":
            raise Conflict(f"container {name} is {info.state}, not running: exec needs a running container"
                           + (f" (agentctl start {name})" if info.state in ("created", "exited") else ""))
        try:
            pid, fds = self.sup.launcher.exec(info.id, **req)
        except LaunchError as e:
            message, reason = f"exec: {e}".splitlines()[0], exec_failure(str(e))
            raise (CannotExecute(message, reason) if reason else UserError(message)) from None
        log.info("container.exec", name=name, id=info.id, pid=pid, argv=req["argv"], tty=req["tty"],
                 uid=self.peer.uid)
        try:
            self._start_stream()
            self._event({"event": "started", "pid": pid})
            code, sig = _pump(self, fds, stdin=req["stdin"], tty=req["tty"])
            if code is None:
                self._event({"event": "error", "status": 503,
                             "error": f"agentd is stopping; the process {pid} in {name} keeps running"})
            else:
                self._event({"event": "exited", "exit_code": code, "exit_signal": sig, "pid": pid})
            self._end_stream()
        except OSError:
            log.info("api.exec_client_gone", name=name, pid=pid)
            if req["tty"]:      # detached (exec -it's detach keys): it runs on, its terminal held here
                _outlive_client(self, fds)
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass


def _pump(h, fds: list[int], stdin: bool, tty: bool) -> tuple[int | None, int | None]:
    """Copy the process's output to the client and the client's input to the
    process until it exited; (exit_code, signal), (None, None) when agentd stops."""
    if tty:
        master, status = fds
        outs = {master: STDOUT}
        sink = master
    else:
        if stdin:
            sink, out, err, status = fds
        else:
            sink, (out, err, status) = None, fds
        outs = {out: STDOUT, err: STDERR}
    sock = h.connection
    inbuf = bytes(h.rfile.buf)      # frames that came with the request
    h.rfile.buf.clear()
    reading_client = stdin or tty
    result = None
    while True:
        poller = select.poll()
        for fd in outs:
            poller.register(fd, select.POLLIN)
        if result is None:
            poller.register(status, select.POLLIN)
        if reading_client:
            poller.register(sock.fileno(), select.POLLIN)
        if inbuf and reading_client:
            sink, reading_client = _client_frames(inbuf, sink, tty, fds)
            inbuf = b""
        ready = poller.poll(DRAIN_WAIT_MS if result is not None else 500)
        if not ready and result is not None:
            return result
        if not ready and h.api.stopping.is_set():
            return None, None
        for fd, _ev in ready:
            if fd in outs:
                try:
                    data = os.read(fd, 65536)
                except OSError:         # EIO: a terminal whose every slave is closed
                    data = b""
                if data:
                    h._frame(outs[fd], data)
                else:
                    del outs[fd]
            elif fd == status:
                line = os.read(status, 4096)
                try:
                    doc = json.loads(line)
                    result = (doc["exit_code"], doc["signal"])
                except (ValueError, KeyError, TypeError):
                    result = (None, None) if not line else (255, None)
                if result == (None, None):      # the launcher went away without a status
                    return 255, None
            elif reading_client:
                data = sock.recv(65536)
                if not data:
                    reading_client = False
                    if sink is not None and not tty:
                        os.close(sink)
                        fds[fds.index(sink)] = -1
                        sink = None
                    continue
                inbuf += data
                used = _complete(inbuf)
                if used:
                    sink, reading_client = _client_frames(inbuf[:used], sink, tty, fds)
                    inbuf = inbuf[used:]
        if result is not None and not outs:
            return result


def _outlive_client(h, fds: list[int]) -> None:
    """Hold the terminal of an exec whose client went away until the process
    exits (closing it would hang the process up), its output dropped."""
    master, status = fds
    poller = select.poll()
    poller.register(master, select.POLLIN)
    poller.register(status, select.POLLIN)
    while not h.api.stopping.is_set():
        for fd, _ev in poller.poll(500):
            try:
                data = os.read(fd, 65536)
            except OSError:     # EIO: every other end of the terminal is closed
                data = b""
            if fd == status or not data:
                return


def _complete(buf: bytes) -> int:
    """How many bytes of `buf` are whole frames."""
    at = 0
    while len(buf) - at >= FRAME_HEADER.size:
        _sid, n = FRAME_HEADER.unpack_from(buf, at)
        if len(buf) - at - FRAME_HEADER.size < n:
            break
        at += FRAME_HEADER.size + n
    return at


def _client_frames(buf: bytes, sink, tty: bool, fds: list[int]):
    """Apply whole client frames: (the input descriptor or None once closed, keep reading)."""
    at = 0
    while at < len(buf):
        sid, n = FRAME_HEADER.unpack_from(buf, at)
        data = buf[at + FRAME_HEADER.size:at + FRAME_HEADER.size + n]
        at += FRAME_HEADER.size + n
        if sid == STDIN and sink is not None:
            if data:
                try:
                    _write_all(sink, data)
                except OSError:     # the process closed its input
                    pass
            elif not tty:           # end of input
                os.close(sink)
                fds[fds.index(sink)] = -1
                sink = None
        elif sid == RESIZE and tty:
            _resize(sink, data)
        # EVENT and unknown frames from a client are ignored
    return sink, True


def _resize(master: int, data: bytes) -> None:
    """A RESIZE frame's {"rows", "cols"} as the terminal's window size (a bad one is ignored)."""
    try:
        size = json.loads(data)
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", int(size["rows"]), int(size["cols"]), 0, 0))
    except (ValueError, KeyError, TypeError, OSError, struct.error):
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:     # a terminal the launcher polls (non-blocking): wait for room
            waiter = select.poll()
            waiter.register(fd, select.POLLOUT)
            waiter.poll()

