"""The pure parts of agent/checkpoint/: CRIU's version and error lines, the
compatibility rule for imports, the export archive's member rule, the
record written and read back, agentctl's parsing."""
from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import tarfile

import pytest

from agent.checkpoint import archive, criu, layout, refusals
from agent.checkpoint.service import compatibility_refusal
from agent.errors import UserError


def test_version_and_first_error_line():
    assert criu.parse_version("Version: 3.17.1\n") == "3.17.1"
    assert criu.parse_version("Version: 4.0\nGitID: v4.0\n") == "4.0"
    assert criu.parse_version("nonsense") is None
    out = ("Warn  (criu/kerndat.c:1): x\n"
           "Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable\n"
           "Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed\n")
    assert criu.first_error(out) == "Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable"
    assert criu.first_error("(00.5) Error (criu/cr-dump.c:1618): A session leader\n") == \
        "Error (criu/cr-dump.c:1618): A session leader"
    assert criu.first_error("") == "no output"


def test_compatibility_rule():
    rec = {"criu_version": "3.17.1", "spec": {}, "container_id": "abc"}
    assert compatibility_refusal(rec, {"version": "3.17.1"}) is None
    assert compatibility_refusal(rec, {"version": "3.19"}) is None        # newer CRIU reads older images
    why = compatibility_refusal(rec, {"version": "3.16.1"})
    assert why == "checkpoint made by CRIU 3.17.1, this host has CRIU 3.16.1; restore needs CRIU 3.17 or newer"
    assert "unknown CRIU version" in compatibility_refusal(dict(rec, criu_version=None), {"version": "3.17"})
    assert "lacks its spec" in compatibility_refusal(dict(rec, spec=None), {"version": "3.17.1"})


def test_record_round_trip_and_listing(tmp_path):
    state = str(tmp_path)
    tmp = layout.new_tmp(state, "web")
    layout.write_record(tmp, {"name": "web", "container_id": "abc", "criu_version": "3.17.1", "image_bytes": 7,
                              "unknown_key": 1})
    os.rename(tmp, layout.path(state, "web"))
    rec = layout.read_record(layout.path(state, "web"))
    assert rec["container_id"] == "abc" and "unknown_key" not in rec
    assert [r["name"] for r in layout.listing(state)] == ["web"]
    leftover = layout.new_tmp(state, "half")
    layout.clean_tmp(state)
    assert not os.path.exists(leftover)
    with pytest.raises(UserError):
        layout.path(state, "../etc")


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_export_then_unpack_and_bad_archives(tmp_path):
    src = tmp_path / "ck"
    (src / "images").mkdir(parents=True)
    (src / "images" / "core-1.img").write_bytes(b"\x00" * 10)
    layout.write_record(str(src), {"name": "web", "container_id": "abc"})
    out = archive.export(str(src), str(tmp_path / "web.tar"))
    assert out["bytes"] > 0
    dest = tmp_path / "in"
    dest.mkdir()
    assert archive.unpack(out["path"], str(dest))["container_id"] == "abc"
    assert (dest / "images" / "core-1.img").read_bytes() == b"\x00" * 10

    evil = str(tmp_path / "evil.tar")
    _tar(evil, [("checkpoint.json", b"{}"), ("../escape", b"x")])
    with pytest.raises(UserError, match="unexpected member '../escape'"):
        archive.unpack(evil, str(tmp_path / "e1"))
    assert not (tmp_path / "escape").exists()
    noreq = str(tmp_path / "norec.tar")
    _tar(noreq, [("images/x.img", b"x")])
    (tmp_path / "e2").mkdir()
    with pytest.raises(UserError, match="no checkpoint.json in it"):
        archive.unpack(noreq, str(tmp_path / "e2"))


def test_agentctl_parses_checkpoint_and_restore():
    from agent.cli.parser import build_parser
    a = build_parser(["checkpoint"]).parse_args(["checkpoint", "web", "--leave-running", "--export", "/x.tar"])
    assert (a.words, a.leave_running, a.export) == (["web"], True, "/x.tar")
    a = build_parser(["restore"]).parse_args(["restore", "--import", "/x.tar", "--name", "web2"])
    assert (a.name, a.import_file, a.new_name) == (None, "/x.tar", "web2")


