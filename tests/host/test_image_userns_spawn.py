"""An image container's overlay in a user namespace, at the launcher: a real
launcher, real overlayfs, real idmapped mounts (fixtures of test_spawn.py).

- layers on ext4 (idmappable): the layers and the upper dir are idmapped,
  container root owns the image root and its writes are stored as on-disk 0;
- layers on ramfs (which refuses idmapped mounts): the fallback, i.e. the
  container keeps its user namespace, the overlay is made of the plain
  layers (the image's files are nobody's inside, so its root cannot write
  into them), and the one-line reason is in the spawn answer's idmap.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile

import pytest

from test_spawn import BUSYBOX, env, make_spec, new_cgroup, read, wait_exit  # noqa: F401  (fixture)
from helpers import kill_tree

HOST = 1879048192 + 40 * 65536          # a block of the agent's default range no agentd here uses
MAPPING = {"uid": [[0, HOST, 65536]], "gid": [[0, HOST, 65536]]}


def image_dirs(top: str) -> dict:
    """A two-layer image (busybox, then /etc/conf) and a container dir, as
    agentd lays them out: lower dirs, and upper/work/root side by side."""
    low0, low1 = os.path.join(top, "layers", "l0"), os.path.join(top, "layers", "l1")
    os.makedirs(os.path.join(low0, "bin"))
    shutil.copy(BUSYBOX, os.path.join(low0, "bin", "busybox"))
    for applet in ("sh", "cat", "touch", "stat", "id", "echo"):
        os.symlink("busybox", os.path.join(low0, "bin", applet))
    os.makedirs(os.path.join(low1, "etc"))
    with open(os.path.join(low1, "etc", "conf"), "w") as f:
        f.write("image\n")
    c = os.path.join(top, "containers", "c1")
    for d in ("upper", "work", "root"):
        os.makedirs(os.path.join(c, d))
    return {"lower": [low1, low0], "upper": os.path.join(c, "upper"), "work": os.path.join(c, "work"),
            "target": os.path.join(c, "root")}


def spawn_image(env, overlay: dict, script: str) -> tuple[dict, str]:
    cid, cg = new_cgroup(env)
    spec = make_spec(env, cid, cg, ["/bin/sh", "-c", script], overlay=overlay, userns=MAPPING,
                     env={"PATH": "/bin"})
    try:
        started = env.client.spawn_detail(cid, spec)
        wait_exit(env.client, cid, started["pid"])
        env.client.ack(cid, started["pid"])
    finally:
        kill_tree(cg)
    return started, read(spec["stdout"]) + read(spec["stderr"])


SCRIPT = ("cat /proc/self/uid_map; stat -c %u /etc/conf; "
          "touch /made 2>&1 && echo made-root; echo more >> /etc/conf 2>&1 && echo made-etc; echo end")


def test_idmapped_layers_give_the_container_root_its_image(env, tmp_path):
    overlay = image_dirs(str(tmp_path))
    started, out = spawn_image(env, overlay, SCRIPT)
    assert started["idmap"] == {"/": "idmapped"}, started
    lines = out.splitlines()
    assert lines[0].split() == ["0", str(HOST), "65536"], out
    assert lines[1] == "0" and "made-root" in lines and "made-etc" in lines, out
    for rel in ("made", "etc/conf"):
        st = os.stat(os.path.join(overlay["upper"], rel))
        assert (st.st_uid, st.st_gid) == (0, 0), rel
    # the layers are untouched on disk and nothing is left mounted on the host
    with open(os.path.join(overlay["lower"][0], "etc", "conf")) as f:
        assert f.read() == "image\n"
    with open("/proc/self/mountinfo") as f:
        assert str(tmp_path) not in f.read()


@pytest.fixture
def ramfs_top():
    top = tempfile.mkdtemp(prefix="cga-ramfs-")
    r = subprocess.run(["mount", "-t", "ramfs", "ramfs", top], capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(top)
        pytest.skip(f"cannot mount ramfs here: {r.stderr.strip()}")
    os.chmod(top, 0o755)
    yield top
    subprocess.run(["umount", "-l", top])
    os.rmdir(top)


def test_layers_that_cannot_be_idmapped_keep_the_user_namespace_and_say_why(env, ramfs_top):
    overlay = image_dirs(ramfs_top)
    started, out = spawn_image(env, overlay, SCRIPT)
    why = started["idmap"]["/"]
    print("fallback reason:", why)
    assert why != "idmapped" and "ramfs" in why and "\n" not in why, started
    lines = out.splitlines()
    # never silently in the host's user namespace
    assert lines[0].split() == ["0", str(HOST), "65536"], out
    # the image's files are nobody's inside: its root cannot write into them
    assert lines[1] == "65534" and "made-root" not in lines and "made-etc" not in lines, out
    assert "end" in lines
    assert not os.path.lexists(os.path.join(overlay["upper"], "made"))
    st = os.stat(os.path.join(overlay["lower"][0], "etc", "conf"))
    assert stat.S_ISREG(st.st_mode) and st.st_uid == 0
