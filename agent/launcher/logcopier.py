"""A flooding container's log copy, run in the container's own cgroup.

Whoever copies a pipe into a file pays the kernel's copy of every byte into
the page cache (and the file system's work per page), splice(2) or not: when
the launcher copies, a `yes` flood is billed to nobody. So once a container
has logged more than COPIER_THRESHOLD bytes within COPIER_WINDOW seconds (or
filled its pipe COPIER_FULL_PIPES copies in a row: a launcher slowed by a
slow disk never sees the rate, however fast the container writes), the
launcher forks a copier into the container's cgroup (clone3
CLONE_INTO_CGROUP, or fork + cgroup.procs) and hands it that container's
pipes; the copier runs the same LogSink code (splice, cap, rotation,
sidecars) until the pipes reach end of file. Its CPU and the page cache it
dirties are then charged to the container's cgroup. Containers that log
little never get one.

What stays as it was:
- The cap is hard and the container never holds the file: the pipe still
  sits between them, and the copier is the launcher's code, not the
  container's.
- The copier is in the host's PID namespace, not the container's (no
  namespace is entered): the container cannot see it in its /proc nor
  signal it. Its oom_score_adj is COPIER_OOM_SCORE_ADJ, so a memory-full
  container loses its own processes first (lowering it needs
  CAP_SYS_RESOURCE: without it the copier keeps the launcher's). A copier
  that dies of a signal the launcher did not send (the OOM killer) is not
  replaced: the launcher copies that container's logs from then on, as
  before, so a container cannot make the copy loop. Its name (comm) is
  COPIER_COMM from its birth (the launcher takes that name for the fork).
- log_bytes stay exact: they are read from the files and their .rotated
  sidecars (agent/logfiles.py), which the copier keeps exactly as the
  launcher does; the bytes a copier moved (logged as log.copier_ended) are
  the difference of that count between hand-over and take-back.
- The launcher keeps its own read end of every handed pipe (it only stops
  polling it). A copier that ends, however it ends (end of file, killed by
  cgroup.kill on stop, killed by the launcher), is reaped by the launcher,
  which reopens the files (LogSink picks up the size and the sidecar, and
  repairs a sidecar a kill left behind mid-rotation) and copies whatever is
  still in the pipes: no byte is lost to the copier's death.
- When a container's PID 1 exits, and before a checkpoint, the launcher
  kills the copier and takes the pipes back first (recall), so the exit
  record is written after the last byte as before, and CRIU finds only the
  container's own tree in the cgroup.
- A frozen container's copier is frozen with it (its pipe waits, as the
  container does). If the launcher dies, the copier goes on copying until
  the container's pipes close (the container keeps logging, capped); a new
  launcher does not adopt it.
- A container restored by CRIU (no spawn spec here) or whose cgroup refuses
  one more process (pids.max) is copied by the launcher, as before.
"""
from __future__ import annotations

import os
import select
import signal
import time

from agent import logfiles
from agent.launcher.logsink import LogSink
from runtime.cgroupfork import fork_in_cgroup

COPIER_THRESHOLD = 4 << 20      # bytes logged within COPIER_WINDOW that hand a container's pipes to a copier
COPIER_WINDOW = 1.0             # seconds
COPIER_FULL_PIPES = 4           # or this many copies in a row that each found the pipe full
COPIER_OOM_SCORE_ADJ = -999     # the container's own processes (0) go first; still killable as a last resort
COPIER_COMM = "cga-logcopy"


class _Copier:
    def __init__(self, pid, container, pipes, start_bytes):
        self.pid, self.container = pid, container
        self.pipes = pipes          # read fd -> (path, max_bytes): what to reopen at take-back
        self.start_bytes = start_bytes


