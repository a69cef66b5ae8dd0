"""The control API under attack, against a real agentd (issue 11, items 1, 6, 7).

- After a real SIGHUP a real process inside a container (on the host root,
  uid 0, reaching the socket by path) still gets 403 for reads and writes.
- A label value that is not text (a lone surrogate, valid JSON) is refused at
  creation; one already in the state (written by an older agentd) costs its
  own series only: /metrics still answers 200 for everything else.
- 500 idle connections from an unprivileged host user and from inside a
  container: agentd's thread count (/proc/PID/status) stays bounded, the
  refusals are counted, and `agentctl ps` as root still answers.
- A client trickling its headers is answered 408 and let go.

agentd runs as a separate process with its own state dir, socket, cgroup root
(removed with everything in it afterwards) and metrics port (loopback).
"""
from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import urllib.request
import uuid
from types import SimpleNamespace

import pytest

from agent.cli.client import Client
from helpers import free_port, kill_tree, wait_for

AGENTCTL = [sys.executable, "-m", "agent.cli"]


class Agentd:
    def __init__(self, agent_toml: str = "", extra_toml: str = ""):
        from runtime.cgroupfs import Cgroup, find_mount

        self.root = Cgroup(os.path.join(find_mount(), f"cga-test-{uuid.uuid4().hex[:10]}"))
        os.mkdir(self.root.path)
        self.top = tempfile.mkdtemp(prefix="cga-lim-")
        os.chmod(self.top, 0o755)  # unprivileged users must reach the socket
        self.sock = os.path.join(self.top, "agent.sock")
        self.port = free_port()
        self.conf = os.path.join(self.top, "agentd.toml")
        with open(self.conf, "w") as f:
            f.write(f'[agent]\nstate_dir = "{self.top}/state"\ncgroup_root = "{self.root.path}"\n'
                    f'socket = "{self.sock}"\nmetrics_listen = "127.0.0.1:{self.port}"\nlog_level = "debug"\n'
                    f'{agent_toml}\n{extra_toml}\n')
        self.log_path = os.path.join(self.top, "agentd.log")
        self.proc = None
        self.client = Client(self.sock, timeout=30)

    def start(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "agent.daemon", "--config", self.conf],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"agentd exited {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                return self.client.call("GET", "/v1/health")["status"] == "ok"
            except Exception:  # noqa: BLE001 - not listening yet
                return False
        wait_for(up, what="agentd to serve")

    def stop(self, sig=signal.SIGTERM):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def close(self):
        self.stop(signal.SIGKILL)
        kill_tree(self.root)
        shutil.rmtree(self.top, ignore_errors=True)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def events(self, name: str) -> list[dict]:
        out = []
        for line in self.log().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("event") == name:
                out.append(doc)
        return out

    def ctl(self, *args, timeout=120):
        env = dict(os.environ)
        env.pop("AGENT_SOCKET", None)
        return subprocess.run([*AGENTCTL, "--socket", self.sock, *args], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, env=env)

    def threads(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(re.search(r"^Threads:\s+(\d+)", f.read(), re.M).group(1))

    def scrape(self) -> tuple[int, str]:
        def once():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=30) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode(errors="replace")
            except urllib.error.URLError as e:  # /metrics starts listening just after the socket
                if isinstance(e.reason, ConnectionRefusedError):
                    return None
                raise
        return wait_for(once, what="/metrics to answer")

    def metric(self, series: str) -> float | None:
        status, text = self.scrape()
        assert status == 200, text[:500]
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.rsplit(" ", 1)[1])
        return None


def uname(prefix="t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- 1: the in-container guard survives a reload ---------------------------------------------

# Runs inside a container (host root, uid 0): stdlib only, raw HTTP on the socket path.
IN_CONTAINER = r"""
import json, socket, sys
path, escape = sys.argv[1], sys.argv[2]
def req(method, target, body=b""):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(60)
    s.connect(path)
    s.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    return [int(head.split()[1]), payload.decode(errors="replace")]
print(json.dumps({"uid": __import__("os").getuid(),
                  "health": req("GET", "/v1/health"),
                  "create": req("POST", "/v1/containers", json.dumps({"name": escape, "argv": ["/bin/true"]}).encode()),
                  "list": req("GET", "/v1/containers")}))
"""


def _probe_from_inside(d: Agentd) -> dict:
    escape = uname("escape")
    r = d.ctl("run", "--rm", "--name", uname("inside"), "--", sys.executable, "-c", IN_CONTAINER, d.sock, escape)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["escape"] = escape
    return out


def _assert_refused(d: Agentd, out: dict):
    assert out["uid"] == 0
    for what in ("health", "create", "list"):
        status, body = out[what]
        assert status == 403, (what, out)
        assert "processes inside the agent's containers have no access" in json.loads(body)["error"], out
    names = {c["name"] for c in d.client.call("GET", "/v1/containers", {"all": "1"})}
    assert out["escape"] not in names


def test_a_container_gets_403_before_and_after_a_real_sighup_reload():
    d = Agentd()
    try:
        d.start()
        _assert_refused(d, _probe_from_inside(d))
        with open(d.conf, "a") as f:  # a real change, applied live
            f.write('\n[security]\nallow_sensitive_binds = false\n')
        d.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: d.events("config.reloaded"), what="agentd to log config.reloaded")
        d.proc.send_signal(signal.SIGHUP)  # and once more: nothing may wear off with repetition
        wait_for(lambda: len(d.events("config.reloaded")) >= 2, what="the second reload")
        _assert_refused(d, _probe_from_inside(d))
        # the host's root still has admin on the same socket
        assert d.client.call("GET", "/v1/health")["access"] == "admin"
    finally:
        d.close()


