"""Sending a container's log files to the client as frames: the one loop of the logs endpoint.

    final = pump_tails(handler, name, [(STDOUT, tail), (STDERR, tail)], follow=True)

A tail is anything with ``read(final=False) -> bytes`` (b"" when nothing new)
and ``close()``: agent.api.containers.LogTail (raw bytes) or
agent.logtimes.TimedTail (whole lines with their times; ``final`` lets it
send a last partial line). Without ``follow`` each tail is read to its end
once; with it, until the container exited (or agentd stops), then once more
with ``final=True``. Answers the container's info at its exit (None without
follow, or when agentd stops first). The caller starts and ends the stream.
"""
from __future__ import annotations

import threading

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
                done.wait(LOG_POLL)
    finally:
        for _, tail in tails:
            tail.close()
        done.set()
    return final.get("info")
