"""Removing a container: kill what runs, take the final sample, run every
``before_remove(info, sample)`` hook, then rmdir its cgroup (the only place
that removes a container cgroup) and forget it. Mixed into
``agent.supervisor.Supervisor``."""
from __future__ import annotations

import os
import shutil

import structlog

from agent.errors import Conflict
from agent.model import ContainerInfo
from agent.store import StoreFull
from agent.supervision.lifecycle import EXIT_WAIT_AFTER_KILL
from agent.supervision.state import ACTIVE, Container, State
from runtime.errors import CgroupBusy, CgroupError
from runtime.stats import read_sample

log = structlog.get_logger("agentd.supervisor")  # one logger for every supervision module


class Removal:
    """remove: final sample, before_remove hooks, rmdir, forget (the only place a container cgroup is removed)."""

    def remove(self, name: str, force: bool = False) -> ContainerInfo:
        with self._cond:
            e = self._find(name)
            if e.removing:
                raise Conflict(f"name: container {e.row.name!r} is already being removed")
            if e.row.state in ACTIVE and not force:
                raise Conflict(f"name: container {e.row.name!r} is {e.row.state}; stop it first or remove with force")
            e.stopping = True
            e.removing = True
            self._cancel_timer(e)
            if e.row.state in ACTIVE:
                pid = e.row.pid
                self._kill_cgroup(e)
                self._wait_exit(e, pid, EXIT_WAIT_AFTER_KILL)
            if e.row.state == State.RESTARTING:
                self._set(e, "stopped", state=State.EXITED)
        return self._finish_remove(e)

    def _finish_remove(self, e: Container) -> ContainerInfo:
        """Final sample -> hooks -> rmdir -> forget. Hooks run without the lock."""
        if self._populated(e):
            self._kill_cgroup(e)
        info = self.get_entry_info(e)
        sample = self.final_sample(info)   # before the network goes: its counters are in it
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
            if self.net is not None:
                self.net.detach(e.row.id, e.spec)
            self._entries.pop(e.row.id, None)
            if self._names.get(e.row.name) == e.row.id:
                del self._names[e.row.name]
            if isinstance(e.spec.userns, dict):
                self.publish_userns()   # its ids are free for every agentd of the host
            e.removed = True
            self._gone[e.row.id] = info
            while len(self._gone) > 256:
                self._gone.pop(next(iter(self._gone)))
            self._cond.notify_all()
            log.info("container.removed", name=e.row.name, id=e.row.id)
            return info

    @staticmethod
    def _read_final(info: ContainerInfo):
        """The cgroup's files read once (None, logged, if they cannot be read)."""
        try:
            return read_sample(info.cgroup)
        except CgroupError as err:
            log.warning("container.final_sample_failed", name=info.name, error=str(err))
            return None

    def get_entry_info(self, e: Container) -> ContainerInfo:
        with self._lock:
            return self._info(e)
