"""The launcher's client, used by agentd (agent/launcher/protocol.py: the wire)."""

from __future__ import annotations

import array
import collections
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time

from agent.fdclose import close_quietly
from agent.launcher import protocol as wire
from agent.launcher.protocol import ExitRecord, LauncherError, LauncherGone, SETUP_TIMEOUT, SOCKET_NAME

class LauncherClient:
    """Thread-safe client. Request lines are sent under one lock and
    answers matched to them by sequence number (a call waits for its own
    answer only: the launcher answers a checkpoint or restore when CRIU is
    done, and answers other calls meanwhile); a reader thread queues pushed events,
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
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
        fds: collections.deque = collections.deque()    # received, not yet claimed by a response
        while True:
            try:
                data, anc, _flags, _addr = self._sock.recvmsg(65536, socket.CMSG_SPACE(16 * 4))
            except OSError:
                data, anc = b"", []
            for level, kind, raw in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    got = array.array("i")
                    got.frombytes(raw[:len(raw) - len(raw) % got.itemsize])
                    for fd in got:
                        os.set_inheritable(fd, False)
                        fds.append(fd)
            if not data:
                break
            lines, buf = wire.split_lines(buf + data)
            for line in lines:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if "event" in msg:
                    self._events.append(msg)
                    self._poke()
                else:
                    want = msg.get("fds") if isinstance(msg.get("fds"), int) else 0
                    msg["fds"] = [fds.popleft() for _ in range(min(want, len(fds)))]
                    with self._cv:
                        self._responses[msg.get("seq")] = msg
                        self._cv.notify_all()
        for fd in fds:
            os.close(fd)
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

    def _exchange(self, op: str, timeout: float = 30.0, **kw) -> dict:
        with self._lock:            # one request line at a time; the answers are matched by seq
            seq = next(self._seq)
            data = wire.encode({"seq": seq, "op": op, **kw})
            with self._cv:
                if self._closed:
                    raise LauncherGone("launcher connection closed")
            try:
                self._sock.sendall(data)
            except OSError as e:
                raise LauncherGone(f"launcher connection lost: {e}") from None
        # waited for outside the lock: while a checkpoint's CRIU runs in the
        # launcher, other threads' calls (an exit's ack) are answered meanwhile
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
        return resp

    def _call(self, op: str, timeout: float = 30.0, **kw):
        resp = self._exchange(op, timeout, **kw)
        for fd in resp.get("fds") or ():
            os.close(fd)
        return wire.raise_for(resp)

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

    def exec(self, container_id: str, argv: list[str], env: dict | None = None, cwd: str | None = None,
             user: str | None = None, tty: bool = False, stdin: bool = False,
             tty_size: list | None = None) -> tuple[int, list[int]]:
        """Start a process inside a running container (agent/launcher/execs.py):
        (its host pid, descriptors: [stdin write end if stdin], stdout, stderr,
        status; with tty: [terminal master, status]). The caller owns and
        closes the descriptors. Raises LaunchError (one line) when it could not
        start, ValueError for a malformed request."""
        resp = self._exchange("exec", timeout=SETUP_TIMEOUT + 30, id=container_id, argv=list(argv),
                              env=dict(env or {}), cwd=cwd, user=user, tty=tty, stdin=stdin,
                              **({"tty_size": list(tty_size)} if tty_size else {}))
        fds = resp.get("fds") or []
        want = 2 if tty else 4 if stdin else 3
        if not resp.get("ok") or len(fds) != want:
            for fd in fds:
                os.close(fd)
            wire.raise_for(resp)
            raise LauncherError(f"launcher answered exec with {len(fds)} descriptors, not {want}")
        return resp["result"]["pid"], fds

    def take_stdin(self, container_id: str) -> int:
        """The write end of a container's stdin (spawned with spec stdin);
        the caller owns it: closing it is the container's end of input. A
        container spawned with spec tty: a copy of its terminal (input, size)."""
        resp = self._exchange("take_stdin", id=container_id)
        fds = resp.get("fds") or []
        if not resp.get("ok") or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            wire.raise_for(resp)
            raise LauncherError(f"launcher answered take_stdin with {len(fds)} descriptors, not 1")
        return fds[0]

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

    def cpuinfo_check(self, dir: str) -> dict:
        return self._call("cpuinfo_check", timeout=300.0, dir=dir)

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
        close_quietly(self._ev_r, self._ev_w)
        self._ev_r = self._ev_w = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


