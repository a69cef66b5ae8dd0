"""Operator endpoints of the control API (a mixin of agent.api.router's handler).

    POST /v1/containers/NAME/cp   {"direction": "out"|"in", "container_path", "host_path"}
         a regular file (runtime/rootfile.py) or a directory tree
         (runtime/roottree.py: all or nothing, symlinks never followed)
         between the running container and agentd's host, the container
         side resolved inside its root; into the destination when it is an
         existing directory, else as it. Answers kind "file" with bytes, or
         "directory" with files, dirs, symlinks, skipped (FIFOs, sockets,
         devices) and bytes.
    GET  /v1/containers/NAME/top  the processes of its cgroup (psutil)
    GET  /v1/events?since=SEQ&limit=N   the lifecycle events after sequence SEQ, oldest first
    POST /v1/containers/NAME/rename {"name": NEW}   (Supervisor.rename)

Host paths are read and written by agentd as root: cp is an admin request (a
POST), and the admin group is root-equivalent (docs/security.md).
"""
from __future__ import annotations

import os
import time

import structlog

from agent.api.views import container_json
from agent.errors import Conflict, UserError

log = structlog.get_logger("agent.api")

ROUTES = [
    (("v1", "containers", "{name}", "cp"), {"POST": "cp"}),
    (("v1", "containers", "{name}", "top"), {"GET": "top"}),
    (("v1", "events"), {"GET": "events"}),
    (("v1", "containers", "{name}", "rename"), {"POST": "rename"}),
]


def _count(key: str, value: str, top: int) -> int:
    if not value.isdigit() or int(value) > top:
        raise UserError(f"query parameter {key}: {value!r} is not a number from 0 to {top}")
    return int(value)


QUERY_PARAMS = {"cp": {}, "top": {}, "rename": {},
                "events": {"since": lambda k, v: _count(k, v, 2**62), "limit": lambda k, v: _count(k, v, 10000)}}
# the store's kinds under Docker's event names (others keep their own)
DOCKER_NAMES = {"created": "create", "started": "start", "exited": "die", "stopped": "stop", "removed": "remove",
                "paused": "pause", "thawed": "unpause", "signalled": "kill", "restarted": "restart",
                "limits": "update", "renamed": "rename"}


def _running_pid(h, name: str) -> tuple[object, int]:
    info = h.sup.get(name)
    if info.state not in ("running", "paused") or not info.pid:
        raise Conflict(f"container {name} is {info.state}, not running: cp and top need a running container")
    return info, info.pid


def _in_cgroup(pid: int, cgroup_path: str) -> bool:
    from runtime.cgroupfs import find_mount
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            rel = next(line.split("::", 1)[1].strip() for line in f if line.startswith("0::"))
    except (OSError, StopIteration):
        return False
    return os.path.normpath(os.path.join(find_mount(), rel.lstrip("/"))) == os.path.normpath(cgroup_path)


class OpsHandlers:
    def h_cp(self, name, query, body):
        from runtime import rootfile

        if not isinstance(body, dict) or set(body) != {"direction", "container_path", "host_path"}:
            raise UserError('request body: {"direction": "out"|"in", "container_path": "/in/it", '
                            '"host_path": "/on/the/host"}')
        direction, cpath, hpath = body["direction"], body["container_path"], body["host_path"]
        if direction not in ("out", "in"):
            raise UserError(f"direction: {direction!r} is not out (container to host) or in (host to container)")
        for key, p in (("container_path", cpath), ("host_path", hpath)):
            if not isinstance(p, str) or not p.startswith("/") or "\0" in p:
                raise UserError(f"{key}: {p!r} is not an absolute path")
        info, pid = _running_pid(self, name)
        try:
            root = rootfile.open_root(pid)
        except OSError as e:
            raise Conflict(f"container {name}: its root is gone ({os.strerror(e.errno)}): it is exiting") from None
        try:
            # the pid was PID 1 of this container when the root was opened, not a recycled one
            if not _in_cgroup(pid, info.cgroup):
                raise Conflict(f"container {name} exited meanwhile")
            if direction == "out":
                result = _copy_out(root, cpath, hpath)
            else:
                ids = rootfile.root_id(pid)     # written as the container's root
                result = _copy_in(root, hpath, cpath, ids if ids != (0, 0) else None)
        except rootfile.RootFileError as e:
            raise UserError(str(e)) from None
        finally:
            os.close(root)
        log.info("container.cp", name=name, direction=direction, container_path=cpath, host_path=hpath,
                 uid=self.peer.uid, **result)
        self._send_json(200, {"name": name, "direction": direction, "container_path": cpath,
                              "host_path": hpath, **result})

    def h_top(self, name, query, body):
        import psutil

        info, _pid = _running_pid(self, name)
        rows = []
        try:
            with open(os.path.join(info.cgroup, "cgroup.procs")) as f:
                pids = [int(x) for x in f.read().split()]
        except OSError as e:
            raise Conflict(f"container {name}: its cgroup is gone ({os.strerror(e.errno)})") from None
        for p in pids:
            try:
                proc = psutil.Process(p)
                with proc.oneshot():
                    cpu = proc.cpu_times()
                    rows.append({"pid": p, "ppid": proc.ppid(), "uid": proc.uids().real,
                                 "user": _user(proc), "state": proc.status(),
                                 "cpu_seconds": round(cpu.user + cpu.system, 2),
                                 "rss_bytes": proc.memory_info().rss,
                                 "started_at": proc.create_time(),
                                 "command": _command(proc)})
            except psutil.Error:
                continue            # exited meanwhile
        self._send_json(200, {"name": name, "taken_at": time.time(), "processes": rows})

    def h_rename(self, name, query, body):

        if not isinstance(body, dict) or set(body) != {"name"} or not isinstance(body["name"], str):
            raise UserError('request body: {"name": "NEW-NAME"}')
        self._send_json(200, container_json(self.sup.rename(name, body["name"])))

    def h_events(self, query, body):
        events = self.sup.events(None, query.get("since", 0), query.get("limit", 1000))
        for ev in events:
            ev["event"] = DOCKER_NAMES.get(ev["kind"], ev["kind"])
        self._send_json(200, events)


