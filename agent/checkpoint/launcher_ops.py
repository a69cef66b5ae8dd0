"""The launcher's side of checkpoint and restore (it runs CRIU; agentd never forks).

    {"op": "criu_status"}                       -> criu.status(), cached for the launcher's life
    {"op": "cpuinfo_check", "dir"}               -> {"ok", "reason"}: this host's CPU against the
                                                   checkpoint's (criu.cpuinfo_check)
    {"op": "checkpoint", "id", "dir", "cgroup", "leave_running", "netns", "externals", "tcp_established",
     "empty_netns"}
        dumps the running container `id` into dir/images (its bound network
        namespace `netns` and the mounts `externals` {dst: key} left
        external, externals.py; its established TCP connections too when
        tcp_established, criu.TCP_ESTABLISHED; with empty_netns, a network
        namespace its user namespace owns, dumped empty: criu.EMPTY_NETNS); answers
        {"pipes": ["pipe:[INODE]" of its stdout, of its stderr]}. Without
        leave_running CRIU kills the tree: its exit is reaped and reported
        as any other.
    {"op": "restore", "id", "dir", "spec": {cgroup, rootfs, stdout, stderr, log_max_bytes, netns, mounts,
     protected, allow_sensitive_binds, userns}, "pipes", "externals", "tcp_established", "net_hook",
     "idmapped"}
        restores the tree of dir/images into spec.cgroup (joining the
        network namespace spec.netns, the external mounts given the
        sources of spec.mounts, volumes checked and staged as at create,
        images owned by spec.userns's root meanwhile; the destinations in
        idmapped ("/", volumes) idmapped with spec.userns as its start made
        them; with net_hook
        {"eth0": {...}}, CRIU makes the network namespace empty and
        nethook.py moves spec.netns's eth0 into it), detached: its
        init becomes the launcher's child (subreaper), adopted like a
        spawned one (logs appended to the spec's files, exit reaped and
        recorded); answers the init's host pid.

CRIU runs beside the launcher's loop, not in it: `checkpoint` and `restore`
start it and return a `Pending`; the server keeps the request's answer
back and goes on serving (other containers' logs copied, exits reaped and
reported, other requests answered) until its reap finds CRIU's pid
(`reaped`), which finishes the request and sends its answer. A restored
init only becomes the launcher's child once CRIU has exited, after CRIU in
the launcher's list of children: its adoption comes first.
"""
from __future__ import annotations

import os

from agent.checkpoint import criu, externals as ext, layout, nethook, volumes
from agent.checkpoint.layout import IMAGES

_status: dict | None = None
_pending: dict = {}         # CRIU's pid -> Pending


class Pending:
    """A request whose CRIU runs: `finish(returncode)` gives its result (or raises)."""

    def __init__(self, proc, finish):
        self.proc, self.finish = proc, finish
        self.seq = None
        self.client_fd = self.client = None      # set by the server (its connection)
        _pending[proc.pid] = self

    def answering(self, seq):
        self.seq = seq
        return self


def reaped(launcher, pid: int, status: int, errors) -> bool:
    """True when `pid` was a CRIU the launcher started: its request is answered."""
    p = _pending.pop(pid, None)
    if p is None:
        return False
    code = os.waitstatus_to_exitcode(status)
    p.proc.returncode = code            # reaped here, not by Popen
    try:
        resp = errors.ok(p.seq, p.finish(code))
    except errors.LaunchError as e:
        resp = errors.error(p.seq, "LaunchError", str(e))
    except Exception as e:              # never take the loop down
        launcher.log.exception("criu.finish_failed")
        resp = errors.error(p.seq, "LauncherError", f"{type(e).__name__}: {e}")
    client = launcher.clients.get(p.client_fd)
    if client is not None and client is p.client:     # not a later connection given the same fd
        launcher._send(p.client_fd, resp)
    return True


def criu_status() -> dict:
    global _status
    if _status is None:
        _status = criu.status()
    return _status


def cpuinfo_check(req, errors) -> dict:
    """{"ok": bool, "reason": one line or None}: whether this host's CPU has the
    features the checkpoint in req["dir"] was dumped on (criu.cpuinfo_check)."""
    d = req.get("dir")
    if not isinstance(d, str) or not os.path.isdir(os.path.join(d, IMAGES)):
        raise ValueError("dir: must be a checkpoint directory with images/")
    _require_criu(errors)
    why = criu.cpuinfo_check(os.path.join(d, IMAGES))
    return {"ok": why is None, "reason": why}


def _require_criu(errors) -> None:
    st = criu_status()
    if not st["ok"]:
        raise errors.LaunchError(st["reason"])


