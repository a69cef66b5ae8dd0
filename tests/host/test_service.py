"""agentd as systemd runs it: sd_notify over a real NOTIFY_SOCKET, SIGHUP
reload, SIGTERM leaving containers running, re-adoption by the next agentd.

Each agentd here has its own cgroup root (a fresh cgroup under the cgroup2
mount, killed and removed afterwards), state dir, control socket and free
metrics port. agentd is started with the capability bounding set that
deploy/cgroup-agent.service gives it, so containers are shown to launch
under the unit's hardening.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agent.cli.client import Client
from helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "cgroup-agent.service"
WAIT = 60  # upper bound for anything that must happen; never a measured timing


def unit_bounding_set_args() -> list[str]:
    """setpriv arguments dropping what the unit's CapabilityBoundingSet=~... drops."""
    line = next(l for l in UNIT.read_text().splitlines() if l.startswith("CapabilityBoundingSet="))
    value = line.split("=", 1)[1]
    assert value.startswith("~")
    drops = []
    for cap in value[1:].split():
        name = cap.lower().removeprefix("cap_")
        drops.append("-" + name)
    return ["setpriv", "--bounding-set", ",".join(drops), "--"]


def toml_str(s: str) -> str:
    return json.dumps(s)


class Notify:
    """A bound AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(WAIT)
        self.seen: list[str] = []

    def next(self) -> str:
        msg = self.sock.recv(65536).decode()
        self.seen.append(msg)
        return msg

    def wait_for(self, assignment: str) -> list[str]:
        """Read datagrams until one holds `assignment` as a line; return all read."""
        got = []
        while True:
            msg = self.next()
            got.append(msg)
            if assignment in msg.split("\n"):
                return got

    def close(self):
        self.sock.close()


class Agentd:
    """One agentd process with its stdout collected line by line."""

    def __init__(self, config: Path, notify: Notify, cwd: Path, watchdog_usec: int | None = None):
        # PYTHONFAULTHANDLER: on a hang the test sends SIGABRT and shows every thread's stack
        env = dict(os.environ, NOTIFY_SOCKET=notify.path, PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
        env.pop("WATCHDOG_USEC", None)
        env.pop("WATCHDOG_PID", None)
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)  # WATCHDOG_PID unset: meant for us
        agentd = shutil.which("agentd")
        assert agentd, "agentd not on PATH (pip install -e .)"
        self.proc = subprocess.Popen(
            unit_bounding_set_args() + [agentd, "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=env, cwd=cwd, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def events(self) -> list[dict]:
        return [json.loads(l) for l in self.lines if l.strip()]

    def wait_exit(self) -> int:
        try:
            rc = self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler dumps the stacks
            try:
                self.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self._reader.join(timeout=WAIT)
            pytest.fail("agentd did not exit after SIGTERM; its last output:\n" + "\n".join(self.lines[-80:]))
        self._reader.join(timeout=WAIT)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT)


@pytest.fixture
def setup(tmp_path, cgroup):
    """Config, notify socket, and a list that every started agentd joins (killed after)."""
    state = tmp_path / "state"
    sock = tmp_path / "agent.sock"
    port = free_port()
    cfg = tmp_path / "config.toml"
    base = (
        "[agent]\n"
        f"state_dir = {toml_str(str(state))}\n"
        f"cgroup_root = {toml_str(cgroup.path)}\n"
        f"socket = {toml_str(str(sock))}\n"
        f"metrics_listen = \"127.0.0.1:{port}\"\n"
    )
    cfg.write_text(base)
    notify = Notify(str(tmp_path / "notify.sock"))
    started: list[Agentd] = []

    def start(**kw) -> Agentd:
        a = Agentd(cfg, notify, tmp_path, **kw)
        started.append(a)
        return a

    yield {"cfg": cfg, "base": base, "sock": str(sock), "port": port, "notify": notify,
           "start": start, "cgroup": cgroup, "tmp": tmp_path}
    for a in started:
        a.kill()
    notify.close()
    # the cgroup fixture then kills the launcher and containers and removes R


def assert_listening(sock_path: str, port: int):
    """Both endpoints accept a connection right now (no retry)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sock_path)
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT):
        pass


def wait_ready(setup, agentd: Agentd) -> list[str]:
    try:
        msgs = setup["notify"].wait_for("READY=1")
    except socket.timeout:
        agentd.kill()
        pytest.fail("no READY=1 from agentd; its output:\n" + "\n".join(agentd.lines[-30:]))
    return msgs