class LogCopiers:
    """The launcher's side: when to hand over, the copiers alive, take-back."""

    def __init__(self, launcher, threshold: int = COPIER_THRESHOLD):
        self.launcher = launcher
        self.threshold = threshold
        self.window: dict[object, list] = {}       # container -> [window start, bytes in it]
        self.by_pid: dict[int, _Copier] = {}
        self.by_container: dict[object, _Copier] = {}
        self.refused: set = set()                  # containers whose cgroup refused a copier
        self.full_runs: dict[object, int] = {}     # container -> copies in a row that found its pipe full

    def note(self, c, n: int, full: bool = False) -> bool:
        """The launcher copied n bytes of container c (`full`: the pipe was
        full, the container waiting on the launcher); True when c's pipes
        were just handed to a copier (the launcher no longer polls them).
        A flood is more than `threshold` bytes within COPIER_WINDOW, or
        COPIER_FULL_PIPES full pipes in a row: a launcher slowed down (a
        slow disk, a loaded host) copies less per second than the rate, but
        the container still outpaces it."""
        if (not self.threshold or c.spec is None or c in self.refused or c in self.by_container
                or self.launcher.by_id.get(c.id) is not c):     # not running (its exit is being drained)
            return False
        runs = self.full_runs[c] = self.full_runs.get(c, 0) + 1 if full else 0
        now = time.monotonic()
        w = self.window.get(c)
        if w is None or now - w[0] > COPIER_WINDOW:
            w = self.window[c] = [now, 0]
        w[1] += n
        if w[1] <= self.threshold and runs < COPIER_FULL_PIPES:
            return False
        del self.window[c]
        self.full_runs.pop(c, None)
        return self._start(c)

    def _start(self, c) -> bool:
        L = self.launcher
        sinks = dict(c.pipes)
        if not sinks:
            return False
        paths = {s.path for s in sinks.values()}
        start = logfiles.produced_by(paths)
        own = _set_comm(COPIER_COMM)    # the copier is born with its name: never listed as a second launcher
        try:
            pid, joined = fork_in_cgroup(c.spec.cgroup)
        except OSError as e:
            _set_comm(own)
            self.refused.add(c)
            L.log.warning("log.copier_refused", id=c.id, error=e.strerror or str(e))
            return False
        if pid == 0:
            code = 1
            try:
                code = _copier_main(sinks, None if joined else c.spec.cgroup, L.log_rest)
            finally:
                os._exit(code)
        _set_comm(own)
        cp = _Copier(pid, c, {fd: (s.path, s.max_bytes) for fd, s in sinks.items()}, start)
        for fd in sinks:
            c.pipes.pop(fd)
            L.pipe_owner.pop(fd, None)
            L.resting.pop(fd, None)
        for s in set(sinks.values()):
            s.close()                   # the copier has its own copies; the read ends stay open here
        self.by_pid[pid] = cp
        self.by_container[c] = cp
        L.log.info("log.copier_started", id=c.id, pid=pid, cgroup=c.spec.cgroup)
        return True

    def reaped(self, pid: int, status: int) -> bool:
        """A child ended: True when it was a copier (its pipes are the launcher's again)."""
        cp = self.by_pid.pop(pid, None)
        if cp is None:
            return False
        self._take_back(cp, status)
        return True

    def recall(self, c) -> None:
        """Stop c's copier (if any) and take its pipes back, before the
        launcher drains them (PID 1 exited) or CRIU dumps the cgroup."""
        self.window.pop(c, None)
        self.full_runs.pop(c, None)
        cp = self.by_container.get(c)
        if cp is None:
            return
        try:
            os.kill(cp.pid, signal.SIGKILL)   # no byte is in its hands: what it has not spliced is in the pipe
        except ProcessLookupError:
            pass
        while True:
            try:
                os.waitpid(cp.pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break
        del self.by_pid[cp.pid]
        self._take_back(cp, 0)

    def forget(self, c) -> None:
        self.window.pop(c, None)
        self.full_runs.pop(c, None)
        self.refused.discard(c)

    def _take_back(self, cp: _Copier, status: int) -> None:
        L, c = self.launcher, cp.container
        self.by_container.pop(c, None)
        sinks: dict[str, LogSink] = {}
        for fd, (path, max_bytes) in cp.pipes.items():
            try:
                sink = sinks.get(path) or LogSink(path, max_bytes)
            except OSError as e:
                L.log.error("log.reopen_failed", id=c.id, path=path, error=str(e))
                sink = None
            if sink is None:                # the file is gone: the pipe closes, the container's writes fail
                os.close(fd)
                continue
            sinks[path] = sink
            c.pipes[fd] = sink
            L.pipe_owner[fd] = c
        end = logfiles.produced_by(list(sinks))
        moved = end - cp.start_bytes if end is not None and cp.start_bytes is not None else None
        if status:      # it could not join the cgroup, or was killed (OOM, cgroup.kill): the launcher copies
            self.refused.add(c)
            L.log.info("log.copier_lost", id=c.id, pid=cp.pid, status=os.waitstatus_to_exitcode(status))
        L.log.info("log.copier_ended", id=c.id, pid=cp.pid, bytes=moved)


def _set_comm(name: str | None) -> str | None:
    """Set this process's name (comm; the launcher is single-threaded), which
    a fork inherits; the name it had before (None: unknown, nothing set)."""
    if name is None:
        return None
    try:
        with open("/proc/self/comm", "r+") as f:
            old = f.read().rstrip("\n")
            f.seek(0)
            f.write(name)
        return old
    except OSError:
        return None


def _copier_main(sinks: dict[int, LogSink], join_cgroup: str | None, rest: float) -> int:
    """The copier process: a fork of the launcher. Keeps only its pipes and
    their files, and splices until every pipe reaches end of file."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    keep = set(sinks)
    for s in sinks.values():
        keep.update(fd for fd in (s.fd, s.times.fd) if fd >= 0)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    keep.update((0, 1, 2))
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)        # the launcher's lock, socket, clients, other containers' pipes
            except OSError:
                pass
    if join_cgroup is not None:     # no clone3 into the cgroup here: join it first, or do nothing
        try:
            with open(os.path.join(join_cgroup, "cgroup.procs"), "w") as f:
                f.write("0")
        except OSError:
            return 2
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(COPIER_OOM_SCORE_ADJ))
    except OSError:
        pass
    poller = select.poll()
    for fd in sinks:
        poller.register(fd, select.POLLIN)
    live = dict(sinks)
    while live:
        copied = False
        for fd, _ev in poller.poll():
            try:
                n = live[fd].splice_from(fd)
            except BlockingIOError:
                continue
            if n:
                copied = True
                continue
            poller.unregister(fd)   # end of file: the container closed it
            del live[fd]
        if copied and rest:
            time.sleep(rest)        # let the pipe fill: one wake-up per pipe-full, as in the launcher
    return 0
