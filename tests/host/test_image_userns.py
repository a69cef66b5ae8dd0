"""Image containers in a user namespace (the default), for real: a real
registry, umoci/skopeo-built images, a real agentd (fixtures of
test_images.py).

Design under test: each image layer and the container's upper dir reach
the overlay through idmapped clones (container 0..65535 <-> on-disk
0..65535), so the container's root owns its image root, writes land in its
upper dir with the on-disk ids they would have without a user namespace
(container root -> on-disk 0), and the host sees them through the
container's mounts as the container's host uid.
"""
from __future__ import annotations

import json
import os
import stat
import uuid

from helpers import wait_for
from test_images import agentd, busybox, images_dir, registry, run_ok, top  # noqa: F401  (fixtures)

IDENTITY = ["0", "0", "4294967295"]


def _run_to_end(d, ref, script, *extra):
    name = f"iu-{uuid.uuid4().hex[:6]}"
    cid = run_ok(d, "run", "-d", "--name", name, *extra, "--image", ref, "--", "sh", "-c", script).stdout.strip()
    wait_for(lambda: json.loads(run_ok(d, "inspect", name).stdout)["state"] == "exited", 60, "the container's end")
    info = json.loads(run_ok(d, "inspect", name).stdout)
    logs = os.path.join(d.state, "logs", cid)
    with open(os.path.join(logs, "stdout.log")) as f, open(os.path.join(logs, "stderr.log")) as g:
        return name, cid, info, f.read() + g.read()


def test_an_image_containers_root_owns_its_image_in_a_user_namespace(agentd, busybox):
    ref, _ = busybox
    run_ok(agentd, "pull", ref)
    script = ("cat /proc/self/uid_map; id -u; stat -c %u /etc/passwd; touch /made-in-root; "
              "echo x > /etc/made-in-etc; echo changed:x:7:7::/:/bin/sh >> /etc/passwd; "
              "mkdir /newdir; chown 1000:1000 /newdir; rm /bin/ls; echo done")
    name, cid, info, out = _run_to_end(agentd, ref, script)
    assert info["exit_code"] == 0, out
    lines = out.splitlines()
    assert lines[-1] == "done", out
    mapping = info["userns"]
    host = mapping["uid"][0][1]
    assert lines[0].split() == ["0", str(host), "65536"]           # not the identity map
    assert lines[0].split() != IDENTITY
    assert lines[1] == "0" and lines[2] == "0"                     # an image file is its root's own
    # the root, and the /etc files of its default bridge network (mounted like volumes)
    assert mapping["idmap"] == {"/": "idmapped", "/etc/hosts": "idmapped", "/etc/resolv.conf": "idmapped",
                                "/etc/hostname": "idmapped"}
    upper = os.path.join(agentd.state, "containers", cid, "upper")
    # on disk: the ids the container's root writes without a user namespace
    for rel in ("made-in-root", "etc/made-in-etc", "etc/passwd"):
        st = os.stat(os.path.join(upper, rel))
        assert (st.st_uid, st.st_gid) == (0, 0), rel
    st = os.stat(os.path.join(upper, "newdir"))
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    with open(os.path.join(upper, "etc", "passwd")) as f:
        assert f.read().endswith("changed:x:7:7::/:/bin/sh\n")
    # the deletion is a whiteout in the upper dir, the layer keeps the file
    wh = os.stat(os.path.join(upper, "bin", "ls"))
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0 and wh.st_uid == 0
    layers = os.path.join(images_dir(agentd), "layers")
    assert any(os.path.lexists(os.path.join(layers, lay, "bin", "ls")) for lay in os.listdir(layers))
    # nothing stays mounted on the host: its view of the layers is on-disk
    # (only its bound network namespace, kept from create to remove, is)
    with open("/proc/self/mountinfo") as f:
        assert not [ln for ln in f if (cid in ln or layers in ln) and " - nsfs " not in ln]
    run_ok(agentd, "rm", name)
    with open("/proc/self/mountinfo") as f:
        assert not [ln for ln in f if cid in ln or layers in ln]


def test_the_host_sees_an_image_containers_files_as_its_host_uid(agentd, busybox):
    ref, _ = busybox
    run_ok(agentd, "pull", ref)
    name = f"iu-{uuid.uuid4().hex[:6]}"
    run_ok(agentd, "run", "-d", "--name", name, "--image", ref, "--", "sh", "-c",
           "touch /mine; sleep 600")
    try:
        info = json.loads(run_ok(agentd, "inspect", name).stdout)
        host_uid, host_gid = info["userns"]["uid"][0][1], info["userns"]["gid"][0][1]
        root = f"/proc/{info['pid']}/root"
        wait_for(lambda: os.path.exists(os.path.join(root, "mine")), 30, "the container's write")
        for rel in ("mine", "etc/passwd", "bin/sh"):
            st = os.stat(os.path.join(root, rel))
            assert (st.st_uid, st.st_gid) == (host_uid, host_gid), rel
        with open(f"/proc/{info['pid']}/status") as f:
            uid_line = [ln for ln in f if ln.startswith("Uid:")][0].split()
        assert uid_line[1] == str(host_uid)           # its root is that unprivileged host uid
    finally:
        run_ok(agentd, "rm", "-f", name)


def test_userns_host_keeps_the_identity_map_for_an_image(agentd, busybox):
    ref, _ = busybox
    run_ok(agentd, "pull", ref)
    name, cid, info, out = _run_to_end(agentd, ref, "cat /proc/self/uid_map; touch /made-hostns",
                                       "--userns", "host")
    assert info["exit_code"] == 0, out
    assert out.split() == IDENTITY and info["userns"] == "host"
    st = os.stat(os.path.join(agentd.state, "containers", cid, "upper", "made-hostns"))
    assert st.st_uid == 0
    run_ok(agentd, "rm", name)


def test_two_image_containers_get_disjoint_ranges_and_share_the_layers(agentd, busybox):
    ref, _ = busybox
    run_ok(agentd, "pull", ref)
    names = [f"iu-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    try:
        ids = [run_ok(agentd, "run", "-d", "--name", n, "--image", ref, "--", "sh", "-c",
                      f"echo {n} > /mine; sleep 600").stdout.strip() for n in names]
        infos = [json.loads(run_ok(agentd, "inspect", n).stdout) for n in names]
        ranges = [(i["userns"]["uid"][0][1], i["userns"]["uid"][0][2]) for i in infos]
        (a, an), (b, bn) = ranges
        assert a + an <= b or b + bn <= a, ranges
        lowers = []
        for i, cid in zip(infos, ids):
            upper = os.path.join(agentd.state, "containers", cid, "upper")
            wait_for(lambda u=upper: os.path.exists(os.path.join(u, "mine")), 30, "the container's write")
            assert os.stat(os.path.join(upper, "mine")).st_uid == 0
            with open(f"/proc/{i['pid']}/mountinfo") as f:
                root = [ln for ln in f if " / / " in ln and "overlay" in ln]
            assert root, "the container's root is not an overlay"
            opts = root[0].rsplit(" - ", 1)[1]
            lowers.append(sorted(p for p in opts.replace(":", ",").split(",") if "/images/layers/" in p))
        # the same layer directories on disk (the idmapped views are per container)
        assert lowers[0] and lowers[0] == lowers[1]
        layer_dirs = os.listdir(os.path.join(images_dir(agentd), "layers"))
        assert all(any(lay in p for lay in layer_dirs) for p in lowers[0])
    finally:
        for n in names:
            run_ok(agentd, "rm", "-f", n)