def test_ready_only_once_listening_watchdog_and_json_logs(setup):
    a = setup["start"](watchdog_usec=200_000)  # WatchdogSec=200ms: a ping every 100 ms
    msgs = wait_ready(setup, a)
    assert_listening(setup["sock"], setup["port"])
    assert a.proc.poll() is None
    ready = next(m for m in msgs if "READY=1" in m.split("\n"))
    assert any(l.startswith("STATUS=") for l in ready.split("\n"))  # what systemctl status shows
    setup["notify"].wait_for("WATCHDOG=1")
    setup["notify"].wait_for("WATCHDOG=1")
    health = Client(setup["sock"], timeout=WAIT).call("GET", "/v1/health")
    assert health["pid"] == a.proc.pid
    # it moved itself into R/agentd (Delegate=yes layout)
    own = Path(f"/proc/{a.proc.pid}/cgroup").read_text()
    assert own.strip().endswith("/" + os.path.basename(setup["cgroup"].path) + "/agentd"), own
    a.proc.send_signal(signal.SIGTERM)
    assert a.wait_exit() == 0
    # stdout is a pipe: every line is one JSON event
    events = a.events()
    assert events and all("event" in e for e in events)


def test_sighup_reload_names_what_cannot_change(setup):
    a = setup["start"]()
    wait_ready(setup, a)
    other_port = free_port()
    setup["cfg"].write_text(
        setup["base"].replace(f"127.0.0.1:{setup['port']}", f"127.0.0.1:{other_port}")
        + "log_level = \"debug\"\n")
    a.proc.send_signal(signal.SIGHUP)
    msgs = setup["notify"].wait_for("READY=1")
    joined = [m.split("\n") for m in msgs]
    reloading = next(i for i, m in enumerate(joined) if "RELOADING=1" in m)
    ready = next(i for i, m in enumerate(joined) if "READY=1" in m)
    assert reloading < ready
    mono = [l for l in joined[reloading] if l.startswith("MONOTONIC_USEC=")]
    assert mono and int(mono[0].split("=")[1]) > 0
    # still serving on the old metrics port: metrics_listen cannot change live
    assert_listening(setup["sock"], setup["port"])
    with pytest.raises(ConnectionRefusedError):  # ... and nothing moved to the new one
        socket.create_connection(("127.0.0.1", other_port), timeout=WAIT).close()
    # the API still answers after the reload, and the log already names the key
    assert Client(setup["sock"], timeout=WAIT).call("GET", "/v1/health")["pid"] == a.proc.pid
    named = [json.loads(l) for l in a.lines if "metrics_listen" in l]
    assert named, "no log line names metrics_listen as needing a restart:\n" + "\n".join(a.lines[-30:])
    assert any("agent.metrics_listen" in json.dumps(e) and e.get("level") == "warning" for e in named)
    # log_level is live: debug events may now appear; the reload itself is logged
    assert any(e.get("event", "").startswith("config.reload") for e in a.events())
    a.proc.send_signal(signal.SIGTERM)
    assert a.wait_exit() == 0


def test_sigterm_leaves_container_running_and_next_agentd_readopts(setup):
    a = setup["start"]()
    wait_ready(setup, a)
    client = Client(setup["sock"], timeout=WAIT)
    info = client.call("POST", "/v1/containers",
                       body={"name": "svc-keep", "argv": ["/bin/sleep", "100000"]})
    deadline = time.monotonic() + WAIT
    while info["state"] != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
        info = client.call("GET", "/v1/containers/svc-keep")
    assert info["state"] == "running"
    pid = info["pid"]
    cgroup_path = info["cgroup"]
    assert cgroup_path.startswith(setup["cgroup"].path + "/containers/")

    a.proc.send_signal(signal.SIGTERM)
    stopping = setup["notify"].wait_for("STOPPING=1")
    assert stopping
    assert a.wait_exit() == 0
    # the container was left running, still in its cgroup
    assert Path(f"/proc/{pid}").exists()
    assert int(pid) in [int(p) for p in Path(cgroup_path, "cgroup.procs").read_text().split()]

    b = setup["start"]()
    wait_ready(setup, b)
    again = Client(setup["sock"], timeout=WAIT).call("GET", "/v1/containers/svc-keep")
    assert again["state"] == "running"
    assert again["pid"] == pid
    assert again["cgroup"] == cgroup_path
    # the unit's capabilities are enough for the device allow-list, and it stays
    assert info["device_filter"] == "on" and again["device_filter"] == "on"
    b.proc.send_signal(signal.SIGTERM)
    assert b.wait_exit() == 0