def test_each_spec_refusal_is_one_line_naming_what_and_what_is_accepted():
    """Every kind of container checkpoint refuses (before CRIU runs), each in one line that
    names the container, what it has that CRIU cannot take, and what is accepted."""
    from dataclasses import replace

    from agent.checkpoint import refusals
    from agent.config import load_config
    from agent.spec import from_json
    cfg = load_config(None, {})
    base = {"name": "w", "argv": ["sh"], "rootfs": "/tmp", "network": "none", "userns": "host"}
    ok = from_json(base, cfg)
    assert refusals.spec_refusal(ok) is None
    # taken now (the VM tier restores each): volumes, --tmpfs, a user namespace off the
    # bridge, the bridge network without a user namespace, and with one (the default)
    for taken in (dict(base, volumes=["/tmp:/data"]), dict(base, tmpfs=["/run"]),
                  {k: v for k, v in base.items() if k != "userns"},
                  {k: v for k, v in base.items() if k != "network"},
                  {k: v for k, v in base.items() if k not in ("network", "userns")}):
        assert refusals.spec_refusal(from_json(taken, cfg)) is None, taken
    image = replace(ok, image_id="sha256:" + "a" * 64, rootfs="")
    assert refusals.spec_refusal(image) is None     # restored in the VM tier, its writable layer copied
    assert "without --leave-running" in refusals.spec_refusal(image, leave_running=True)
    cases = {
        "an image container in a user namespace": replace(image, userns={"uid": [[0, 100000, 65536]],
                                                                          "gid": [[0, 100000, 65536]]}),
        "the host's root file system": from_json({k: v for k, v in base.items() if k != "rootfs"}, cfg),
        "--device": from_json(dict(base, devices=["/dev/null"]), cfg),
        "the host's network": from_json(dict(base, network="host"), cfg),
    }
    for what, spec in cases.items():
        why = refusals.spec_refusal(spec)
        assert why is not None, what
        assert "\n" not in why and why.startswith("checkpoint w: it "), why
        assert what in why, (what, why)
        assert why.endswith(refusals.ACCEPTED), why


def test_external_mounts_map_onto_the_new_containers_sources():
    """A restore maps each external mount's key onto the new spawn spec's source of that
    destination (or a staged volume), and refuses in one line when the new container has none."""
    from agent.checkpoint import externals
    mounts = {"/etc/hosts": "m0", "/data": "v0"}
    spawn = [{"src": "/run/x/new/hosts", "dst": "/etc/hosts"}, {"src": "/srv/vol", "dst": "/data"}]
    argv, fds = externals.restore_args(None, mounts, spawn, {"v0": "/state/ck/stage/v0"})
    assert fds == []
    assert argv == ["--ext-mount-map", "v0:/state/ck/stage/v0", "--ext-mount-map", "m0:/run/x/new/hosts"]
    with pytest.raises(externals.ExternalError, match=r"^external mount /etc/hosts: the new container has no "):
        externals.restore_args(None, mounts, spawn[1:])


def test_a_taken_user_namespace_block_is_refused_in_one_line_naming_the_ids():
    from agent.checkpoint import placement
    from agent.errors import Conflict
    spec_d = {"userns": {"uid": [[0, 200000, 65536]], "gid": [[0, 200000, 65536]]}}
    why = placement.userns_refusal(spec_d, Conflict("userns.uid: host uids 200000-265535 overlap those of "
                                                    "container 'x of the agentd on /s'"))
    assert why.startswith("its user namespace maps host uids 200000-265535, which are not free here (userns.uid: ")
    assert "file ownership is not remapped" in why and "\n" not in why
    assert placement.userns_refusal(spec_d, Conflict("name: a container named 'w' already exists")) is None
    assert placement.userns_refusal({"userns": "host"}, Conflict("userns.uid: x")) is None


