"""Images end to end: a real registry (docker-registry on 127.0.0.1), images
built with umoci and pushed with skopeo, a real agentd and agentctl.

Covers: pull and run (the image's Cmd), load of a `docker save` archive,
shared layers and per-container upper dirs, whiteouts, an image index with
platform selection, basic auth and login, one-line refusals that leave
nothing behind (missing tag, corrupted blob, unknown media type, wrong
digest, refused auth, a registry that dies mid-pull), rmi while in use.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import tarfile
import io
import threading
import uuid

import pytest

from registry_fixtures import ImageBuilder, Registry, index_of, sha256
from helpers import ctl, one_line, start_agentd, stop_agentd, wait_for
from helpers import kill_tree as _kill_tree

pytestmark = pytest.mark.skipif(shutil.which("docker-registry") is None or shutil.which("umoci") is None,
                                reason="docker-registry/umoci/skopeo not installed (scripts/setup.sh installs them)")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def top(tmp_path_factory):
    return str(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def registry(top):
    os.makedirs(os.path.join(top, "reg"))
    r = Registry(os.path.join(top, "reg"))
    yield r
    r.stop()


@pytest.fixture(scope="module")
def busybox(top, registry):
    """127.0.0.1:PORT/busybox:1, whose Cmd prints a marker."""
    b = ImageBuilder(top, "busybox").busybox().layer()
    b.config("--config.cmd", "sh", "--config.cmd", "-c", "--config.cmd", "echo hello-from-the-image",
             "--config.env", "FROM_IMAGE=yes", "--config.workingdir", "/etc")
    return registry.push(b.layout, "1", "busybox"), b


@pytest.fixture(scope="module")
def layered(top, registry):
    """Two layers: the second deletes /a and /d/x (whiteouts) and adds /d/y."""
    b = ImageBuilder(top, "layered").busybox()
    os.makedirs(os.path.join(b.root, "d"))
    for rel in ("a", "b", "d/x"):
        with open(os.path.join(b.root, rel), "w") as f:
            f.write(rel)
    b.layer()
    os.unlink(os.path.join(b.root, "a"))
    os.unlink(os.path.join(b.root, "d", "x"))
    with open(os.path.join(b.root, "d", "y"), "w") as f:
        f.write("y")
    b.layer().config("--config.cmd", "sh", "--config.cmd", "-c", "--config.cmd", "ls / /d")
    return registry.push(b.layout, "1", "layered")


@pytest.fixture(scope="module")
def agentd(top):
    from runtime.cgroupfs import Cgroup, find_mount

    root = Cgroup(os.path.join(find_mount(), f"cga-test-{uuid.uuid4().hex[:10]}"))
    os.mkdir(root.path)
    d = None
    try:
        d = start_agentd(root, os.path.join(top, "agentd") if os.makedirs(os.path.join(top, "agentd")) is None else "")
        d.state = os.path.join(d.top, "state")
        yield d
    finally:
        if d is not None:
            stop_agentd(d)
        _kill_tree(root)


def images_dir(d) -> str:
    return os.path.join(d.state, "images")


def leftovers(d) -> list[str]:
    return os.listdir(os.path.join(images_dir(d), "tmp"))


def run_ok(d, *args, timeout=120):
    r = ctl(d, *args, timeout=timeout)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


# -- pull, run, load ----------------------------------------------------------


def test_pull_then_run_prints_what_the_images_cmd_prints(agentd, busybox):
    ref, _ = busybox
    out = run_ok(agentd, "pull", ref).stdout
    assert ref in out and "sha256:" in out
    r = run_ok(agentd, "run", "--rm", "--image", ref)
    assert r.stdout == "hello-from-the-image\n"
    # the image's Env and WorkingDir apply; the command given after -- replaces Cmd
    r = run_ok(agentd, "run", "--rm", "--image", ref, "--", "sh", "-c", "echo $FROM_IMAGE $(pwd)")
    assert r.stdout == "yes /etc\n"
    listed = json.loads(run_ok(agentd, "images", "--json").stdout)
    assert any(ref in img["names"] for img in listed)
    ps = json.loads(run_ok(agentd, "ps", "-a", "--json").stdout)
    assert all(c["name"] for c in ps)


def test_a_loaded_docker_archive_runs_the_same(agentd, busybox, top):
    ref, b = busybox
    archive = os.path.join(top, "busybox.tar")
    subprocess.run(["skopeo", "copy", f"oci:{b.layout}:1", f"docker-archive:{archive}:{ref}"], check=True,
                   capture_output=True)
    run_ok(agentd, "pull", ref)
    run_ok(agentd, "rmi", ref)
    assert ctl(agentd, "image", "inspect", ref).returncode == 1
    out = run_ok(agentd, "image", "load", "-i", archive).stdout
    assert ref in out
    r = run_ok(agentd, "run", "--rm", "--pull", "never", "--image", ref)
    assert r.stdout == "hello-from-the-image\n"
    # saved again as an OCI layout, it loads in skopeo, a peer
    saved = os.path.join(top, "saved.tar")
    run_ok(agentd, "image", "save", "-o", saved, ref)
    info = json.loads(subprocess.run(["skopeo", "inspect", f"oci-archive:{saved}"], check=True,
                                     capture_output=True, text=True).stdout)
    assert len(info["Layers"]) == 1


def test_two_containers_share_the_layers_and_keep_their_writes_apart(agentd, busybox):
    ref, _ = busybox
    names = [f"share-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    ids = []
    for n in names:
        ids.append(run_ok(agentd, "run", "-d", "--name", n, "--image", ref, "--", "sh", "-c",
                          f"echo {n} > /mine; sleep 600").stdout.strip())
    uppers = [os.path.join(agentd.state, "containers", i, "upper") for i in ids]
    for n, upper in zip(names, uppers):
        wait_for(lambda u=upper: os.path.exists(os.path.join(u, "mine")), 30, "the container's write")
        with open(os.path.join(upper, "mine")) as f:
            assert f.read() == n + "\n"
    # one copy of the layer on disk, used by both (their overlay's lowerdir)
    layers = os.listdir(os.path.join(images_dir(agentd), "layers"))
    pids = [json.loads(run_ok(agentd, "inspect", n).stdout)["pid"] for n in names]
    lowers = []
    for pid in pids:
        with open(f"/proc/{pid}/mountinfo") as f:
            root = [line for line in f if " / / " in line and "overlay" in line]
        assert root, "the container's root is not an overlay: " + open(f"/proc/{pid}/mountinfo").read()[:600]
        lowers.append(re.search(r"lowerdir\+?=([^,]+)", root[0]).group(1))
    assert lowers[0] == lowers[1] and os.path.basename(lowers[0]) in layers
    # neither sees the other's file, the image is unchanged
    r = run_ok(agentd, "run", "--rm", "--image", ref, "--", "sh", "-c", "test -e /mine && echo leak || echo clean")
    assert r.stdout == "clean\n"
    for n in names:
        run_ok(agentd, "rm", "-f", n)
    for i in ids:
        assert not os.path.exists(os.path.join(agentd.state, "containers", i))


def test_whiteouts_hide_what_a_later_layer_deleted(agentd, layered):
    r = run_ok(agentd, "run", "--rm", "--image", layered)
    root, _, sub = r.stdout.partition("/d:")
    assert "b" in root.split() and "a" not in root.split()
    assert sub.split() == ["y"]


def test_opaque_directory_and_whiteout_in_a_real_overlay(tmp_path):
    """A layer's .wh..wh..opq and .wh.NAME, unpacked, make overlayfs hide the lower layer's entries."""
    from agent.images.unpack import apply_layer

    def layer(entries):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in entries:
                ti = tarfile.TarInfo(name)
                if data is None:
                    ti.type = tarfile.DIRTYPE
                    ti.mode = 0o755
                    tar.addfile(ti)
                else:
                    ti.size = len(data)
                    tar.addfile(ti, io.BytesIO(data))
        buf.seek(0)
        return io.BufferedReader(buf)

    low, up, merged = (tmp_path / n for n in ("low", "up", "merged"))
    for p in (low, up, merged):
        p.mkdir()
    apply_layer(layer([("dir", None), ("dir/old", b"1"), ("gone", b"2"), ("kept", b"3")]), str(low))
    apply_layer(layer([("dir", None), ("dir/.wh..wh..opq", b""), ("dir/new", b"4"), (".wh.gone", b"")]), str(up))
    assert os.getxattr(up / "dir", "trusted.overlay.opaque") == b"y"
    st = os.lstat(up / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={up}:{low}", str(merged)], check=True)
    try:
        assert sorted(os.listdir(merged)) == ["dir", "kept"]
        assert os.listdir(merged / "dir") == ["new"]
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def test_a_layer_cannot_write_outside_its_directory(tmp_path):
    """A symlink to / followed by a file through it lands inside the layer, never on the host."""
    from agent.images.unpack import LayerError, apply_layer

    marker = f"cga-escape-{uuid.uuid4().hex[:8]}"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ti = tarfile.TarInfo("escape")
        ti.type = tarfile.SYMTYPE
        ti.linkname = "/tmp"
        tar.addfile(ti)
        ti = tarfile.TarInfo(f"escape/{marker}")
        ti.size = 1
        tar.addfile(ti, io.BytesIO(b"x"))
        for evil in ("../" + marker, "a/../../" + marker):
            ti = tarfile.TarInfo(evil)
            ti.size = 1
            tar.addfile(ti, io.BytesIO(b"x"))
    dest = tmp_path / "layer"
    dest.mkdir()
    buf.seek(0)
    with pytest.raises(LayerError, match=r"'\.\.' is not allowed"):
        apply_layer(io.BufferedReader(buf), str(dest))
    assert not os.path.exists(f"/tmp/{marker}")
    assert (dest / "tmp" / marker).exists()   # /tmp resolved inside the layer


# -- an image index, auth ------------------------------------------------------


def test_an_image_index_gives_the_hosts_platform_and_names_the_offered_ones(agentd, registry, busybox):
    ref, _ = busybox
    body, _ = registry.get_manifest("busybox", "1")
    fake = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": json.loads(body)["config"],
                       "layers": []}).encode()
    # an index and its children live in one repository, with the blobs they name
    registry.put_manifest("busybox", "arm-only", fake, OCI_MANIFEST)
    registry.put_manifest("busybox", "multi", index_of([(fake, OCI_MANIFEST, {"os": "linux", "architecture": "arm64"}),
                                                        (body, OCI_MANIFEST, {"os": "linux", "architecture": "amd64"})]),
                          "application/vnd.oci.image.index.v1+json")
    multi = f"{registry.host}/busybox:multi"
    run_ok(agentd, "pull", multi)
    assert run_ok(agentd, "run", "--rm", "--image", multi).stdout == "hello-from-the-image\n"
    r = ctl(agentd, "pull", "--platform", "linux/s390x", multi)
    assert r.returncode == 1
    assert "no manifest for platform linux/s390x; offered: linux/arm64, linux/amd64" in one_line(r)


def test_a_registry_with_basic_auth_needs_a_login(agentd, top, busybox):
    ref, b = busybox
    os.makedirs(os.path.join(top, "authreg"), exist_ok=True)
    reg = Registry(os.path.join(top, "authreg"), user="alice", password="s3cret-pw")
    try:
        pushed = reg.push(b.layout, "1", "private")
        r = ctl(agentd, "pull", pushed)
        assert r.returncode == 1 and f"registry {reg.host}: needs a login" in one_line(r)
        bad = subprocess.run([*ctl_argv(agentd), "login", "-u", "alice", "--password-stdin", reg.host],
                             input="wrong\n", capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1 and "authentication refused" in bad.stderr
        good = subprocess.run([*ctl_argv(agentd), "login", "-u", "alice", "--password-stdin", reg.host],
                              input="s3cret-pw\n", capture_output=True, text=True, timeout=60)
        assert good.returncode == 0, good.stderr
        creds = os.path.join(agentd.state, "registry-auth.json")
        assert stat.S_IMODE(os.stat(creds).st_mode) == 0o600
        run_ok(agentd, "pull", pushed)
        run_ok(agentd, "logout", reg.host)
        run_ok(agentd, "rmi", pushed)
        assert ctl(agentd, "pull", pushed).returncode == 1
    finally:
        reg.stop()


def ctl_argv(d) -> list[str]:
    import sys
    return [sys.executable, "-m", "agent.cli", "--socket", d.sock]


# -- refusals leave nothing behind ---------------------------------------------


def _store_files(d) -> set[str]:
    out = set()
    for sub in ("blobs/sha256", "layers"):
        out |= {f"{sub}/{n}" for n in os.listdir(os.path.join(images_dir(d), sub))}
    return out


def test_a_missing_tag_is_one_line(agentd, registry):
    r = ctl(agentd, "pull", f"{registry.host}/busybox:nope")
    assert r.returncode == 1
    assert one_line(r) == f"agentctl: pull {registry.host}/busybox:nope: registry {registry.host}: " \
                          "tag busybox:nope not found"


def test_a_wrong_digest_is_one_line(agentd, registry):
    ref = f"{registry.host}/busybox@sha256:{'0' * 64}"
    r = ctl(agentd, "pull", ref)
    assert r.returncode == 1 and "not found" in one_line(r)


def test_a_malformed_reference_is_bad_usage(agentd):
    r = ctl(agentd, "pull", "Not/A:Ref:At:All")
    assert r.returncode == 2 and "accepted:" in one_line(r)


def test_a_corrupted_blob_is_refused_named_and_leaves_nothing(agentd, registry, top):
    b = ImageBuilder(top, "corrupt").busybox()
    with open(os.path.join(b.root, "payload"), "wb") as f:
        f.write(os.urandom(1 << 20))
    b.layer().config("--config.cmd", "true")
    ref = registry.push(b.layout, "1", "corrupt")
    body, _ = registry.get_manifest("corrupt", "1")
    layer = json.loads(body)["layers"][0]["digest"]
    path = registry.blob_file(layer)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    before = _store_files(agentd)
    r = ctl(agentd, "pull", ref)
    assert r.returncode == 1
    assert f"blob {layer}: content has digest sha256:" in one_line(r) and "refused" in one_line(r)
    assert leftovers(agentd) == []
    new = _store_files(agentd) - before
    assert f"blobs/sha256/{layer[7:]}" not in new
    assert ctl(agentd, "image", "inspect", ref).returncode == 1


def test_an_unknown_layer_media_type_is_refused(agentd, registry):
    body, _ = registry.get_manifest("busybox", "1")
    m = json.loads(body)
    m["layers"][0]["mediaType"] = "application/vnd.example.strange+tar"
    registry.put_manifest("busybox", "strange", json.dumps(m).encode(), OCI_MANIFEST)
    r = ctl(agentd, "pull", f"{registry.host}/busybox:strange")
    assert r.returncode == 1
    assert "unknown media type 'application/vnd.example.strange+tar'; accepted:" in one_line(r)
    assert leftovers(agentd) == []


class _DyingProxy:
    """Forwards to the registry; a blob response is cut after `cut` bytes."""

    def __init__(self, upstream: str, cut: int):
        self.upstream, self.cut = upstream, cut
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c):
        up = socket.create_connection(tuple(self.upstream.rsplit(":", 1)))
        req = b""
        while b"\r\n\r\n" not in req:
            chunk = c.recv(65536)
            if not chunk:
                return
            req += chunk
        is_blob = b"/blobs/" in req.split(b"\r\n", 1)[0]
        head, _, rest = req.partition(b"\r\n\r\n")
        lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"connection:")]
        req = b"\r\n".join(lines + [b"Connection: close"]) + b"\r\n\r\n" + rest  # one request per connection
        up.sendall(req.replace(self.host.encode(), self.upstream.encode()))
        sent = 0
        while True:
            data = up.recv(65536)
            if not data:
                break
            if is_blob and sent + len(data) > self.cut:
                c.sendall(data[:max(0, self.cut - sent)])
                break
            c.sendall(data)
            sent += len(data)
        c.close()
        up.close()

    def close(self):
        self.sock.close()


def test_a_registry_that_dies_mid_pull_leaves_nothing_and_a_repull_works(agentd, registry, top):
    b = ImageBuilder(top, "big").busybox()
    with open(os.path.join(b.root, "payload"), "wb") as f:
        f.write(os.urandom(4 << 20))
    b.layer().config("--config.cmd", "true")
    registry.push(b.layout, "1", "big")
    proxy = _DyingProxy(registry.host, cut=1 << 20)
    try:
        r = ctl(agentd, "pull", f"{proxy.host}/big:1")
        assert r.returncode == 1, r.stdout
        assert "connection lost while fetching blob" in one_line(r) or "blob sha256:" in one_line(r)
        assert leftovers(agentd) == []
    finally:
        proxy.close()
    run_ok(agentd, "pull", f"{registry.host}/big:1")


def test_rmi_is_refused_while_a_container_uses_the_image(agentd, busybox):
    ref, _ = busybox
    run_ok(agentd, "pull", ref)
    name = f"user-{uuid.uuid4().hex[:6]}"
    run_ok(agentd, "run", "-d", "--name", name, "--image", ref, "--", "sleep", "600")
    image_id = json.loads(run_ok(agentd, "image", "inspect", ref).stdout)["id"]
    r = ctl(agentd, "rmi", image_id)
    assert r.returncode == 1 and "is used by a container" in r.stderr and "-f" in r.stderr
    run_ok(agentd, "rm", "-f", name)
    out = run_ok(agentd, "rmi", image_id).stdout
    assert f"deleted: {image_id}" in out
    out = json.loads(run_ok(agentd, "image", "prune", "--json").stdout)
    assert out["removed_files"] >= 1
