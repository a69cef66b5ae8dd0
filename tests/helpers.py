"""What every test tier shares: waiting, free ports, cgroup clean-up, and the
two ways of running a real agentd (the `Agentd` process object, and
`start_agentd`/`ctl` for tests that drive it with agentctl as a user would).

Each tier's conftest.py puts this folder on sys.path; test files import
from here (`from helpers import wait_for, Agentd`), never from one another.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import uuid
from types import SimpleNamespace

from agent.cli.client import Client
from runtime.cgroupfs import Cgroup

AGENTCTL = [sys.executable, "-m", "agent.cli"]


def default_wait() -> float:
    """How long wait_for waits when not told: longer in the VM (qemu TCG
    runs Python ~10x slower). Only a failing test ever waits this long."""
    return 240.0 if os.environ.get("CGROUP_AGENT_IN_VM") == "1" else 60.0


def wait_for(pred, timeout: float | None = None, what: str = "condition", interval: float = 0.05):
    """pred()'s first truthy value, polled every `interval` s; AssertionError
    naming `what` after `timeout` s. A hang guard, never a timing assertion."""
    deadline = time.monotonic() + (default_wait() if timeout is None else timeout)
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------- cgroups

def populated(cg_path: str) -> bool:
    ev = Cgroup(cg_path).events()
    return bool(ev and ev.populated)


def kill_tree(target, timeout: float = 20.0) -> None:
    """Kill every process in a cgroup (a path or a Cgroup) and below, then
    remove the cgroups bottom-up: the one clean-up every tier uses."""
    cg = target if isinstance(target, Cgroup) else Cgroup(target)
    if not os.path.isdir(cg.path):
        return
    for child in cg.children():
        kill_tree(child, timeout)
    try:
        cg.write("cgroup.freeze", "0")   # a frozen task cannot die until thawed on old kernels
    except Exception:   # noqa: BLE001 - no freezer here: nothing to thaw
        pass
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.path.exists(cg.file("cgroup.kill")):
                cg.write("cgroup.kill", "1")
            else:
                for pid in cg.procs():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        except Exception:   # noqa: BLE001 - emptied or removed meanwhile: the rmdir says
            pass
        try:
            os.rmdir(cg.path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def new_cgroup(parent: str) -> Cgroup:
    cg = Cgroup(os.path.join(parent, f"cga-test-{uuid.uuid4().hex[:10]}"))
    os.mkdir(cg.path)
    return cg


# ------------------------------------------------------ agentd as a process

class Agentd:
    """One agentd process on flags (its own state dir, socket, cgroup root
    and a free metrics port), started, signalled and killed at will."""

    def __init__(self, root: Cgroup, tmp_path, config: str | None = None):
        self.root = root
        self.state = str(tmp_path / "state")
        self.sock = str(tmp_path / "agent.sock")
        self.log_path = str(tmp_path / "agentd.log")
        self.args = [sys.executable, "-m", "agent.daemon", "--state-dir", self.state, "--cgroup-root", root.path,
                     "--socket", self.sock, "--metrics-listen", f"127.0.0.1:{free_port()}"]
        if config:
            self.args += ["--config", config]
        self.proc = None
        self.client = Client(self.sock, timeout=30)

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"agentd exited {self.proc.returncode}:\n{self.log()}")
            try:
                self.client.call("GET", "/v1/health")
                return True
            except Exception:   # noqa: BLE001 - not listening yet
                return False
        wait_for(up, what="agentd to serve", interval=0.02)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def events(self) -> list[dict]:
        out = []
        for line in self.log().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=20):
        return self.proc.wait(timeout)

    def run(self, name, script, **kw):
        return self.client.call("POST", "/v1/containers", body={"name": name, "argv": ["sh", "-c", script], **kw})

    def inspect(self, name):
        return self.client.call("GET", f"/v1/containers/{name}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# ------------------------------------------- agentd driven with agentctl

def start_agentd(root, top, extra_toml: str = "", sock: str | None = None,
                 interval: str = "200ms", metrics_listen: str = "") -> SimpleNamespace:
    """agentd on a config file under `top` (`extra_toml` in its [agent] table
    or after it; metrics off unless `metrics_listen`, a collector pass every
    `interval`), serving; stop it with stop_agentd."""
    state = os.path.join(top, "state")
    sock = sock or os.path.join(top, "agent.sock")
    conf = os.path.join(top, "agentd.toml")
    with open(conf, "w") as f:
        f.write(f'[agent]\nstate_dir = "{state}"\ncgroup_root = "{root.path}"\nsocket = "{sock}"\n'
                f'metrics_listen = "{metrics_listen}"\nlog_level = "debug"\n{extra_toml}\n[collector]\ninterval = "{interval}"\n')
    return _serving(root, top, sock, ["--config", conf])


def start_agentd_with_flags(root, top, metrics_listen: str = "") -> SimpleNamespace:
    """agentd on its embedded default config, given only command-line flags
    (state dir and socket under `top`, the cgroup root, the metrics address:
    "" for none), serving; stop it with stop_agentd."""
    sock = os.path.join(top, "agent.sock")
    return _serving(root, top, sock, ["--state-dir", os.path.join(top, "state"), "--cgroup-root", root.path,
                                      "--socket", sock, "--metrics-listen", metrics_listen])


def _serving(root, top, sock, args) -> SimpleNamespace:
    log = open(os.path.join(top, "agentd.log"), "wb")
    proc = subprocess.Popen([sys.executable, "-m", "agent.daemon", *args], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)

    def up():
        if proc.poll() is not None:
            raise AssertionError(f"agentd exited with {proc.returncode}: {open(log.name).read()[-2000:]}")
        try:
            return Client(sock, timeout=10).call("GET", "/v1/health")["status"] == "ok"
        except Exception:  # noqa: BLE001 - not listening yet
            return False

    try:
        wait_for(up, 60, "agentd to listen")
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
        raise
    return SimpleNamespace(proc=proc, sock=sock, root=root, top=top, log=log)


@contextlib.contextmanager
def agentd_in_own_cgroup(prefix: str, extra_toml: str = ""):
    """start_agentd in a fresh cgroup under the cgroup2 mount and a fresh
    temp dir (named with `prefix`); stopped, killed and removed afterwards."""
    import shutil
    import tempfile
    from runtime.cgroupfs import find_mount
    root = new_cgroup(find_mount())
    top = tempfile.mkdtemp(prefix=prefix)
    d = None
    try:
        d = start_agentd(root, top, extra_toml)
        yield d
    finally:
        if d is not None:
            stop_agentd(d)
        kill_tree(root)
        shutil.rmtree(top, ignore_errors=True)


def stop_agentd(d) -> None:
    if d.proc.poll() is None:
        d.proc.send_signal(signal.SIGTERM)
        try:
            d.proc.wait(30)
        except subprocess.TimeoutExpired:
            d.proc.kill()
            d.proc.wait(10)
    d.log.close()


def ctl(d, *args, timeout=60, env=None):
    """agentctl as a separate process against d's socket."""
    e = dict(os.environ, **(env or {}))
    e.pop("AGENT_SOCKET", None)
    return subprocess.run([*AGENTCTL, "--socket", d.sock, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=e)


def one_line(r) -> str:
    """The one line a refused agentctl command printed on stderr."""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def uname(prefix="t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def names(d, all_=True) -> set[str]:
    return {c["name"] for c in Client(d.sock).call("GET", "/v1/containers", {"all": "1" if all_ else "0"})}


# ------------------------------------------------------------- PostgreSQL

PG_DSN = os.environ.get("CGROUP_AGENT_TEST_PG", "postgresql://agent:agent@127.0.0.1:5432/cgroup_agent_test")
PG_LOCK = "/tmp/cgroup-agent-test-postgres.lock"


def _pg_version() -> str:
    return sorted(os.listdir("/usr/lib/postgresql"), key=int)[-1]


def pg_online() -> bool:
    return "online" in subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout


def pg_ctl(action: str) -> None:
    """pg_ctlcluster start|stop of this machine's cluster (scripts/services.sh)."""
    r = subprocess.run(["pg_ctlcluster", _pg_version(), "main", action], capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0 and pg_online() != (action == "start"):
        raise AssertionError(f"pg_ctlcluster {action} failed: {r.stderr.strip()}")


@contextlib.contextmanager
def pg_exclusive():
    """Hold the machine-wide lock of the tests that stop the database (two runs
    of them at once would stop it under each other), with the database up."""
    import psycopg   # the PostgreSQL tests' dependency only
    with open(PG_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        if not pg_online():
            pg_ctl("start")
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5).close()
                break
            except psycopg.OperationalError as e:
                if time.monotonic() > deadline:
                    raise AssertionError(f"PostgreSQL is not reachable at {PG_DSN} (run scripts/services.sh): {e}")
                time.sleep(0.5)
        try:
            yield
        finally:
            if not pg_online():
                pg_ctl("start")


# ------------------------------------------------------ the launcher's view

def zombie_children(ppid: int) -> list[int]:
    """The pids of ppid's children that are zombies (exited, not reaped): the
    soak bench's scan (bench/soak.py), which the churn test reads too."""
    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    from soak import zombies_of
    return zombies_of(ppid)


def on_terminal(args, rows=33, cols=99):
    """agentctl with a terminal of the given size as its stdin (its output
    piped): (the process, the terminal's other end the test types into)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    try:
        p = subprocess.Popen([*AGENTCTL, *args], stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finally:
        os.close(slave)
    return p, master


def wait_exit(client, cid: str, pid: int, timeout: float = 30):
    """The launcher's exit record of cid/pid (a LauncherClient); a hang guard
    only: returns as soon as the launcher has the record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rec in client.exits():
            if rec.id == cid and rec.pid == pid:
                return rec
        select.select([client.fileno()], [], [], 0.2)
        client.read_events()
    raise AssertionError(f"no exit record for {cid}/{pid}")


# ------------------------------------------------------ container roots

BUSYBOX = "/bin/busybox"


def busybox_rootfs(root, applets, files: dict | None = None) -> str:
    """A container root at `root` (made 0755): bin/busybox (static) with a
    symlink per applet, and `files` (relative path -> text) written under it."""
    import shutil
    root = str(root)
    os.makedirs(os.path.join(root, "bin"), exist_ok=True)
    os.chmod(root, 0o755)
    shutil.copy(BUSYBOX, os.path.join(root, "bin", "busybox"))
    for applet in applets:
        os.symlink("busybox", os.path.join(root, "bin", applet))
    for rel, text in (files or {}).items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return root