def checkpoint(launcher, req, errors) -> Pending:
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
    netns, mounts = req.get("netns"), req.get("externals") or {}
    if netns is not None and not isinstance(netns, str):
        raise ValueError("netns: must be the path of the container's bound network namespace")
    _check_externals(mounts)
    argv = criu.dump_argv(c.pid, images, cgroup, bool(req.get("leave_running")), req.get("tcp_established") is True,
                          req.get("empty_netns") is True)
    try:
        argv += ext.dump_args(c.pid, netns, mounts)
        proc = criu.start(argv)
    except ext.ExternalError as e:
        raise errors.LaunchError(f"checkpoint: {e}") from None
    except criu.CriuError as e:
        raise errors.LaunchError(str(e)) from None

    def finish(code):
        try:
            criu.finish(argv, code, os.path.join(images, "dump.log"))
        except criu.CriuError as e:
            launcher.log.warning("checkpoint.failed", id=cid, error=str(e))
            raise errors.LaunchError(str(e)) from None
        launcher.log.info("checkpoint.dumped", id=cid, pid=c.pid, leave_running=bool(req.get("leave_running")))
        return {"pipes": pipes}

    launcher.log.info("checkpoint.started", id=cid, pid=c.pid, criu=proc.pid)
    return Pending(proc, finish)


def _userns_root(mapping) -> tuple[int, int] | None:
    """The host uid and gid of the restored user namespace's root (None: no user namespace)."""
    if not isinstance(mapping, dict):
        return None
    from runtime.userns import check_mapping, host_id
    m = check_mapping(mapping)
    uid, gid = host_id(m["uid"], 0), host_id(m["gid"], 0)
    if uid is None or gid is None:
        raise ValueError("userns: uid and gid 0 must be mapped for a restore")
    return uid, gid


def _disown(images: str, owner) -> None:
    if owner:
        try:
            layout.own(images, 0, 0)
        except OSError:
            pass


def _overlay(o, errors):
    """An image container's overlay (runtime/spawnspec.py's rule), or None."""
    if o is None:
        return None
    from runtime.spawnspec import SpecError, parse_overlay
    try:
        return parse_overlay(o)
    except SpecError as e:
        raise errors.LaunchError(f"restore: {e}") from None


def _mount_overlay(o) -> None:
    """The image container's root, made of its layers and its (restored) upper dir,
    mounted on its target for CRIU's --root (nodev, as at any start)."""
    from runtime import mounts as mountsmod
    tree = mountsmod.new_overlay(list(o.lower), o.upper, o.work, nodev=True)
    try:
        mountsmod.attach_at(tree, o.target)
    finally:
        os.close(tree)


def _unmount_overlay(o) -> None:
    if o is None:
        return
    from runtime import namespaces as ns
    try:
        ns.umount2(o.target, ns.MNT_DETACH)
    except OSError:
        pass


def _idmapped_root(rootfs: str, userns_fd: int) -> str:
    """The container's root dir idmapped with the mapping of `userns_fd` (as
    its start makes it: runtime/userns.idmap_tree), nodev and nosuid, mounted
    on a fresh point for CRIU's --root (CRIU keeps no idmap: the dump
    recorded the root as a plain mount). The point is under /run, searchable
    (0711) by the restored user namespace's root. OSError naming why it
    cannot be."""
    import errno
    import tempfile

    from runtime import mounts as mountsmod
    from runtime import userns as usernsmod
    point = tempfile.mkdtemp(prefix="cga-restore-root-", dir="/run")
    os.chmod(point, 0o711)
    try:
        o = mountsmod.open_host_path(rootfs)
        try:
            tree = mountsmod.clone_tree(o)
        finally:
            o.close()
        try:
            mountsmod.set_tree_flags(tree, nosuid=True, nodev=True)
            why = usernsmod.idmap_tree(tree, userns_fd)
            if why:
                raise OSError(errno.EINVAL, f"its root was idmapped at the checkpoint and cannot be here: {why}")
            mountsmod.attach_at(tree, point)
        finally:
            os.close(tree)
    except BaseException:
        os.rmdir(point)
        raise
    return point


def _unmount_root(point: str | None) -> None:
    if point is None:
        return
    from runtime import namespaces as ns
    try:
        ns.umount2(point, ns.MNT_DETACH)
        os.rmdir(point)
    except OSError:
        pass


def _net_hook(hook, netns) -> tuple[str, dict] | None:
    """(agentd's bound network namespace, eth0's configuration) for a restore
    into an empty network namespace (nethook.py), or None."""
    if hook is None:
        return None
    eth0 = hook.get("eth0") if isinstance(hook, dict) else None
    if not (isinstance(netns, str) and os.path.isabs(netns) and isinstance(eth0, dict)
            and set(eth0) == {"ip", "prefixlen", "gateway", "mac", "egress_bits"}):
        raise ValueError("net_hook: must be {\"eth0\": {ip, prefixlen, gateway, mac, egress_bits}} "
                         "with spec.netns the namespace holding eth0")
    return netns, eth0


def _check_externals(mounts) -> None:
    if not isinstance(mounts, dict) or not all(
            isinstance(k, str) and k.startswith("/") and isinstance(v, str) and v.isalnum() for k, v in mounts.items()):
        raise ValueError("externals: must map absolute destinations to alphanumeric keys")


