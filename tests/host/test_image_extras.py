"""Image containers, the rest of Docker's run flags and image config: a real
registry, agentd and agentctl (the fixtures of test_images.py).

--read-only: the container's root refuses writes (the overlay mounted
read-only), --tmpfs gives it a fresh tmpfs with the size and mode asked,
nosuid,nodev,noexec by default; the image config's ExposedPorts and Labels
are shown by inspect, its Volumes are not made (logged).
"""
from __future__ import annotations

import json
import os

import pytest

from registry_fixtures import ImageBuilder
from helpers import ctl, one_line, uname
from test_images import agentd, registry, run_ok, top  # noqa: F401  (module fixtures)

pytestmark = pytest.mark.skipif(__import__("shutil").which("docker-registry") is None,
                                reason="docker-registry/umoci/skopeo not installed (scripts/setup.sh installs them)")


@pytest.fixture(scope="module")
def webby(top, registry):  # noqa: F811
    """An image whose config exposes ports, labels itself and declares a volume."""
    b = ImageBuilder(top, "webby").busybox().layer()
    b.config("--config.cmd", "sh", "--config.cmd", "-c", "--config.cmd", "echo up",
             "--config.exposedports", "8080/tcp", "--config.exposedports", "53/udp",
             "--config.label", "org.example.tier=web", "--config.volume", "/data")
    return registry.push(b.layout, "1", "webby")


def test_read_only_root_refuses_writes_but_its_tmpfs_takes_them(agentd, webby):  # noqa: F811
    script = ("touch /x 2>&1; echo root-rc=$?; echo hi > /scratch/y && cat /scratch/y; "
              "stat -c mode=%a /scratch; busybox head -c 2000000 /dev/zero > /scratch/big; echo big-rc=$?; "
              "stat -c big=%s /scratch/big; "
              "grep ' /scratch ' /proc/mounts")
    name = uname("ro")
    r = run_ok(agentd, "run", "--name", name, "--read-only", "--tmpfs", "/scratch:size=1m,mode=1770",
               "--image", webby, "--", "sh", "-c", script)
    out = r.stdout
    assert "Read-only file system" in out and "root-rc=1" in out, out
    assert "hi\n" in out and "mode=1770" in out, out
    # the size asked is the size it has: 2 MB do not fit in 1 MiB
    assert "big-rc=1" in out, out
    big = int(next(w for w in out.split() if w.startswith("big="))[4:])
    assert 0 < big <= 1 << 20, out
    mounts = [line for line in out.splitlines() if " /scratch tmpfs " in line]
    assert mounts, out
    opts = mounts[0].split()[3].split(",")
    assert {"rw", "nosuid", "nodev", "noexec", "size=1024k", "mode=1770"} <= set(opts), opts
    # the refused write left nothing in the container's upper dir
    cid = json.loads(run_ok(agentd, "inspect", name).stdout)["id"]
    assert not os.path.exists(os.path.join(agentd.state, "containers", cid, "upper", "x"))
    doc = json.loads(run_ok(agentd, "inspect", name).stdout)
    assert doc["read_only"] is True and doc["tmpfs"] == ["/scratch:size=1m,mode=1770,rw,noexec,nosuid,nodev"]
    run_ok(agentd, "rm", name)
    # the peer: the same image without --read-only writes its root, and a
    # tmpfs given exec,suid is mounted without noexec/nosuid (still nodev)
    r = run_ok(agentd, "run", "--rm", "--tmpfs", "/t:exec,suid", "--image", webby, "--", "sh", "-c",
               "touch /x && echo root-ok; grep ' /t ' /proc/mounts")
    assert "root-ok" in r.stdout, r.stdout
    opts = r.stdout.splitlines()[-1].split()[3].split(",")
    assert "nodev" in opts and "noexec" not in opts and "nosuid" not in opts, opts


def test_image_config_ports_and_labels_are_recorded(agentd, webby):  # noqa: F811
    name = uname("ports")
    run_ok(agentd, "run", "--name", name, "--image", webby)
    doc = json.loads(run_ok(agentd, "inspect", name).stdout)
    assert doc["exposed_ports"] == ["53/udp", "8080/tcp"]
    assert doc["labels"]["org.example.tier"] == "web"
    assert doc["read_only"] is False and doc["tmpfs"] == []
    run_ok(agentd, "rm", name)
    # the image's Volumes: no anonymous volume, the path stays in its root
    with open(os.path.join(agentd.top, "agentd.log")) as f:
        assert "image.volumes_not_created" in f.read()


