"""When the launcher hands a container's log pipes to a copier (agent/launcher/logcopier.py):
more than the threshold within the window, or full pipes in a row. The second rule is for a
launcher slowed down (a slow disk, a loaded host): it then copies less per second than the
threshold, however fast the container writes, and a rate rule alone never fires."""
from __future__ import annotations

from types import SimpleNamespace

from agent.launcher import logcopier
from agent.launcher.logcopier import COPIER_FULL_PIPES, LogCopiers


class Container:                            # hashable by identity, as the launcher's are
    def __init__(self):
        self.id, self.spec = "c1", object()


def copiers(monkeypatch, now):
    c = Container()
    launcher = SimpleNamespace(by_id={"c1": c})
    lc = LogCopiers(launcher, threshold=4 << 20)
    started = []
    monkeypatch.setattr(lc, "_start", lambda cont: started.append(cont) or True)
    monkeypatch.setattr(logcopier.time, "monotonic", lambda: now[0])
    return lc, c, started


def test_full_pipes_in_a_row_hand_over_whatever_the_rate(monkeypatch):
    now = [100.0]
    lc, c, started = copiers(monkeypatch, now)
    for i in range(COPIER_FULL_PIPES - 1):
        now[0] += 2.0                       # a slow launcher: 1 MiB every 2 s, far under 4 MiB/s
        assert lc.note(c, 1 << 20, full=True) is False
    now[0] += 2.0
    assert lc.note(c, 1 << 20, full=True) is True and started == [c]


def test_a_pipe_not_full_breaks_the_run_and_a_slow_writer_never_hands_over(monkeypatch):
    now = [100.0]
    lc, c, started = copiers(monkeypatch, now)
    for i in range(40):
        now[0] += 2.0
        full = i % COPIER_FULL_PIPES != 0   # never COPIER_FULL_PIPES in a row
        assert lc.note(c, 1 << 20, full=full) is False
    assert started == []


def test_the_rate_rule_still_holds(monkeypatch):
    now = [100.0]
    lc, c, started = copiers(monkeypatch, now)
    for _ in range(4):
        now[0] += 0.1
        assert lc.note(c, 1 << 20) is False
    now[0] += 0.1
    assert lc.note(c, 1) is True and started == [c]
