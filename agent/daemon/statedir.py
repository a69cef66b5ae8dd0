"""The state dir: one agentd at a time, and nobody else reads it.

- `lock(state_dir)`: an exclusive flock on <state_dir>/agentd.lock, taken
  before the store is opened or the launcher contacted, held (the returned
  descriptor) for the life of the process. A second agentd on the same
  state dir gets StateDirBusy naming the pid written into the lock file by
  the holder.
- `tighten(state_dir)`: what agentd owns under the state dir loses the
  permissions it should not have: directories at most 0750, the container
  logs at most 0640, every other file (SQLite databases and their -wal/-shm,
  exit records, locks, the launcher's log) at most 0600, sockets no access
  for others. Nothing is ever widened; symlinks are not followed; what
  another user owns is left alone (and logged).
- `create_private(path)`: create a file 0600 (if missing) before SQLite
  opens it; SQLite gives the -wal and -shm files the mode of the database.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat

import structlog

log = structlog.get_logger("agentd")

LOCK_NAME = "agentd.lock"
LOGS_DIR = "logs"
DIR_MAX = 0o750
LOG_FILE_MAX = 0o640
FILE_MAX = 0o600
SOCKET_MAX = 0o770


class StateDirBusy(RuntimeError):
    """Another agentd holds the state dir; str() is the one line to show."""


def lock(state_dir: str) -> int:
    """Take the state dir's lock (see the module docstring); -> the descriptor."""
    path = os.path.join(state_dir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MAX)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = ""
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            try:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            except OSError:
                pass
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StateDirBusy(f"state dir {state_dir}: cannot lock {path}: {os.strerror(e.errno)}") from None
        who = f"pid {holder}" if holder.isdigit() else "another process"
        raise StateDirBusy(f"state dir {state_dir} is in use by another agentd ({who} holds {path}); "
                           "stop it or give this one another --state-dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _limit(path: str, st: os.stat_result, most: int) -> None:
    mode = stat.S_IMODE(st.st_mode)
    if mode & ~most:
        try:
            os.chmod(path, mode & most, follow_symlinks=False)
        except NotImplementedError:   # a libc without fchmodat(AT_SYMLINK_NOFOLLOW)
            os.chmod(path, mode & most)


def _max_for(rel_parts: tuple[str, ...], st: os.stat_result) -> int | None:
    if stat.S_ISDIR(st.st_mode):
        return DIR_MAX
    if stat.S_ISSOCK(st.st_mode):
        return SOCKET_MAX
    if stat.S_ISREG(st.st_mode):
        return LOG_FILE_MAX if rel_parts[:1] == (LOGS_DIR,) else FILE_MAX
    return None   # symlinks, fifos, devices: left alone


def tighten(state_dir: str) -> int:
    """Tighten the state dir (see the module docstring); -> how many modes changed."""
    me = os.geteuid()
    top = os.lstat(state_dir)
    if not stat.S_ISDIR(top.st_mode):
        return 0
    if top.st_uid != me:
        log.warning("statedir.not_owned", state_dir=state_dir, owner=top.st_uid,
                    effect="its permissions are left as they are")
        return 0
    changed = 0

    def visit(path, rel_parts, st):
        nonlocal changed
        most = _max_for(rel_parts, st)
        if most is None or st.st_uid != me or not stat.S_IMODE(st.st_mode) & ~most:
            return
        try:
            _limit(path, st, most)
            changed += 1
        except OSError as e:
            log.warning("statedir.chmod_failed", path=path, error=os.strerror(e.errno or 0))

    visit(state_dir, (), top)
    for dirpath, dirnames, filenames in os.walk(state_dir, followlinks=False):
        rel = os.path.relpath(dirpath, state_dir)
        rel_parts = () if rel == "." else tuple(rel.split(os.sep))
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            visit(path, rel_parts + (name,), st)
    if changed:
        log.info("statedir.tightened", state_dir=state_dir, changed=changed)
    return changed


def create_private(path: str) -> None:
    """Create `path` 0600 if it does not exist (an existing file is kept)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MAX)
    except FileExistsError:
        return
    os.close(fd)
