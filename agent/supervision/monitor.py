"""Watching running containers: exit records from the launcher (committed,
then acked, so none is lost), OOM kills on memory.events, refused forks on
pids.events, freezes made outside agentd and the end of orphans on
cgroup.events (inotify IN_MODIFY, no polling). Mixed into
``agent.supervisor.Supervisor``; called from its event loop."""
from __future__ import annotations

import os
import time

import structlog

from agent.store import StoreFull
from agent.supervision.state import ACTIVE, Container, State
from runtime.errors import CgroupError
from runtime.stats import parse_flat_keyed

log = structlog.get_logger("agentd.supervisor")  # one logger for every supervision module
PIDS_LOG_EVERY = 60.0  # seconds between container.pids_limit_hit lines of one container


class Monitor:
    """What happens to a running container: exits (launcher), OOM kills and pids.max hits (memory.events, pids.events), freezes made outside agentd and orphans' ends (cgroup.events)."""

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

    def _on_exit(self, cid: str, pid: int, exit_code, exit_signal, at: float | None) -> None:
        """A launcher exit record: commit it, then ack it, then apply the restart policy."""
        with self._cond:
            e = self._entries.get(cid)
            if e is None or e.row.pid != pid or e.row.state not in ACTIVE:
                self._ack(cid, pid)  # stale or already applied
                return
            self._check_oom(e)
            oom = e.oom_seen is not None and e.oom_seen > (e.oom_at_start or 0)
            changes = dict(state=State.EXITED, exit_code=exit_code, exit_signal=exit_signal,
                           finished_at=at or time.time(), oom_killed=oom)
            self._set(e, "exited", **changes)
            self._ack(cid, pid)
            log.info("container.exited", name=e.row.name, id=cid, pid=pid, exit_code=exit_code,
                     signal=exit_signal, oom_killed=oom)
            self._after_exit(e)

    def _orphan_exited(self, e: Container) -> None:
        """A re-adopted container whose launcher was replaced: no exit status is known."""
        self._set(e, "exited", state=State.EXITED, exit_code=None, exit_signal=None, finished_at=time.time())
        log.warning("container.exited_unknown_status", name=e.row.name, id=e.row.id)
        self._after_exit(e)

    def _ack(self, cid: str, pid: int) -> None:
        try:
            self.launcher.ack(cid, pid)
        except Exception as err:
            log.warning("launcher.ack_failed", id=cid, pid=pid, error=str(err))

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
                    if e.orphan and e.row.state in ACTIVE and not self._populated(e):
                        self._orphan_exited(e)
                    else:
                        self._sync_frozen(e)

    def _sync_frozen(self, e: Container) -> None:
        """cgroup.events changed: a freeze or thaw made outside agentd (someone
        wrote cgroup.freeze, or froze an ancestor) shows as paused / running.
        freeze() and thaw() hold the lock until the kernel confirmed, so their
        own changes always agree here."""
        if e.row.state not in ACTIVE:
            return
        try:
            ev = e.cg.events()
        except CgroupError:
            return
        if ev is None or not ev.populated:
            return
        st = State.PAUSED if ev.frozen else State.RUNNING
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
                if e.orphan and e.row.state in ACTIVE and self.watcher is None and not self._populated(e):
                    self._orphan_exited(e)

    def _populated(self, e: Container) -> bool:
        try:
            ev = e.cg.events()
        except CgroupError:
            return False
        return bool(ev and ev.populated)

    def _read_oom_count(self, e: Container) -> int | None:
        try:
            text = e.cg.read("memory.events")
        except CgroupError:
            return None
        if text is None:
            return None
        return parse_flat_keyed(text).get("oom_kill", 0)

    def _read_oom_baseline(self, e: Container) -> None:
        e.oom_seen = e.oom_at_start = self._read_oom_count(e)
        e.pids_hits_seen, e.pids_logged_mono = self._read_pids_hits(e), None

    def _read_pids_hits(self, e: Container) -> int | None:
        try:
            text = e.cg.read("pids.events")
        except CgroupError:
            return None
        return None if text is None else parse_flat_keyed(text).get("max", 0)

    def _check_pids(self, e: Container) -> None:
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

    def _check_oom(self, e: Container) -> bool:
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

    def _watch(self, e: Container) -> None:
        if self.watcher is None:
            return
        try:
            self.watcher.watch_events(e.cg.path)
        except Exception as err:
            log.warning("inotify.watch_failed", cgroup=e.cg.path, error=str(err))

    def _unwatch(self, e: Container) -> None:
        if self.watcher is None:
            return
        try:
            self.watcher.unwatch(e.cg.path)
        except Exception:
            pass
