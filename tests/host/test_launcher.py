"""The launcher process itself: detached, single-threaded, one per state dir,
survives its clients, keeps exit records durably until acknowledged,
leaves no zombies, answers bad requests without dying; the client is
thread-safe and reports a lost connection."""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid

import pytest

from agent.launcher import (ExitRecord, LauncherClient, LauncherError, LauncherGone,
                            SOCKET_NAME)
from runtime.cgroupfs import find_mount
from helpers import kill_tree, wait_exit, zombie_children

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.01)
    return False


class Ctx:
    def __init__(self, base, state_dir):
        self.base, self.state_dir = base, state_dir
        self.launcher_cg = os.path.join(base, "launcher")
        self.clients = []

    def connect(self) -> LauncherClient:
        c = LauncherClient.connect_or_start(self.state_dir, self.launcher_cg)
        self.clients.append(c)
        return c

    def container(self, client, argv, **kw) -> tuple[str, int]:
        cid = "t" + uuid.uuid4().hex[:11]
        cg = os.path.join(self.base, "containers", cid)
        os.mkdir(cg)
        spec = {"argv": argv, "env": {"PATH": PATH}, "cgroup": cg,
                "stdout": os.path.join(self.state_dir, cid + ".log"),
                "stderr": os.path.join(self.state_dir, cid + ".log")}
        spec.update(kw)
        return cid, client.spawn(cid, spec)

    def launcher_pids(self) -> list[int]:
        try:
            with open(os.path.join(self.launcher_cg, "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        except FileNotFoundError:
            return []


@pytest.fixture
def ctx(tmp_path):
    base = os.path.join(find_mount(), f"cga-test-{uuid.uuid4().hex[:10]}")
    os.makedirs(os.path.join(base, "containers"))
    c = Ctx(base, str(tmp_path))
    try:
        yield c
    finally:
        for cl in c.clients:
            cl.close()
        pids = c.launcher_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in pids:
            wait_gone(pid)
        kill_tree(base)


def status_field(pid: int, field: str) -> str:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
    raise KeyError(field)


# ------------------------------------------------------------------ the process

def test_launcher_is_detached_single_threaded_in_its_cgroup(ctx):
    client = ctx.connect()
    pid = client.ping()["pid"]
    assert ctx.launcher_pids() == [pid]
    assert status_field(pid, "Threads") == "1"
    assert os.getsid(pid) == pid                      # own session
    assert int(status_field(pid, "PPid")) != os.getpid()   # double-forked away from us
    for fd in (0, 1, 2):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
    sock = os.path.join(ctx.state_dir, SOCKET_NAME)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    with open(os.path.join(ctx.state_dir, "launcher.log")) as f:
        assert json.loads(f.readline())["event"] == "launcher.serving"


def test_one_launcher_per_state_dir_even_when_started_concurrently(ctx):
    results, errors = [], []

    def start():
        try:
            results.append(ctx.connect().ping()["pid"])
        except Exception as e:      # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(results)) == 1
    assert ctx.launcher_pids() == results[:1]


def test_start_failure_is_one_clear_line(tmp_path):
    with pytest.raises(LauncherError) as e:
        LauncherClient.connect_or_start(str(tmp_path), "/proc/cga-no-such-cgroup/launcher")
    assert str(e.value).startswith("launcher: join cgroup /proc/cga-no-such-cgroup/launcher: ")
    assert "\n" not in str(e.value)
    assert not os.path.exists(tmp_path / SOCKET_NAME)


# ------------------------------------------------------------------ surviving clients

CLIENT_SCRIPT = r"""
import sys
sys.path.insert(0, {repo!r})
from agent.launcher import LauncherClient
c = LauncherClient.connect_or_start({sd!r}, {cg!r})
spec = {{"argv": ["sleep", "1000"], "env": {{"PATH": {path!r}}}, "cgroup": {ccg!r},
        "stdout": {sd!r} + "/x.log", "stderr": {sd!r} + "/x.log"}}
print(c.spawn("victim", spec), c.ping()["pid"], flush=True)
import time
time.sleep(1000)
"""


def test_sigkilled_client_then_reconnect_finds_the_container(ctx):
    ccg = os.path.join(ctx.base, "containers", "victim")
    os.mkdir(ccg)
    script = CLIENT_SCRIPT.format(repo=REPO, sd=ctx.state_dir, cg=ctx.launcher_cg, path=PATH, ccg=ccg)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        pid, lpid = (int(x) for x in line.split())
    finally:
        proc.kill()
        proc.wait()
    client = ctx.connect()
    assert client.ping()["pid"] == lpid
    assert client.running() == {"victim": pid}
    client.signal(pid, signal.SIGKILL)
    rec = wait_exit(client, "victim", pid)
    assert rec.signal == signal.SIGKILL


def test_exit_records_survive_without_client_and_launcher_restart(ctx):
    client = ctx.connect()
    lpid = client.ping()["pid"]
    cid, pid = ctx.container(client, ["sh", "-c", "read x"])     # stdin is /dev/null: EOF, exit 1
    cid2, pid2 = ctx.container(client, ["sleep", "1000"])
    client.close()
    os.kill(pid2, signal.SIGKILL)          # dies while nobody is connected
    record = os.path.join(ctx.state_dir, "exits", f"{cid2}-{pid2}.json")
    deadline = time.monotonic() + 30
    while not os.path.exists(record) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.path.exists(record)
    # the launcher goes away and comes back: the records are on disk
    os.kill(lpid, signal.SIGTERM)
    assert wait_gone(lpid)
    client = ctx.connect()
    assert client.ping()["pid"] != lpid
    recs = {(r.id, r.pid): r for r in client.exits()}
    assert recs[(cid2, pid2)].signal == signal.SIGKILL
    assert recs[(cid2, pid2)].exit_code == 137
    assert recs[(cid, pid)].exit_code == 1 and recs[(cid, pid)].signal is None
    assert client.ack(cid2, pid2) is True
    assert client.ack(cid2, pid2) is False
    assert not os.path.exists(record)
    assert [(r.id, r.pid) for r in client.exits()] == [(cid, pid)]


def test_exit_event_is_pushed_and_fileno_becomes_readable(ctx):
    client = ctx.connect()
    cid, pid = ctx.container(client, ["sh", "-c", "exit 5"])
    deadline = time.monotonic() + 30
    events = []
    while not events and time.monotonic() < deadline:
        r, _, _ = select.select([client.fileno()], [], [], 1)
        if r:
            events = [e for e in client.read_events() if e.get("event") == "exit"]
    assert len(events) == 1
    ev = events[0]
    assert (ev["id"], ev["pid"], ev["exit_code"], ev["signal"]) == (cid, pid, 5, None)
    assert isinstance(ev["at"], float)
    # the durable record was written before the event was pushed
    assert ExitRecord(**{k: ev[k] for k in ExitRecord._fields}) in client.exits()


def test_lost_connection_is_reported(ctx):
    client = ctx.connect()
    lpid = client.ping()["pid"]
    client.shutdown()
    assert wait_gone(lpid)
    r, _, _ = select.select([client.fileno()], [], [], 10)
    assert r and {"event": "disconnected"} in client.read_events()
    with pytest.raises(LauncherGone):
        client.ping()


# ------------------------------------------------------------------ reaping

def test_no_zombies_after_container_and_its_children_die(ctx):
    client = ctx.connect()
    lpid = client.ping()["pid"]
    cid, pid = ctx.container(client, ["sh", "-c", "sleep 1000 & sleep 1000 & exec sleep 1000"])
    assert zombie_children(lpid) == []               # the intermediate was reaped
    cg = os.path.join(ctx.base, "containers", cid)
    for _ in range(1000):                            # the two sleeps are forked
        with open(os.path.join(cg, "cgroup.procs")) as f:
            if len(f.read().split()) == 3:
                break
        time.sleep(0.01)
    client.signal(pid, signal.SIGKILL)
    rec = wait_exit(client, cid, pid)
    assert rec.signal == signal.SIGKILL
    with open(os.path.join(cg, "cgroup.procs")) as f:
        assert f.read() == ""                        # the PID namespace took the rest along
    assert zombie_children(lpid) == []


# ------------------------------------------------------------------ protocol robustness

def raw_exchange(state_dir: str, payload: bytes) -> list[dict]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(os.path.join(state_dir, SOCKET_NAME))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


def test_bad_requests_get_errors_and_the_launcher_lives_on(ctx):
    client = ctx.connect()
    answers = raw_exchange(ctx.state_dir, b'not json\n[1]\n{"seq": 5, "op": "fly"}\n'
                                          b'{"seq": 6, "op": "spawn", "id": "x", "spec": 3}\n'
                                          b'{"seq": 7, "op": "signal", "pid": "1", "signum": 9}\n'
                                          b'{"seq": 8, "op": "ack", "id": "../../etc/passwd", "pid": 1}\n')
    assert [a["ok"] for a in answers] == [False] * 6
    assert answers[2]["seq"] == 5 and answers[2]["error"].startswith("op: unknown 'fly'")
    assert answers[3]["error"] == "spec: must be a JSON object"
    assert answers[4]["error"].startswith("pid, signum")
    assert answers[5]["error"].startswith("id: ")
    assert os.path.exists("/etc/passwd")
    assert client.ping()["containers"] == 0


def test_client_is_thread_safe(ctx):
    client = ctx.connect()
    lpid = client.ping()["pid"]
    errors, spawned = [], []

    def pinger():
        try:
            for _ in range(30):
                assert client.ping()["pid"] == lpid
                assert isinstance(client.running(), dict)
        except Exception as e:      # noqa: BLE001
            errors.append(e)

    def spawner():
        try:
            for _ in range(4):
                spawned.append(ctx.container(client, ["true"]))
        except Exception as e:      # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=pinger) for _ in range(6)] + [threading.Thread(target=spawner)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(spawned) == 4
    for cid, pid in spawned:
        assert wait_exit(client, cid, pid).exit_code == 0


def test_launcher_raises_its_fd_limit_but_containers_keep_the_callers(ctx):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(1000, hard - 1)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        client = ctx.connect()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    lpid = client.ping()["pid"]
    with open(f"/proc/{lpid}/limits") as f:
        line = next(x for x in f if x.startswith("Max open files"))
    assert line.split()[3:5] == [str(hard), str(hard)]
    cid, pid = ctx.container(client, ["sh", "-c", "ulimit -n"])
    wait_exit(client, cid, pid)
    with open(os.path.join(ctx.state_dir, cid + ".log")) as f:
        assert f.read() == f"{low}\n"


def test_a_log_flood_is_capped_and_every_byte_counted(ctx):
    """A container floods its stdout (the launcher splices it): the log file
    and its one rotated copy never pass log_max_bytes, so a flood cannot fill
    the disk, and agent.logfiles counts every byte produced, kept or rotated
    away, across a restart of the container on the same file."""
    from agent import logfiles
    client = ctx.connect()
    cap = 1 << 20
    total = 40 << 20 | 12345                    # not a multiple of the cap or of a pipe
    path = os.path.join(ctx.state_dir, "flood.log")
    for run in (1, 2):
        cid, pid = ctx.container(client, ["/bin/sh", "-c", f"yes flooding | head -c {total}"],
                                 stdout=path, stderr=path, log_max_bytes=cap)
        rec = wait_exit(client, cid, pid)
        assert rec.exit_code == 0
        assert os.path.getsize(path) <= cap and os.path.getsize(path + ".1") <= cap
        assert logfiles.produced(path) == run * total
    with open(path + ".1", "rb") as f:
        data = f.read()
    assert set(data.split(b"\n")[1:-1]) == {b"flooding"}     # whole lines, in order, nothing torn
