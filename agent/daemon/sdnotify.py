"""sd_notify(3) without libsystemd: tell the service manager how agentd is doing.

systemd passes the address of a datagram socket in $NOTIFY_SOCKET (a path, or
an abstract name written with a leading "@"). Each message is one datagram of
newline-separated KEY=VALUE assignments. Without NOTIFY_SOCKET (agentd run by
hand, or under a supervisor that does not speak the protocol) every function
here is a no-op returning False. Nothing here ever raises: a service manager
that went away must not take the daemon down with it.

Used by agent/daemon/agentd.py:

    sdnotify.ready()              READY=1 once the API and metrics listen
    sdnotify.status(text)         STATUS=<one line>
    sdnotify.reloading()          RELOADING=1 (+ MONOTONIC_USEC) on SIGHUP
    sdnotify.stopping()           STOPPING=1 on SIGTERM
    sdnotify.Watchdog().start()   WATCHDOG=1 every WatchdogSec/2 when enabled
"""
from __future__ import annotations

import os
import socket
import threading
import time

__all__ = [
    "notify", "ready", "status", "reloading", "stopping", "watchdog_ping",
    "watchdog_interval", "Watchdog",
]


def _address(value: str) -> str | bytes | None:
    """The socket address for a NOTIFY_SOCKET value, None if unusable."""
    if not value:
        return None
    if value.startswith("@"):
        # Abstract namespace: a leading NUL byte instead of the "@".
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock:// and relative paths are not supported


def notify(*assignments: str, env: dict | None = None) -> bool:
    """Send one datagram made of KEY=VALUE assignments; True if it was sent.

    A no-op (False) when NOTIFY_SOCKET is unset or not a supported address.
    Values must not contain newlines: they are replaced by spaces.
    """
    env = os.environ if env is None else env
    addr = _address(env.get("NOTIFY_SOCKET", ""))
    if addr is None or not assignments:
        return False
    lines = [a.replace("\n", " ") for a in assignments]
    payload = "\n".join(lines).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(payload, addr)
        return True
    except OSError:
        return False


def ready(status_text: str | None = None) -> bool:
    """READY=1: startup finished (sockets listening). Optionally a STATUS too."""
    parts = ["READY=1"]
    if status_text:
        parts.append("STATUS=" + status_text)
    return notify(*parts)


def status(text: str) -> bool:
    """STATUS=<text>: a free-form line `systemctl status` shows."""
    return notify("STATUS=" + text)


def reloading() -> bool:
    """RELOADING=1 with MONOTONIC_USEC (required by systemd >= 253 Type=notify-reload).

    Send ready() again once the reload is done.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}")


def stopping() -> bool:
    """STOPPING=1: shutdown has begun."""
    return notify("STOPPING=1")


def watchdog_ping() -> bool:
    """WATCHDOG=1: one keep-alive for WatchdogSec."""
    return notify("WATCHDOG=1")


def watchdog_interval(env: dict | None = None) -> float | None:
    """Seconds between pings (half of WATCHDOG_USEC), or None when disabled.

    Disabled when WATCHDOG_USEC is unset, not a positive integer, or when
    WATCHDOG_PID is set and names another process (the variables were meant
    for a parent, and we inherited them).
    """
    env = os.environ if env is None else env
    raw = env.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 1e6 / 2


class Watchdog:
    """Pings WATCHDOG=1 from a daemon thread every WatchdogSec/2.

    `start()` returns True when pinging began, False when the watchdog is not
    enabled for this process (see watchdog_interval) or NOTIFY_SOCKET is unset.
    `healthy`, if given, is called before each ping: when it returns False the
    ping is skipped, so a wedged main loop lets systemd restart the service.
    """

    def __init__(self, healthy=None, env: dict | None = None):
        self._env = dict(os.environ if env is None else env)
        self._healthy = healthy
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.interval = watchdog_interval(self._env)
        self.pings = 0

    @property
    def enabled(self) -> bool:
        return self.interval is not None and _address(self._env.get("NOTIFY_SOCKET", "")) is not None

    def start(self) -> bool:
        if not self.enabled or self._thread is not None:
            return False
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        while True:
            try:
                ok = self._healthy() if self._healthy else True
            except Exception:  # a broken health check means unhealthy, never a crash
                ok = False
            if ok and notify("WATCHDOG=1", env=self._env):
                self.pings += 1
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5)
