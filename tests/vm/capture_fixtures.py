#!/usr/bin/env python3
"""Capture real cgroup v2 files from the VM's kernel as unit-test fixtures.

Run through the VM runner (never on the host):

    python3 tests/vm/run.py --capture

Writes into tests/unit/fixtures/kernel-6.1/ (replacing what was there):

    <flat files>   every readable file of a busy, limited cgroup, captured
                   while its workload runs: CPU burner throttled by cpu.max,
                   32 MiB anon, page cache over memory.high, O_DIRECT and
                   buffered IO on two loop devices (io.stat has both), three
                   sleeping children (pids.current 4)
    oom/           a cgroup after its process was OOM-killed (memory.events
                   oom_kill 1, populated 0)
    frozen/        a cgroup with a sleeping process, frozen (cgroup.events
                   frozen 1)
    unlimited/     a fresh cgroup with kernel defaults (cpu.max "max 100000",
                   memory.max "max", io.max empty, ...)
    root/          the root cgroup's files (no limits files there)
    CAPTURED.txt   kernel, date, what ran, the limits written
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time

CGROUP_MOUNT = "/sys/fs/cgroup"
CONTROLLERS = ("cpu", "memory", "io", "pids", "cpuset")
IN_VM_ENV = "CGROUP_AGENT_IN_VM"

WORKLOAD = r"""
import mmap, os, sys, time
devs = sys.argv[1:]
for _ in range(3):
    if os.fork() == 0:
        time.sleep(3600)
        os._exit(0)
anon = bytearray(32 << 20)
for i in range(0, len(anon), 4096):
    anon[i] = 1
buf = mmap.mmap(-1, 1 << 20)
buf.write(b"y" * (1 << 20))
for dev in devs:
    fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
    for i in range(4):
        os.pwrite(fd, buf, i << 20)
    for i in range(2):
        os.preadv(fd, [buf], (8 + i) << 20)
    os.close(fd)
with open(devs[0], "rb") as f:          # page cache, over memory.high
    while f.read(1 << 20):
        pass
with open("/dev/shm/cga-capture", "wb") as f:   # shmem
    f.write(b"z" * (4 << 20))
print("ready", flush=True)
x = 0
while True:                             # throttled by cpu.max
    x += 1
