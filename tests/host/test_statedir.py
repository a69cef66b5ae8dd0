"""The state dir with real agentds: one agentd per state dir (an flock taken
before anything is adopted), and its files kept from other users (a state dir
created 0755 by hand is tightened; new files are created private)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from helpers import Agentd, free_port, wait_for


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def agentd(cgroup, tmp_path):
    a = Agentd(cgroup, tmp_path)
    yield a
    a.stop()


def test_second_agentd_on_the_same_state_dir_exits_1_naming_the_holder(agentd, tmp_path):
    agentd.start()
    agentd.run("kept", "while :; do sleep 1; done")
    second_sock = str(tmp_path / "second.sock")
    args = [sys.executable, "-m", "agent.daemon", "--state-dir", agentd.state,
            "--cgroup-root", agentd.root.path, "--socket", second_sock,
            "--metrics-listen", f"127.0.0.1:{free_port()}"]
    second = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        out, _ = second.communicate(timeout=120)
    except subprocess.TimeoutExpired:      # it started serving beside the first: the bug
        second.kill()
        out, _ = second.communicate()
        pytest.fail("a second agentd kept running on the same state dir:\n" + out.decode(errors="replace"))
    text = out.decode(errors="replace")
    assert second.returncode == 1, text
    lines = [line for line in text.splitlines() if "in use by another agentd" in line]
    assert len(lines) == 1, text
    assert f"pid {agentd.proc.pid} holds" in lines[0]
    assert not os.path.exists(second_sock)            # it never served
    # the first one is untouched and still owns its container
    assert agentd.proc.poll() is None
    assert agentd.inspect("kept")["state"] == "running"
    # and once the first is gone, an agentd starts there again (the lock is not stale)
    agentd.stop()
    agentd.start()
    assert agentd.inspect("kept")["state"] == "running"


def test_existing_world_readable_state_dir_is_tightened(agentd):
    state = agentd.state
    os.makedirs(os.path.join(state, "logs", "old"))
    os.chmod(state, 0o755)
    os.chmod(os.path.join(state, "logs"), 0o755)
    os.chmod(os.path.join(state, "logs", "old"), 0o755)
    for rel in ("state.db", "notes.txt", "logs/old/stdout.log"):
        fd = os.open(os.path.join(state, rel), os.O_CREAT | os.O_WRONLY, 0o644)
        os.close(fd)
        os.chmod(os.path.join(state, rel), 0o644)
    os.chmod(os.path.join(state, "notes.txt"), 0o2664)       # setgid and group-write go too
    agentd.start()
    # a secret in a container's environment is what state.db holds
    agentd.run("secret", "sleep 1000", env={"TOKEN": "s3cret"})
    agentd.stop()          # SIGKILL: the -wal/-shm files are still there
    assert mode(state) == 0o750
    assert mode(os.path.join(state, "logs")) == 0o750
    assert mode(os.path.join(state, "logs", "old")) == 0o750
    assert mode(os.path.join(state, "logs", "old", "stdout.log")) == 0o640
    assert mode(os.path.join(state, "notes.txt")) == 0o600
    names = os.listdir(state)
    for name in ("state.db", "state.db-wal", "state.db-shm", "ledger.db", "launcher.log", "agentd.lock"):
        assert name in names, names
        assert mode(os.path.join(state, name)) == 0o600, name
    for name in names:
        if name.startswith("ledger.db"):
            assert mode(os.path.join(state, name)) == 0o600, name
    assert mode(os.path.join(state, "launcher.sock")) & 0o007 == 0
    for dirpath, dirnames, filenames in os.walk(state):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            assert stat.S_IMODE(st.st_mode) & 0o007 == 0, os.path.join(dirpath, name)


def test_new_state_dir_files_are_private_under_a_permissive_umask(agentd):
    old = os.umask(0o002)      # agentd inherits it
    try:
        agentd.start()
    finally:
        os.umask(old)
    c = agentd.run("logger", "echo hello; sleep 1000")
    logdir = os.path.join(agentd.state, "logs", c["id"])
    wait_for(lambda: os.path.exists(os.path.join(logdir, "stdout.log")), what="the container's log")
    assert mode(agentd.state) == 0o750
    for name in ("state.db", "ledger.db", "launcher.log", "launcher.lock", "agentd.lock"):
        assert mode(os.path.join(agentd.state, name)) == 0o600, name
    assert mode(os.path.join(logdir, "stdout.log")) == 0o640
