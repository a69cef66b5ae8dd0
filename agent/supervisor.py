"""Container lifecycle: create, start, stop, kill, freeze, thaw, limits, remove.

States: created -> running <-> paused; running -> exited -> (restarting ->
running)*; running -> checkpointed (agent/checkpoint/service.py). The supervisor owns every container cgroup below R/containers:
it creates R/containers/<id>, applies limits there, hands the launcher a
spawn spec whose first step joins that cgroup, and it is the ONLY place that
removes such a cgroup (after every `before_remove(info, sample)` hook got a
final runtime.stats sample).

One background thread (the "loop") waits on the launcher's event socket,
the inotify watcher and a wake pipe: exit events arrive from the launcher
(acked only after the store commit, so none is lost), OOM kills are seen on
memory.events (IN_MODIFY, no polling), restarts run from a timer heap.
Public methods may be called from any thread; a lock guards the state.
"""
from __future__ import annotations

import errno
import heapq
import os
import secrets
import select
import shutil
import signal as _signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import structlog

from agent import selfmetrics
from agent import logfiles
from agent import userns_alloc
from agent.errors import CannotExecute, Conflict, HostLimitation, NotFound, UserError
from agent.model import ContainerInfo, image_ref
from agent.spec import ContainerSpec
from agent.store import ContainerRow, Store, StoreFull
from agent.store import full_error as store_full_error
from runtime import cgroupfs
from runtime.cgroupfs import Cgroup
from runtime.errors import CgroupBusy, CgroupError, CgroupGone, ControllerMissing, LimitError
from runtime.spawn import exec_failure

log = structlog.get_logger("agentd.supervisor")

LIVE_STATES = ("running", "paused", "restarting")
BACKOFF_BASE = 0.1  # seconds before the first restart; doubles per restart
BACKOFF_MAX = 30.0
BACKOFF_RESET_AFTER = 10.0  # a run this long resets the backoff
EXIT_WAIT_AFTER_KILL = 10.0
PIDS_LOG_EVERY = 60.0  # seconds between container.pids_limit_hit lines of one container

selfmetrics.declare("launcher_restarts_total", "counter",
                    "Times the launcher connection broke and agentd started or reconnected to a launcher.")
selfmetrics.declare("device_filter_unavailable_total", "counter",
                    "Container starts whose cgroup got no device filter (BPF refused by the kernel or host); "
                    "such containers are held by nodev mounts only.")
selfmetrics.declare("kills_after_grace_total", "counter",
                    "Container stops whose process outlived the SIGTERM grace period and was ended with cgroup.kill.")


# ------------------------------------------------------------------ cgroup layout


@dataclass(frozen=True)
class Layout:
    root: Cgroup
    agentd: Cgroup
    launcher: Cgroup
    containers: Cgroup
    enabled: frozenset  # controllers R/containers hands to each container
    missing: dict  # controller -> reason


def layout_cgroups(root_path: str, move_self: bool = True) -> Layout:
    """Create R/agentd, R/launcher, R/containers; move agentd into R/agentd;
    enable every controller the host offers down to the containers."""
    root = Cgroup(root_path)
    mount = cgroupfs.find_mount()
    parent = root.parent()
    if parent.path == mount.rstrip("/") and parent.controllers() - parent.subtree_control():
        # R sits right below the hierarchy root (no systemd to have done this):
        # hand R every controller the kernel offers on cgroup2. The root cgroup
        # is exempt from the no-internal-process rule, so this moves nothing.
        enabled = parent.enable_controllers(sorted(parent.controllers()))
        log.info("cgroup.root_controllers_enabled", cgroup=parent.path, controllers=sorted(enabled))
    root.create(exist_ok=True)
    agentd = root.child("agentd").create()
    launcher = root.child("launcher").create()
    containers = root.child("containers").create()
    if move_self and os.path.join(cgroupfs.find_mount(), cgroupfs.own_cgroup().lstrip("/")).rstrip("/") != agentd.path:
        agentd.add_pid(os.getpid())
    cgroupfs.prepare_root(root, self_leaf="agentd")
    containers.enable_controllers(sorted(containers.controllers()))
    enabled = frozenset(containers.subtree_control())
    missing = {}
    for name in ("cpu", "memory", "io", "pids", "cpuset"):
        if name not in enabled:
            missing[name] = _missing_reason(containers, name)
    return Layout(root, agentd, launcher, containers, enabled, missing)


def _missing_reason(containers: Cgroup, name: str) -> str:
    try:
        status = cgroupfs.controller_status(containers).get(name, "not offered by this kernel")
    except CgroupError as e:
        return str(e)
    if status == "enabled":
        return f"not in {containers.file('cgroup.subtree_control')}"
    return status


# ------------------------------------------------------------------ state


@dataclass
class _Entry:
    row: ContainerRow
    spec: ContainerSpec
    cg: Cgroup
    limits: Any  # Limits as read back
    stopping: bool = False  # a user asked for stop/kill/remove: no restart
    orphan: bool = False  # running, but its pid is not the launcher's child (launcher restarted)
    removing: bool = False
    removed: bool = False
    timer: Any = None
    started_mono: float | None = None
    oom_seen: int | None = None  # memory.events oom_kill as last counted
    oom_at_start: int | None = None  # ... when this run started
    pids_hits_seen: int | None = None  # pids.events max as last looked at
    pids_logged_mono: float | None = None  # when a pids.max hit was last logged
    backoff_n: int = 0
    idmap: dict | None = None  # mount destination -> "idmapped" or why not, from the last start
    device_filter: str = ""  # "on", or "off: <reason>" (inspect); "" until first started


def _new_id(taken) -> str:
    while True:
        cid = secrets.token_hex(6)
        if cid not in taken:
            return cid


def _signal_number(sig: Any) -> int:
    if isinstance(sig, bool):
        raise UserError(f"signal: {sig!r} is not a signal")
    if isinstance(sig, int):
        num = sig
    elif isinstance(sig, str) and sig.strip().isdigit():
        num = int(sig)
    elif isinstance(sig, str):
        name = sig.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        try:
            num = int(getattr(_signal.Signals, name))
        except AttributeError:
            raise UserError(f"signal: {sig!r} is not a signal; use a name such as TERM, KILL, HUP or a number") from None
    else:
        raise UserError(f"signal: {sig!r} is not a signal")
    if not 1 <= num <= 64:
        raise UserError(f"signal: {sig!r} is out of range; use 1-64")
    return num


