"""The launcher: a single-threaded forkserver and child subreaper, and its client.

    protocol.py  the wire: framing, message and error envelopes, ExitRecord
    server.py    the serving loop, spawning, log copying, reaping
    client.py    LauncherClient (agentd's side)
    boot.py      start-up: detach, lock, cgroup, subreaper (python3 -m agent.launcher)
    logsink.py   a container's capped log file fed by splice(2)
    logcopier.py a flooding container's log copy, forked into its own cgroup
    execs.py     a process started inside a running container (agentctl exec)
    peers.py     who may connect; how a child ended; reading a setup pipe
    records.py   durable exit records

agentd is multi-threaded and must never fork; it asks this process instead.

    python3 -m agent.launcher --state-dir DIR --cgroup R/launcher [--foreground]

The launcher detaches (double fork, setsid, stdio on /dev/null, log in
DIR/launcher.log), moves itself into its cgroup, becomes the child subreaper
and serves JSON lines on DIR/launcher.sock (mode 0600). One launcher per
state dir (flock on DIR/launcher.lock). It outlives agentd; agentd reconnects.

Wire protocol: one JSON object per line, defined in agent/launcher/protocol.py.

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
bytes a container produced can be billed to it. A container that logs more
than COPIER_THRESHOLD within COPIER_WINDOW has its pipes copied by a copier
forked into its own cgroup, which then pays for the copy (logcopier.py).
"""

from agent.launcher.boot import _log_factory, main
from agent.launcher.client import LauncherClient
from agent.launcher.logsink import LogSink
from agent.launcher.protocol import (EXITS_DIR, ID_RE, LOCK_NAME, LOG_NAME, MAX_LINE, SETUP_TIMEOUT,
                                     SOCKET_NAME, ExitRecord, LaunchError, LauncherError, LauncherGone)
from agent.launcher.records import read_exit_records, write_exit_record
from agent.launcher.server import LOG_PIPE_SIZE, LOG_REST, Launcher

__all__ = ["EXITS_DIR", "ID_RE", "LOCK_NAME", "LOG_NAME", "LOG_PIPE_SIZE", "LOG_REST", "MAX_LINE",
           "SETUP_TIMEOUT", "SOCKET_NAME", "ExitRecord", "LaunchError", "Launcher", "LauncherClient",
           "LauncherError", "LauncherGone", "LogSink", "_log_factory", "main", "read_exit_records",
           "write_exit_record"]
