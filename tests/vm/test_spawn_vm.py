"""Spawning on full cgroup v2 (kernel 6.1 in the VM): the container is charged
to its cgroup from before its first instruction (pids.max counts the setup
processes too), and the security set-up holds on this older kernel."""
from __future__ import annotations

import os
import shutil
import time
import uuid

import pytest

from agent.launcher import LaunchError, LauncherClient

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(scope="module")
def launcher(vm_test_parent, tmp_path_factory):
    state_dir = str(tmp_path_factory.mktemp("launcher"))
    client = LauncherClient.connect_or_start(state_dir, os.path.join(vm_test_parent.path, "launcher"),
                                             timeout=60)
    pid = client.ping()["pid"]
    yield client, state_dir
    try:
        client.shutdown()
    finally:
        client.close()
    for _ in range(3000):
        if not os.path.exists(f"/proc/{pid}"):
            break
        time.sleep(0.01)


def wait_exit(client, cid, pid, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rec in client.exits():
            if (rec.id, rec.pid) == (cid, pid):
                client.ack(cid, pid)
                return rec
        time.sleep(0.05)
    raise AssertionError(f"no exit record for {cid}/{pid}")


def spec(state_dir, cg, cid, argv, **kw):
    d = {"argv": argv, "env": {"PATH": PATH}, "cgroup": cg.path,
         "stdout": os.path.join(state_dir, cid + ".out"),
         "stderr": os.path.join(state_dir, cid + ".err")}
    d.update(kw)
    return d


def test_pids_max_counts_the_setup_itself(launcher, make_v2_cgroup):
    client, state_dir = launcher
    cg = make_v2_cgroup()
    cg.write("pids.max", "1")       # the intermediate is the one allowed task: PID 1 cannot fork
    cid = "v" + uuid.uuid4().hex[:11]
    with pytest.raises(LaunchError) as e:
        client.spawn(cid, spec(state_dir, cg, cid, ["true"]))
    assert str(e.value) == "fork container init: Resource temporarily unavailable"
    assert cg.read("cgroup.procs") == ""
    assert cid not in client.running()
    assert int(cg.read("pids.events").split()[1]) >= 1     # "max N": the kernel refused a fork here


def test_limited_rootfs_container_on_kernel_6_1(launcher, make_v2_cgroup, tmp_path):
    client, state_dir = launcher
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "cat", "grep", "ls", "hostname"):
        os.symlink("busybox", root / "bin" / applet)
    cg = make_v2_cgroup()
    cg.write("memory.max", str(64 << 20))
    cg.write("pids.max", "16")
    cid = "v" + uuid.uuid4().hex[:11]
    script = ("echo $$; hostname; cat /proc/self/cgroup; ls /sys/fs/cgroup | wc -l; "
              "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max; "
              "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; ls /")
    os.symlink("busybox", root / "bin" / "wc")
    pid = client.spawn(cid, spec(state_dir, cg, cid, ["sh", "-c", script], rootfs=str(root),
                                 hostname="vmbox", network="none", env={"PATH": "/bin"}))
    rec = wait_exit(client, cid, pid)
    with open(os.path.join(state_dir, cid + ".out")) as f:
        out = f.read().split()
    with open(os.path.join(state_dir, cid + ".err")) as f:
        assert f.read() == ""
    assert rec.exit_code == 0
    assert out[:2] == ["1", "vmbox"]
    # its own cgroup namespace: its cgroup is "/", and only that cgroup is
    # at /sys/fs/cgroup (read-only), so tools inside see their own limits
    assert out[2] == "0::/"
    assert int(out[3]) == len(os.listdir(cg.path))
    assert out[4:6] == [str(64 << 20), "16"]
    assert out[6:12] == ["CapEff:", "00000000a80425fb", "NoNewPrivs:", "1", "Seccomp:", "2"]
    assert out[12:] == ["bin", "dev", "proc", "sys"]
    assert int(cg.read("memory.peak")) > 0     # charged here, not to the launcher
