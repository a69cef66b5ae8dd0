"""A flooding container's log copy runs in the container's own cgroup
(agent/launcher/logcopier.py): a copier forked from the launcher, in the
host's PID namespace, invisible to and unkillable from the container; the
cap still holds and every byte is still counted; a quiet container gets none."""
from __future__ import annotations

import json
import os
import signal
import time

from agent import logfiles
from agent.launcher import LOG_NAME
from agent.launcher.logcopier import COPIER_COMM, COPIER_OOM_SCORE_ADJ, COPIER_THRESHOLD
from runtime.cgroupfs import find_mount
from helpers import ctl, start_agentd, stop_agentd, wait_for
from test_launcher import ctx, wait_exit, wait_gone  # noqa: F401  (the fixture)

CAP = 512 << 10
CAP_SYS_RESOURCE = 24


def _has_cap(pid: int, bit: int) -> bool:
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def copiers_in(cgroup: str) -> list[int]:
    out = []
    for pid in _read(os.path.join(cgroup, "cgroup.procs")).split():
        if _read(f"/proc/{pid}/comm").strip() == COPIER_COMM:
            out.append(int(pid))
    return out


def wait_copier(cgroup: str, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = copiers_in(cgroup)
        if found:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no log copier appeared in {cgroup}")


def produced(path: str) -> int:
    """logfiles.produced, asked again while a rotation is under way (None)."""
    deadline = time.monotonic() + 30
    while True:
        n = logfiles.produced(path)
        if n is not None:
            return n
        assert time.monotonic() < deadline, f"{path}: a rotation never finished"
        time.sleep(0.001)


def launcher_events(state_dir: str, event: str, cid: str) -> list[dict]:
    out = []
    for line in _read(os.path.join(state_dir, LOG_NAME)).splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == event and rec.get("id") == cid:
            out.append(rec)
    return out


def test_a_flood_is_copied_in_its_own_cgroup_outside_its_pid_namespace_and_the_cap_holds(ctx):
    """A `yes` flood gets a copier: its /proc/PID/cgroup is the container's
    cgroup, it is the launcher's child in the host's PID namespace (not the
    container's), the container's processes go first at OOM; while it copies,
    the log file and its rotated copy never pass the cap."""
    client = ctx.connect()
    path = os.path.join(ctx.state_dir, "flood.log")
    cid, pid = ctx.container(client, ["yes", "a-flood-paid-by-its-maker"], stdout=path, stderr=path,
                             log_max_bytes=CAP)
    cg = os.path.join(ctx.base, "containers", cid)
    copier = wait_copier(cg)
    rel = cg[len(find_mount()):]
    assert f"0::{rel}" in _read(f"/proc/{copier}/cgroup").splitlines()
    assert os.readlink(f"/proc/{copier}/ns/pid") == os.readlink("/proc/self/ns/pid")
    assert os.readlink(f"/proc/{copier}/ns/pid") != os.readlink(f"/proc/{pid}/ns/pid")
    assert os.readlink(f"/proc/{copier}/ns/mnt") != os.readlink(f"/proc/{pid}/ns/mnt")
    ppid = int(_read(f"/proc/{copier}/stat").rsplit(")", 1)[1].split()[1])
    assert ppid in ctx.launcher_pids()
    if _has_cap(ppid, CAP_SYS_RESOURCE):
        assert int(_read(f"/proc/{copier}/oom_score_adj")) == COPIER_OOM_SCORE_ADJ
    else:       # lowering it needs CAP_SYS_RESOURCE: the copier keeps the launcher's
        print("launcher without CAP_SYS_RESOURCE: copier oom_score_adj not lowered (checked equal to the launcher's)")
        assert _read(f"/proc/{copier}/oom_score_adj") == _read(f"/proc/{ppid}/oom_score_adj")
    assert launcher_events(ctx.state_dir, "log.copier_started", cid)
    before = produced(path)
    samples, deadline = 0, time.monotonic() + 120
    while samples < 300 or produced(path) < before + 8 * CAP:
        assert time.monotonic() < deadline, "the flood stopped being copied"
        for p in (path, path + ".1"):
            try:
                assert os.path.getsize(p) <= CAP, f"{p} passed the cap"
            except FileNotFoundError:
                pass
        samples += 1
    assert copiers_in(cg) == [copier]             # the copier did that, not the launcher
    client.signal(pid, signal.SIGKILL)
    rec = wait_exit(client, cid, pid)
    assert rec.signal == signal.SIGKILL
    assert wait_gone(copier)
    assert copiers_in(cg) == []
    ended = launcher_events(ctx.state_dir, "log.copier_ended", cid)
    assert ended and ended[0]["bytes"] >= 8 * CAP


def test_log_bytes_stay_exact_with_a_copier_and_rotation(ctx):
    """head -c N through a copier, with a small cap: the bytes counted
    (kept + rotated away) are exactly N, whole lines in order."""
    client = ctx.connect()
    total = (48 << 20) | 12345
    path = os.path.join(ctx.state_dir, "exact.log")
    cid, pid = ctx.container(client, ["/bin/sh", "-c", f"yes exact-count | head -c {total}"],
                             stdout=path, stderr=path, log_max_bytes=CAP)
    rec = wait_exit(client, cid, pid)
    assert rec.exit_code == 0
    assert launcher_events(ctx.state_dir, "log.copier_started", cid), "the flood never reached a copier"
    assert logfiles.produced(path) == total
    assert os.path.getsize(path) <= CAP and os.path.getsize(path + ".1") <= CAP
    with open(path + ".1", "rb") as f:
        assert set(f.read().split(b"\n")[1:-1]) == {b"exact-count"}



def test_a_killed_copier_loses_no_byte_and_is_not_replaced(ctx):
    """SIGKILL the copier mid-flood (what the OOM killer would do): the
    launcher, which kept a read end of the pipe, reopens the files and copies
    the rest; every byte is counted; no second copier is forked (a container
    cannot make the launcher fork one again and again)."""
    client = ctx.connect()
    total = (64 << 20) | 777
    path = os.path.join(ctx.state_dir, "lost.log")
    # paced (1 MiB per 50 ms, far above the threshold): the flood outlasts the
    # poll that finds its copier, so the kill lands mid-flood
    flood = ("i=0; while [ $i -lt 64 ]; do yes copier-killed | head -c 1048576; i=$((i+1)); sleep 0.05; done; "
             "yes copier-killed | head -c 777")
    cid, pid = ctx.container(client, ["/bin/sh", "-c", flood], stdout=path, stderr=path, log_max_bytes=CAP)
    cg = os.path.join(ctx.base, "containers", cid)
    copier = wait_copier(cg)
    deadline = time.monotonic() + 60
    while produced(path) < 8 << 20:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(copier, signal.SIGKILL)
    rec = wait_exit(client, cid, pid)
    assert rec.exit_code == 0
    assert produced(path) == total
    assert len(launcher_events(ctx.state_dir, "log.copier_started", cid)) == 1
    assert launcher_events(ctx.state_dir, "log.copier_lost", cid)
    assert os.path.getsize(path) <= CAP and os.path.getsize(path + ".1") <= CAP

def test_a_quiet_container_has_no_copier(ctx):
    """A container logging far less than the threshold is copied by the
    launcher: no copier ever in its cgroup nor in the launcher's log; its
    bytes are counted all the same."""
    client = ctx.connect()
    path = os.path.join(ctx.state_dir, "quiet.log")
    line = "a quiet line of a quiet container\n"
    n = 200
    cid, pid = ctx.container(client, ["/bin/sh", "-c", f"for i in $(seq {n}); do echo '{line.strip()}'; "
                                      "sleep 0.005; done"], stdout=path, stderr=path)
    cg = os.path.join(ctx.base, "containers", cid)
    while True:
        procs = _read(os.path.join(cg, "cgroup.procs")).split()
        if not procs:
            break
        assert copiers_in(cg) == [], "a quiet container got a copier"
        if os.path.getsize(path) >= n * len(line):
            break
    wait_exit(client, cid, pid)
    assert n * len(line) < COPIER_THRESHOLD
    assert launcher_events(ctx.state_dir, "log.copier_started", cid) == []
    assert logfiles.produced(path) == n * len(line)


def test_the_container_cannot_see_or_kill_its_copier(ctx, tmp_path):
    """From inside the flooding container: its /proc lists no copier, and
    kill -9 of the copier's host pid finds no such process; the copier lives on."""
    client = ctx.connect()
    box = tmp_path / "box"
    box.mkdir()
    path = os.path.join(ctx.state_dir, "seen.log")
    script = (f"yes seen-from-inside & "
              f"while :; do cat /proc/[0-9]*/comm > {box}/seen.tmp 2>/dev/null; mv {box}/seen.tmp {box}/seen; "
              f"if [ -e {box}/target ]; then kill -9 $(cat {box}/target) 2>{box}/kill.err; echo $? > {box}/kill.tmp; "
              f"mv {box}/kill.tmp {box}/kill; fi; sleep 0.05; done")
    cid, pid = ctx.container(client, ["/bin/sh", "-c", script], stdout=path, stderr=path, log_max_bytes=CAP)
    cg = os.path.join(ctx.base, "containers", cid)
    copier = wait_copier(cg)
    (box / "seen").unlink(missing_ok=True)
    (box / "target").write_text(f"{copier}\n")
    deadline = time.monotonic() + 60
    while not ((box / "seen").exists() and (box / "kill").exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    seen = (box / "seen").read_text().split()
    assert "yes" in seen and "sh" in seen            # the container's own processes are listed
    assert COPIER_COMM not in seen
    assert (box / "kill").read_text().strip() != "0", "kill -9 of the copier succeeded from inside"
    assert copiers_in(cg) == [copier] and not wait_gone(copier, 0.5)
    client.signal(pid, signal.SIGKILL)
    wait_exit(client, cid, pid)
    assert wait_gone(copier)



def test_freezing_a_flood_freezes_its_copier_and_thaw_resumes_the_copy(ctx):
    """cgroup.freeze with a copier inside: the cgroup reaches frozen (the
    kernel says frozen only when every task in it is, the copier included),
    the log stands still, and after thawing the same copier goes on copying."""
    client = ctx.connect()
    path = os.path.join(ctx.state_dir, "frozen.log")
    cid, pid = ctx.container(client, ["yes", "frozen-flood"], stdout=path, stderr=path, log_max_bytes=CAP)
    cg = os.path.join(ctx.base, "containers", cid)
    copier = wait_copier(cg)
    with open(os.path.join(cg, "cgroup.freeze"), "w") as f:
        f.write("1")
    deadline = time.monotonic() + 60
    while "frozen 1" not in _read(os.path.join(cg, "cgroup.events")).splitlines():
        assert time.monotonic() < deadline, "the cgroup with its copier never froze"
        time.sleep(0.05)
    assert copiers_in(cg) == [copier]
    still = logfiles.produced(path)           # None if frozen inside a rotation: then it stays None
    time.sleep(0.3)
    assert logfiles.produced(path) == still
    with open(os.path.join(cg, "cgroup.freeze"), "w") as f:
        f.write("0")
    deadline = time.monotonic() + 60
    while produced(path) <= (still or 0) + 4 * CAP:
        assert time.monotonic() < deadline, "the copy did not resume after thaw"
        time.sleep(0.05)
    assert copiers_in(cg) == [copier]
    client.signal(pid, signal.SIGKILL)
    wait_exit(client, cid, pid)
    assert wait_gone(copier)

def test_through_agentd_a_flood_is_copied_in_its_cgroup_and_its_records_carry_every_byte(cgroup, tmp_path):
    """agentd, its launcher and a real `yes | head -c N` container with a
    small [logs] max_bytes: a copier took the flood, and the container's
    records sum to exactly N log bytes."""
    total = (24 << 20) | 4321
    d = start_agentd(cgroup, str(tmp_path), 'host = "e2e"\n[billing]\nperiod = "1s"\n[logs]\nmax_bytes = "256K"')
    try:
        r = ctl(d, "run", "-d", "--name", "flood", "--", "/bin/sh", "-c", f"yes billed-flood | head -c {total}")
        assert r.returncode == 0, r.stderr
        cid = r.stdout.strip()
        ctl(d, "wait", "flood", timeout=300)
        wait_for(lambda: json.loads(ctl(d, "inspect", "flood").stdout).get("state") == "exited",
                 what="the flood to exit")
        assert launcher_events(os.path.join(d.top, "state"), "log.copier_started", cid), \
            "the flood never reached a copier"
        assert ctl(d, "rm", "flood").returncode == 0
        r = ctl(d, "usage", "--format", "jsonl")
        assert r.returncode == 0, r.stderr
        recs = [json.loads(line) for line in r.stdout.splitlines()]
        assert recs and {r["name"] for r in recs} == {"flood"}
        assert sum(r["log_bytes"] for r in recs) == total
    finally:
        stop_agentd(d)


def test_top_shows_the_copier_by_its_name_not_the_launchers_command_line(cgroup, tmp_path):
    """agentctl top of a flooding container lists its copier (it is in the
    cgroup and billed to it) as the log copy, not as a second launcher."""
    from agent.cli.client import Client

    d = start_agentd(cgroup, str(tmp_path), '[logs]\nmax_bytes = "256K"')
    try:
        r = ctl(d, "run", "-d", "--name", "flood", "--", "/bin/sh", "-c", "yes billed-flood")
        assert r.returncode == 0, r.stderr
        cid = r.stdout.strip()
        wait_for(lambda: launcher_events(os.path.join(d.top, "state"), "log.copier_started", cid), 120,
                 "the flood to reach a copier")
        client, seen = Client(d.sock), []

        def listed():
            # a copier not born in the cgroup (fork, no clone3) joins it just after the event
            commands = [" ".join(p["command"]) for p in client.call("GET", "/v1/containers/flood/top")["processes"]]
            seen.append(commands)
            assert not any("agent.launcher" in c for c in commands), commands
            return any(c.startswith("[cga-logcopy") for c in commands)

        wait_for(listed, 60, "top to list the copier")
        commands = seen[-1]
        assert any(c == "yes billed-flood" for c in commands), commands
        ctl(d, "rm", "-f", "flood")
    finally:
        stop_agentd(d)
