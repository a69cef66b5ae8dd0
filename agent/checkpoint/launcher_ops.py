"""The launcher's side of checkpoint and restore (it runs CRIU; agentd never forks).

    {"op": "criu_status"}                       -> criu.status(), cached for the launcher's life
    {"op": "checkpoint", "id", "dir", "cgroup", "leave_running"}
        dumps the running container `id` into dir/images; answers
        {"pipes": ["pipe:[INODE]" of its stdout, of its stderr]}. Without
        leave_running CRIU kills the tree: its exit is reaped and reported
        as any other.
    {"op": "restore", "id", "dir", "spec": {cgroup, rootfs, stdout, stderr, log_max_bytes}, "pipes"}
        restores the tree of dir/images into spec.cgroup, detached: its
        init becomes the launcher's child (subreaper), adopted like a
        spawned one (logs appended to the spec's files, exit reaped and
        recorded); answers the init's host pid.
"""
from __future__ import annotations

import os

from agent.checkpoint import criu
from agent.checkpoint.layout import IMAGES

_status: dict | None = None


def criu_status() -> dict:
    global _status
    if _status is None:
        _status = criu.status()
    return _status


def _require_criu(errors) -> None:
    st = criu_status()
    if not st["ok"]:
        raise errors.LaunchError(st["reason"])


def checkpoint(launcher, req, errors) -> dict:
    cid = req.get("id")
    c = launcher.by_id.get(cid)
    if c is None:
        raise errors.LaunchError(f"container {cid} is not running in this launcher")
    d, cgroup = req.get("dir"), req.get("cgroup")
    if not isinstance(d, str) or not os.path.isdir(os.path.join(d, IMAGES)):
        raise ValueError("dir: must be a checkpoint directory with images/")
    if not isinstance(cgroup, str) or not os.path.isfile(os.path.join(cgroup, "cgroup.procs")):
        raise ValueError("cgroup: must be the container's cgroup directory")
    _require_criu(errors)
    pipes = [f"pipe:[{os.fstat(fd).st_ino}]" for fd in c.pipes]   # stdout, stderr (insertion order)
    images = os.path.join(d, IMAGES)
    try:
        criu.run(criu.dump_argv(c.pid, images, cgroup, bool(req.get("leave_running"))),
                 os.path.join(images, "dump.log"))
    except criu.CriuError as e:
        launcher.log.warning("checkpoint.failed", id=cid, error=str(e))
        raise errors.LaunchError(str(e)) from None
    launcher.log.info("checkpoint.dumped", id=cid, pid=c.pid, leave_running=bool(req.get("leave_running")))
    return {"pipes": pipes}


def restore(launcher, req, errors, new_container, LogSink) -> int:
    cid = req.get("id")
    if cid in launcher.by_id:
        raise errors.LaunchError(f"container {cid} is already running with pid {launcher.by_id[cid].pid}")
    d, spec, pipes = req.get("dir"), req.get("spec") or {}, req.get("pipes") or []
    if not isinstance(d, str) or not os.path.isdir(os.path.join(d, IMAGES)):
        raise ValueError("dir: must be a checkpoint directory with images/")
    cgroup, rootfs = spec.get("cgroup"), spec.get("rootfs")
    if not isinstance(cgroup, str) or not os.path.isfile(os.path.join(cgroup, "cgroup.procs")):
        raise errors.LaunchError(f"cgroup {cgroup}: no such cgroup")
    if not isinstance(rootfs, str) or not os.path.isdir(rootfs):
        raise errors.LaunchError(f"rootfs {rootfs}: no such directory")
    if not all(isinstance(p, str) and p.startswith("pipe:[") for p in pipes):
        raise ValueError("pipes: must be a list of 'pipe:[INODE]'")
    _require_criu(errors)
    from runtime.cgroupfs import find_mount
    mount = find_mount().rstrip("/")
    if not cgroup.startswith(mount + "/"):
        raise errors.LaunchError(f"cgroup {cgroup}: not below the cgroup2 mount {mount}")
    sinks = {}
    for path in {spec.get("stdout"), spec.get("stderr")}:
        sinks[path] = LogSink(path, int(spec.get("log_max_bytes") or (10 << 20)))
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    launcher._set_pipe_size(out_r)
    launcher._set_pipe_size(err_r)
    inherit, seen = [], set()
    for key, w in zip(pipes, (out_w, err_w)):
        if key not in seen:             # stdout and stderr may be one pipe
            inherit.append((w, key))
            seen.add(key)
    images = os.path.join(d, IMAGES)
    pidfile = os.path.join(d, "restore.pid")
    try:
        os.unlink(pidfile)
    except FileNotFoundError:
        pass
    try:
        criu.run(criu.restore_argv(images, rootfs, pidfile, cgroup[len(mount):], inherit),
                 os.path.join(images, "restore.log"), pass_fds=(out_w, err_w))
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (criu.CriuError, OSError, ValueError) as e:
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)
        for s in sinks.values():
            s.close()
        launcher.log.warning("restore.failed", id=cid, error=str(e))
        raise errors.LaunchError(str(e) if isinstance(e, criu.CriuError) else f"criu restore: no pid ({e})") from None
    os.close(out_w)
    os.close(err_w)
    new_container(cid, pid, {out_r: sinks[spec.get("stdout")], err_r: sinks[spec.get("stderr")]})
    launcher.log.info("container.restored", id=cid, pid=pid)
    return pid
