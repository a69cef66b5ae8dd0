#!/usr/bin/env python3
"""Checkpoint and restore time of agentd against plain `criu dump` / `criu
restore` of the same process tree (and `runc checkpoint` / `runc restore`
of the same program when runc is installed), in one run.

    python3 tests/vm/run.py --bench bench/checkpoint.py [-n 5]   # from the host: boots the VM
    python3 bench/checkpoint.py [-n 5]                           # inside the VM (CRIU fails on 6.18)

The tree: a busybox shell counting in memory, writing its count to /count
in its rootfs and `tick N` to its stdout every 0.2 s (the VM test's
counter), as a rootfs container (--network none, --userns host, memory
64M, cpus 0.5, pids 32), rootfs and state dir on a tmpfs (CRIU cannot dump
files of the VM's 9p root). Interleaved rounds, each contender on a fresh
tree that has counted to 3:

  agent_checkpoint  CheckpointService.checkpoint(NAME): what agentd runs for
                    `agentctl checkpoint` (refusal checks, the launcher's
                    CRIU dump, the tree's end seen by the supervisor, the
                    record written and renamed into place), in process.
  agent_restore     CheckpointService.restore(NAME): the old instance
                    removed, a new container (cgroup, limits), the
                    launcher's CRIU restore into it, adoption.
  criu_dump         the same kind of container started by the same agentd,
                    dumped by hand: `criu dump` with the command line
                    agentd uses (agent/checkpoint/criu.py dump_argv: the
                    same --freeze-cgroup, --external mnt[], -v4 log), timed
                    around the criu process alone.
  criu_restore      `criu restore -d` of those images by hand into a fresh
                    cgroup (restore_argv: --root, --ext-mount-map auto,
                    --cgroup-root, new pipes for the old ones with
                    --inherit-fd), timed around the criu process alone.
  runc_checkpoint / runc_restore  `runc checkpoint` / `runc restore -d` of
                    a runc container running the same program on a copy of
                    the same rootfs with a network namespace (as
                    --network none); skipped with a note when runc is
                    missing or refuses.

Each restored tree is checked to count on from where it was (not from
zero) before it is killed. Prints medians and the ratios agent/criu and
agent/runc; writes bench/out/checkpoint.json.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from agent.checkpoint import criu  # noqa: E402
from agent.checkpoint.service import CheckpointService  # noqa: E402
from agent.config import load_config  # noqa: E402
from agent.launcher import LauncherClient  # noqa: E402
from agent.spec import from_json  # noqa: E402
from agent.store import Store  # noqa: E402
from agent.supervisor import Supervisor, layout_cgroups  # noqa: E402
from launch_latency import kill_tree, make_bundle  # noqa: E402
from runtime.cgroupfs import Cgroup, find_mount  # noqa: E402
from runtime.inotify import Watcher  # noqa: E402

COUNTER = "i=0; while :; do i=$((i+1)); echo $i > /count; echo tick $i; sleep 0.2; done"
LIMITS = {"memory": "64M", "pids": 32, "cpus": "0.5"}
CONTROLLERS = ("cpu", "memory", "pids")


def wait_for(pred, timeout=180.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def count(rootfs):
    try:
        with open(os.path.join(rootfs, "count")) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def goes_on(rootfs, at, what):
    """The restored tree counts on from `at` (its memory), not from zero."""
    wait_for(lambda: count(rootfs) >= at + 2, what=f"{what}: the restored counter to go on from {at}")


def busybox_rootfs(path):
    os.makedirs(os.path.join(path, "bin"))
    shutil.copy(shutil.which("busybox") or "/bin/busybox", os.path.join(path, "bin", "busybox"))
    for applet in ("sh", "sleep", "echo"):
        os.symlink("busybox", os.path.join(path, "bin", applet))
    return path


def enable(path):
    have = set(Cgroup(path).read("cgroup.subtree_control").split())
    for c in CONTROLLERS:
        if c not in have:
            Cgroup(path).write("cgroup.subtree_control", f"+{c}")


class Agent:
    """What agentd wires together (supervisor, launcher, checkpoint service), in process."""

    def __init__(self, top):
        mount = find_mount().rstrip("/")
        enable(mount)
        self.root = os.path.join(mount, f"cga-bench-ckpt-{secrets.token_hex(3)}")
        os.mkdir(self.root)
        enable(self.root)
        self.state = os.path.join(top, "state")
        os.makedirs(self.state)
        self.config = load_config(None, {"agent.state_dir": self.state, "agent.cgroup_root": self.root,
                                         "agent.socket": os.path.join(self.state, "agent.sock"),
                                         "agent.stop_timeout": "5s"})
        self.layout = layout_cgroups(self.root, move_self=False)
        self.launcher = LauncherClient.connect_or_start(self.state, self.layout.launcher.path, timeout=120)
        self.store = Store(os.path.join(self.state, "state.db"))
        self.watcher = Watcher()
        self.sup = Supervisor(self.config, self.store, self.launcher, self.watcher, self.layout)
        self.sup.boot()
        self.ckpt = CheckpointService(self.config, self.sup)

    def run(self, name, rootfs):
        spec = from_json({"name": name, "argv": ["sh", "-c", COUNTER], "rootfs": rootfs, "network": "none",
                          "userns": "host", "limits": LIMITS}, self.config)
        info = self.sup.create(spec)
        wait_for(lambda: count(rootfs) >= 3, what=f"{name} to count to 3")
        return info

    def close(self):
        for c in self.sup.containers():
            try:
                self.sup.remove(c.name, force=True)
            except Exception:
                pass
        self.sup.close()
        self.watcher.close()
        self.store.close()
        try:
            self.launcher.shutdown()
        except Exception:
            pass
        self.launcher.close()
        kill_tree(self.root)


def timed_run(argv, **kw) -> float:
    """Seconds the command took; its output goes to a file (a detached tree may keep a pipe open)."""
    import tempfile
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        p = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=600, **kw)
        dt = time.perf_counter() - t0
        if p.returncode != 0:
            out.seek(0)
            lines = out.read().strip().splitlines()
            raise RuntimeError(f"{' '.join(argv[:2])} exited {p.returncode}: {lines[-1] if lines else ''}")
    return dt


def round_agent(agent, i, rootfs, res):
    name = f"agent-{i}"
    os.unlink(os.path.join(rootfs, "count")) if os.path.exists(os.path.join(rootfs, "count")) else None
    agent.run(name, rootfs)
    t0 = time.perf_counter()
    agent.ckpt.checkpoint(name)
    res["agent_checkpoint"].append(time.perf_counter() - t0)
    at = count(rootfs)
    t0 = time.perf_counter()
    agent.ckpt.restore(name)
    res["agent_restore"].append(time.perf_counter() - t0)
    goes_on(rootfs, at, name)
    agent.sup.remove(name, force=True)
    agent.ckpt.remove(name)


def round_criu(agent, i, rootfs, top, res):
    """The same container, dumped and restored by hand with plain criu."""
    name = f"plain-{i}"
    os.unlink(os.path.join(rootfs, "count")) if os.path.exists(os.path.join(rootfs, "count")) else None
    info = agent.run(name, rootfs)
    pipes = [os.readlink(f"/proc/{info.pid}/fd/{fd}") for fd in (1, 2)]
    images = os.path.join(top, f"plain-images-{i}")
    os.makedirs(images)
    res["criu_dump"].append(timed_run(criu.dump_argv(info.pid, images, info.cgroup, False)))
    at = count(rootfs)
    agent.sup.wait(name, timeout=120)
    mount = find_mount().rstrip("/")
    target = os.path.join(agent.root, f"plain-restore-{i}")
    os.mkdir(target)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    inherit, seen = [], set()
    for key, w in zip(pipes, (out_w, err_w)):
        if key not in seen:
            inherit.append((w, key))
            seen.add(key)
    pidfile = os.path.join(images, "restore.pid")
    try:
        res["criu_restore"].append(timed_run(criu.restore_argv(images, rootfs, pidfile, target[len(mount):], inherit),
                                             pass_fds=(out_w, err_w)))
        goes_on(rootfs, at, name)
    finally:
        kill_tree(target)
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)
        agent.sup.remove(name, force=True)
        shutil.rmtree(images, ignore_errors=True)


def round_runc(runc, top, i, res):
    bundle = make_bundle(top, {}, ["/bin/sh", "-c", COUNTER])
    with open(os.path.join(bundle, "config.json")) as f:
        doc = json.load(f)
    doc["linux"]["namespaces"].append({"type": "network"})     # as --network none
    doc["root"]["path"] = rootfs = os.path.join(top, f"runc-rootfs-{i}")
    shutil.copytree(os.path.join(top, "rootfs"), rootfs, symlinks=True)
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(doc, f)
    rroot, cid = os.path.join(top, "runc-root"), f"ckpt-{i}"
    images, work = os.path.join(top, f"runc-images-{i}"), os.path.join(top, f"runc-work-{i}")
    # stdio are pipes, as agentd's (a file or /dev/null outside the container's mounts is not
    # dumpable); runc hands its own stdio to CRIU in their place at restore
    ends = [os.pipe() for _ in range(6)]
    try:
        subprocess.run([runc, "--root", rroot, "run", "-d", "--bundle", bundle, cid], check=True,
                       stdin=ends[0][0], stdout=ends[1][1], stderr=ends[2][1], timeout=300)
        wait_for(lambda: count(rootfs) >= 3, what="the runc container to count to 3")
        try:
            res["runc_checkpoint"].append(timed_run([runc, "--root", rroot, "checkpoint", "--image-path", images,
                                                     "--work-path", work, cid]))
        except RuntimeError as e:
            raise RuntimeError(f"{e}; {criu.first_error(_text(os.path.join(work, 'dump.log')))}") from None
        at = count(rootfs)
        t0 = time.perf_counter()
        p = subprocess.run([runc, "--root", rroot, "restore", "-d", "--image-path", images, "--work-path",
                            work + "-r", "--bundle", bundle, cid], stdin=ends[3][0], stdout=ends[4][1],
                           stderr=ends[5][1], timeout=600)
        dt = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"runc restore exited {p.returncode}: "
                               f"{criu.first_error(_text(os.path.join(work + '-r', 'restore.log')))}")
        res["runc_restore"].append(dt)
        goes_on(rootfs, at, "runc")
    finally:
        subprocess.run([runc, "--root", rroot, "delete", "-f", cid], capture_output=True)
        for r, w in ends:
            os.close(r)
            os.close(w)


def _text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def median_ms(values):
    return round(statistics.median(values) * 1000, 1) if values else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=5, help="rounds (default %(default)s)")
    args = p.parse_args()
    st = criu.status()
    if not st["ok"]:
        print(f"bench/checkpoint.py: {st['reason']}; run it in the VM: "
              "python3 tests/vm/run.py --bench bench/checkpoint.py", file=sys.stderr)
        return 2
    top = f"/tmp/cga-bench-ckpt-{secrets.token_hex(4)}"
    os.makedirs(top)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", top], check=True)
    res = {k: [] for k in ("agent_checkpoint", "agent_restore", "criu_dump", "criu_restore",
                           "runc_checkpoint", "runc_restore")}
    notes = []
    runc = shutil.which("runc")
    if not runc:
        notes.append("runc is not installed: no runc contender")
    agent = None
    try:
        rootfs_a = busybox_rootfs(os.path.join(top, "rootfs-agent"))
        rootfs_p = busybox_rootfs(os.path.join(top, "rootfs-plain"))
        agent = Agent(top)
        for i in range(args.n):
            round_agent(agent, i, rootfs_a, res)
            round_criu(agent, i, rootfs_p, top, res)
            if runc:
                try:
                    round_runc(runc, top, i, res)
                except (RuntimeError, subprocess.SubprocessError, OSError) as e:
                    notes.append(f"runc round {i}: {str(e).splitlines()[0][:300]}")
            print(f"round {i + 1}/{args.n} done", flush=True)
    finally:
        if agent is not None:
            agent.close()
        subprocess.run(["umount", "-l", top])
    med = {k: median_ms(v) for k, v in res.items()}
    ratios = {}
    for a, b, key in (("agent_checkpoint", "criu_dump", "checkpoint/criu_dump"),
                      ("agent_restore", "criu_restore", "restore/criu_restore"),
                      ("agent_checkpoint", "runc_checkpoint", "checkpoint/runc_checkpoint"),
                      ("agent_restore", "runc_restore", "restore/runc_restore")):
        if med[a] and med[b]:
            ratios[key] = round(med[a] / med[b], 2)
    report = {"kernel": os.uname().release, "criu": st["version"], "rounds": args.n,
              "median_ms": med, "ratios": ratios, "samples_s": res, "notes": notes}
    print(f"kernel {report['kernel']}, criu {st['version']}, {args.n} rounds; median ms:")
    for k, v in med.items():
        print(f"  {k:18} {v}")
    for k, v in ratios.items():
        print(f"  {k:28} {v}")
    for n in notes:
        print(f"  note: {n}")
    out = os.path.join(REPO, "bench", "out")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "checkpoint.json"), "w") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