"""

OOM = "b = []\nwhile True:\n    b.append(b'\\x01' * (1 << 20))\n"


def write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def enable_all(path: str) -> None:
    for name in CONTROLLERS:
        write(os.path.join(path, "cgroup.subtree_control"), f"+{name}")


def popen_in(cg: str, argv, **kw) -> subprocess.Popen:
    def join():
        write(os.path.join(cg, "cgroup.procs"), "0")
    return subprocess.Popen(argv, preexec_fn=join, **kw)


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"capture: timed out waiting for {what}")
        time.sleep(0.05)


def copy_cgroup(src: str, dst: str) -> list[str]:
    """Copy every readable regular file of cgroup ``src`` into ``dst``."""
    os.makedirs(dst, exist_ok=True)
    copied = []
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        if not entry.is_file() or not entry.stat().st_mode & stat.S_IRUSR:
            continue
        try:
            with open(entry.path, "rb") as f:
                data = f.read()
        except OSError:
            continue   # write-only or unsupported here (e.g. memory.reclaim)
        with open(os.path.join(dst, entry.name), "wb") as f:
            f.write(data)
        copied.append(entry.name)
    return copied


def destroy(path: str) -> None:
    if not os.path.isdir(path):
        return
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            destroy(entry.path)
    if os.path.exists(os.path.join(path, "cgroup.freeze")):
        write(os.path.join(path, "cgroup.freeze"), "0")
    write(os.path.join(path, "cgroup.kill"), "1")
    wait_for(lambda: "populated 0" in read(os.path.join(path, "cgroup.events")), 30,
             f"{path} to empty")
    os.rmdir(path)


def loop_devices(n: int, workdir: str) -> list[str]:
    if not os.path.exists("/dev/loop-control"):
        subprocess.run(["modprobe", "loop"], check=True)
        wait_for(lambda: os.path.exists("/dev/loop-control"), 10, "/dev/loop-control")
    devs = []
    for i in range(n):
        img = os.path.join(workdir, f"disk{i}.img")
        with open(img, "wb") as f:
            f.truncate(32 << 20)
        devs.append(subprocess.run(["losetup", "--find", "--show", img], check=True,
                                   capture_output=True, text=True).stdout.strip())
    return devs


def majmin(dev: str) -> str:
    rdev = os.stat(dev).st_rdev
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def capture(out: str) -> None:
    notes = [f"kernel: {os.uname().release}",
             f"captured: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} "
             f"by tests/vm/capture_fixtures.py inside the VM (qemu TCG, "
             f"{os.cpu_count()} vCPUs)"]
    enable_all(CGROUP_MOUNT)
    parent = os.path.join(CGROUP_MOUNT, f"cga-capture-{secrets.token_hex(4)}")
    os.mkdir(parent)
    workdir = tempfile.mkdtemp(prefix="cga-capture-")
    devs = []
    procs = []
    try:
        enable_all(parent)
        devs = loop_devices(2, workdir)
        d0, d1 = majmin(devs[0]), majmin(devs[1])

        # -- busy, limited cgroup (the flat files) -------------------------
        busy = os.path.join(parent, "busy")
        os.mkdir(busy)
        limits = [("cpu.max", "50000 100000"), ("cpu.weight", "200"),
                  ("memory.max", str(256 << 20)), ("memory.high", str(64 << 20)),
                  ("memory.low", str(16 << 20)), ("memory.swap.max", "0"),
                  ("pids.max", "64"), ("cpuset.cpus", "0-1"), ("cpuset.mems", "0"),
                  ("io.max", f"{d0} wbps={8 << 20} riops=2000"),
                  ("io.max", f"{d1} rbps={16 << 20} wiops=500"),
                  ("io.weight", "default 150")]
        for name, value in limits:
            write(os.path.join(busy, name), value)
            notes.append(f"busy/{name} <- {value!r}")
        proc = popen_in(busy, [sys.executable, "-c", WORKLOAD] + devs,
                        stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise SystemExit(f"capture: busy workload failed (exit {proc.wait()})")
        time.sleep(4)  # let cpu.max throttle it and PSI averages move
        tmp_out = out + ".tmp"
        shutil.rmtree(tmp_out, ignore_errors=True)
        copied = copy_cgroup(busy, tmp_out)
        notes.append(f"flat files: cgroup {busy} while its workload ran (loop devices "
                     f"{d0} and {d1}): {len(copied)} files")

        # -- unlimited: kernel defaults ------------------------------------
        unlimited = os.path.join(parent, "unlimited")
        os.mkdir(unlimited)
        copy_cgroup(unlimited, os.path.join(tmp_out, "unlimited"))
        notes.append("unlimited/: a fresh empty cgroup, nothing written")

        # -- frozen ----------------------------------------------------------
        frozen = os.path.join(parent, "frozen")
        os.mkdir(frozen)
        procs.append(popen_in(frozen, ["sleep", "3600"]))
        write(os.path.join(frozen, "cgroup.freeze"), "1")
        wait_for(lambda: "frozen 1" in read(os.path.join(frozen, "cgroup.events")), 30,
                 "frozen 1")
        copy_cgroup(frozen, os.path.join(tmp_out, "frozen"))
        notes.append("frozen/: one `sleep 3600`, cgroup.freeze <- 1, after frozen 1")

        # -- oom -------------------------------------------------------------
        oom = os.path.join(parent, "oom")
        os.mkdir(oom)
        write(os.path.join(oom, "memory.max"), str(32 << 20))
        write(os.path.join(oom, "memory.swap.max"), "0")
        p = popen_in(oom, [sys.executable, "-c", OOM])
        rc = p.wait(timeout=300)
        wait_for(lambda: "populated 0" in read(os.path.join(oom, "cgroup.events")), 30,
                 "oom cgroup to empty")
        copy_cgroup(oom, os.path.join(tmp_out, "oom"))
        notes.append(f"oom/: memory.max 32M, swap.max 0, python allocating 1 MiB "
                     f"chunks; exit status {rc}")

        # -- root ------------------------------------------------------------
        copy_cgroup(CGROUP_MOUNT, os.path.join(tmp_out, "root"))
        notes.append("root/: /sys/fs/cgroup itself (subtree_control enabled)")

        with open(os.path.join(tmp_out, "CAPTURED.txt"), "w") as f:
            f.write("\n".join(notes) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        os.rename(tmp_out, out)
        print("\n".join(notes))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        destroy(parent)
        for p in procs:
            p.wait()
        for dev in devs:
            subprocess.run(["losetup", "-d", dev], check=False)
        shutil.rmtree(workdir, ignore_errors=True)
        try:
            os.unlink("/dev/shm/cga-capture")
        except FileNotFoundError:
            pass


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="fixture folder to (re)write")
    args = p.parse_args()
    if os.environ.get(IN_VM_ENV) != "1":
        print(f"capture_fixtures: refusing to run outside the VM ({IN_VM_ENV} is not 1); "
              f"use `python3 tests/vm/run.py --capture`", file=sys.stderr)
        return 2
    capture(os.path.abspath(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
