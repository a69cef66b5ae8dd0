"""The VM tier's own fixtures do what conftest.py promises, on full cgroup v2."""
from __future__ import annotations

import os
import socket
import stat
import subprocess

from conftest import CONTROLLERS


def test_v2_cgroup_has_every_controller(v2_cgroup, vm_test_parent):
    assert set(CONTROLLERS) <= vm_test_parent.subtree_control()
    assert set(CONTROLLERS) <= v2_cgroup.controllers()
    for f in ("cpu.max", "cpu.weight", "memory.max", "memory.swap.max", "io.max",
              "io.weight", "pids.max", "cpuset.cpus"):
        assert os.path.isfile(v2_cgroup.file(f)), f


def test_run_in_cgroup_joins_before_exec(v2_cgroup, run_in_cgroup):
    # The command's own view of its cgroup, read by its first instruction.
    proc = run_in_cgroup(v2_cgroup, ["cat", "/proc/self/cgroup"], stdout=subprocess.PIPE,
                         text=True)
    out, _ = proc.communicate(timeout=60)
    rel = v2_cgroup.path[len("/sys/fs/cgroup"):]
    assert out.strip() == f"0::{rel}"
    assert proc.returncode == 0


def test_loop_block_device_accounts_io(loop_block_device, v2_cgroup, run_in_cgroup, python):
    st = os.stat(loop_block_device.path)
    assert stat.S_ISBLK(st.st_mode)
    script = ("import mmap, os\n"
              "buf = mmap.mmap(-1, 1 << 20)\n"
              "buf.write(b'x' * (1 << 20))\n"
              f"fd = os.open({loop_block_device.path!r}, os.O_WRONLY | os.O_DIRECT)\n"
              "for _ in range(2):\n"
              "    os.write(fd, buf)\n"
              "os.close(fd)\n")
    proc = run_in_cgroup(v2_cgroup, [python, "-S", "-c", script])
    assert proc.wait(timeout=120) == 0
    io = v2_cgroup.read("io.stat")
    line = [ln for ln in io.splitlines() if ln.startswith(loop_block_device.majmin + " ")]
    assert line, io
    fields = dict(kv.split("=") for kv in line[0].split()[1:])
    assert int(fields["wbytes"]) >= 2 << 20


def test_loopback_networking():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname(), timeout=10)
    conn, _ = srv.accept()
    cli.sendall(b"ping")
    assert conn.recv(4) == b"ping"
    for s in (cli, conn, srv):
        s.close()
