"""A log copier killed between a rotation's rename and its sidecar update
(agent/launcher/logcopier.py: recall and cgroup.kill use SIGKILL) leaves the
sidecar describing the renamed file: the next LogSink counts it, so
log_bytes never go back. Real files."""
from __future__ import annotations

import os

from agent import logfiles
from agent.launcher.logsink import LogSink


def test_a_rotation_cut_after_the_rename_is_counted_on_reopen(tmp_path):
    path = str(tmp_path / "out.log")
    sink = LogSink(path, 1000)
    sink.write(b"x" * 2500)                 # two rotations: 2000 rotated away, 500 kept
    assert logfiles.produced(path) == 2500
    sink.write(b"y" * 500)                  # the file is full: the next byte rotates
    sink.close()
    os.replace(path, path + ".1")           # what rotate() does first; killed before _open
    assert logfiles.produced(path) is None
    again = LogSink(path, 1000)             # the launcher taking the pipes back
    assert logfiles.produced(path) == 3000
    again.write(b"z" * 10)
    again.close()
    assert logfiles.produced(path) == 3010


def test_an_unrelated_sidecar_is_not_taken_for_a_rotation(tmp_path):
    path = str(tmp_path / "out.log")
    sink = LogSink(path, 1000)
    sink.write(b"x" * 1500)
    sink.close()
    os.unlink(path)                         # the log was removed, not rotated
    LogSink(path, 1000).close()
    assert logfiles.produced(path) == 0


def test_mid_rotation_the_count_is_unknown_not_zero(tmp_path):
    """Between a rotation's rename and the new file's creation the log file
    is missing: produced() says None (try again), never 0, which the ledger
    would take for a counter reset and bill everything again (seen: a 24 MiB
    flood with a 256 KiB cap billed 40 MiB of log_bytes)."""
    path = str(tmp_path / "out.log")
    sink = LogSink(path, 1000)
    sink.write(b"x" * 2500)
    sink.close()
    os.replace(path, path + ".1")           # the window inside rotate()
    assert logfiles.produced(path) is None
    assert logfiles.produced(str(tmp_path / "never.log")) == 0
