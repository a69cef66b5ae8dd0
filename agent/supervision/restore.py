"""Live restore: at boot, load the store, re-adopt the containers that
still run (the launcher outlives agentd), apply the exits that happened
while agentd was down, and sweep cgroups a killed create() left; after a
launcher reconnect, the same catch-up. Mixed into
``agent.supervisor.Supervisor``."""
from __future__ import annotations

import dataclasses
import os
import shutil
import time

import structlog

from agent import selfmetrics
from agent.spec import ContainerSpec
from agent.supervision.restart import BACKOFF_BASE
from agent.supervision.state import ACTIVE, LIVE, Container, State, is_container_id, pid_alive
from runtime import freezer
from runtime.cgroupfs import Cgroup
from runtime.errors import CgroupError
from runtime.limits import Limits

log = structlog.get_logger("agentd.supervisor")  # one logger for every supervision module


class Restore:
    """Live restore at boot and after a launcher reconnect: re-adopt what still runs, apply exits that happened meanwhile, sweep what a killed create left."""

    def _restore(self) -> None:
        with self._cond:
            for row in self.store.all():
                try:
                    spec = ContainerSpec.from_dict(row.spec)
                except Exception as err:
                    log.error("store.bad_spec", id=row.id, error=str(err))
                    continue
                try:
                    row = dataclasses.replace(row, state=State(row.state))
                except ValueError:  # written by a newer agentd: kept as it is, matches no state here
                    log.warning("store.unknown_state", id=row.id, state=row.state)
                e = Container(row=row, spec=spec, cg=Cgroup(row.cgroup), limits=Limits.from_json(row.limits or {}))
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
            if name in known or not is_container_id(name):
                continue
            try:
                if cg.procs():
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
                if row.state == State.CREATED and adopting:
                    self._reconcile_created(e, running.get(row.id), last_exit_by_id.get(row.id))
                    continue
                if row.state not in LIVE:
                    continue
                rec = exit_by_key.get((row.id, row.pid))
                if rec is not None and row.state != State.RESTARTING:
                    if adopting:
                        self._read_oom_baseline_from_row(e)
                    self._on_exit(row.id, rec.pid, rec.exit_code, rec.signal, rec.at)
                    log.info("container.exit_applied_late", name=row.name, exit_code=rec.exit_code,
                             signal=rec.signal)
                    continue
                if row.state == State.RESTARTING:
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
                    st = State.PAUSED if frozen else State.RUNNING
                    if st != row.state:
                        self._set(e, None, state=st)
                    self._watch(e)
                    self.store.add_event(row.id, row.name, "adopted", pid=row.pid)
                    log.info("container.adopted", name=row.name, id=row.id, pid=row.pid, cgroup=row.cgroup)
                elif alive and row.pid and pid_alive(row.pid):
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
                    self._set(e, "lost", state=State.EXITED, exit_code=None, exit_signal=None, finished_at=time.time())
                    log.warning("container.lost", name=row.name, id=row.id)
                    self._after_exit(e)
            # exit records for containers already settled or removed: ack them
            for x in exits:
                e = self._entries.get(x.id)
                if e is None or e.row.pid != x.pid or e.row.state not in ACTIVE:
                    self._ack(x.id, x.pid)

    def _reconcile_created(self, e: Container, launcher_pid: int | None, rec) -> None:
        """A row still 'created' at boot whose process may have been spawned: agentd
        was killed after the launcher spawned it, before 'running' was committed."""
        row = e.row
        alive = self._populated(e)
        if launcher_pid and alive:
            e.started_mono = time.monotonic()
            self._read_oom_baseline_from_row(e)
            self._set(e, "adopted_unrecorded_start", state=State.RUNNING, pid=launcher_pid, started_at=time.time(),
                      exit_code=None, exit_signal=None, finished_at=None, oom_killed=False)
            self._watch(e)
            self._sync_frozen(e)
            log.warning("container.adopted_unrecorded_start", name=row.name, id=row.id, pid=launcher_pid,
                        note="spawned just before agentd stopped; started_at is the adoption time")
            return
        if rec is not None and not alive:
            # it ran and ended while agentd was down (the exit record is acked by the caller)
            self._set(e, "exited", state=State.EXITED, pid=rec.pid, started_at=None, exit_code=rec.exit_code,
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

    def _read_oom_baseline_from_row(self, e: Container) -> None:
        """After a restart of agentd the kernel counter may be ahead of oom_kills we
        recorded for this instance; count from what the store says we saw."""
        n = self._read_oom_count(e)
        e.oom_seen = None if n is None else min(n, e.row.oom_kills)
        e.oom_at_start = e.oom_seen
