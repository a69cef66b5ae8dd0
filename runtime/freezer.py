"""Freeze, thaw and kill everything in a cgroup, confirmed by cgroup.events.

cgroup.freeze is asynchronous: the freeze is done only when cgroup.events
says "frozen 1" (a task in uninterruptible sleep delays it). These calls
return only once the kernel confirms, or raise after ``timeout`` seconds.
Waiting polls cgroup.events with short, growing sleeps (1 ms .. 20 ms):
freezes normally complete within a millisecond, and polling keeps this
module free of inotify state.
"""
from __future__ import annotations

import errno
import os
import signal
import time

from runtime.cgroupfs import Cgroup
from runtime.errors import CgroupError, CgroupGone, FreezeTimeout, KillTimeout
from runtime.stats import CgroupEvents


def wait_events(cg, predicate, timeout: float) -> CgroupEvents | None:
    """Poll cgroup.events until ``predicate(events)`` holds; None on timeout."""
    cg = Cgroup(cg)
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        ev = cg.events()
        if ev is not None and predicate(ev):
            return ev
        now = time.monotonic()
        if now >= deadline:
            return None
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 2, 0.02)


def _set_freeze(cg: Cgroup, value: str) -> None:
    try:
        cg.write("cgroup.freeze", value)
    except CgroupGone:
        raise
    except CgroupError as exc:
        if exc.errno == errno.ENOENT:
            raise CgroupError(f"cannot freeze {cg.path}: no cgroup.freeze here (the root "
                              f"cgroup, or a kernel older than 5.2)", exc.errno) from None
        raise


def freeze(cg, timeout: float = 5) -> CgroupEvents:
    """Freeze every process in ``cg`` (and below); return once cgroup.events says frozen 1.

    On timeout the cgroup is thawed again (never left half-frozen) and
    FreezeTimeout is raised.
    """
    cg = Cgroup(cg)
    _set_freeze(cg, "1")
    ev = wait_events(cg, lambda e: e.frozen, timeout)
    if ev is None:
        try:
            _set_freeze(cg, "0")
        except CgroupError:
            pass
        raise FreezeTimeout(f"cgroup {cg.path} did not report frozen 1 in cgroup.events within "
                            f"{timeout:g}s (a task in uninterruptible sleep delays a freeze); "
                            f"thawed it again")
    return ev


def thaw(cg, timeout: float = 5) -> CgroupEvents:
    """Thaw ``cg``; return once cgroup.events says frozen 0.

    An ancestor that is itself frozen keeps ``cg`` frozen: that is reported
    as FreezeTimeout naming the cgroup.
    """
    cg = Cgroup(cg)
    _set_freeze(cg, "0")
    ev = wait_events(cg, lambda e: not e.frozen, timeout)
    if ev is None:
        raise FreezeTimeout(f"cgroup {cg.path} did not report frozen 0 in cgroup.events within "
                            f"{timeout:g}s (is an ancestor cgroup frozen?)")
    return ev


def is_frozen(cg) -> bool:
    ev = Cgroup(cg).events()
    return bool(ev and ev.frozen)


def _signal_all(cg: Cgroup, sig: int) -> int:
    """Send ``sig`` to every process in cg and its descendants; count them."""
    n = 0
    for pid in cg.procs():
        try:
            os.kill(pid, sig)
            n += 1
        except ProcessLookupError:
            pass
    for child in cg.children():
        try:
            n += _signal_all(child, sig)
        except CgroupGone:
            pass
    return n


def signal_all(cg, sig: int) -> int:
    """Send ``sig`` to every process in ``cg`` and below; returns how many were signalled."""
    return _signal_all(Cgroup(cg), sig)


def _populated(cg: Cgroup) -> bool:
    ev = cg.events()
    if ev is not None:
        return ev.populated
    return bool(cg.procs()) or any(_populated(c) for c in cg.children())


def kill(cg, timeout: float = 5, method: str = "auto") -> None:
    """SIGKILL everything in ``cg`` and below; return once it is empty (populated 0).

    Uses cgroup.kill (Linux >= 5.14), which also catches processes forked
    meanwhile; elsewhere SIGKILLs every pid in cgroup.procs repeatedly until
    the cgroup is empty. Frozen tasks die too. A vanished cgroup counts as
    empty. Raises KillTimeout (a FreezeTimeout) if still populated after
    ``timeout`` seconds. ``method``: "auto", "cgroup.kill" or "signal"
    (force the fallback).
    """
    cg = Cgroup(cg)
    deadline = time.monotonic() + timeout
    if method not in ("auto", "cgroup.kill", "signal"):
        raise ValueError(f"kill method {method!r}: use auto, cgroup.kill or signal")
    use_kill_file = method == "cgroup.kill" or (
        method == "auto" and os.path.exists(cg.file("cgroup.kill")))
    delay = 0.001
    try:
        if use_kill_file:
            cg.write("cgroup.kill", "1")
        while True:
            if not use_kill_file:
                _signal_all(cg, signal.SIGKILL)
            if not _populated(cg):
                return
            now = time.monotonic()
            if now >= deadline:
                break
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, 0.02)
    except CgroupGone:
        return
    raise KillTimeout(f"cgroup {cg.path} still has processes {timeout:g}s after SIGKILL "
                      f"({len(cg.procs())} in cgroup.procs)")
