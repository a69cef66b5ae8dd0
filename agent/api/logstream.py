"""Sending a container's log files to the client as frames: the one loop of the logs endpoint.

    final = pump_tails(handler, name, [(STDOUT, tail), (STDERR, tail)], follow=True)
    pump_timed(handler, name, query)     # since= or timestamps=1: whole lines with their times

A tail is anything with ``read(final=False) -> bytes`` (b"" when nothing new)
and ``close()``: agent.api.containers.LogTail (raw bytes) or
agent.logtimes.TimedTail (whole lines with their times; ``final`` lets it
send a last partial line). Without ``follow`` each tail is read to its end
once; with it, until the container exited (or agentd stops, or the client
hangs up: BrokenPipeError, as a failed write), then once more with
``final=True``. Answers the container's info at its exit (None without
follow, or when agentd stops first). The caller starts and ends the stream.
"""
from __future__ import annotations

import select
import threading

from agent.errors import UserError
from agent.logtimes import TimedTail
from agent.wire import STDERR, STDOUT

LOG_POLL = 0.1  # seconds between reads of a followed log file


def pump_tails(h, name: str, tails: list, follow: bool):
    done = threading.Event()
    final: dict = {}
    if follow:
        threading.Thread(target=h.api.wait_into, args=(name, done, final), daemon=True,
                         name=f"api-wait-{name}").start()
    try:
        while True:
            ended = done.is_set() or not follow or h.api.stopping.is_set()
            moved = False
            for sid, tail in tails:
                while data := tail.read(final=ended):
                    h._frame(sid, data)
                    moved = True
            if ended:
                break
            if not moved:
                if hung_up(h.connection):
                    raise BrokenPipeError(f"the client of {name}'s stream hung up")
                done.wait(LOG_POLL)
    finally:
        for _, tail in tails:
            tail.close()
        done.set()
    return final.get("info")


def hung_up(conn) -> bool:
    """The client closed the connection (a quiet followed stream would otherwise
    notice only at its next write, holding a thread and a connection slot until
    the container writes or exits). POLLHUP, not POLLRDHUP: a client that only
    half-closed (shut its sending side, as `system dial-stdio` does at the end
    of its input) still reads the stream."""
    poller = select.poll()
    try:
        poller.register(conn.fileno(), 0)       # POLLHUP and POLLERR are always reported
        return any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _fd, ev in poller.poll(0))
    except (OSError, ValueError):               # closed here already
        return True


def since_param(key: str, value: str) -> float:
    """The logs endpoint's since=: epoch seconds (agentctl turns 10m and RFC 3339 into them)."""
    try:
        t = float(value)
    except ValueError:
        t = -1.0
    if not 0 <= t < 2**40:
        raise UserError(f"query parameter {key}: {value!r} is not a time in epoch seconds")
    return t


def pump_timed(h, name: str, query: dict) -> None:
    """GET .../logs with since= or timestamps=1: complete lines, timed (the
    launcher's index, agent/logtimes.py), as STDOUT/STDERR frames; with
    follow, until the container exits."""
    which = query.get("stream", "all")
    tails = [(sid, TimedTail(h.sup.log_path(name, stream), query.get("tail"), query.get("since"),
                             bool(query.get("timestamps"))))
             for sid, stream in ((STDOUT, "stdout"), (STDERR, "stderr")) if which in (stream, "all")]
    h._start_stream()
    pump_tails(h, name, tails, query.get("follow", False))
    h._end_stream()
