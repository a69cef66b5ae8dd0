"""Starting the launcher: `python3 -m agent.launcher --state-dir DIR --cgroup R/launcher`.

Detaches (double fork, setsid, stdio on /dev/null, log in DIR/launcher.log),
takes DIR/launcher.lock (one launcher per state dir), moves itself into its
cgroup, becomes the child subreaper, then serves (agent/launcher/server.py).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import resource
import sys

from agent.launcher import spawning
from agent.launcher.protocol import LOCK_NAME, LOG_NAME, LauncherError
from agent.launcher.peers import read_to_eof as _read_to_eof
from agent.launcher.server import Launcher
from runtime import namespaces as ns
from runtime.cgroupfork import probe_clone3


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
    spawning.CONTAINER_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = spawning.CONTAINER_NOFILE
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

