"""agentctl cp, top and events against a real agentd.

cp resolves the container side inside the container's root: a container
that swaps a symlink to a host path under it, as fast as it can, never makes
cp read or write the host's file (>= 100 tries, 0 wins each way)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from agent.cli.client import ApiError, Client
from helpers import AGENTCTL, ctl, one_line, uname, wait_for
from helpers import agentd_in_own_cgroup, busybox_rootfs

APPLETS = ("sh", "ls", "cat", "sleep", "echo", "ln", "rm", "mv", "true", "mkdir", "mkfifo", "chmod")
TRIES = 150


@pytest.fixture(scope="module")
def agentd():
    with agentd_in_own_cgroup("cga-ops-") as d:
        yield d


@pytest.fixture
def rootfs(tmp_path):
    root = busybox_rootfs(tmp_path / "rootfs", APPLETS, {"etc/app.conf": "inside\n"})
    os.mkdir(os.path.join(root, "data"))
    os.chmod(os.path.join(root, "data"), 0o777)
    return root


def start(d, rootfs, script: str) -> str:
    name = uname("o")
    r = ctl(d, "run", "-d", "--name", name, "--rootfs", rootfs, "--", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: Client(d.sock).call("GET", f"/v1/containers/{name}")["state"] == "running", 30, "running")
    return name


def test_cp_out_and_in(agentd, rootfs, tmp_path):
    name = start(agentd, rootfs, "sleep 1000")
    try:
        out = tmp_path / "out.conf"
        r = ctl(agentd, "cp", f"{name}:/etc/app.conf", str(out))
        assert r.returncode == 0, r.stderr
        assert out.read_text() == "inside\n"
        src = tmp_path / "in.txt"
        src.write_bytes(os.urandom(3 << 20))          # several chunks
        r = ctl(agentd, "cp", str(src), f"{name}:/data/")
        assert r.returncode == 0, r.stderr
        back = tmp_path / "back"
        assert ctl(agentd, "cp", f"{name}:/data/in.txt", str(back)).returncode == 0
        assert back.read_bytes() == src.read_bytes()
        # owned by the container's root (its user namespace), not by an unmapped id
        r = ctl(agentd, "exec", name, "ls", "-ln", "/data/in.txt")
        assert r.stdout.split()[2:4] == ["0", "0"], r.stdout
        for args, word in (([f"{name}:/nope", str(tmp_path / "x")], "/nope"),
                           ([str(tmp_path / "missing"), f"{name}:/data/x"], "missing"),
                           (["a", "b"], "NAME:/path")):
            r = ctl(agentd, "cp", *args)
            assert r.returncode != 0 and word in one_line(r), (args, r.stderr)
    finally:
        ctl(agentd, "rm", "-f", name)


def test_cp_never_follows_a_container_symlink_to_the_host(agentd, rootfs, tmp_path):
    """The container flips /data/f between a file of its own and a symlink to
    host paths (absolute and ../../..): cp out must never bring the host's
    secret, cp in must never write the host's target."""
    secret = tmp_path / "host-secret"
    secret.write_text("HOST SECRET\n")
    target = tmp_path / "host-target"
    target.write_text("untouched\n")
    os.chmod(tmp_path, 0o755)
    flip = (f"while true; do echo mine > /data/f.new; mv -f /data/f.new /data/f; "
            f"ln -sfn {secret} /data/f; ln -sfn ../../../../../../..{secret} /data/f; "
            f"echo mine > /data/g.new; mv -f /data/g.new /data/g; "
            f"ln -sfn {target} /data/g; ln -sfn ../../../../../../..{target} /data/g; done")
    name = start(agentd, rootfs, flip)
    c = Client(agentd.sock)
    payload = tmp_path / "payload"
    payload.write_text("PAYLOAD\n")
    got = tmp_path / "got"
    outs = ins = 0
    try:
        for _ in range(TRIES):
            try:
                c.call("POST", f"/v1/containers/{name}/cp",
                       body={"direction": "out", "container_path": "/data/f", "host_path": str(got)})
                outs += 1
                assert "HOST SECRET" not in got.read_text()
            except ApiError as e:
                assert e.status == 400, e.message      # the symlink dangled inside the root at that moment
            try:
                c.call("POST", f"/v1/containers/{name}/cp",
                       body={"direction": "in", "container_path": "/data/g", "host_path": str(payload)})
                ins += 1
            except ApiError as e:
                assert e.status == 400, e.message
            assert target.read_text() == "untouched\n"
        assert secret.read_text() == "HOST SECRET\n"
        assert outs > 0 and ins > 0                    # the race was run, not refused every time
    finally:
        ctl(agentd, "rm", "-f", name)


