#!/usr/bin/env python3
"""Churn soak of a real agentd (issue 5): containers created and removed at a
steady rate beside long-lived ones, with the agent's resources sampled.

    python3 bench/soak.py                          # the issue's soak: 10/s for 600 s beside 200
    python3 bench/soak.py --rate 5 --seconds 120 --long 50     # a scaled run

As root, on this host's cgroup2 mount. Starts its own agentd (fresh state
dir, socket, cgroup root /sys/fs/cgroup/.../cga-bench-<hex>, free metrics
port; billing period 10 s, collector interval 1 s), launches --long
containers (`sleep`), then for --seconds creates `--rate` containers a
second (`true`, removed with DELETE once exited) from --workers client
threads, scraping /metrics every 5 s. Every 10 s it samples agentd's RSS,
open fds, inotify watches, the zombies among the children of agentd and of
the launcher, the container cgroups and the state/ledger db sizes.

At the end (after the churned containers are gone): RSS slope (least squares,
kB per minute, first 10 % of samples dropped as warm-up), fds and watches
against the warm baseline, zombies, leftover cgroups, and billing: every
removed container id must have a ledger record. Prints one summary and
writes bench/out/soak.json. Exit status 1 when something leaked.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

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

    def metric_value(self, text: str, series: str) -> float | None:
        for line in text.splitlines():
            if line.startswith(series + " ") or line.startswith(series + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

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
        with open(f"/proc/{pid}/status") as f:
            rss = int(f.read().split("VmRSS:")[1].split()[0])
        fds = os.listdir(f"/proc/{pid}/fd")
        watches = 0
        for fd in fds:
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    watches += sum(1 for line in f if line.startswith("inotify wd:"))
            except OSError:
                pass
        dbs = 0
        for name in os.listdir(self.state):
            if name.endswith((".db", ".db-wal", ".db-shm")):
                dbs += os.path.getsize(os.path.join(self.state, name))
        return {"t": time.monotonic(), "rss_kb": rss, "fds": len(fds), "inotify_watches": watches,
                "zombies": len(zombies_of(pid, self.launcher_pid() or -1)),
                "cgroups": self.container_cgroups(), "db_bytes": dbs}

    def ledger_ids(self) -> set[str]:
        con = sqlite3.connect(f"file:{os.path.join(self.state, 'ledger.db')}?mode=ro", uri=True, timeout=30)
        try:
            return {r[0] for r in con.execute("SELECT DISTINCT container_id FROM records")}
        finally:
            con.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        kill_tree(self.root)


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


def slope_per_minute(samples: list[dict], key: str) -> float:
    """Least-squares slope of samples[key] over time, per minute."""
    pts = [(s["t"], s[key]) for s in samples]
    if len(pts) < 2:
        return 0.0
    n = len(pts)
    mx = sum(t for t, _ in pts) / n
    my = sum(v for _, v in pts) / n
    den = sum((t - mx) ** 2 for t, _ in pts)
    return 60 * sum((t - mx) * (v - my) for t, v in pts) / den if den else 0.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=10.0, help="containers created+removed per second")
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--long", type=int, default=200, help="long-lived containers beside the churn")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--out", default=os.path.join(REPO, "bench", "out", "soak.json"))
    args = p.parse_args(argv)

    a = AgentProc('[collector]\ninterval = "1s"\n[billing]\nperiod = "10s"\n', "soak")
    errors: list[str] = []
    removed: list[str] = []
    lock = threading.Lock()
    try:
        t0 = time.monotonic()
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(lambda i: a.call("POST", "/v1/containers",
                                           {"name": f"long{i}", "argv": ["sleep", "86400"]}), range(args.long)))
        print(f"{args.long} long-lived containers up in {time.monotonic() - t0:.1f} s", flush=True)

        def one(i: int) -> None:
            name = f"churn{i}"
            try:
                st, info = a.call("POST", "/v1/containers", {"name": name, "argv": ["true"]})
                if st != 201:
                    raise RuntimeError(f"create {st} {info}")
                a.call("GET", f"/v1/containers/{name}/wait?timeout=60")
                st, body = a.call("DELETE", f"/v1/containers/{name}?force=1")
                if st != 200:
                    raise RuntimeError(f"delete {st} {body}")
                with lock:
                    removed.append(info["id"])
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(f"{name}: {e}")

        # warm-up: a few seconds of churn before the baseline
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(one, range(-20, 0)))
        time.sleep(2)
        base = a.sample()
        samples = [base]
        start = time.monotonic()
        next_sample = start + 10
        next_scrape = start + 5
        scrape_s = []
        futures = []
        i = 0
        with ThreadPoolExecutor(args.workers) as pool:
            while True:
                now = time.monotonic()
                if now - start >= args.seconds:
                    break
                due = start + i / args.rate
                if due <= now:
                    futures.append(pool.submit(one, i))
                    i += 1
                    continue
                if now >= next_sample:
                    samples.append(a.sample())
                    next_sample += 10
                if now >= next_scrape:
                    t = time.monotonic()
                    a.scrape()
                    scrape_s.append(time.monotonic() - t)
                    next_scrape += 5
                time.sleep(min(due, next_sample, next_scrape) - now if min(due, next_sample, next_scrape) > now else 0)
            for f in futures:
                f.result()
        churn_s = time.monotonic() - start
        deadline = time.monotonic() + 120
        while a.container_cgroups() > args.long and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)
        end = a.sample()
        samples.append(end)
        lst = a.call("GET", "/v1/containers?all=1")[1]
        time.sleep(12)  # one more billing period, then check every removed container has a record
        billed = a.ledger_ids()
        unbilled = [cid for cid in removed if cid not in billed]
        steady = samples[max(1, len(samples) // 10):]
        result = {
            "rate_asked": args.rate, "rate_achieved": round(i / churn_s, 2), "seconds": round(churn_s, 1),
            "long_lived": args.long, "churned": i, "removed_ok": len(removed), "errors": len(errors),
            "error_examples": errors[:5],
            "rss_kb_start": base["rss_kb"], "rss_kb_end": end["rss_kb"],
            "rss_slope_kb_per_min": round(slope_per_minute(steady, "rss_kb"), 1),
            "fds_start": base["fds"], "fds_end": end["fds"],
            "inotify_watches_start": base["inotify_watches"], "inotify_watches_end": end["inotify_watches"],
            "zombies_max": max(s["zombies"] for s in samples), "zombies_end": end["zombies"],
            "cgroups_end": end["cgroups"], "containers_listed_end": len(lst),
            "db_bytes_start": base["db_bytes"], "db_bytes_end": end["db_bytes"],
            "db_bytes_per_churned_container": round((end["db_bytes"] - base["db_bytes"]) / max(i, 1), 1),
            "unbilled": len(unbilled),
            "scrape_s_p50": round(sorted(scrape_s)[len(scrape_s) // 2], 4) if scrape_s else None,
            "samples": samples,
        }
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
        leaked = (end["fds"] > base["fds"] or end["inotify_watches"] > base["inotify_watches"]
                  or end["zombies"] or end["cgroups"] != args.long or unbilled or errors)
        return 1 if leaked else 0
    finally:
        a.close()


if __name__ == "__main__":
    sys.exit(main())