def _copy_out(root: int, cpath: str, hpath: str) -> dict:
    """A file or a directory tree of the container copied to the host: into
    `hpath` when it is a directory there, else as `hpath`."""
    from runtime import rootfile, roottree

    if os.path.isdir(hpath):
        hpath = os.path.join(hpath, _base(cpath))
    if not roottree.is_dir_in_root(root, cpath):
        n = _copy(rootfile.open_file(root, cpath), lambda: _open_host(hpath, write=True))
        return {"kind": "file", "bytes": n}
    src = roottree.open_dir_in_root(root, cpath)
    try:
        parent = _open_host_dir(os.path.dirname(hpath.rstrip("/")) or "/")
        try:
            counts = roottree.copy_tree(src, parent, _base(hpath), cpath, hpath)
        finally:
            os.close(parent)
    finally:
        os.close(src)
    return {"kind": "directory", **counts.as_dict()}


def _copy_in(root: int, hpath: str, cpath: str, ids) -> dict:
    """A host file or directory tree copied into the container (written as
    its root, `ids`): into `cpath` when it is a directory there, else as
    `cpath`."""
    from runtime import rootfile, roottree

    if roottree.is_dir_in_root(root, cpath):
        cpath = f"{cpath.rstrip('/')}/{_base(hpath)}"
    if not os.path.isdir(hpath):
        n = _copy(_open_host(hpath, write=False), lambda: rootfile.open_file(root, cpath, write=True, as_ids=ids))
        return {"kind": "file", "bytes": n}
    src = _open_host_dir(hpath)
    try:
        parent = roottree.open_dir_in_root(root, os.path.dirname(cpath.rstrip("/")) or "/")
        try:
            counts = roottree.copy_tree(src, parent, _base(cpath), hpath, cpath, as_ids=ids)
        finally:
            os.close(parent)
    finally:
        os.close(src)
    return {"kind": "directory", **counts.as_dict()}


def _base(path: str) -> str:
    return os.path.basename(path.rstrip("/"))


def _open_host_dir(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise UserError(f"host_path {path}: {os.strerror(e.errno)}") from None


def _copy(src: int, open_dst) -> int:
    """Copy ``src`` into the descriptor ``open_dst()`` opens; both closed after (``src`` also
    when opening the destination fails). The bytes copied."""
    from runtime import rootfile

    try:
        dst = open_dst()
        try:
            return rootfile.copy(src, dst)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _command(proc) -> list[str]:
    """Its argv; the launcher's log copier (in the cgroup while a container
    floods its log, billed to it: agent/launcher/logcopier.py) by its name,
    not the launcher's command line. Only a process of the host's PID
    namespace is taken for it: a tenant's process named so is shown as it is."""
    from agent.launcher.logcopier import COPIER_COMM

    name = proc.name()
    if name == COPIER_COMM:
        try:
            if os.stat(f"/proc/{proc.pid}/ns/pid").st_ino == os.stat("/proc/self/ns/pid").st_ino:
                return [f"[{COPIER_COMM}: the container's log copy]"]
        except OSError:
            pass
    return proc.cmdline() or [f"[{name}]"]


def _user(proc) -> str:
    try:
        return proc.username()
    except (KeyError, Exception):     # a container uid with no host name
        return str(proc.uids().real)


def _open_host(path: str, write: bool) -> int:
    try:
        if write:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOCTTY, 0o644)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        raise UserError(f"host_path {path}: {os.strerror(e.errno)}") from None
    import stat
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UserError(f"host_path {path}: not a regular file (only files are copied)")
    return fd