@pytest.mark.parametrize("args, says", [
    (["--tmpfs", "/t:size=lots"], "'size=lots' is not an option of /t"),
    (["--tmpfs", "/t:dev"], "'dev' is refused on /t"),
    (["--tmpfs", "/proc/x"], "/proc/x is under /proc"),
    (["--tmpfs", "relative"], "is not an absolute container path"),
])
def test_a_bad_tmpfs_is_one_line_and_bad_usage(agentd, webby, args, says):  # noqa: F811
    r = ctl(agentd, "run", "--rm", *args, "--image", webby)
    assert r.returncode == 2 and says in one_line(r), r.stderr


def test_read_only_and_tmpfs_need_a_root_of_the_containers_own(agentd):  # noqa: F811
    for args, says in ((["--read-only"], "read_only: needs a rootfs"), (["--tmpfs", "/t"], "tmpfs: needs a rootfs")):
        name = uname("host")
        r = ctl(agentd, "run", "--rm", "--name", name, *args, "--", "/bin/true")
        assert r.returncode == 2 and says in one_line(r), r.stderr   # the API's 400
        assert ctl(agentd, "inspect", name).returncode == 1   # nothing created


def test_fs_usage_of_an_image_container_is_its_upper_dir_walked_within_a_budget(agentd, webby):  # noqa: F811
    """container_fs_usage_bytes: the bytes the container wrote (du's count of
    its upper dir), found by a walk spread over several passes when the
    per-pass budget is small, with cAdvisor's labels."""
    import subprocess
    from agent.collector import Collector
    from agent.config import load_config
    from agent.model import ContainerInfo
    from exporters.prometheus import render

    name = uname("disk")
    cid = run_ok(agentd, "run", "-d", "--name", name, "--image", webby, "--", "sh", "-c",
                 "busybox head -c 3000000 /dev/zero > /big; ln /big /big2; mkdir -p /d/e/f; "
                 "for i in 1 2 3 4 5 6; do echo $i > /d/e/f/$i; done; touch /done; sleep 600").stdout.strip()
    upper = os.path.join(agentd.state, "containers", cid, "upper")
    from helpers import wait_for
    wait_for(lambda: os.path.exists(os.path.join(upper, "done")), 60, "the container's writes")
    doc = json.loads(run_ok(agentd, "inspect", name).stdout)
    info = ContainerInfo(id=doc["id"], name=doc["name"], cgroup=doc["cgroup"], limits=None, state=doc["state"],
                         image=doc["image"], labels=doc["labels"])
    cfg = load_config(None, {"agent.state_dir": agentd.state})
    c = Collector(cfg, lambda: [info], fs_budget=3)
    try:
        passes = 0
        while True:
            snap = c.collect_once()
            passes += 1
            if cid in snap.fs_usage or passes > 100:
                break
        du = int(subprocess.run(["du", "-s", "-B1", upper], capture_output=True, text=True, check=True)
                 .stdout.split()[0])
        device, nbytes = snap.fs_usage[cid]
        assert nbytes == du and nbytes >= 3000000   # the hard link counted once
        assert passes >= 3, passes                    # 3 entries a pass cannot see ~15 entries at once
        text = render(snap).decode()
        line = next(x for x in text.splitlines() if x.startswith("container_fs_usage_bytes{"))
        assert f'name="{name}"' in line and f'image="{webby}"' in line and f'device="{device}"' in line
        assert line.endswith(f" {du}") and f'id="{snap.rel_id(info.cgroup)}"' in line
    finally:
        c.stop()
        run_ok(agentd, "rm", "-f", name)


def test_read_only_rootfs_container_in_its_user_namespace_gets_its_tmpfs(agentd, top):  # noqa: F811
    """--rootfs (a user namespace by default): the tmpfs is mounted from
    inside the namespace, uid= is the container's id, the root stays read-only."""
    b = ImageBuilder(top, "plainroot").busybox()
    r = run_ok(agentd, "run", "--rm", "--rootfs", b.root, "--read-only", "--tmpfs", "/w:size=512k,uid=1000,mode=700",
               "--", "sh", "-c", "touch /x 2>&1; stat -c owner=%u /w; echo ok > /w/f && cat /w/f")
    assert "Read-only file system" in r.stdout and "owner=1000" in r.stdout and "ok\n" in r.stdout, r.stdout
    assert not os.path.exists(os.path.join(b.root, "x")) and not os.path.exists(os.path.join(b.root, "w", "f"))