def test_tcp_established_reaches_dump_and_restore_and_the_refusal_names_the_peer():
    from agent.checkpoint.refusals import _address
    assert "--tcp-established" not in criu.dump_argv(1, "/i", "/cg", False)
    assert criu.dump_argv(1, "/i", "/cg", False, True)[-3:] == ["--tcp-established", "--network-lock", "nftables"]
    assert "--tcp-established" not in criu.restore_argv("/i", "/r", "/p", "/cg", [])
    assert criu.restore_argv("/i", "/r", "/p", "/cg", [], True)[-3:] == criu.TCP_ESTABLISHED
    assert _address("0100007F:1B58") == "127.0.0.1:7000"                          # /proc/net/tcp
    assert _address("0000000000000000FFFF00000190A60A:EA4C") == "10.166.144.1:59980"  # tcp6, IPv4-mapped
    assert _address("00000000000000000000000001000000:0050") == "[::1]:80"
    assert _address("garbage") == "garbage"


def _layer_tree(top):
    """A writable layer as overlayfs leaves one: a whiteout, an opaque dir, links, odd modes."""
    up = os.path.join(top, layout.UPPER)
    os.makedirs(os.path.join(up, "etc", "opaque"))
    os.setxattr(os.path.join(up, "etc", "opaque"), "trusted.overlay.opaque", b"y")
    os.mknod(os.path.join(up, "etc", "gone"), 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    with open(os.path.join(up, "etc", "kept"), "w") as f:
        f.write("kept\n")
    os.chown(os.path.join(up, "etc", "kept"), 1234, 5678)
    os.chmod(os.path.join(up, "etc", "kept"), 0o4775)
    os.link(os.path.join(up, "etc", "kept"), os.path.join(up, "etc", "hard"))
    os.symlink("/usr/bin/busybox", os.path.join(up, "etc", "abs"))
    os.makedirs(os.path.join(up, "tmp"))
    os.chmod(os.path.join(up, "tmp"), 0o1777)
    return up


def test_an_exported_writable_layer_comes_back_as_overlayfs_needs_it(tmp_path):
    src = tmp_path / "ckpt"
    os.makedirs(src / layout.IMAGES)
    (src / layout.IMAGES / "core.img").write_bytes(b"img")
    layout.write_record(str(src), {"name": "c", "container_id": "abc", "spec": {}, "upper": True})
    _layer_tree(str(src))
    out = archive.export(str(src), str(tmp_path / "c.tar"))
    assert out["bytes"] > 0
    dst = tmp_path / "back"
    os.makedirs(dst)
    assert archive.unpack(str(tmp_path / "c.tar"), str(dst))["upper"] is True
    up = dst / layout.UPPER / "etc"
    st = os.lstat(up / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)       # the whiteout
    assert os.getxattr(up / "opaque", "trusted.overlay.opaque") == b"y"
    st = os.lstat(up / "kept")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o4775, 1234, 5678)
    assert os.lstat(up / "hard").st_ino == st.st_ino
    assert os.readlink(up / "abs") == "/usr/bin/busybox"
    assert stat.S_IMODE(os.lstat(dst / layout.UPPER / "tmp").st_mode) == 0o1777


@pytest.mark.parametrize("attack", ["through_symlink", "device", "outside_link"])
def test_an_import_takes_no_path_out_of_the_checkpoint_and_no_device(tmp_path, attack):
    bad = tmp_path / "bad.tar"
    victim = tmp_path / "victim"
    os.makedirs(victim)
    with tarfile.open(bad, "w") as tar:
        rec = b'{"name": "c", "container_id": "abc", "spec": {}}'
        info = tarfile.TarInfo(layout.RECORD)
        info.size = len(rec)
        tar.addfile(info, io.BytesIO(rec))
        if attack == "through_symlink":
            link = tarfile.TarInfo(f"{layout.UPPER}/a")
            link.type, link.linkname = tarfile.SYMTYPE, str(victim)
            tar.addfile(link)
            evil = tarfile.TarInfo(f"{layout.UPPER}/a/planted")
            evil.size = 3
            tar.addfile(evil, io.BytesIO(b"own"))
        elif attack == "device":
            dev = tarfile.TarInfo(f"{layout.UPPER}/sda")
            dev.type, dev.devmajor, dev.devminor = tarfile.BLKTYPE, 8, 0
            tar.addfile(dev)
        else:
            hard = tarfile.TarInfo(f"{layout.UPPER}/h")
            hard.type, hard.linkname = tarfile.LNKTYPE, "../../../etc/passwd"
            tar.addfile(hard)
    dst = tmp_path / "dst"
    os.makedirs(dst)
    with pytest.raises(UserError) as e:
        archive.unpack(str(bad), str(dst))
    assert "\n" not in str(e.value) and str(e.value).startswith(f"import: {bad}: ")
    assert os.listdir(victim) == []


