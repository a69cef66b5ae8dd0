"""agent/api/limits.py: the connection gate's arithmetic and the whole-phase read deadline (real socketpairs)."""
from __future__ import annotations

import socket
import threading

import pytest

from agent.api.limits import ConnectionGate, DeadlineReader, HeadTooLarge


def test_per_peer_cap_total_cap_and_the_admins_eighth():
    gate = ConnectionGate(max_total=16, max_per_peer=4)
    conns = [object() for _ in range(40)]
    assert [gate.admit(c, ("uid", 1000)) for c in conns[:5]] == [None] * 4 + ["peer"]
    for i, c in enumerate(conns[5:15]):  # other tenants fill their share: 16 - 16 // 8 = 14
        gate.admit(c, ("container", str(i // 4)))
    assert gate.count() == 14
    assert gate.admit(conns[20], ("container", "new")) == "total"
    assert gate.admit(conns[21], ("uid", 0), admin=True) is None      # the kept eighth
    assert gate.admit(conns[22], ("uid", 0), admin=True) is None
    assert gate.admit(conns[23], ("uid", 0), admin=True) == "total"   # nobody goes past max_total
    gate.release(conns[0])
    gate.release(conns[0])  # twice: harmless
    assert gate.count() == 15
    assert gate.admit(conns[24], ("uid", 1000)) == "total"  # its slot went back to the pool, not to the peer


def test_admins_are_exempt_from_the_per_peer_cap_only():
    gate = ConnectionGate(max_total=8, max_per_peer=1)
    assert [gate.admit(object(), ("uid", 0), admin=True) for _ in range(9)] == [None] * 8 + ["total"]


def test_a_trickling_client_hits_the_deadline_of_the_whole_head():
    a, b = socket.socketpair()
    stop = threading.Event()

    def trickle():
        while not stop.wait(0.02):
            try:
                b.send(b"x")
            except OSError:
                return
    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        reader = DeadlineReader(a, idle_timeout=60)
        reader.limit(0.3, 1 << 20)
        with pytest.raises(TimeoutError):
            reader.readline(1 << 20)  # a byte every 20 ms, never a newline: per-recv timeouts would never fire
    finally:
        stop.set()
        t.join()
        a.close()
        b.close()


def test_head_budget_and_eof():
    a, b = socket.socketpair()
    b.sendall(b"GET / HTTP/1.1\r\nA: " + b"y" * 100 + b"\r\n")
    reader = DeadlineReader(a, idle_timeout=5)
    reader.limit(5, 50)
    assert reader.readline(8193) == b"GET / HTTP/1.1\r\n"
    with pytest.raises(HeadTooLarge):
        reader.readline(65537)
    b.sendall(b"rest")
    b.close()
    reader.limit(None)
    assert reader.read(100).endswith(b"rest") and reader.eof
    a.close()
