"""CPU the launcher spends per GiB a container logs, three contenders in
the same run, interleaved: the old copy loop (os.read 64 KiB into Python,
os.write it out, woken at every write of the container); splice in the
launcher (1 MiB pipes spliced into the file, kernel to kernel, a copied pipe
resting LOG_REST before it is polled again; the copier turned off); and
today's path, the copier in the container's cgroup (agent/launcher/
logcopier.py: past COPIER_THRESHOLD within COPIER_WINDOW, the same splice
runs in a process forked into the container's cgroup).

    python3 bench/log_copy.py [--mib 512] [--rounds 2] [--cap-mib 64]

Each round starts a launcher (foreground, in its own cgroup under a unique
cga-bench-<hex> directory of this host's cgroup2 mount), spawns a container
running `yes | head -c SIZE` (head writes 8 KiB at a time: a flood of small
writes) with the log capped at --cap-mib (so rotation runs too), waits for it
to exit, and reads the launcher cgroup's cpu.stat usage before and after
(the launcher is alone in it; a copier is in the container's cgroup, so
what it spends is not there). The figure is launcher CPU-seconds per GiB
logged, gross, and net of what the same launcher spent on a container
that logs nothing, run just before (spawn, reaping, exit record: not log
copying); the container cgroup's CPU per GiB (cpu.stat: its own `yes |
head`, plus the copier when there is one) is printed beside it. Needs root.
"""
from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from agent import launcher as L  # noqa: E402
from agent.launcher import LauncherClient  # noqa: E402
from runtime.cgroupfs import find_mount  # noqa: E402

GIB = 1 << 30


class OldCopyLauncher(L.Launcher):
    """The launcher's log copying before splice: default 64 KiB pipes, every
    readable pipe read into a Python bytes object and written out, polled
    again at once."""

    log_rest = 0
    log_pipe_size = 0

    def _copy_log(self, c, fd) -> bool:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if data:
            c.pipes[fd].write(data)
            return True
        self._close_pipe(c, fd)
        return False


class SpliceLauncher(L.Launcher):
    """Splice in the launcher, no copier: the path before the copier."""

    log_copier_threshold = 0


MODES = {"old": OldCopyLauncher, "splice": SpliceLauncher, "copier": L.Launcher}


def serve(mode: str, state_dir: str, cgroup: str) -> None:
    """The launcher process of one round (what `agent.launcher --foreground` does)."""
    from runtime import namespaces as ns
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
        f.write("0")
    ns.set_child_subreaper()
    cls = MODES[mode]
    launcher = cls(state_dir, L._log_factory(os.path.join(state_dir, L.LOG_NAME)))
    launcher.listen()
    launcher.install_signals()
    launcher.serve()


def cgroup_cpu(path: str) -> float:
    with open(os.path.join(path, "cpu.stat")) as f:
        return int(f.read().split()[1]) / 1e6


def run_container(client, base: str, state: str, lcg: str, size: int, cap: int) -> tuple[float, float]:
    """One container logging `size` bytes: (launcher CPU-s, container cgroup CPU-s)."""
    ccg = os.path.join(base, "containers", f"c{uuid.uuid4().hex[:10]}")
    os.mkdir(ccg)
    log = os.path.join(state, f"{os.path.basename(ccg)}.log")
    before = cgroup_cpu(lcg)
    cid = os.path.basename(ccg)
    pid = client.spawn(cid, {"argv": ["/bin/sh", "-c", f"yes logging-a-flood | head -c {size}"],
                             "env": {"PATH": "/usr/bin:/bin"}, "cgroup": ccg, "stdout": log, "stderr": log,
                             "log_max_bytes": cap})
    # wait for the pushed exit event: a request every 0.2 s would cost the
    # launcher about 1 ms each, which is not log copying (a slow flood would
    # be charged more of it); exits() only every 5 s, in case
    while not any(r.id == cid and r.pid == pid for r in client.exits()):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            select.select([client.fileno()], [], [], 5)
            if any(ev.get("event") == "exit" and ev.get("id") == cid for ev in client.read_events()):
                break
    used = cgroup_cpu(lcg) - before
    kept = os.path.getsize(log) + (os.path.getsize(log + ".1") if os.path.exists(log + ".1") else 0)
    assert os.path.getsize(log) <= cap and kept <= 2 * cap, "the cap did not hold"
    container = cgroup_cpu(ccg)
    os.rmdir(ccg)
    return used, container


def one_round(mode: str, base: str, size: int, cap: int) -> tuple[float, float, float]:
    """(launcher CPU-s for the flood, container CPU-s, launcher CPU-s for a
    container logging nothing: spawn, reaping and exit record, the part of
    the flood's figure that is not log copying)."""
    state = tempfile.mkdtemp(prefix=f"logbench-{mode}-", dir="/var/tmp")
    lcg = os.path.join(base, f"launcher-{mode}-{uuid.uuid4().hex[:6]}")
    os.mkdir(lcg)
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", mode, state, lcg],
                            env={**os.environ, "PYTHONPATH": REPO})
    try:
        sock = os.path.join(state, L.SOCKET_NAME)
        deadline = time.monotonic() + 60
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench launcher ({mode}) did not start")
            time.sleep(0.05)
        client = LauncherClient.connect(state)
        idle, _ = run_container(client, base, state, lcg, 0, cap)
        used, container = run_container(client, base, state, lcg, size, cap)
        client.close()
        return used, container, idle
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        os.rmdir(lcg)
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(*sys.argv[2:5])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=512, help="MiB logged per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cap-mib", type=int, default=64, help="log_max_bytes of the container")
    args = ap.parse_args()
    size, cap = args.mib << 20, args.cap_mib << 20
    base = os.path.join(find_mount(), f"cga-bench-{uuid.uuid4().hex[:10]}")
    os.makedirs(os.path.join(base, "containers"))
    res: dict[str, list[tuple[float, float, float]]] = {m: [] for m in MODES}
    try:
        for r in range(args.rounds):
            for mode in MODES:
                used, container, idle = one_round(mode, base, size, cap)
                res[mode].append((used, container, idle))
                print(f"round {r + 1} {mode}: launcher {used:.3f} CPU-s, container {container:.2f} CPU-s "
                      f"for {args.mib} MiB; launcher {idle:.3f} CPU-s for a container logging nothing",
                      flush=True)
    finally:
        for d in (os.path.join(base, "containers"), base):
            try:
                os.rmdir(d)
            except OSError:
                pass
    gib = size / GIB
    cont = {m: sum(v[1] for v in vs) / len(vs) / gib for m, vs in res.items()}
    for label, net in (("gross", False), ("net of a container logging nothing", True)):
        per = {m: sum(v[0] - (v[2] if net else 0) for v in vs) / len(vs) / gib for m, vs in res.items()}
        print(f"launcher CPU per GiB logged, {label}: old copy loop {per['old']:.3f} s, "
              f"splice {per['splice']:.3f} s, copier in the container's cgroup {per['copier']:.3f} s")
        print(f"  ratios against the old loop: splice {per['old'] / max(per['splice'], 1e-9):.1f}x, "
              f"copier {per['old'] / max(per['copier'], 1e-9):.1f}x (copier against splice "
              f"{per['splice'] / max(per['copier'], 1e-9):.1f}x)")
    print(f"container cgroup CPU per GiB (billed to it): old {cont['old']:.3f} s, splice {cont['splice']:.3f} s, "
          f"copier {cont['copier']:.3f} s")


if __name__ == "__main__":
    main()