def test_a_network_namespace_its_user_namespace_owns_is_dumped_empty_and_restored_by_the_hook(tmp_path):
    """The default container's dump leaves its network namespace empty; its restore makes it
    empty and runs the hook, which CRIU calls for every action: only setup-namespaces acts."""
    from agent.checkpoint import launcher_ops, nethook
    assert criu.EMPTY_NETNS == ["--empty-ns", "net"]
    assert criu.CPUINFO_AT_DUMP in criu.dump_argv(1, "/i", "/cg", False)     # the CPU's features recorded
    assert criu.cpuinfo_check(str(tmp_path)) is None        # images made before that: nothing to check
    assert "--empty-ns" not in criu.dump_argv(1, "/i", "/cg", False)
    assert criu.dump_argv(1, "/i", "/cg", False, False, True)[-2:] == criu.EMPTY_NETNS
    assert "--action-script" not in criu.restore_argv("/i", "/r", "/p", "/cg", [])
    assert criu.restore_argv("/i", "/r", "/p", "/cg", [], False, "/ck/nethook.sh")[-4:] == [
        "--empty-ns", "net", "--action-script", "/ck/nethook.sh"]
    eth0 = {"ip": "10.1.0.5", "prefixlen": 24, "gateway": "10.1.0.1", "mac": "02:42:0a:01:00:05", "egress_bits": 0}
    script = nethook.write(str(tmp_path), "/state/network/ns/c1", eth0)
    assert os.access(script, os.X_OK)
    with open(os.path.join(tmp_path, nethook.CONFIG)) as f:
        assert json.load(f) == {"netns": "/state/network/ns/c1", "eth0": eth0}
    # any other action: nothing done, success (CRIU runs the script for each)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRTOOLS_")}
    r = subprocess.run([script], env=dict(env, CRTOOLS_SCRIPT_ACTION="post-restore"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # setup-namespaces with a pid that is gone: fails in one line naming what
    r = subprocess.run([script], env=dict(env, CRTOOLS_SCRIPT_ACTION="setup-namespaces",
                                         CRTOOLS_INIT_PID="999999999"), capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("network of the restored container: "), r.stderr
    nethook.remove(str(tmp_path))
    assert os.listdir(tmp_path) == []
    assert launcher_ops._net_hook(None, "/n") is None
    assert launcher_ops._net_hook({"eth0": eth0}, "/n") == ("/n", eth0)
    for bad, netns in (({"eth0": {"ip": "x"}}, "/n"), ({"eth0": eth0}, None), ("x", "/n")):
        with pytest.raises(ValueError, match=r"^net_hook: must be "):
            launcher_ops._net_hook(bad, netns)


def test_a_user_namespace_container_whose_network_namespace_it_does_not_own_is_refused():
    """A container made by an older agentd (its network namespace the host's): one line saying
    what to do, before CRIU; the others pass."""
    from dataclasses import replace
    from types import SimpleNamespace

    from agent.checkpoint.service import CheckpointService
    from agent.config import load_config
    from agent.spec import from_json
    cfg = load_config(None, {})
    mapping = {"uid": [[0, 100000, 65536]], "gid": [[0, 100000, 65536]]}
    spec = replace(from_json({"name": "w", "argv": ["sh"], "rootfs": "/tmp"}, cfg), userns=mapping)
    info = SimpleNamespace(id="c1", name="w")

    class Net:
        owned = False

        def is_bridged(self, s):
            return s.network not in ("host", "none")

        def owns_netns(self, cid):
            return self.owned

    svc = CheckpointService.__new__(CheckpointService)
    svc.sup = SimpleNamespace(net=Net())
    why = svc._netns_refusal(info, spec)
    assert why.startswith("checkpoint w: its network namespace is not owned by its user namespace") and "\n" not in why
    assert "`agentctl restart w`" in why
    svc.sup.net.owned = True
    assert svc._netns_refusal(info, spec) is None
    svc.sup.net.owned = False
    assert svc._netns_refusal(info, replace(spec, network="none")) is None
    assert svc._netns_refusal(info, replace(spec, userns=None)) is None


def test_the_idmapped_mounts_are_what_the_start_idmapped():
    """CRIU keeps no idmap: the checkpoint records what the start idmapped, the restore idmaps it again."""
    assert refusals.idmapped({"uid": [], "idmap": {"/": "idmapped", "/data": "tmpfs refused",
                                                   "/srv": "idmapped"}}) == ["/", "/srv"]
    assert refusals.idmapped("host") == [] and refusals.idmapped(None) == []


def test_a_remap_moves_the_images_user_namespace_and_tmpfs_owners_to_the_new_block(tmp_path):
    """An import whose block is held here: the images' userns mapping (encoded and decoded by
    CRIU's own crit) and the owners in its tmpfs archives move to the new block; ids outside the
    old block (host root's) stay."""
    import gzip
    import shutil as sh

    from agent.checkpoint import remap
    if sh.which("crit") is None and not os.path.exists("/usr/bin/crit"):
        pytest.fail("crit is not installed: scripts/setup.sh installs the Debian package criu")
    old_base, new_base = 1879048192, 1879048192 + 5 * 65536
    doc = {"magic": "USERNS", "entries": [{
        "uid_map": [{"first": 0, "lower_first": old_base, "count": 65536}],
        "gid_map": [{"first": 0, "lower_first": old_base, "count": 65536}]}]}
    images = tmp_path / "images"
    images.mkdir()
    subprocess.run(["crit", "encode", "-o", str(images / "userns-11.img")], input=json.dumps(doc), text=True,
                   check=True)
    tar_path = images / "tmpfs-dev-42.tar.gz.img"
    with gzip.open(tar_path, "wb") as raw, tarfile.open(fileobj=raw, mode="w|") as t:
        for name, uid, data in ((".", old_base, None), ("./shm-file", old_base + 1000, b"x" * 10),
                                ("./hosts-own", 0, b"y")):
            ti = tarfile.TarInfo(name)
            ti.uid = ti.gid = uid
            if data is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                t.addfile(ti)
            else:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
    old = {"uid": [[0, old_base, 65536]], "gid": [[0, old_base, 65536]]}
    new = {"uid": [[0, new_base, 65536]], "gid": [[0, new_base, 65536]]}
    assert remap.images_mapping(str(images)) == old
    assert remap.rewrite(str(images), new) == old
    assert remap.images_mapping(str(images)) == new
    with gzip.open(tar_path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as t:
        got = {m.name: (m.uid, m.gid, t.extractfile(m).read() if m.isreg() else None) for m in t}
    assert got == {".": (new_base, new_base, None), "./shm-file": (new_base + 1000, new_base + 1000, b"x" * 10),
                   "./hosts-own": (0, 0, b"y")}, got
    assert sorted(os.listdir(images)) == ["tmpfs-dev-42.tar.gz.img", "userns-11.img"]   # no .new left
    assert remap.rewrite(str(images), new) == new        # already there: nothing to do
    (images / "userns-12.img").write_bytes(b"")
    with pytest.raises(remap.RemapError, match=r"^the checkpoint holds 2 user namespace images"):
        remap.rewrite(str(images), old)


def test_a_criu_that_stops_before_its_log_is_reported_by_what_it_said(tmp_path):
    """CRIU refusing its options exits before it opens its log: its stderr, kept beside the log,
    gives the line (before: 'exit status 1, no log')."""
    (tmp_path / criu.STDERR).write_text("Error (criu/config.c:504): Unknown FPU mode `image' selected\n")
    with pytest.raises(criu.CriuError, match=r"^criu dump failed: Error \(criu/config.c:504\): Unknown FPU mode"):
        criu.finish(["criu", "dump"], 1, str(tmp_path / "dump.log"))
    (tmp_path / criu.STDERR).write_text("")
    with pytest.raises(criu.CriuError, match=r"^criu dump failed: exit status 1, no log"):
        criu.finish(["criu", "dump"], 1, str(tmp_path / "dump.log"))
    (tmp_path / "dump.log").write_text("(00.01) Error (criu/cr-dump.c:1): the log's line\n")
    with pytest.raises(criu.CriuError, match=r"the log's line"):
        criu.finish(["criu", "dump"], 1, str(tmp_path / "dump.log"))
    criu.finish(["criu", "dump"], 0, str(tmp_path / "dump.log"))
