"""The restart policy after an exit: a restart on a timer with exponential
backoff (reset by a long enough run), or auto-remove (--rm). The timer heap
is run by the supervisor's event loop. Mixed into
``agent.supervisor.Supervisor``."""
from __future__ import annotations

import dataclasses
import heapq
import os
import threading
import time
from typing import Callable

import structlog

from agent.supervision.state import Container, State

log = structlog.get_logger("agentd.supervisor")  # one logger for every supervision module
BACKOFF_BASE = 0.1  # seconds before the first restart; doubles per restart
BACKOFF_MAX = 30.0
BACKOFF_RESET_AFTER = 10.0  # a run this long resets the backoff


class RestartPolicy:
    """After an exit: the restart policy with exponential backoff on a timer heap, or auto-remove."""

    def _after_exit(self, e: Container) -> None:
        self._run_hooks("post_stop", e)
        pol = e.spec.restart
        if not e.stopping and pol.should_restart(e.row.exit_code, e.row.exit_signal, e.row.restart_count,
                                                 e.row.oom_killed):
            ran = time.monotonic() - e.started_mono if e.started_mono else 0
            if ran >= BACKOFF_RESET_AFTER:
                e.backoff_n = 0
            delay = min(BACKOFF_BASE * (2 ** e.backoff_n), BACKOFF_MAX)
            e.backoff_n += 1
            self._set(e, None, state=State.RESTARTING)
            cid = e.row.id
            e.timer = self._schedule(delay, lambda: self._restart(cid))
            log.info("container.restart_scheduled", name=e.row.name, delay=delay, policy=str(pol))
            return
        if e.spec.auto_remove and not e.removing:
            e.removing = True
            threading.Thread(target=self._auto_remove, args=(e,), name="auto-remove", daemon=True).start()

    def _auto_remove(self, e: Container) -> None:
        try:
            self._finish_remove(e)
        except Exception as err:
            log.error("container.auto_remove_failed", name=e.row.name, error=str(err))

    def _restart(self, cid: str) -> None:
        with self._cond:
            e = self._entries.get(cid)
            if e is None or e.row.state != State.RESTARTING or e.stopping:
                return
            e.timer = None
            e.row = dataclasses.replace(e.row, restart_count=e.row.restart_count + 1)
            self.store.update(cid, restart_count=e.row.restart_count)
            try:
                self._start(e)
                self.store.add_event(cid, e.row.name, "restarted", restart_count=e.row.restart_count)
            except Exception as err:
                log.error("container.restart_failed", name=e.row.name, error=str(err))
                self._set(e, "restart_failed", state=State.EXITED)

    def _cancel_timer(self, e: Container) -> None:
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