TREE = ("mkdir -p /data/tree/sub/deeper && echo alpha > /data/tree/a.txt && "
        "echo beta > /data/tree/sub/b.sh && chmod 6755 /data/tree/sub/b.sh && "
        "echo gamma > /data/tree/sub/deeper/c && ln -s a.txt /data/tree/link && "
        "ln -s /etc/app.conf /data/tree/abs && mkfifo /data/tree/fifo && chmod 0750 /data/tree/sub")


def test_cp_copies_a_directory_tree_out_and_in_all_or_nothing(agentd, rootfs, tmp_path):
    """A tree with files, a nested directory, symlinks and a FIFO: out to the
    host, then in again under another name. Symlinks stay symlinks (their
    text, not what they point to), the FIFO is skipped and counted,
    permission bits are kept without set-id, what goes in belongs to the
    container's root. A destination that exists is refused and left as it was.
    Before, a directory was refused ("is a directory; give a file")."""
    name = start(agentd, rootfs, f"{TREE}; sleep 1000")
    try:
        wait_for(lambda: ctl(agentd, "exec", name, "ls", "/data/tree/fifo").returncode == 0, 30, "the tree")
        r = ctl(agentd, "cp", "--json", f"{name}:/data/tree", str(tmp_path))
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert (doc["kind"], doc["files"], doc["dirs"], doc["symlinks"], doc["skipped"]) == \
            ("directory", 3, 3, 2, 1), doc
        out = tmp_path / "tree"
        assert (out / "a.txt").read_text() == "alpha\n" and (out / "sub" / "deeper" / "c").read_text() == "gamma\n"
        assert os.readlink(out / "link") == "a.txt" and os.readlink(out / "abs") == "/etc/app.conf"
        assert not (out / "fifo").exists()
        assert oct(os.stat(out / "sub" / "b.sh").st_mode & 0o7777) == "0o755"      # set-id bits dropped
        assert oct(os.stat(out / "sub").st_mode & 0o7777) == "0o750"
        assert not [e for e in os.listdir(tmp_path) if ".cga-cp-" in e]
        # into an existing directory of the container, under its own name
        again = tmp_path / "again"
        shutil.copytree(out, again, symlinks=True)
        r = ctl(agentd, "cp", str(again), f"{name}:/data")
        assert r.returncode == 0, r.stderr
        r = ctl(agentd, "exec", name, "sh", "-c", "cat /data/again/sub/deeper/c; ls -ln /data/again/a.txt; "
                                                  "readlink /data/again/link")
        lines = r.stdout.splitlines()
        assert lines[0] == "gamma" and lines[1].split()[2:4] == ["0", "0"] and lines[2] == "a.txt", r.stdout
        # an existing target: refused in one line, nothing changed on either side
        r = ctl(agentd, "cp", str(again), f"{name}:/data")
        assert r.returncode != 0 and "exists" in one_line(r), r.stderr
        r = ctl(agentd, "cp", f"{name}:/data/tree", str(tmp_path))
        assert r.returncode != 0 and "exists" in one_line(r), r.stderr
        assert not [e for e in os.listdir(tmp_path) if ".cga-cp-" in e]
        r = ctl(agentd, "exec", name, "ls", "-a", "/data")
        assert ".cga-cp-" not in r.stdout, r.stdout
    finally:
        ctl(agentd, "rm", "-f", name)


