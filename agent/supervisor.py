"""The supervisor: every container's lifecycle, over one container model.

The supervisor owns every container cgroup below R/containers: it creates
R/containers/<id>, applies limits there, hands the launcher a spawn spec
whose first step joins that cgroup, and it is the ONLY place that removes
such a cgroup (after every `before_remove(info, sample)` hook got a final
runtime.stats sample).

The work is split by job, as moby/containerd split their daemons; each
module is a mixin of ``Supervisor`` working on the same state:

    agent/supervision/state.py      State (the one enum), Container (the record)
    agent/supervision/layout.py     layout_cgroups: R/agentd, R/launcher, R/containers
    agent/supervision/lifecycle.py  create, start, stop, kill, freeze, thaw, set_limits;
                                    the pre_start / post_start / post_stop hooks
    agent/supervision/launchspec.py the spawn spec, image overlay, device filter
    agent/supervision/removal.py    remove (final sample, before_remove hooks, rmdir)
    agent/supervision/monitor.py    exits, OOM kills, pids.max hits, outside freezes
    agent/supervision/restart.py    restart policy: backoff timers, auto-remove
    agent/supervision/restore.py    live restore at boot and after a launcher reconnect

This module keeps the state, the views (get, containers, wait, ...) and the
one background thread (the "loop"), which waits on the launcher's event
socket, the inotify watcher and a wake pipe, and runs the timers. Public
methods may be called from any thread; a lock guards the state.
"""
from __future__ import annotations

import dataclasses
import heapq
import os
import select
import threading
import time
from typing import Callable

import structlog

from agent import logfiles
from agent import selfmetrics
from agent import userns_alloc
from agent.errors import NotFound, UserError
from agent.model import ContainerInfo, image_ref
from agent.network import netspec
from agent.store import Store, StoreFull
from agent.supervision.launchspec import LaunchSpec
from agent.supervision.layout import Layout, layout_cgroups
from agent.supervision.lifecycle import Lifecycle
from agent.supervision.monitor import Monitor
from agent.supervision.removal import Removal
from agent.supervision.restart import RestartPolicy
from agent.supervision.restore import Restore
from agent.supervision.state import LIVE, Container, State
from runtime.cgroupfs import Cgroup

__all__ = ["Layout", "State", "Supervisor", "layout_cgroups"]

log = structlog.get_logger("agentd.supervisor")

selfmetrics.declare("launcher_restarts_total", "counter",
                    "Times the launcher connection broke and agentd started or reconnected to a launcher.")
selfmetrics.declare("device_filter_unavailable_total", "counter",
                    "Container starts whose cgroup got no device filter (BPF refused by the kernel or host); "
                    "such containers are held by nodev mounts only.")
selfmetrics.declare("kills_after_grace_total", "counter",
                    "Container stops whose process outlived the SIGTERM grace period and was ended with cgroup.kill.")


class Supervisor(Lifecycle, LaunchSpec, Removal, Monitor, RestartPolicy, Restore):
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
        # the final reading handed to before_remove: the cgroup's files; agentd hands the
        # collector's sample_now, which adds the network namespace's counters
        self.final_sample: Callable = self._read_final
        self.on_change: list[Callable] = []  # on_change(info): state changed (informational)
        self.pre_start: list[Callable] = []  # pre_start(info, spawn_spec) (see agent/supervision/lifecycle.py)
        self.post_start: list[Callable] = []  # post_start(info)
        self.post_stop: list[Callable] = []  # post_stop(info)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._entries: dict[str, Container] = {}
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
        self.userns_claims = userns_alloc.HostClaims(config.agent.state_dir)
        self.net = None  # agent.network.service.NetworkService, set by the daemon

    def boot(self) -> None:
        """Load the store, re-adopt what still runs, apply exits that happened
        while agentd was down, then start the event loop."""
        self._restore()
        self.publish_userns()
        if self.net is not None:
            self.net.boot({cid: en.spec for cid, en in self._entries.items()})
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)
        self._thread.start()

    def publish_userns(self) -> None:
        """The host-wide record of the user-namespace ids our containers hold
        (agent.userns_alloc.HostClaims): at start, after a create and a remove."""
        with self.userns_claims.locked():
            self.userns_claims.publish({en.spec.name: (en.spec.userns, en.row.cgroup)
                                        for en in list(self._entries.values())})

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

    def _info(self, e: Container) -> ContainerInfo:
        r = e.row
        return ContainerInfo(
            **r.record_fields(), limits=e.limits, labels=dict(e.spec.labels),
            image=image_ref(e.spec.image, e.spec.rootfs),
            restart_policy=str(e.spec.restart), argv=tuple(e.spec.argv), auto_remove=e.spec.auto_remove,
            userns=userns_alloc.view(e.spec.userns, e.idmap),
            devices=tuple(str(d) for d in e.spec.devices), device_filter=e.device_filter,
            log_bytes=logfiles.produced_by(os.path.join(self.logs_dir, r.id, f"{stream}.log")
                                           for stream in ("stdout", "stderr")),
            read_only=e.spec.read_only, tmpfs=tuple(str(t) for t in e.spec.tmpfs),
            exposed_ports=e.spec.exposed_ports,
            network=netspec.view(e.spec.network, e.spec.net),
            tty=e.spec.tty,
        )

    def _find(self, name: str) -> Container:
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
            return [self._info(e) for e in entries if all or e.row.state in LIVE]

    def images_in_use(self) -> set[str]:
        """Manifest digests of the images existing containers were created from."""
        with self._lock:
            return {e.spec.image_id for e in self._entries.values() if e.spec.image_id}

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
                settled = e.row.state in (State.CREATED, State.CHECKPOINTED) or (
                    e.row.state == State.EXITED and e.timer is None)
                if settled and not (e.row.state == State.EXITED and e.removing):
                    return self._info(e)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return self._info(e)
                self._cond.wait(left if left is not None else 1.0)

    def _history(self, e: Container, kind: str, **detail) -> None:
        """An event-history row for something that already happened: best effort
        (a full state dir is counted and logged by the store, the action stands)."""
        try:
            self.store.add_event(e.row.id, e.row.name, kind, **detail)
        except StoreFull:
            log.warning("store.event_dropped", name=e.row.name, kind=kind)

    def _set(self, e: Container, event: str | None, **changes) -> None:
        e.row = dataclasses.replace(e.row, **changes)
        with self.store.transaction():
            self.store.update(e.row.id, **changes)
            if event:
                self.store.add_event(e.row.id, e.row.name, event, **{k: v for k, v in changes.items() if k != "state"})
        self._changed(e)

    def _changed(self, e: Container) -> None:
        self._cond.notify_all()
        if self.on_change:
            info = self._info(e)
            for hook in list(self.on_change):
                try:
                    hook(info)
                except Exception as err:
                    log.error("on_change.failed", error=str(err))

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