class Supervisor:
    """Lifecycle of every container (see module docstring)."""

    def __init__(self, config, store: Store, launcher, watcher=None, layout: Layout | None = None):
        self.config = config
        self.store = store
        self.launcher = launcher
        self.watcher = watcher
        root = config.agent.cgroup_root
        if not root:
            raise ValueError("Supervisor needs config.agent.cgroup_root resolved to a path")
        self.layout = layout or Layout(Cgroup(root), Cgroup(root).child("agentd"), Cgroup(root).child("launcher"),
                                       Cgroup(root).child("containers"), frozenset(), {})
        self.before_remove: list[Callable] = []
        self.on_change: list[Callable] = []  # on_change(info): state changed (informational)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._entries: dict[str, _Entry] = {}
        self._names: dict[str, str] = {}
        self._gone: dict[str, ContainerInfo] = {}  # recently removed, for wait()
        self._timers: list = []
        self._timer_seq = 0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread: threading.Thread | None = None
        self._stop = False
        self.logs_dir = os.path.join(config.agent.state_dir, "logs")
        os.makedirs(self.logs_dir, mode=0o750, exist_ok=True)
        # image containers: their overlayfs upper and work dirs, state_dir/containers/<id>/
        # (under the state dir: an overlay upper dir cannot sit on another overlay)
        self.rootfs_dir = os.path.join(config.agent.state_dir, "containers")
        self.images = None  # agent.images.service.ImageService, set by the daemon
        self.userns_pool = userns_alloc.agent_pool(config)

    # ------------------------------------------------------------- start / shutdown

    def boot(self) -> None:
        """Load the store, re-adopt what still runs, apply exits that happened
        while agentd was down, then start the event loop."""
        self._restore()
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)
        self._thread.start()

    def close(self, stop_containers: bool = False, timeout: float | None = None) -> None:
        if stop_containers:
            for info in self.containers(all=False):
                try:
                    self.stop(info.id, timeout if timeout is not None else self.config.agent.stop_timeout)
                except Exception as e:  # keep going: every container gets its stop
                    log.error("container.stop_failed", name=info.name, error=str(e))
        self._stop = True
        self._wake()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    # ------------------------------------------------------------- views

    def _info(self, e: _Entry) -> ContainerInfo:
        r = e.row
        return ContainerInfo(
            id=r.id, name=r.name, cgroup=r.cgroup, limits=e.limits, state=r.state, labels=dict(e.spec.labels),
            image=image_ref(e.spec.image, e.spec.rootfs), pid=r.pid, created_at=r.created_at, started_at=r.started_at,
            finished_at=r.finished_at, exit_code=r.exit_code, exit_signal=r.exit_signal,
            oom_killed=r.oom_killed, oom_kills=r.oom_kills, restart_count=r.restart_count,
            restart_policy=str(e.spec.restart), argv=tuple(e.spec.argv), auto_remove=e.spec.auto_remove,
            cgroup_inode=r.cgroup_inode, userns=userns_alloc.view(e.spec.userns, e.idmap),
            devices=tuple(str(d) for d in e.spec.devices), device_filter=e.device_filter,
            log_bytes=logfiles.produced_by(os.path.join(self.logs_dir, r.id, f"{stream}.log")
                                           for stream in ("stdout", "stderr")),
            read_only=e.spec.read_only, tmpfs=tuple(str(t) for t in e.spec.tmpfs),
            exposed_ports=e.spec.exposed_ports,
        )

    def _find(self, name: str) -> _Entry:
        if not isinstance(name, str) or not name:
            raise UserError("name: missing")
        cid = self._names.get(name, name)
        e = self._entries.get(cid)
        if e is None:
            raise NotFound(f"name: no container named {name!r}")
        return e

    def get(self, name: str) -> ContainerInfo:
        with self._lock:
            return self._info(self._find(name))

    def containers(self, all: bool = True) -> list[ContainerInfo]:
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda e: (e.row.created_at, e.row.id))
            return [self._info(e) for e in entries if all or e.row.state in LIVE_STATES]

    def images_in_use(self) -> set[str]:
        """Manifest digests of the images existing containers were created from."""
        with self._lock:
            return {e.spec.image_id for e in self._entries.values() if e.spec.image_id}

    def _overlay(self, e: _Entry) -> dict | None:
        """The overlayfs an image container's root is made of (None for the others)."""
        s = e.spec
        if not s.image_id:
            return None
        if self.images is None:
            raise UserError(f"image: container {s.name!r} needs image {s.image_ref} but images are "
                            "not enabled on this agentd (see its log)")
        try:
            lower = self.images.lower_dirs(s.image_id)
        except KeyError:
            raise UserError(f"image: {s.image_ref} ({s.image_id}) is no longer in the image store; "
                            f"pull it again, or remove container {s.name!r}") from None
        top = os.path.join(self.rootfs_dir, e.row.id)
        for d in ("upper", "work", "root"):
            os.makedirs(os.path.join(top, d), mode=0o755, exist_ok=True)
        os.chmod(self.rootfs_dir, 0o700)
        return {"lower": lower, "upper": os.path.join(top, "upper"), "work": os.path.join(top, "work"),
                "target": os.path.join(top, "root")}

    def log_path(self, name: str, stream: str = "stdout") -> str:
        if stream not in ("stdout", "stderr"):
            raise UserError(f"stream: {stream!r} is not stdout or stderr")
        with self._lock:
            e = self._find(name)
            return os.path.join(self.logs_dir, e.row.id, f"{stream}.log")

    def events(self, name: str | None = None, since: int = 0, limit: int = 1000) -> list[dict]:
        cid = None
        if name is not None:
            with self._lock:
                cid = self._find(name).row.id
        return self.store.events(cid, since, limit)

    def wait(self, name: str, timeout: float | None = None) -> ContainerInfo:
        """Block until the container exited for good (no restart pending) or was removed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            e = self._find(name)
            while True:
                if e.removed:
                    return self._gone.get(e.row.id) or self._info(e)
                settled = e.row.state in ("created", "checkpointed") or (e.row.state == "exited" and e.timer is None)
                if settled and not (e.row.state == "exited" and e.removing):
                    return self._info(e)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return self._info(e)
                self._cond.wait(left if left is not None else 1.0)

    # ------------------------------------------------------------- create / start

    def check_controllers(self, limits) -> None:
        """HostLimitation naming every controller the limits need that
        R/containers does not hand down, each with its reason, in one message;
        checks before anything is created."""
        needed = sorted(limits.controllers())
        try:
            enabled = self.layout.containers.subtree_control()
        except CgroupError as err:
            raise UserError(f"limits: cannot read {self.layout.containers.path}: {err}") from None
        missing = {c: _missing_reason(self.layout.containers, c) for c in needed if c not in enabled}
        if missing:
            first = next(iter(missing))
            raise HostLimitation(f"limits: {ControllerMissing(first, missing[first], missing)}")

    def create(self, spec: ContainerSpec) -> ContainerInfo:
        if not isinstance(spec, ContainerSpec):
            raise UserError("spec: not a container spec")
        with self._lock:
            if spec.name in self._names:
                raise Conflict(f"name: a container named {spec.name!r} already exists")
            self.check_controllers(spec.limits)
            spec = userns_alloc.resolve(spec, self.userns_pool,
                                        {en.spec.name: en.spec.userns for en in self._entries.values()})
            cid = _new_id(self._entries)
            cg = self.layout.containers.child(cid)
            try:
                cg.create(exist_ok=False)
                limits = self._apply(cg, spec.limits)
                inode = cg.inode()
            except BaseException:
                self._rmdir_quiet(cg)
                raise
            row = ContainerRow(id=cid, name=spec.name, spec=spec.to_dict(), state="created", cgroup=cg.path,
                               created_at=time.time(), cgroup_inode=inode, limits=limits.to_json())
            logdir = os.path.join(self.logs_dir, cid)
            try:
                try:
                    os.makedirs(logdir, mode=0o750, exist_ok=True)
                except OSError as err:
                    if err.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise store_full_error(logdir, err) from None
                    raise
                with self.store.transaction():
                    self.store.insert(row)
                    self.store.add_event(cid, spec.name, "created", cgroup=cg.path)
            except BaseException:
                self._rmdir_quiet(cg)
                shutil.rmtree(logdir, ignore_errors=True)
                raise
            e = _Entry(row=row, spec=spec, cg=cg, limits=limits)
            self._entries[cid] = e
            self._names[spec.name] = cid
            log.info("container.created", name=spec.name, id=cid, cgroup=cg.path)
            if spec.start:
                try:
                    self._start(e)
                except (UserError, StoreFull):
                    self._undo_create(e)
                    raise
            return self._info(e)

    def _undo_create(self, e: _Entry) -> None:
        """create() could not start it: leave nothing behind (when the store cannot
        even record the undo, the container stays, 'created' and empty, in both)."""
        try:
            with self.store.transaction():
                self.store.delete(e.row.id)
                self.store.add_event(e.row.id, e.row.name, "create_undone")
        except StoreFull:
            log.error("container.create_undo_failed", name=e.row.name, id=e.row.id,
                      note="state dir full; the container stays 'created'")
            return
        self._rmdir_quiet(e.cg)
        shutil.rmtree(os.path.join(self.logs_dir, e.row.id), ignore_errors=True)
        self._entries.pop(e.row.id, None)
        self._names.pop(e.row.name, None)

    def _apply(self, cg: Cgroup, limits):
        from runtime.apply import apply_limits
        try:
            return apply_limits(cg, limits)
        except ControllerMissing as err:
            raise HostLimitation(f"limits: {err}") from None
        except LimitError as err:
            raise UserError(f"limits.{err}") from None

    @staticmethod
    def _rmdir_quiet(cg: Cgroup) -> None:
        try:
            cg.remove(missing_ok=True)
        except CgroupError as err:
            log.warning("cgroup.remove_failed", cgroup=cg.path, error=str(err))

    def start(self, name: str) -> ContainerInfo:
        with self._lock:
            e = self._find(name)
            if e.row.state in ("running", "paused"):
                raise Conflict(f"name: container {e.row.name!r} is already {e.row.state}")
            if e.removing:
                raise Conflict(f"name: container {e.row.name!r} is being removed")
            self._cancel_timer(e)
            e.stopping = False
            self._start(e)
            return self._info(e)

    def _spawn_spec(self, e: _Entry) -> dict:
        s = e.spec
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME": s.hostname}
        env.update(s.env)
        logdir = os.path.join(self.logs_dir, e.row.id)
        os.makedirs(logdir, mode=0o750, exist_ok=True)
        return {
            "argv": list(s.argv), "env": env, "cwd": s.workdir, "uid": s.uid, "gid": s.gid,
            "hostname": s.hostname, "rootfs": s.rootfs,
            "mounts": [{"src": v.src, "dst": v.dst, "ro": v.ro, "noexec": v.noexec} for v in s.volumes],
            "network": s.network, "cgroup": e.cg.path,
            "stdout": os.path.join(logdir, "stdout.log"), "stderr": os.path.join(logdir, "stderr.log"),
            "log_max_bytes": s.log_max_bytes, "seccomp": True, **s.spawn_security(),
            # checked again by the launcher on the descriptors it mounts
            "protected": {"state_dir": os.path.abspath(self.config.agent.state_dir),
                          "socket": os.path.abspath(self.config.agent.socket)},
            "allow_sensitive_binds": self.config.security.allow_sensitive_binds,
            "overlay": self._overlay(e),
            **({"userns": s.userns} if isinstance(s.userns, dict) else {}),
            "devices": [{"src": d.src, "dst": d.dst, "type": d.type, "major": d.major, "minor": d.minor}
                        for d in s.devices] if (s.rootfs or s.image_id) else [],
            **({"readonly_rootfs": True} if s.read_only else {}),
            "tmpfs": [t.to_dict() for t in s.tmpfs],
        }

    def _ensure_cgroup(self, e: _Entry) -> None:
        """The cgroup lives across restarts; if someone removed it, make a new one."""
        if e.cg.exists():
            return
        log.warning("cgroup.recreated", name=e.row.name, cgroup=e.cg.path)
        self.check_controllers(e.spec.limits)
        e.cg.create(exist_ok=True)
        e.limits = self._apply(e.cg, e.spec.limits)
        e.row.cgroup_inode = e.cg.inode()
        self.store.update(e.row.id, cgroup_inode=e.row.cgroup_inode, limits=e.limits.to_json())

    def _start(self, e: _Entry, spawn: Callable | None = None) -> None:
        """Spawn the container's process (lock held); `spawn` instead of the
        launcher's spawn_detail (a restore from a checkpoint)."""
        self._ensure_cgroup(e)
        self._filter_devices(e)
        try:
            self._read_oom_baseline(e)
            started = (spawn or self.launcher.spawn_detail)(e.row.id, self._spawn_spec(e))
            pid, e.idmap = started["pid"], started.get("idmap")
        except UserError:
            selfmetrics.inc("launches_total", result="failed")
            raise
        except Exception as err:
            selfmetrics.inc("launches_total", result="failed")
            self._history(e, "start_failed", error=str(err))
            log.error("container.start_failed", name=e.row.name, error=str(err))
            message, reason = f"start: {err}".splitlines()[0], exec_failure(str(err))
            raise (CannotExecute(message, reason) if reason else UserError(message)) from None
        selfmetrics.inc("launches_total", result="ok")
        now = time.time()
        e.started_mono = time.monotonic()
        e.orphan = False
        changes = dict(state="running", pid=pid, started_at=now, exit_code=None, exit_signal=None,
                       oom_killed=False, finished_at=None)
        try:
            with self.store.transaction():
                self.store.update(e.row.id, **changes)
                self.store.add_event(e.row.id, e.row.name, "started", pid=pid,
                                     **({"idmap": e.idmap} if e.idmap else {}))
        except StoreFull:
            # a run the store cannot record must not go on untracked: end it
            # (its exit event will not match the row's pid and is just acked)
            self._kill_cgroup(e)
            log.error("container.start_unrecorded", name=e.row.name, id=e.row.id, pid=pid,
                      note="state dir full; the process was killed")
            raise
        for k, v in changes.items():
            setattr(e.row, k, v)
        self._watch(e)
        log.info("container.started", name=e.row.name, id=e.row.id, pid=pid)
        self._changed(e)

    def _filter_devices(self, e: _Entry) -> None:
        """Attach the device allow-list to the cgroup before anything runs in it
        (kept across restarts with the cgroup); where BPF is refused, one log
        line and a metric, and the container runs as before (nodev mounts)."""
        from runtime import devfilter
        rules = devfilter.DEFAULT_RULES + tuple(devfilter.Rule(d.type, d.major, d.minor, d.access)
                                                for d in e.spec.devices)
        try:
            prog_id, new = devfilter.install(e.cg.path, rules)
        except devfilter.Unavailable as err:
            e.device_filter = f"off: {err}"
            selfmetrics.inc("device_filter_unavailable_total")
            log.warning("container.device_filter_unavailable", name=e.row.name, id=e.row.id, reason=str(err),
                        note="devices are held by nodev mounts only")
            return
        e.device_filter = "on"
        if new:
            log.info("container.device_filter_attached", name=e.row.name, id=e.row.id, prog_id=prog_id,
                     devices=[str(d) for d in e.spec.devices])

    def _device_filter_status(self, e: _Entry) -> None:
        """At boot: what the cgroup of a container that already ran has attached."""
        from runtime import devfilter
        if e.row.state == "created" or not e.cg.exists():
            return
        try:
            e.device_filter = "on" if devfilter.attached(e.cg.path) else "off: no device program on its cgroup"
        except devfilter.Unavailable as err:
            e.device_filter = f"off: {err}"

    # ------------------------------------------------------------- stop / kill

    def stop(self, name: str, timeout: float | None = None) -> ContainerInfo:
        """SIGTERM, wait `timeout` seconds, then cgroup.kill. Thaws a paused one first."""
        from runtime import freezer
        if timeout is None:
            timeout = self.config.agent.stop_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0 or timeout > 86400:
            raise UserError(f"timeout: {timeout!r} is not a number of seconds 0..86400")
        with self._cond:
            e = self._find(name)
            e.stopping = True
            if e.row.state == "restarting":
                self._cancel_timer(e)
                self._set(e, "stopped", state="exited")
                return self._info(e)
            if e.row.state not in ("running", "paused"):
                return self._info(e)
            if e.row.state == "paused":
                try:
                    freezer.thaw(e.cg)
                except CgroupError as err:
                    log.warning("container.thaw_failed", name=e.row.name, error=str(err))
                self._set(e, "thawed", state="running")
            pid = e.row.pid
            if timeout > 0:
                self._send(e, _signal.SIGTERM)
                self._wait_exit(e, pid, timeout)
            if e.row.state in ("running", "paused") and e.row.pid == pid:
                if timeout > 0:  # timeout 0 asks for the kill; only an ignored SIGTERM counts
                    selfmetrics.inc("kills_after_grace_total")
                log.info("container.kill_after_grace", name=e.row.name, grace=timeout)
                self._kill_cgroup(e)
                self._wait_exit(e, pid, EXIT_WAIT_AFTER_KILL)
            return self._info(e)

    def _wait_exit(self, e: _Entry, pid, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while e.row.state in ("running", "paused") and e.row.pid == pid:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(min(left, 0.5))
            if e.orphan and not self._populated(e):
                self._orphan_exited(e)

    def _send(self, e: _Entry, sig: int) -> None:
        try:
            if e.orphan:
                os.kill(e.row.pid, sig)
            else:
                self.launcher.signal(e.row.pid, sig)
        except ProcessLookupError:
            pass
        except Exception as err:
            log.warning("container.signal_failed", name=e.row.name, signal=sig, error=str(err))

    def _kill_cgroup(self, e: _Entry) -> None:
        from runtime import freezer
        try:
            freezer.kill(e.cg, timeout=5)
        except CgroupGone:
            pass
        except CgroupError as err:
            log.error("container.kill_failed", name=e.row.name, error=str(err))

    def kill(self, name: str, signal: Any = "KILL") -> ContainerInfo:
        num = _signal_number(signal)
        with self._cond:
            e = self._find(name)
            if e.row.state not in ("running", "paused"):
                raise Conflict(f"name: container {e.row.name!r} is not running ({e.row.state})")
            if num in (_signal.SIGKILL, _signal.SIGTERM, _signal.SIGINT, _signal.SIGQUIT):
                e.stopping = True
            if num == _signal.SIGKILL:
                self._kill_cgroup(e)
            else:
                self._send(e, num)
            self._history(e, "signalled", signal=num)
            return self._info(e)

    # ------------------------------------------------------------- freeze / thaw

    def freeze(self, name: str) -> ContainerInfo:
        from runtime import freezer
        with self._lock:
            e = self._find(name)
            if e.row.state == "paused":
                return self._info(e)
            if e.row.state != "running":
                raise Conflict(f"name: container {e.row.name!r} is not running ({e.row.state})")
            try:
                freezer.freeze(e.cg)
            except CgroupError as err:
                raise UserError(f"freeze: {err}") from None
            self._set(e, "paused", state="paused")
            return self._info(e)

    def thaw(self, name: str) -> ContainerInfo:
        from runtime import freezer
        with self._lock:
            e = self._find(name)
            if e.row.state == "running":
                return self._info(e)
            if e.row.state != "paused":
                raise Conflict(f"name: container {e.row.name!r} is not paused ({e.row.state})")
            try:
                freezer.thaw(e.cg)
            except CgroupError as err:
                raise UserError(f"thaw: {err}") from None
            self._set(e, "thawed", state="running")
            return self._info(e)

    # ------------------------------------------------------------- limits

    def set_limits(self, name: str, limits) -> Any:
        """Merge `limits` over the current ones, write them, return what the kernel holds."""
        with self._lock:
            e = self._find(name)
            if e.removing:
                raise Conflict(f"name: container {e.row.name!r} is being removed")
            merged = e.spec.limits.merge(limits)
            self.check_controllers(merged)
            self._ensure_cgroup(e)
            applied = self._apply(e.cg, merged)
            e.spec = e.spec.with_limits(merged)
            e.limits = applied
            with self.store.transaction():
                self.store.update(e.row.id, spec=e.spec.to_dict(), limits=applied.to_json())
                self.store.add_event(e.row.id, e.row.name, "limits", limits=applied.to_json())
            log.info("container.limits", name=e.row.name, limits=applied.to_json())
            self._changed(e)
            return applied

    # ------------------------------------------------------------- remove

    def remove(self, name: str, force: bool = False) -> ContainerInfo:
        with self._cond:
            e = self._find(name)
            if e.removing:
                raise Conflict(f"name: container {e.row.name!r} is already being removed")
            if e.row.state in ("running", "paused") and not force:
                raise Conflict(f"name: container {e.row.name!r} is {e.row.state}; stop it first or remove with force")
            e.stopping = True
            e.removing = True
            self._cancel_timer(e)
            if e.row.state in ("running", "paused"):
                pid = e.row.pid
                self._kill_cgroup(e)
                self._wait_exit(e, pid, EXIT_WAIT_AFTER_KILL)
            if e.row.state == "restarting":
                self._set(e, "stopped", state="exited")
        return self._finish_remove(e)

    def _finish_remove(self, e: _Entry) -> ContainerInfo:
        """Final sample -> hooks -> rmdir -> forget. Hooks run without the lock."""
        from runtime.stats import read_sample
        if self._populated(e):
            self._kill_cgroup(e)
        info = self.get_entry_info(e)
        sample = None
        try:
            sample = read_sample(e.cg)
        except CgroupError as err:
            log.warning("container.final_sample_failed", name=e.row.name, error=str(err))
        for hook in list(self.before_remove):
            try:
                hook(info, sample)
            except Exception as err:  # a hook must not block removal forever
                log.error("container.before_remove_failed", name=e.row.name, hook=getattr(hook, "__qualname__", repr(hook)),
                          error=str(err))
        with self._cond:
            for attempt in range(50):
                try:
                    e.cg.remove(missing_ok=True)
                    break
                except CgroupBusy:
                    self._kill_cgroup(e)
                    self._cond.wait(0.05)
                except CgroupError as err:
                    log.error("cgroup.remove_failed", cgroup=e.cg.path, error=str(err))
                    break
            try:
                with self.store.transaction():
                    self.store.delete(e.row.id)
                    self.store.add_event(e.row.id, e.row.name, "removed")
            except StoreFull:
                e.removing = False  # it stays (exited, no cgroup); a later remove retries
                self._cond.notify_all()
                raise
            self._unwatch(e)
            shutil.rmtree(os.path.join(self.logs_dir, e.row.id), ignore_errors=True)
            shutil.rmtree(os.path.join(self.rootfs_dir, e.row.id), ignore_errors=True)
            self._entries.pop(e.row.id, None)
            if self._names.get(e.row.name) == e.row.id:
                del self._names[e.row.name]
            e.removed = True
            self._gone[e.row.id] = info
            while len(self._gone) > 256:
                self._gone.pop(next(iter(self._gone)))
            self._cond.notify_all()
            log.info("container.removed", name=e.row.name, id=e.row.id)
            return info

    def get_entry_info(self, e: _Entry) -> ContainerInfo:
        with self._lock:
            return self._info(e)

    # ------------------------------------------------------------- helpers

    def _history(self, e: _Entry, kind: str, **detail) -> None:
        """An event-history row for something that already happened: best effort
        (a full state dir is counted and logged by the store, the action stands)."""
        try:
            self.store.add_event(e.row.id, e.row.name, kind, **detail)
        except StoreFull:
            log.warning("store.event_dropped", name=e.row.name, kind=kind)

    def _set(self, e: _Entry, event: str | None, **changes) -> None:
        for k, v in changes.items():
            setattr(e.row, k, v)
        with self.store.transaction():
            self.store.update(e.row.id, **changes)
            if event:
                self.store.add_event(e.row.id, e.row.name, event, **{k: v for k, v in changes.items() if k != "state"})
        self._changed(e)

    def _changed(self, e: _Entry) -> None:
        self._cond.notify_all()
        if self.on_change:
            info = self._info(e)
            for hook in list(self.on_change):
                try:
                    hook(info)
                except Exception as err:
                    log.error("on_change.failed", error=str(err))

    def _populated(self, e: _Entry) -> bool:
        try:
            ev = e.cg.events()
        except CgroupError:
            return False
        return bool(ev and ev.populated)

    def _read_oom_count(self, e: _Entry) -> int | None:
        from runtime.stats import parse_flat_keyed
        try:
            text = e.cg.read("memory.events")
        except CgroupError:
            return None
        if text is None:
            return None
        return parse_flat_keyed(text).get("oom_kill", 0)

    def _read_oom_baseline(self, e: _Entry) -> None:
        e.oom_seen = e.oom_at_start = self._read_oom_count(e)
        e.pids_hits_seen, e.pids_logged_mono = self._read_pids_hits(e), None

    def _read_pids_hits(self, e: _Entry) -> int | None:
        from runtime.stats import parse_flat_keyed
        try:
            text = e.cg.read("pids.events")
        except CgroupError:
            return None
        return None if text is None else parse_flat_keyed(text).get("max", 0)

    def _check_pids(self, e: _Entry) -> None:
        """pids.events changed: forks were refused at pids.max. Logged at most
        once a minute per container (a fork bomb modifies the file constantly);
        the count itself is on /metrics (cgroup_agent_container_pids_limit_hits_total)."""
        n = self._read_pids_hits(e)
        if n is None or n <= (e.pids_hits_seen or 0):
            return
        now = time.monotonic()
        if e.pids_logged_mono is not None and now - e.pids_logged_mono < PIDS_LOG_EVERY:
            return
        log.warning("container.pids_limit_hit", name=e.row.name, id=e.row.id,
                    refused_forks=n - (e.pids_hits_seen or 0), refused_forks_total=n)
        e.pids_hits_seen, e.pids_logged_mono = n, now

    def _check_oom(self, e: _Entry) -> bool:
        """New oom_kill events since last look -> count them; True if any."""
        n = self._read_oom_count(e)
        if n is None:
            return False
        seen = e.oom_seen or 0
        if n > seen:
            e.oom_seen = n
            kills = e.row.oom_kills + (n - seen)
            self._set(e, "oom", oom_kills=kills)
            log.warning("container.oom_kill", name=e.row.name, id=e.row.id, oom_kills=kills)
            return True
        return False

    def _watch(self, e: _Entry) -> None:
        if self.watcher is None:
            return
        try:
            self.watcher.watch_events(e.cg.path)
        except Exception as err:
            log.warning("inotify.watch_failed", cgroup=e.cg.path, error=str(err))

    def _unwatch(self, e: _Entry) -> None:
        if self.watcher is None:
            return
        try:
            self.watcher.unwatch(e.cg.path)
        except Exception:
            pass

    def _cancel_timer(self, e: _Entry) -> None:
        if e.timer is not None:
            e.timer[2] = None  # heap entries are [when, seq, callback]
            e.timer = None

    def _schedule(self, delay: float, fn: Callable) -> list:
        self._timer_seq += 1
        item = [time.monotonic() + delay, self._timer_seq, fn]
        heapq.heappush(self._timers, item)
        self._wake()
        return item

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # ------------------------------------------------------------- exits and restarts

    def _on_exit(self, cid: str, pid: int, exit_code, exit_signal, at: float | None) -> None:
        """A launcher exit record: commit it, then ack it, then apply the restart policy."""
        with self._cond:
            e = self._entries.get(cid)
            if e is None or e.row.pid != pid or e.row.state not in ("running", "paused"):
                self._ack(cid, pid)  # stale or already applied
                return
            self._check_oom(e)
            oom = e.oom_seen is not None and e.oom_seen > (e.oom_at_start or 0)
            changes = dict(state="exited", exit_code=exit_code, exit_signal=exit_signal,
                           finished_at=at or time.time(), oom_killed=oom)
            self._set(e, "exited", **changes)
            self._ack(cid, pid)
            log.info("container.exited", name=e.row.name, id=cid, pid=pid, exit_code=exit_code,
                     signal=exit_signal, oom_killed=oom)
            self._after_exit(e)

    def _orphan_exited(self, e: _Entry) -> None:
        """A re-adopted container whose launcher was replaced: no exit status is known."""
        self._set(e, "exited", state="exited", exit_code=None, exit_signal=None, finished_at=time.time())
        log.warning("container.exited_unknown_status", name=e.row.name, id=e.row.id)
        self._after_exit(e)

    def _after_exit(self, e: _Entry) -> None:
        pol = e.spec.restart
        if not e.stopping and pol.should_restart(e.row.exit_code, e.row.exit_signal, e.row.restart_count,
                                                 e.row.oom_killed):
            ran = time.monotonic() - e.started_mono if e.started_mono else 0
            if ran >= BACKOFF_RESET_AFTER:
                e.backoff_n = 0
            delay = min(BACKOFF_BASE * (2 ** e.backoff_n), BACKOFF_MAX)
            e.backoff_n += 1
            self._set(e, None, state="restarting")
            cid = e.row.id
            e.timer = self._schedule(delay, lambda: self._restart(cid))
            log.info("container.restart_scheduled", name=e.row.name, delay=delay, policy=str(pol))
            return
        if e.spec.auto_remove and not e.removing:
            e.removing = True
            threading.Thread(target=self._auto_remove, args=(e,), name="auto-remove", daemon=True).start()

    def _auto_remove(self, e: _Entry) -> None:
        try:
            self._finish_remove(e)
        except Exception as err:
            log.error("container.auto_remove_failed", name=e.row.name, error=str(err))

    def _restart(self, cid: str) -> None:
        with self._cond:
            e = self._entries.get(cid)
            if e is None or e.row.state != "restarting" or e.stopping:
                return
            e.timer = None
            e.row.restart_count += 1
            self.store.update(cid, restart_count=e.row.restart_count)
            try:
                self._start(e)
                self.store.add_event(cid, e.row.name, "restarted", restart_count=e.row.restart_count)
            except Exception as err:
                log.error("container.restart_failed", name=e.row.name, error=str(err))
                self._set(e, "restart_failed", state="exited")

    def _ack(self, cid: str, pid: int) -> None:
        try:
            self.launcher.ack(cid, pid)
        except Exception as err:
            log.warning("launcher.ack_failed", id=cid, pid=pid, error=str(err))

    # ------------------------------------------------------------- live restore

    def _restore(self) -> None:
        from runtime.limits import Limits
        with self._cond:
            for row in self.store.all():
                try:
                    spec = ContainerSpec.from_dict(row.spec)
                except Exception as err:
                    log.error("store.bad_spec", id=row.id, error=str(err))
                    continue
                e = _Entry(row=row, spec=spec, cg=Cgroup(row.cgroup), limits=Limits.from_json(row.limits or {}))
                if isinstance(spec.userns, dict):  # what inspect shows of its mounts, as of its last start
                    e.idmap = (self.store.last_event(row.id, "started") or {}).get("idmap")
                self._device_filter_status(e)
                self._entries[row.id] = e
                self._names[row.name] = row.id
            self._sweep_orphan_cgroups()
        self._reconcile(adopting=True)

    def _sweep_orphan_cgroups(self) -> None:
        """Boot only (no create can run yet): a cgroup under R/containers that no
        row names was made by a create() that agentd was killed in the middle of,
        before its row was committed. Its processes (if any: the spawn can only
        follow the commit) are killed and the directory removed."""
        known = {os.path.basename(e.cg.path) for e in self._entries.values()}
        for cg in self.layout.containers.children():
            name = os.path.basename(cg.path)
            if name in known or not _is_container_id(name):
                continue
            try:
                if cg.procs():
                    from runtime import freezer
                    freezer.kill(cg, timeout=5)
                cg.remove(missing_ok=True)
                log.warning("cgroup.orphan_removed", cgroup=cg.path, note="made by a create agentd did not finish")
            except CgroupError as err:
                log.error("cgroup.orphan_remove_failed", cgroup=cg.path, error=str(err))
            shutil.rmtree(os.path.join(self.logs_dir, name), ignore_errors=True)

    def _reconcile(self, adopting: bool) -> None:
        """Match live containers with what the launcher knows: adopt those still
        running, apply exit records of those that ended meanwhile."""
        try:
            running = dict(self.launcher.running())
            exits = list(self.launcher.exits())
        except Exception as err:
            log.error("launcher.query_failed", error=str(err))
            return
        exit_by_key = {(x.id, x.pid): x for x in exits}
        last_exit_by_id = {x.id: x for x in sorted(exits, key=lambda x: x.at)}
        with self._cond:
            for e in list(self._entries.values()):
                row = e.row
                if row.state == "created" and adopting:
                    self._reconcile_created(e, running.get(row.id), last_exit_by_id.get(row.id))
                    continue
                if row.state not in LIVE_STATES:
                    continue
                rec = exit_by_key.get((row.id, row.pid))
                if rec is not None and row.state != "restarting":
                    if adopting:
                        self._read_oom_baseline_from_row(e)
                    self._on_exit(row.id, rec.pid, rec.exit_code, rec.signal, rec.at)
                    log.info("container.exit_applied_late", name=row.name, exit_code=rec.exit_code,
                             signal=rec.signal)
                    continue
                if row.state == "restarting":
                    if e.timer is None:
                        e.timer = self._schedule(BACKOFF_BASE, lambda cid=row.id: self._restart(cid))
                    continue
                alive = self._populated(e)
                if running.get(row.id) == row.pid and alive:
                    if not adopting:
                        continue
                    self._read_oom_baseline_from_row(e)
                    frozen = False
                    try:
                        ev = e.cg.events()
                        frozen = bool(ev and ev.frozen)
                    except CgroupError:
                        pass
                    st = "paused" if frozen else "running"
                    if st != row.state:
                        self._set(e, None, state=st)
                    self._watch(e)
                    self.store.add_event(row.id, row.name, "adopted", pid=row.pid)
                    log.info("container.adopted", name=row.name, id=row.id, pid=row.pid, cgroup=row.cgroup)
                elif alive and row.pid and _pid_alive(row.pid):
                    if e.orphan:
                        continue
                    e.orphan = True
                    self._watch(e)
                    self.store.add_event(row.id, row.name, "adopted_orphan", pid=row.pid)
                    log.warning("container.adopted_without_launcher", name=row.name, pid=row.pid,
                                note="exit status will be unknown")
                else:
                    if alive:
                        self._kill_cgroup(e)
                    self._set(e, "lost", state="exited", exit_code=None, exit_signal=None, finished_at=time.time())
                    log.warning("container.lost", name=row.name, id=row.id)
                    self._after_exit(e)
            # exit records for containers already settled or removed: ack them
            for x in exits:
                e = self._entries.get(x.id)
                if e is None or e.row.pid != x.pid or e.row.state not in ("running", "paused"):
                    self._ack(x.id, x.pid)

    def _reconcile_created(self, e: _Entry, launcher_pid: int | None, rec) -> None:
        """A row still 'created' at boot whose process may have been spawned: agentd
        was killed after the launcher spawned it, before 'running' was committed."""
        row = e.row
        alive = self._populated(e)
        if launcher_pid and alive:
            e.started_mono = time.monotonic()
            self._read_oom_baseline_from_row(e)
            self._set(e, "adopted_unrecorded_start", state="running", pid=launcher_pid, started_at=time.time(),
                      exit_code=None, exit_signal=None, finished_at=None, oom_killed=False)
            self._watch(e)
            self._sync_frozen(e)
            log.warning("container.adopted_unrecorded_start", name=row.name, id=row.id, pid=launcher_pid,
                        note="spawned just before agentd stopped; started_at is the adoption time")
            return
        if rec is not None and not alive:
            # it ran and ended while agentd was down (the exit record is acked by the caller)
            self._set(e, "exited", state="exited", pid=rec.pid, started_at=None, exit_code=rec.exit_code,
                      exit_signal=rec.signal, finished_at=rec.at)
            log.info("container.exit_applied_late", name=row.name, exit_code=rec.exit_code, signal=rec.signal,
                     note="its start was never recorded")
            self._after_exit(e)
            return
        if alive:
            # processes no launcher knows about: nothing can track them
            self._kill_cgroup(e)
            self._history(e, "stray_processes_killed")
            log.warning("container.stray_processes_killed", name=row.name, id=row.id, cgroup=row.cgroup)

    def _reconnect_launcher(self) -> None:
        """The launcher connection broke: start/reconnect, then catch up on exits."""
        from agent.launcher import LauncherClient
        old = self.launcher
        delay = 0.1
        while not self._stop:
            try:
                new = LauncherClient.connect_or_start(self.config.agent.state_dir, self.layout.launcher.path, timeout=30)
                break
            except Exception as err:
                log.error("launcher.reconnect_failed", error=str(err), retry_in=delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        else:
            return
        with self._cond:
            self.launcher = new
        try:
            old.close()
        except Exception:
            pass
        selfmetrics.inc("launcher_restarts_total")
        log.warning("launcher.reconnected")
        self._reconcile(adopting=False)

    def _read_oom_baseline_from_row(self, e: _Entry) -> None:
        """After a restart of agentd the kernel counter may be ahead of oom_kills we
        recorded for this instance; count from what the store says we saw."""
        n = self._read_oom_count(e)
        e.oom_seen = None if n is None else min(n, e.row.oom_kills)
        e.oom_at_start = e.oom_seen

    # ------------------------------------------------------------- loop

    def _loop(self) -> None:
        while not self._stop:
            try:
                self._loop_once()
            except Exception as err:  # the loop must survive anything
                log.exception("supervisor.loop_error", error=str(err))
                time.sleep(0.2)

    def _loop_once(self) -> None:
        fds = [self._wake_r]
        lfd = wfd = None
        try:
            lfd = self.launcher.fileno()
            fds.append(lfd)
        except Exception:
            lfd = None
        if self.watcher is not None:
            try:
                wfd = self.watcher.fileno()
                fds.append(wfd)
            except Exception:
                wfd = None
        timeout = 1.0
        with self._lock:
            while self._timers and self._timers[0][2] is None:
                heapq.heappop(self._timers)
            if self._timers:
                timeout = max(0.0, min(timeout, self._timers[0][0] - time.monotonic()))
        readable, _, _ = select.select(fds, [], [], timeout)
        if self._wake_r in readable:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        if lfd is not None and lfd in readable:
            self._launcher_events()
        if wfd is not None and wfd in readable:
            self._watch_events()
        self._run_timers()
        self._check_orphans()

    def _launcher_events(self) -> None:
        try:
            events = self.launcher.read_events()
        except Exception as err:
            log.error("launcher.read_failed", error=str(err))
            time.sleep(0.5)
            return
        for ev in events or ():
            if isinstance(ev, dict) and ev.get("event") == "disconnected":
                log.error("launcher.disconnected")
                self._reconnect_launcher()
                continue
            if not isinstance(ev, dict) or ev.get("event") != "exit":
                continue
            try:
                self._on_exit(ev.get("id"), ev.get("pid"), ev.get("exit_code"), ev.get("signal"), ev.get("at"))
            except Exception as err:
                # not event=: that is structlog's own positional argument
                log.exception("supervisor.exit_failed", error=str(err), launcher_event=ev)

    def _watch_events(self) -> None:
        try:
            events = self.watcher.read(0)
        except Exception as err:
            log.error("inotify.read_failed", error=str(err))
            return
        with self._cond:
            by_path = {e.cg.path: e for e in self._entries.values()}
            for ev in events:
                path = getattr(ev, "path", "")
                name = getattr(ev, "name", "")
                if path not in by_path and os.path.basename(path) in ("memory.events", "cgroup.events",
                                                                       "pids.events"):
                    path, name = os.path.dirname(path), os.path.basename(path)
                e = by_path.get(path)
                if e is None:
                    continue
                if name == "memory.events":
                    self._check_oom(e)
                elif name == "pids.events":
                    self._check_pids(e)
                elif name == "cgroup.events":
                    if e.orphan and e.row.state in ("running", "paused") and not self._populated(e):
                        self._orphan_exited(e)
                    else:
                        self._sync_frozen(e)

    def _sync_frozen(self, e: _Entry) -> None:
        """cgroup.events changed: a freeze or thaw made outside agentd (someone
        wrote cgroup.freeze, or froze an ancestor) shows as paused / running.
        freeze() and thaw() hold the lock until the kernel confirmed, so their
        own changes always agree here."""
        if e.row.state not in ("running", "paused"):
            return
        try:
            ev = e.cg.events()
        except CgroupError:
            return
        if ev is None or not ev.populated:
            return
        st = "paused" if ev.frozen else "running"
        if st == e.row.state:
            return
        log.warning("container.frozen_externally" if ev.frozen else "container.thawed_externally",
                    name=e.row.name, id=e.row.id, cgroup=e.cg.path)
        try:
            self._set(e, "paused_externally" if ev.frozen else "thawed_externally", state=st)
        except StoreFull:
            pass  # shown in memory now; counted and logged by the store

    def _check_orphans(self) -> None:
        with self._cond:
            for e in list(self._entries.values()):
                if e.orphan and e.row.state in ("running", "paused") and self.watcher is None and not self._populated(e):
                    self._orphan_exited(e)

    def _run_timers(self) -> None:
        due = []
        with self._lock:
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                item = heapq.heappop(self._timers)
                if item[2] is not None:
                    due.append(item[2])
        for fn in due:
            try:
                fn()
            except Exception as err:
                log.exception("supervisor.timer_failed", error=str(err))

    # ------------------------------------------------------------- checkpoint hooks (agent/checkpoint/service.py)

    def spec_of(self, name: str) -> ContainerSpec:
        with self._lock:
            return self._find(name).spec

    def hold(self, name: str, on: bool = True) -> None:
        """No restart for the exit that follows (a checkpoint ends the tree);
        on=False: the tree runs on (--leave-running, or the dump failed)."""
        with self._lock:
            e = self._find(name)
            e.stopping = on
            if on:
                self._cancel_timer(e)

    def mark(self, name: str, state: str) -> ContainerInfo:
        with self._cond:
            e = self._find(name)
            self._set(e, state, state=state)
            return self._info(e)

    def start_with(self, name: str, spawn: Callable) -> ContainerInfo:
        """start() through `spawn(container_id, spawn_spec) -> {"pid": PID}`."""
        with self._lock:
            e = self._find(name)
            self._start(e, spawn)
            return self._info(e)


def _is_container_id(name: str) -> bool:
    return len(name) == 12 and all(c in "0123456789abcdef" for c in name)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
