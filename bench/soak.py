#!/usr/bin/env python3
"""Churn soak of a real agentd (issue 5): runs tests/host/test_churn.py (the
soak itself: containers created and removed at a steady rate beside
long-lived ones, leaks and agentd's RSS slope asserted) with the given
parameters and keeps its figures and 10 s samples as JSON.

    python3 bench/soak.py                          # the issue's soak: 10/s for 600 s beside 200
    python3 bench/soak.py --rate 5 --seconds 120 --long 50     # a scaled run

As root, on this host's cgroup2 mount. Exit status: pytest's (1 when
something leaked). AgentProc (an agentd of a bench's own) is also used by
bench/scale.py.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from runtime.cgroupfs import find_mount  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path, timeout=120):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


class AgentProc:
    """One agentd of our own, killed (and its cgroup tree removed) by close()."""

    def __init__(self, config_text: str = "", label: str = "bench"):
        self.tmp = tempfile.mkdtemp(prefix=f"cga-{label}-")
        self.state = os.path.join(self.tmp, "state")
        self.sock = os.path.join(self.tmp, "agent.sock")
        self.root = os.path.join(find_mount(), f"cga-{label}-{secrets.token_hex(4)}")
        self.port = free_port()
        cfg = os.path.join(self.tmp, "agentd.toml")
        with open(cfg, "w") as f:
            f.write(config_text)
        self.log_path = os.path.join(self.tmp, "agentd.log")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.daemon", "--config", cfg, "--state-dir", self.state,
                 "--cgroup-root", self.root, "--socket", self.sock,
                 "--metrics-listen", f"127.0.0.1:{self.port}"],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"agentd exited {self.proc.returncode}; see {self.log_path}")
            try:
                if self.call("GET", "/v1/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("agentd did not serve within 60 s")
            time.sleep(0.05)
        self.pid = self.proc.pid

    def call(self, method, path, body=None):
        conn = _UnixHTTP(self.sock)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
            r = conn.getresponse()
            raw = r.read()
            try:
                return r.status, json.loads(raw)
            except ValueError:
                return r.status, raw
        finally:
            conn.close()

    def scrape(self) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=120) as r:
            return r.read()

    def launcher_pid(self) -> int | None:
        try:
            with open(os.path.join(self.root, "launcher", "cgroup.procs")) as f:
                pids = [int(x) for x in f.read().split()]
            return pids[0] if pids else None
        except OSError:
            return None

    def container_cgroups(self) -> int:
        base = os.path.join(self.root, "containers")
        return sum(1 for d in os.listdir(base) if os.path.isdir(os.path.join(base, d)))

    def sample(self) -> dict:
        pid = self.pid
        return {"t": time.monotonic(), "rss_kb": rss_kb(pid), "fds": fd_count(pid),
                "inotify_watches": inotify_watches(pid),
                "zombies": len(zombies_of(pid, self.launcher_pid() or -1)),
                "cgroups": self.container_cgroups(), "db_bytes": db_bytes(self.state)}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        kill_tree(self.root)


# ---- process and state-dir figures, shared with tests/host/test_churn.py

def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0])


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def inotify_watches(pid: int) -> int:
    """inotify watches held by pid (``inotify wd:`` lines of its fdinfo)."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                n += sum(1 for line in f if line.startswith("inotify wd:"))
        except OSError:
            pass
    return n


def db_bytes(state_dir: str) -> int:
    """Bytes of the SQLite files (db, WAL, shared memory) in state_dir."""
    return sum(os.path.getsize(os.path.join(state_dir, n)) for n in os.listdir(state_dir)
               if n.endswith((".db", ".db-wal", ".db-shm")))


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t seconds, value) points, per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return 60 * sum((t - mt) * (v - mv) for t, v in points) / den if den else 0.0


def zombies_of(*parents: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        if rest[0] == "Z" and int(rest[1]) in parents:
            out.append(int(d))
    return out


def kill_tree(path: str) -> None:
    if not os.path.isdir(path):
        return
    for name in os.listdir(path):
        if os.path.isdir(os.path.join(path, name)):
            kill_tree(os.path.join(path, name))
    deadline = time.monotonic() + 30
    while True:
        try:
            with open(os.path.join(path, "cgroup.freeze"), "w") as f:
                f.write("0")
            with open(os.path.join(path, "cgroup.kill"), "w") as f:
                f.write("1")
        except OSError:
            pass
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                print(f"warning: could not remove {path}", file=sys.stderr)
                return
            time.sleep(0.05)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=10.0, help="containers created+removed per second")
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--long", type=int, default=200, help="long-lived containers beside the churn")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "out", "soak.json"))
    args = p.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    env = {**os.environ, "CGA_SOAK_RATE": str(args.rate), "CGA_SOAK_SECONDS": str(args.seconds),
           "CGA_SOAK_LONG": str(args.long), "CGA_SOAK_OUT": os.path.abspath(args.out)}
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                            "tests/host/test_churn.py"], cwd=REPO, env=env)


if __name__ == "__main__":
    sys.exit(main())