# -- 6: label values that cannot be rendered -------------------------------------------------


def _raw_create(sock: str, body: bytes) -> tuple[int, dict]:
    r = Client(sock, timeout=30).request("POST", "/v1/containers", body=body)
    return r.status, r.json()


def test_a_lone_surrogate_label_is_refused_and_an_old_one_never_breaks_the_scrape():
    d = Agentd(extra_toml='[collector]\ninterval = "200ms"\nlabel_allowlist = ["team", "app.kubernetes.io/name"]\n')
    try:
        d.start()
        assert d.metric("cgroup_agent_metrics_series_dropped_total") == 0  # exported at 0 from the start
        bad = uname("bad")
        for body in (b'{"name": "%s", "argv": ["sleep", "600"], "labels": {"team": "x\\ud800y"}}' % bad.encode(),
                     b'{"name": "%s", "argv": ["sleep", "600"], "labels": ["team=\\udfff"]}' % bad.encode()):
            status, doc = _raw_create(d.sock, body)
            assert status == 400, doc
            assert "team" in doc["error"] and "surrogate" in doc["error"] and "\n" not in doc["error"], doc
        assert bad not in {c["name"] for c in d.client.call("GET", "/v1/containers", {"all": "1"})}

        good = d.client.call("POST", "/v1/containers", body={"name": "good", "argv": ["sleep", "600"],
                                                              "labels": {"team": "pay"}})
        victim = d.client.call("POST", "/v1/containers", body={"name": "victim", "argv": ["sleep", "600"],
                                                                "labels": {"team": "ops"}})
        wait_for(lambda: 'name="victim"' in d.scrape()[1], what="both containers in /metrics")

        # A state written before the fix: the label went in unchecked. agentd restarts on it.
        d.stop()
        db = sqlite3.connect(os.path.join(d.top, "state", "state.db"))
        (spec,) = db.execute("SELECT spec FROM containers WHERE id = ?", (victim["id"],)).fetchone()
        spec = json.loads(spec)
        spec["labels"]["team"] = "\ud800"
        db.execute("UPDATE containers SET spec = ? WHERE id = ?", (json.dumps(spec), victim["id"]))
        db.commit()
        db.close()
        d.start()
        assert d.client.call("GET", "/v1/containers/victim")["labels"] == {"team": "\ud800"}

        def scraped():
            status, text = d.scrape()
            assert status == 200, text[:300]  # the whole host's scrape never fails for one container
            return text if 'name="good"' in text and "container_last_seen" in text else None
        text = wait_for(scraped, what="a scrape with the good container")
        assert 'container_label_team="pay"' in text
        assert 'name="victim"' not in text  # its series are left out, not mangled
        # counted (shown from the next snapshot's scrape on) and logged
        wait_for(lambda: (d.metric("cgroup_agent_metrics_series_dropped_total") or 0) > 0, what="the drop counted")
        assert d.events("metrics.series_dropped")
        assert good["id"]
    finally:
        d.close()


