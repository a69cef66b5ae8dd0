"""agent.daemon.sdnotify against real AF_UNIX datagram sockets (path and abstract)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

from agent.daemon import sdnotify

RECV_TIMEOUT = 10  # generous upper bound for a datagram that must arrive


@pytest.fixture
def path_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(RECV_TIMEOUT)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield s
    s.close()


@pytest.fixture
def abstract_socket(monkeypatch):
    name = f"cga-test-notify-{uuid.uuid4().hex}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(b"\0" + name.encode())
    s.settimeout(RECV_TIMEOUT)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield s
    s.close()


def recv(s) -> bytes:
    return s.recv(4096)


def assert_nothing_queued(s):
    """Prove no datagram is pending: a marker sent now must be the next one read."""
    marker = f"X-MARKER={uuid.uuid4().hex}"
    assert sdnotify.notify(marker)
    assert recv(s) == marker.encode()


def test_ready_exact_datagram(path_socket):
    assert sdnotify.ready() is True
    assert recv(path_socket) == b"READY=1"


def test_ready_with_status_is_one_datagram(path_socket):
    assert sdnotify.ready("serving 3 containers")
    assert recv(path_socket) == b"READY=1\nSTATUS=serving 3 containers"
    assert_nothing_queued(path_socket)


def test_status_stopping_reloading(path_socket):
    assert sdnotify.status("collecting 12 cgroups")
    assert recv(path_socket) == b"STATUS=collecting 12 cgroups"
    assert sdnotify.stopping()
    assert recv(path_socket) == b"STOPPING=1"
    assert sdnotify.reloading()
    lines = recv(path_socket).decode().split("\n")
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=")
    usec = int(lines[1].split("=", 1)[1])
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert 0 < usec <= now


def test_newline_in_status_cannot_inject_assignment(path_socket):
    assert sdnotify.status("line one\nREADY=1")
    assert recv(path_socket) == b"STATUS=line one READY=1"


def test_abstract_socket(abstract_socket):
    assert sdnotify.ready()
    assert recv(abstract_socket) == b"READY=1"
    assert sdnotify.stopping()
    assert recv(abstract_socket) == b"STOPPING=1"


def test_noop_without_notify_socket(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    assert sdnotify.status("x") is False
    assert sdnotify.stopping() is False
    assert sdnotify.reloading() is False
    assert sdnotify.watchdog_ping() is False
    assert sdnotify.Watchdog().start() is False


def test_unreachable_socket_returns_false_never_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    assert sdnotify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path.sock")
    assert sdnotify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "@")  # empty abstract name: nobody bound
    assert sdnotify.ready() is False


def test_watchdog_pings_arrive(path_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "40000")  # ping every 20 ms
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    wd = sdnotify.Watchdog()
    assert wd.interval == pytest.approx(0.02)
    assert wd.start() is True
    try:
        for _ in range(3):
            assert recv(path_socket) == b"WATCHDOG=1"
    finally:
        wd.stop()
    assert wd.pings >= 3


def test_watchdog_without_pid_applies_to_us(path_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "40000")
    wd = sdnotify.Watchdog()
    assert wd.start() is True
    try:
        assert recv(path_socket) == b"WATCHDOG=1"
    finally:
        wd.stop()


def test_watchdog_skips_ping_when_unhealthy(path_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "40000")
    calls = []

    def healthy():
        calls.append(1)
        return len(calls) >= 3  # first two checks fail

    wd = sdnotify.Watchdog(healthy=healthy)
    assert wd.start()
    try:
        assert recv(path_socket) == b"WATCHDOG=1"
    finally:
        wd.stop()
    assert len(calls) >= 3 and wd.pings >= 1


def test_watchdog_for_another_pid_sends_nothing(path_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "40000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getppid()))
    wd = sdnotify.Watchdog()
    assert wd.interval is None
    assert wd.start() is False
    wd.stop()
    assert_nothing_queued(path_socket)


@pytest.mark.parametrize("value", ["", "0", "-5", "abc"])
def test_watchdog_disabled_by_bad_usec(value):
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": value}) is None


def test_watchdog_in_child_process_inherited_env(path_socket, monkeypatch):
    """A child that inherits WATCHDOG_PID of its parent must not ping; one whose
    WATCHDOG_PID is its own pid must (the check uses the real getpid)."""
    code = (
        "import os, sys\n"
        "from agent.daemon import sdnotify\n"
        "if sys.argv[1] == 'self': os.environ['WATCHDOG_PID'] = str(os.getpid())\n"
        "wd = sdnotify.Watchdog()\n"
        "print(wd.start())\n"
        "wd.stop()\n"
        "sdnotify.notify('X-CHILD-DONE=1')\n"
    )
    env = dict(os.environ, WATCHDOG_USEC="40000", WATCHDOG_PID=str(os.getpid()))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code, "inherited"], env=env, cwd=root,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert recv(path_socket) == b"X-CHILD-DONE=1"
    out = subprocess.run([sys.executable, "-c", code, "self"], env=env, cwd=root,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    assert recv(path_socket) == b"WATCHDOG=1"  # first ping happens at start
    assert recv(path_socket) == b"X-CHILD-DONE=1"
