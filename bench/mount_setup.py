#!/usr/bin/env python3
"""Container setup cost of mounting from descriptors and of the cgroup
namespace, against the previous runtime/spawn.py, measured in one run.

    python3 bench/mount_setup.py [-n 40] [--base REV]      (as root)

Each contender forks the launcher's child exactly as the launcher does
(runtime.spawn.fork_in_cgroup + run_child) for a busybox rootfs container
with two volumes and `/bin/true`, and times fork -> execve (the child's
close-on-exec error pipe closing), interleaved so that drift and load hit
every contender alike:
  base      runtime/ as it was at REV (default: the parent of the commit
            that added runtime/mounts.py): mounts by path, no cgroupns
  fd        this tree with the cgroup namespace turned off: descriptors only
  fd+cgns   this tree as it runs: descriptors and a cgroup namespace with
            the container's cgroup read-only at /sys/fs/cgroup
Prints p50/p90 (ms) and the ratios to base. Writes bench/out/mount_setup.json.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from runtime import namespaces as ns  # noqa: E402
from runtime import spawn  # noqa: E402
from runtime.cgroupfs import find_mount  # noqa: E402


def base_rev() -> str:
    added = subprocess.run(["git", "-C", REPO, "log", "--diff-filter=A", "--format=%H", "--", "runtime/mounts.py"],
                           capture_output=True, text=True, check=True).stdout.split()
    if not added:
        sys.exit("no commit adds runtime/mounts.py here: give --base REV")
    return added[-1] + "^"


def load_base(rev: str, into: str):
    """runtime/ at `rev` as the package runtime_base (its imports are relative)."""
    pkg = os.path.join(into, "runtime_base")
    os.mkdir(pkg)
    tar = subprocess.run(["git", "-C", REPO, "archive", rev, "runtime"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=tar, check=True)
    for name in os.listdir(os.path.join(into, "runtime")):
        os.rename(os.path.join(into, "runtime", name), os.path.join(pkg, name))
    sys.path.insert(0, into)
    return importlib.import_module("runtime_base.spawn")


def rootfs_and_volumes(top: str) -> tuple[str, list[dict]]:
    root = os.path.join(top, "rootfs")
    os.makedirs(os.path.join(root, "bin"))
    shutil.copy("/bin/busybox", os.path.join(root, "bin", "busybox"))
    os.symlink("busybox", os.path.join(root, "bin", "true"))
    vols = []
    for i in range(2):
        src = os.path.join(top, f"vol{i}")
        os.mkdir(src)
        vols.append({"src": src, "dst": f"/data{i}", "ro": i == 1})
    return root, vols


def launch_once(mod, spec_cls, spec_dict: dict, parent: str) -> float:
    """fork -> execve of one container, in seconds; the container is reaped
    and its cgroup removed before returning."""
    cg = os.path.join(parent, uuid.uuid4().hex[:12])
    os.mkdir(cg)
    spec = spec_cls.from_dict(dict(spec_dict, cgroup=cg))
    fail_r, fail_w = os.pipe()
    pid_r, pid_w = os.pipe()
    for fd in (fail_r, fail_w, pid_r, pid_w):
        os.set_inheritable(fd, False)
    null = os.open(os.devnull, os.O_WRONLY)
    t0 = time.perf_counter()
    child, joined = mod.fork_in_cgroup(cg)
    if child == 0:
        try:
            mod.run_child(spec, stdout_fd=null, stderr_fd=null, err_w=fail_w, pid_w=pid_w, joined=joined)
        finally:
            os._exit(127)
    os.close(fail_w)
    os.close(pid_w)
    with os.fdopen(pid_r, "rb") as f:
        pid1 = int(f.read() or b"0")
    with os.fdopen(fail_r, "rb") as f:
        failure = f.read().decode().strip()
    t1 = time.perf_counter()
    os.close(null)
    os.waitpid(child, 0)
    if pid1:
        os.waitpid(pid1, 0)          # reparented to us: the child subreaper
    os.rmdir(cg)
    if failure:
        raise SystemExit(f"container setup failed: {failure}")
    return t1 - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=40, help="launches per contender (default 40)")
    ap.add_argument("--base", help="git revision of the previous runtime/ (default: before runtime/mounts.py)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (namespaces, mounts, cgroups)")
    top = tempfile.mkdtemp(prefix="cga-bench-mounts-")
    parent = os.path.join(find_mount(), f"cga-bench-{uuid.uuid4().hex[:10]}")
    os.mkdir(parent)
    try:
        rev = args.base or base_rev()
        base = load_base(rev, top)
        root, vols = rootfs_and_volumes(top)

        class NoCgroupns(spawn.SpawnSpec):
            cgroupns = property(lambda self: False)

        spec = {"argv": ["/bin/true"], "env": {"PATH": "/bin"}, "stdout": "/dev/null", "stderr": "/dev/null",
                "rootfs": root, "mounts": vols, "cgroup": parent}
        contenders = {"base": (base, base.SpawnSpec), "fd": (spawn, NoCgroupns), "fd+cgns": (spawn, spawn.SpawnSpec)}
        ns.set_child_subreaper()
        times = {k: [] for k in contenders}
        for _ in range(3):                                   # warm-up, not counted
            for mod, cls in contenders.values():
                launch_once(mod, cls, spec, parent)
        for _ in range(args.n):
            for name, (mod, cls) in contenders.items():
                times[name].append(launch_once(mod, cls, spec, parent))
        p50 = {k: statistics.median(v) * 1000 for k, v in times.items()}
        p90 = {k: sorted(v)[int(0.9 * (len(v) - 1))] * 1000 for k, v in times.items()}
        print(f"fork -> execve of a rootfs container with 2 volumes, {args.n} launches each, base = {rev}")
        print(f"{'contender':10} {'p50 ms':>8} {'p90 ms':>8} {'p50/base':>9}")
        for k in contenders:
            print(f"{k:10} {p50[k]:8.2f} {p90[k]:8.2f} {p50[k] / p50['base']:9.2f}")
        os.makedirs(os.path.join(REPO, "bench", "out"), exist_ok=True)
        with open(os.path.join(REPO, "bench", "out", "mount_setup.json"), "w") as f:
            json.dump({"base": rev, "n": args.n, "p50_ms": p50, "p90_ms": p90,
                       "ratio_to_base": {k: p50[k] / p50["base"] for k in p50}}, f, indent=1)
    finally:
        shutil.rmtree(top, ignore_errors=True)
        try:
            os.rmdir(parent)
        except OSError:
            pass


if __name__ == "__main__":
    main()