@pytest.mark.parametrize("keys,needle", [
    ('["team.x", "team-x"]', '"team.x" and "team-x" both become container_label_team_x'),
    ('["team", "team"]', '"team" is listed twice'),
    ('["bad key"]', '"bad key" is not a label key'),
])
def test_check_and_start_refuse_allowlisted_keys_that_collide(tmp_path, keys, needle):
    conf = tmp_path / "agentd.toml"
    conf.write_text(f'[agent]\nstate_dir = "{tmp_path}/state"\nsocket = "{tmp_path}/a.sock"\nmetrics_listen = ""\n'
                    f"[collector]\nlabel_allowlist = {keys}\n")
    for extra in (["--check"], []):  # --check, and a real start: exit 2 before anything is made
        r = subprocess.run([sys.executable, "-m", "agent.daemon", "--config", str(conf), *extra],
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        lines = (r.stdout + r.stderr).strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, (r.returncode, lines)
        assert "collector.label_allowlist" in lines[0] and needle in lines[0], lines
        assert not os.path.exists(tmp_path / "state") and not os.path.exists(tmp_path / "a.sock")


# -- 7: connection caps and slow clients -----------------------------------------------------

# Opens N connections to the socket and holds them, sending nothing.
HOLD = r"""
import os, pwd, socket, sys, time
path, n = sys.argv[1], int(sys.argv[2])
if len(sys.argv) > 3:  # drop to an unprivileged user first
    pw = pwd.getpwnam(sys.argv[3])
    os.initgroups(pw.pw_name, pw.pw_gid)
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
socks = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
    except OSError as e:
        print("connect failed:", e, flush=True)
        break
    socks.append(s)
print("holding", len(socks), "uid", os.getuid(), flush=True)
time.sleep(3600)
"""


@pytest.fixture(scope="module")
def tenant_user():
    tag = uuid.uuid4().hex[:6]
    group, user = f"cgl{tag}g", f"cgl{tag}u"
    subprocess.run(["groupadd", group], check=True, capture_output=True)
    try:
        subprocess.run(["useradd", "-M", "-N", "-g", "nogroup", "-G", group, "-s", "/usr/sbin/nologin", user],
                       check=True, capture_output=True)
        yield SimpleNamespace(user=user, group=group)
    finally:
        subprocess.run(["userdel", user], capture_output=True)
        subprocess.run(["groupdel", group], capture_output=True)


def _refused(d: Agentd, reason: str) -> float:
    return d.metric(f'cgroup_agent_api_connections_refused_total{{reason="{reason}"}}') or 0


class ThreadWatch:
    """Samples agentd's thread count from /proc/PID/status until stopped; keeps the maximum."""

    def __init__(self, d: Agentd):
        self.d, self.peak, self.samples = d, 0, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.d.threads())
            self.samples += 1
            self._stop.wait(0.02)

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return self.peak


def test_500_idle_connections_from_a_user_and_from_a_container_leave_threads_bounded(tenant_user):
    per_peer = 32
    d = Agentd(agent_toml=f'socket_group = "{tenant_user.group}"\n',
               extra_toml=f'[api]\nmax_connections_per_peer = {per_peer}\n')
    holders = []
    try:
        d.start()
        for reason in ("peer", "total", "threads"):  # exported at 0 from the start
            assert _refused(d, reason) == 0
        assert d.metric("cgroup_agent_api_connections") is not None
        baseline = d.threads()

        # 1. an unprivileged host user (only in the socket's group: a reader)
        watch = ThreadWatch(d)
        user = subprocess.Popen([sys.executable, "-c", HOLD, d.sock, "500", tenant_user.user],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        holders.append(user)
        line = user.stdout.readline()
        assert line.startswith("holding 500 uid "), line
        bound = baseline + per_peer + 16
        # until the accept loop went through them all (or the threads already went past the bound)
        wait_for(lambda: watch.peak > bound or _refused(d, "peer") >= 500 - 2 * per_peer, what="the per-peer refusals")
        ps = d.ctl("ps", "-a")
        peak = watch.stop()
        print(f"user attack: baseline {baseline} threads, peak {peak} over {watch.samples} samples, "
              f"refused {_refused(d, 'peer'):.0f}")
        assert peak <= bound, (baseline, peak)
        assert ps.returncode == 0, ps.stderr

        # 2. a container (host root, uid 0 inside): its own per-peer budget, the host's root unaffected
        before = _refused(d, "peer")
        watch = ThreadWatch(d)
        r = d.ctl("run", "-d", "--name", "holder", "--", sys.executable, "-c", HOLD, d.sock, "500")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: "holding 500" in d.ctl("logs", "holder").stdout, what="the container to hold 500")
        bound = baseline + 2 * per_peer + 16  # the user's 32 may still be held
        wait_for(lambda: watch.peak > bound or _refused(d, "peer") - before >= 500 - 2 * per_peer,
                 what="the container's refusals")
        ps = d.ctl("ps")
        peak = watch.stop()
        print(f"container attack: baseline {baseline} threads, peak {peak} over {watch.samples} samples, "
              f"refused {_refused(d, 'peer') - before:.0f}")
        assert peak <= bound, (baseline, peak)
        assert ps.returncode == 0 and "holder" in ps.stdout, ps.stderr
        assert d.events("api.connection_refused")
    finally:
        for p in holders:
            p.kill()
            p.wait(10)
        d.close()