def restore(launcher, req, errors, new_container, LogSink) -> Pending:
    cid = req.get("id")
    if cid in launcher.by_id:
        raise errors.LaunchError(f"container {cid} is already running with pid {launcher.by_id[cid].pid}")
    d, spec, pipes = req.get("dir"), req.get("spec") or {}, req.get("pipes") or []
    if not isinstance(d, str) or not os.path.isdir(os.path.join(d, IMAGES)):
        raise ValueError("dir: must be a checkpoint directory with images/")
    cgroup, rootfs = spec.get("cgroup"), spec.get("rootfs")
    if not isinstance(cgroup, str) or not os.path.isfile(os.path.join(cgroup, "cgroup.procs")):
        raise errors.LaunchError(f"cgroup {cgroup}: no such cgroup")
    overlay = _overlay(spec.get("overlay"), errors)
    if overlay is not None:
        rootfs = overlay.target
    if not isinstance(rootfs, str) or not os.path.isdir(rootfs):
        raise errors.LaunchError(f"rootfs {rootfs}: no such directory")
    if not all(isinstance(p, str) and p.startswith("pipe:[") for p in pipes):
        raise ValueError("pipes: must be a list of 'pipe:[INODE]'")
    mounts, netns = req.get("externals") or {}, spec.get("netns")
    _check_externals(mounts)
    hook = _net_hook(req.get("net_hook"), netns)
    if hook is not None:
        netns = None            # not inherited: CRIU makes it in the user namespace it restores
    owner = _userns_root(spec.get("userns"))
    idmapped = req.get("idmapped") or []
    if not (isinstance(idmapped, list) and all(isinstance(x, str) and x.startswith("/") for x in idmapped)):
        raise ValueError("idmapped: must be a list of mount destinations")
    if idmapped and (owner is None or ("/" in idmapped and overlay is not None)):
        raise ValueError("idmapped: only for a rootfs container with spec.userns")
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
    root_point, userns_fd = None, -1
    try:
        script = nethook.write(d, *hook) if hook is not None else None
        if idmapped:            # CRIU keeps no idmap: made again with the restored container's mapping
            from runtime import userns as usernsmod
            userns_fd = usernsmod.create(usernsmod.check_mapping(spec.get("userns")))
        if "/" in idmapped:
            root_point = _idmapped_root(rootfs, userns_fd)
        argv = criu.restore_argv(images, root_point or rootfs, pidfile, cgroup[len(mount):], inherit,
                                 req.get("tcp_established") is True, script)
        if overlay is not None:
            _mount_overlay(overlay)
        if owner:
            layout.own(images, *owner)
        staged = volumes.stage(d, {k: v for k, v in mounts.items() if volumes.is_volume_key(v)},
                               spec.get("mounts"), spec.get("protected"), bool(spec.get("allow_sensitive_binds")),
                               (userns_fd, set(idmapped) - {"/"}))
        more, ns_fds = ext.restore_args(netns, mounts, spec.get("mounts"), staged)
    except (ext.ExternalError, volumes.VolumeError, OSError) as e:
        if userns_fd >= 0:
            os.close(userns_fd)
        _disown(images, owner)
        nethook.remove(d)
        volumes.unstage(d)
        _unmount_overlay(overlay)
        _unmount_root(root_point)
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)
        for s in sinks.values():
            s.close()
        raise errors.LaunchError(f"restore: {e}") from None
    if userns_fd >= 0:          # the idmapped trees hold the mapping now
        os.close(userns_fd)
    argv += more

    def failed(e):
        _disown(images, owner)
        nethook.remove(d)
        volumes.unstage(d)
        _unmount_overlay(overlay)
        _unmount_root(root_point)
        for fd in (out_r, out_w, err_r, err_w, *ns_fds):
            os.close(fd)
        for s in sinks.values():
            s.close()
        launcher.log.warning("restore.failed", id=cid, error=str(e))
        return errors.LaunchError(str(e) if isinstance(e, criu.CriuError) else f"criu restore: no pid ({e})")

    try:
        proc = criu.start(argv, pass_fds=(out_w, err_w, *ns_fds))
    except criu.CriuError as e:
        raise failed(e) from None

    def finish(code):
        try:
            criu.finish(argv, code, os.path.join(images, "restore.log"))
            with open(pidfile) as f:
                pid = int(f.read().strip())
        except (criu.CriuError, OSError, ValueError) as e:
            raise failed(e) from None
        _disown(images, owner)
        nethook.remove(d)
        volumes.unstage(d)
        _unmount_overlay(overlay)      # the restored tree's mount namespace keeps its own
        _unmount_root(root_point)
        for fd in (out_w, err_w, *ns_fds):
            os.close(fd)
        new_container(cid, pid, {out_r: sinks[spec.get("stdout")], err_r: sinks[spec.get("stderr")]})
        launcher.log.info("container.restored", id=cid, pid=pid)
        return pid

    launcher.log.info("restore.started", id=cid, criu=proc.pid)
    return Pending(proc, finish)
