"""Lifecycle of one container: create, start, stop, kill, freeze, thaw,
set_limits (remove is in removal.py). Mixed into ``agent.supervisor.Supervisor``;
every method here runs with the supervisor's lock held.

Hook points (lists on the Supervisor, empty by default):

- ``pre_start(info, spawn_spec)``: in ``_start``, after the cgroup exists
  with its limits and device filter and before the launcher spawns;
  ``spawn_spec`` (a dict) may be amended. Raising refuses the start
  (UserError: the message reaches the user); nothing is spawned, and the
  ``post_stop`` hooks run so that each may undo what it prepared.
- ``post_start(info)``: once "running" is committed (info.pid is set).
- ``post_stop(info)``: once an end is committed (exited, lost, ended
  while agentd was down), before the restart policy runs. Errors of
  post_start/post_stop hooks are logged, never raised.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import signal as _signal
import time
from typing import Any, Callable

import structlog

from agent import selfmetrics
from agent import userns_alloc
from agent.errors import CannotExecute, Conflict, HostLimitation, UserError
from agent.model import ContainerInfo
from agent.spec import ContainerSpec
from agent.store import ContainerRow, StoreFull
from agent.store import full_error as store_full_error
from agent.supervision.layout import missing_reason
from agent.supervision.state import ACTIVE, Container, State, new_id
from runtime import freezer
from runtime.apply import apply_limits
from runtime.cgroupfs import Cgroup
from runtime.errors import CgroupError, CgroupGone, ControllerMissing, LimitError
from runtime.rules import signal_number
from runtime.execve import exec_failure

log = structlog.get_logger("agentd.supervisor")  # one logger for every supervision module
EXIT_WAIT_AFTER_KILL = 10.0


def _signal_number(sig: Any) -> int:
    """The one signal rule (runtime.rules), as a UserError."""
    try:
        return signal_number(sig)
    except ValueError as err:
        raise UserError(f"signal: {err}") from None


class Lifecycle:
    """create, start, stop, kill, freeze, thaw and limits of one container (mixed into Supervisor)."""

    def check_controllers(self, limits) -> None:
        """HostLimitation naming every controller the limits need that
        R/containers does not hand down, each with its reason, in one message;
        checks before anything is created."""
        needed = sorted(limits.controllers())
        try:
            enabled = self.layout.containers.subtree_control()
        except CgroupError as err:
            raise UserError(f"limits: cannot read {self.layout.containers.path}: {err}") from None
        missing = {c: missing_reason(self.layout.containers, c) for c in needed if c not in enabled}
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
                                        {en.spec.name: en.spec.userns for en in self._entries.values()},
                                        getattr(self, "userns_claims", None),
                                        {en.spec.name: en.row.cgroup for en in self._entries.values()})
            if self.net is not None:
                spec = self.net.resolve(spec)
            cid = new_id(self._entries)
            cg = self.layout.containers.child(cid)
            try:
                cg.create(exist_ok=False)
                limits = self._apply(cg, spec.limits)
                inode = cg.inode()
            except BaseException:
                self._rmdir_quiet(cg)
                raise
            row = ContainerRow(id=cid, name=spec.name, spec=spec.to_dict(), state=State.CREATED, cgroup=cg.path,
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
            e = Container(row=row, spec=spec, cg=cg, limits=limits)
            self._entries[cid] = e
            self._names[spec.name] = cid
            if isinstance(spec.userns, dict):
                self.publish_userns()   # now with its cgroup, which outlives an agentd
            log.info("container.created", name=spec.name, id=cid, cgroup=cg.path)
            if self.net is not None:
                try:
                    self.net.attach(cid, spec)
                except BaseException:
                    self._undo_create(e)
                    raise
            if spec.start:
                try:
                    self._start(e)
                except (UserError, StoreFull):
                    self._undo_create(e)
                    raise
            return self._info(e)

    def _undo_create(self, e: Container) -> None:
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
        if self.net is not None:
            self.net.detach(e.row.id, e.spec)
        self._entries.pop(e.row.id, None)
        self._names.pop(e.row.name, None)
        if isinstance(e.spec.userns, dict):
            self.publish_userns()

    def _apply(self, cg: Cgroup, limits):
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
            if e.row.state in ACTIVE:
                raise Conflict(f"name: container {e.row.name!r} is already {e.row.state}")
            if e.removing:
                raise Conflict(f"name: container {e.row.name!r} is being removed")
            self._cancel_timer(e)
            e.stopping = False
            self._start(e)
            return self._info(e)

    def _ensure_cgroup(self, e: Container) -> None:
        """The cgroup lives across restarts; if someone removed it, make a new one."""
        if e.cg.exists():
            return
        log.warning("cgroup.recreated", name=e.row.name, cgroup=e.cg.path)
        self.check_controllers(e.spec.limits)
        e.cg.create(exist_ok=True)
        e.limits = self._apply(e.cg, e.spec.limits)
        e.row = dataclasses.replace(e.row, cgroup_inode=e.cg.inode())
        self.store.update(e.row.id, cgroup_inode=e.row.cgroup_inode, limits=e.limits.to_json())

    def _start(self, e: Container, spawn: Callable | None = None) -> None:
        """Spawn the container's process (lock held); `spawn` instead of the
        launcher's spawn_detail (a restore from a checkpoint)."""
        self._ensure_cgroup(e)
        self._filter_devices(e)
        prepared = False
        try:
            self._read_oom_baseline(e)
            spawn_spec = self._spawn_spec(e)
            prepared = bool(self.pre_start)
            for hook in list(self.pre_start):
                hook(self._info(e), spawn_spec)
            started = (spawn or self.launcher.spawn_detail)(e.row.id, spawn_spec)
            pid, e.idmap = started["pid"], started.get("idmap")
        except UserError:
            selfmetrics.inc("launches_total", result="failed")
            if prepared:
                self._run_hooks("post_stop", e)
            raise
        except Exception as err:
            selfmetrics.inc("launches_total", result="failed")
            if prepared:
                self._run_hooks("post_stop", e)
            self._history(e, "start_failed", error=str(err))
            log.error("container.start_failed", name=e.row.name, error=str(err))
            message, reason = f"start: {err}".splitlines()[0], exec_failure(str(err))
            raise (CannotExecute(message, reason) if reason else UserError(message)) from None
        selfmetrics.inc("launches_total", result="ok")
        now = time.time()
        e.started_mono = time.monotonic()
        e.orphan = False
        changes = dict(state=State.RUNNING, pid=pid, started_at=now, exit_code=None, exit_signal=None,
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
        e.row = dataclasses.replace(e.row, **changes)
        self._watch(e)
        log.info("container.started", name=e.row.name, id=e.row.id, pid=pid)
        self._changed(e)
        self._run_hooks("post_start", e)

    def _run_hooks(self, point: str, e: Container) -> None:
        """post_start / post_stop hooks: each called with the container's info;
        an error is logged and the next hook still runs."""
        hooks = getattr(self, point)
        if not hooks:
            return
        info = self._info(e)
        for hook in list(hooks):
            try:
                hook(info)
            except Exception as err:
                log.error(f"container.{point}_failed", name=e.row.name, id=e.row.id,
                          hook=getattr(hook, "__qualname__", repr(hook)), error=str(err))

    def stop(self, name: str, timeout: float | None = None) -> ContainerInfo:
        """SIGTERM, wait `timeout` seconds, then cgroup.kill. Thaws a paused one first."""
        if timeout is None:
            timeout = self.config.agent.stop_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0 or timeout > 86400:
            raise UserError(f"timeout: {timeout!r} is not a number of seconds 0..86400")
        with self._cond:
            e = self._find(name)
            e.stopping = True
            if e.row.state == State.RESTARTING:
                self._cancel_timer(e)
                self._set(e, "stopped", state=State.EXITED)
                return self._info(e)
            if e.row.state not in ACTIVE:
                return self._info(e)
            if e.row.state == State.PAUSED:
                try:
                    freezer.thaw(e.cg)
                except CgroupError as err:
                    log.warning("container.thaw_failed", name=e.row.name, error=str(err))
                self._set(e, "thawed", state=State.RUNNING)
            pid = e.row.pid
            if timeout > 0:
                self._send(e, _signal.SIGTERM)
                self._wait_exit(e, pid, timeout)
            if e.row.state in ACTIVE and e.row.pid == pid:
                if timeout > 0:  # timeout 0 asks for the kill; only an ignored SIGTERM counts
                    selfmetrics.inc("kills_after_grace_total")
                log.info("container.kill_after_grace", name=e.row.name, grace=timeout)
                self._kill_cgroup(e)
                self._wait_exit(e, pid, EXIT_WAIT_AFTER_KILL)
            return self._info(e)

    def _wait_exit(self, e: Container, pid, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while e.row.state in ACTIVE and e.row.pid == pid:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(min(left, 0.5))
            if e.orphan and not self._populated(e):
                self._orphan_exited(e)

    def _send(self, e: Container, sig: int) -> None:
        try:
            if e.orphan:
                os.kill(e.row.pid, sig)
            else:
                self.launcher.signal(e.row.pid, sig)
        except ProcessLookupError:
            pass
        except Exception as err:
            log.warning("container.signal_failed", name=e.row.name, signal=sig, error=str(err))

    def _kill_cgroup(self, e: Container) -> None:
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
            if e.row.state not in ACTIVE:
                raise Conflict(f"name: container {e.row.name!r} is not running ({e.row.state})")
            if num in (_signal.SIGKILL, _signal.SIGTERM, _signal.SIGINT, _signal.SIGQUIT):
                e.stopping = True
            if num == _signal.SIGKILL:
                self._kill_cgroup(e)
            else:
                self._send(e, num)
            self._history(e, "signalled", signal=num)
            return self._info(e)

    def rename(self, old: str, new: str) -> ContainerInfo:
        """agentctl rename: the id, cgroup, logs and billing history stay; the
        name changes in the index, the stored row and spec, and an event says so."""
        from agent.spec import check_name
        check_name(new)
        with self._lock:
            e = self._find(old)
            if new == e.row.name:
                return self._info(e)
            if new in self._names or new in self._entries:
                raise Conflict(f"name: {new!r} is already taken by another container")
            prior = e.row.name
            spec = dataclasses.replace(e.spec, name=new)
            with self.store.transaction():
                self.store.update(e.row.id, name=new, spec=spec.to_dict())
                self.store.add_event(e.row.id, new, "renamed", old_name=prior)
            e.row = dataclasses.replace(e.row, name=new)
            e.spec = spec
            del self._names[prior]
            self._names[new] = e.row.id
            self._changed(e)
            return self._info(e)

    def freeze(self, name: str) -> ContainerInfo:
        return self._switch_frozen(name, State.PAUSED, State.RUNNING, freezer.freeze, "freeze", "paused")

    def thaw(self, name: str) -> ContainerInfo:
        return self._switch_frozen(name, State.RUNNING, State.PAUSED, freezer.thaw, "thaw", "thawed")

    def _switch_frozen(self, name: str, to: State, needs: State, write, verb: str, event: str) -> ContainerInfo:
        """Freeze or thaw: a no-op when already `to`, a Conflict unless `needs`,
        then write cgroup.freeze and record `event`."""
        with self._lock:
            e = self._find(name)
            if e.row.state == to:
                return self._info(e)
            if e.row.state != needs:
                raise Conflict(f"name: container {e.row.name!r} is not {needs} ({e.row.state})")
            try:
                write(e.cg)
            except CgroupError as err:
                raise UserError(f"{verb}: {err}") from None
            self._set(e, event, state=to)
            return self._info(e)

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

    # ------------------------------------------------------------- checkpoint hooks (agent/checkpoint/service.py)

    def spec_of(self, name: str):
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