def test_the_total_cap_keeps_room_for_the_hosts_root(tenant_user):
    total = 16  # the last 16 // 8 = 2 are kept for root and the admin group
    d = Agentd(agent_toml=f'socket_group = "{tenant_user.group}"\n', extra_toml=f"[api]\nmax_connections = {total}\n")
    holder = None
    try:
        d.start()
        baseline = d.threads()
        watch = ThreadWatch(d)
        holder = subprocess.Popen([sys.executable, "-c", HOLD, d.sock, "500", tenant_user.user],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert holder.stdout.readline().startswith("holding 500 uid ")
        bound = baseline + total + 16
        wait_for(lambda: watch.peak > bound or _refused(d, "total") >= 500 - 2 * total, what="the total-cap refusals")
        ps = d.ctl("ps", "-a")  # root: the kept eighth lets it in
        peak = watch.stop()
        print(f"total cap {total}: baseline {baseline} threads, peak {peak}, refused {_refused(d, 'total'):.0f}")
        assert peak <= bound, (baseline, peak)
        assert ps.returncode == 0, ps.stderr
        assert _refused(d, "peer") == 0
    finally:
        if holder is not None:
            holder.kill()
            holder.wait(10)
        d.close()


def test_a_client_trickling_its_headers_is_answered_408_and_let_go():
    d = Agentd(extra_toml='[api]\nheader_timeout = "1s"\n')
    try:
        d.start()
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(120)
        s.connect(d.sock)
        s.sendall(b"GET /v1/health HTTP/1.1\r\n")
        answer = b""
        for _ in range(2000):  # one header byte at a time, never the blank line; far past the deadline
            try:
                s.sendall(b"X")
            except OSError:  # the server closed the connection
                break
            r, _, _ = select.select([s], [], [], 0.05)
            if r:
                break
        while chunk := s.recv(65536):
            answer += chunk
        s.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert "not received within 1 seconds" in json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
        assert d.metric('cgroup_agent_api_request_timeouts_total{phase="headers"}') == 1
        assert d.client.call("GET", "/v1/health")["status"] == "ok"
    finally:
        d.close()


# A reader that follows a quiet container's log and hangs up, again and again (stdlib only).
FOLLOW_AND_DROP = r"""
import os, pwd, socket, sys, time
path, name, per_peer, user = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
pw = pwd.getpwnam(user)
os.initgroups(pw.pw_name, pw.pw_gid)
os.setgid(pw.pw_gid)
os.setuid(pw.pw_uid)

def request(target):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(60)
    s.connect(path)
    head = b""
    try:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        while b"\r\n\r\n" not in head:
            chunk = s.recv(65536)
            if not chunk:
                break
            head += chunk
    except OSError:         # closed at accept: a cap
        pass
    return s, head

for round in range(3):
    for _ in range(per_peer):
        s, head = request(f"/v1/containers/{name}/logs?follow=1")
        assert head.startswith(b"HTTP/1.1 200 "), head[:200]
        s.close()           # hung up, the container still quiet
    deadline = time.monotonic() + 60
    while True:
        s, head = request("/v1/health")
        s.close()
        if head.startswith(b"HTTP/1.1 200 "):
            print("round", round, "health 200", flush=True)
            break
        if time.monotonic() > deadline:
            print("round", round, "still refused after 60 s:", head[:100], flush=True)
            sys.exit(1)
        time.sleep(0.1)
"""


def test_a_reader_hanging_up_followed_logs_of_a_quiet_container_gets_its_slots_back(tenant_user):
    """`logs -f` of a container that writes nothing, closed by its client, used to
    hold its handler (two threads) and its connection slot until the container
    wrote or exited: a reader who hung up max_connections_per_peer times was
    refused from then on. agentd now sees the hang-up while the stream is idle."""
    per_peer = 4
    d = Agentd(agent_toml=f'socket_group = "{tenant_user.group}"\n',
               extra_toml=f'[api]\nmax_connections_per_peer = {per_peer}\n')
    try:
        d.start()
        r = d.ctl("run", "-d", "--name", "quiet", "--", "/bin/sleep", "3600")
        assert r.returncode == 0, r.stderr
        baseline = d.threads()
        p = subprocess.run([sys.executable, "-c", FOLLOW_AND_DROP, d.sock, "quiet", str(per_peer), tenant_user.user],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0 and p.stdout.count("health 200") == 3, (p.stdout, p.stderr[-2000:])
        wait_for(lambda: d.metric("cgroup_agent_api_connections") <= 1, what="the dropped streams' connections to go")
        wait_for(lambda: d.threads() <= baseline + 2, what="the dropped streams' threads to end")
        assert d.ctl("logs", "quiet").returncode == 0
    finally:
        d.close()
