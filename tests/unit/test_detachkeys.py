"""The detach keys of attached sessions with a terminal: Docker's syntax,
and the scanner that finds them in what is typed (agent/cli/detachkeys.py)."""
from __future__ import annotations

import pytest

from agent.cli.detachkeys import DEFAULT, Scanner, parse


def test_docker_syntax():
    assert parse(DEFAULT) == b"\x10\x11"
    assert parse("ctrl-a,X,ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_,ctrl-Z") == b"\x01X\x00\x1b\x1c\x1d\x1e\x1f\x1a"
    for bad in ("", "ctrl-1", "ctrl-", "ab", "ctrl-p,,ctrl-q", "é", "ctrl-pp"):
        with pytest.raises(ValueError) as e:
            parse(bad)
        assert "\n" not in str(e.value) and "ctrl-p,ctrl-q" in str(e.value)


def test_scanner_holds_a_prefix_and_detaches_on_the_whole_sequence():
    s = Scanner(b"\x10\x11")
    assert s.feed(b"ab\x10") == (b"ab", False)     # held: it may be the start
    assert s.feed(b"\x11rest") == (b"", True)       # the sequence: nothing of it is forwarded
    s = Scanner(b"\x10\x11")
    assert s.feed(b"\x10x") == (b"\x10x", False)   # not the sequence after all: forwarded as typed
    assert s.feed(b"\x10\x10") == (b"\x10", False)  # the second may start it again
    assert s.feed(b"\x11") == (b"", True)
    s = Scanner(b"q")
    assert s.feed(b"abq") == (b"ab", True)