def _exchanger(a: str, b: str, stop):
    """Swap the entries a and b atomically (renameat2 RENAME_EXCHANGE), as
    fast as it can, until stop is set: a tenant's fastest way to flip a
    directory and a symlink under a walker (any static binary in its image
    can do it; busybox's shell cannot fork fast enough)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, rename_exchange = -100, 2
    a_b, b_b = os.fsencode(a), os.fsencode(b)
    while not stop.is_set():
        libc.renameat2(at_fdcwd, a_b, at_fdcwd, b_b, rename_exchange)


def test_cp_of_a_tree_never_follows_a_directory_the_tenant_swaps_for_a_symlink(agentd, rootfs, tmp_path):
    """In the container's tree, t/d flips between a directory of the
    tenant's and a symlink to a host directory (absolute, then ../../..)
    while cp copies the tree out ({TRIES} times per target) and a tree in
    below it (a third as often): the host's secret is never copied out and nothing is
    written into the host's directory. (With the walk's entries opened
    following symlinks, the secret came out.)"""
    import threading

    hostdir = tmp_path / "hostdir"
    hostdir.mkdir()
    (hostdir / "secret").write_text("HOST SECRET\n")
    os.chmod(tmp_path, 0o755)
    name = start(agentd, rootfs, "sleep 1000")
    tree = os.path.join(rootfs, "data", "t")
    os.makedirs(os.path.join(tree, "d"))
    with open(os.path.join(tree, "d", "secret"), "w") as f:
        f.write("mine\n")
    c = Client(agentd.sock)
    payload = tmp_path / "payload"
    (payload / "sub").mkdir(parents=True)
    (payload / "sub" / "planted").write_text("PAYLOAD\n")
    outs = ins = 0
    try:
        for target in (str(hostdir), "../../../../../../.." + str(hostdir)):
            alt, d = os.path.join(tree, "alt"), os.path.join(tree, "d")
            if os.path.islink(d):          # the last round stopped with the two swapped
                os.unlink(d)
                os.rename(alt, d)
            elif os.path.lexists(alt):
                os.unlink(alt)
            os.symlink(target, alt)
            stop = threading.Event()
            flipper = threading.Thread(target=_exchanger, args=(os.path.join(tree, "d"), alt, stop), daemon=True)
            flipper.start()
            try:
                for i in range(TRIES):
                    got = tmp_path / f"got-{len(target)}-{i}"
                    try:
                        c.call("POST", f"/v1/containers/{name}/cp",
                               body={"direction": "out", "container_path": "/data/t", "host_path": str(got)})
                        outs += 1
                    except ApiError as e:
                        assert e.status == 400, e.message      # an entry changed under the walk: refused
                    for dirpath, _, files in os.walk(got):
                        for f in files:
                            p = os.path.join(dirpath, f)
                            assert os.path.islink(p) or "HOST SECRET" not in open(p).read(), p
                    try:
                        if i % 3 == 0:
                            c.call("POST", f"/v1/containers/{name}/cp",
                                   body={"direction": "in", "container_path": f"/data/t/d/in{i}",
                                         "host_path": str(payload)})
                            ins += 1
                    except ApiError as e:
                        assert e.status == 400, e.message
                    assert sorted(os.listdir(hostdir)) == ["secret"], os.listdir(hostdir)
            finally:
                stop.set()
                flipper.join()
        assert outs > 0 and ins > 0                    # the race was run, not refused every time
        print(f"tree cp under a flipping symlink: {outs} copies out of {2 * TRIES} and {ins} in, 0 escapes")
    finally:
        ctl(agentd, "rm", "-f", name)


def test_top_lists_the_processes_of_the_container(agentd, rootfs):
    name = start(agentd, rootfs, "sleep 1000 & sleep 2000")
    try:
        doc = wait_for(lambda: (lambda d: d if len(d["processes"]) >= 2 else None)(
            Client(agentd.sock).call("GET", f"/v1/containers/{name}/top")), 30, "2 processes")
        cmds = sorted(" ".join(p["command"]) for p in doc["processes"])
        assert "sleep 1000" in cmds and "sleep 2000" in cmds
        info = Client(agentd.sock).call("GET", f"/v1/containers/{name}")
        assert info["pid"] in {p["pid"] for p in doc["processes"]}
        r = ctl(agentd, "top", name)
        assert r.returncode == 0 and "sleep 1000" in r.stdout and r.stdout.startswith("UID")
        ctl(agentd, "stop", "-t", "1", name)
        r = ctl(agentd, "top", name)
        assert r.returncode == 1 and "not running" in one_line(r)
    finally:
        ctl(agentd, "rm", "-f", name)


def test_events_stream_create_start_die_and_remove(agentd):
    t0 = time.time() - 1
    follower = subprocess.Popen([*AGENTCTL, "--socket", agentd.sock, "events", "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0)           # the follower starts from "now": events before it reads the last seq are not asked for
        name = uname("ev")
        wait_for(lambda: follower.poll() is None, 5, "follower")
        r = ctl(agentd, "run", "--name", name, "--", "sh", "-c", "exit 3")
        assert r.returncode == 3
        assert ctl(agentd, "rm", name).returncode == 0
        r = ctl(agentd, "events", "--since", str(t0), "--until", str(time.time() + 1), "--filter", f"name={name}",
                "--json")
        assert r.returncode == 0, r.stderr
        evs = [json.loads(line) for line in r.stdout.splitlines()]
        kinds = [e["event"] for e in evs]
        assert kinds[:2] == ["create", "start"] and "die" in kinds and kinds[-1] == "remove", kinds
        die = next(e for e in evs if e["event"] == "die")
        assert die["exit_code"] == 3 and die["time"].endswith("Z")
        r = ctl(agentd, "events", "--since", str(t0), "--until", str(time.time() + 1),
                "--filter", f"name={name}", "--filter", "event=die")
        assert r.returncode == 0 and len(r.stdout.splitlines()) == 1 and " die " in r.stdout
        r = ctl(agentd, "events", "--filter", "colour=red")
        assert r.returncode == 2 and "--filter" in one_line(r)
    finally:
        follower.terminate()
        out, _ = follower.communicate(timeout=30)
    assert name in out          # the follower saw them live


def test_rename_keeps_the_container_and_frees_the_old_name(agentd, rootfs):
    name = start(agentd, rootfs, "sleep 1000")
    new = uname("renamed")
    c = Client(agentd.sock)
    try:
        before = c.call("GET", f"/v1/containers/{name}")
        r = ctl(agentd, "rename", name, new)
        assert r.returncode == 0, r.stderr
        after = c.call("GET", f"/v1/containers/{new}")
        assert (after["id"], after["pid"], after["cgroup"], after["state"]) == \
            (before["id"], before["pid"], before["cgroup"], "running")
        r = ctl(agentd, "inspect", name)
        assert r.returncode == 1 and name in one_line(r)
        assert ctl(agentd, "exec", new, "true").returncode == 0
        other = start(agentd, rootfs, "sleep 1000")
        r = ctl(agentd, "rename", other, new)
        assert r.returncode == 1 and "taken" in one_line(r)
        r = ctl(agentd, "rename", other, "bad/name")
        assert r.returncode == 2 and "name" in one_line(r)
        ctl(agentd, "rm", "-f", other)
        evs = c.call("GET", "/v1/events", {"since": "0", "limit": "10000"})
        assert any(e["event"] == "rename" and e["name"] == new and e["old_name"] == name for e in evs)
    finally:
        ctl(agentd, "rm", "-f", new)
        ctl(agentd, "rm", "-f", name)


def test_logs_timestamps_and_since(agentd, rootfs):
    import datetime

    name = start(agentd, rootfs, "echo first; while [ ! -e /data/go ]; do sleep 0.05; done; "
                                 "echo second; echo err >&2; sleep 1000")
    try:
        wait_for(lambda: "first" in ctl(agentd, "logs", name).stdout, 30, "first line")
        cut = time.time()       # "first" had arrived before this instant, "second" comes after it
        assert ctl(agentd, "exec", name, "sh", "-c", "> /data/go").returncode == 0
        wait_for(lambda: "second" in ctl(agentd, "logs", name).stdout, 30, "second line")
        r = ctl(agentd, "logs", "--since", repr(cut), name)
        assert (r.returncode, r.stdout, r.stderr) == (0, "second\n", "err\n")
        r = ctl(agentd, "logs", "-t", name)
        assert r.returncode == 0, r.stderr
        stamps = {}
        for line in r.stdout.splitlines():
            ts, text = line.split(" ", 1)
            assert ts.endswith("Z")
            stamps[text] = datetime.datetime.fromisoformat(ts[:26] + "+00:00").timestamp()
        assert stamps["first"] <= cut <= stamps["second"] + 1e-6
        r = ctl(agentd, "logs", "-t", "--tail", "1", name)
        assert r.stdout.count("\n") == 1 and r.stdout.rstrip().endswith("second")
        r = ctl(agentd, "logs", "--since", "1m", name)
        assert r.stdout == "first\nsecond\n"
        r = ctl(agentd, "logs", "--since", "next tuesday", name)
        assert r.returncode == 2 and "--since" in one_line(r)
    finally:
        ctl(agentd, "rm", "-f", name)
