"""runtime/fsusage.py on a real filesystem: du's figure, and a tenant's
tricks between two passes (a directory swapped for a symlink to a big host
tree, a mount inside the tree) never make the walk count the host's files."""
from __future__ import annotations

import os
import subprocess

from runtime.fsusage import Walks


def du(path: str) -> int:
    return int(subprocess.run(["du", "-s", "-B1", path], capture_output=True, text=True, check=True).stdout.split()[0])


def tree(top: str) -> None:
    os.makedirs(os.path.join(top, "a", "b"))
    for i in range(20):
        with open(os.path.join(top, "a", "b", f"f{i}"), "wb") as f:
            f.write(b"x" * 4096 * (i + 1))


def finish(w: Walks, top: str, budget: int = 1) -> int:
    for _ in range(10000):
        if "c" in w.figures():
            return w.figures()["c"][0]
        w.advance({"c": top}, budget)
    raise AssertionError("the walk never completed")


def test_the_figure_is_dus(tmp_path):
    top = str(tmp_path / "upper")
    tree(top)
    os.link(os.path.join(top, "a", "b", "f19"), os.path.join(top, "hard"))
    os.symlink("/usr", os.path.join(top, "link"))
    assert finish(Walks(), top, budget=2) == du(top)


def test_a_directory_swapped_for_a_symlink_mid_walk_is_skipped(tmp_path):
    outside = str(tmp_path / "host")
    os.makedirs(os.path.join(outside, "b"))
    with open(os.path.join(outside, "big"), "wb") as f:
        f.write(b"y" * (8 << 20))
    os.link(os.path.join(outside, "big"), os.path.join(outside, "b", "big"))
    top = str(tmp_path / "upper")
    wins = 0
    for i in range(100):
        t = f"{top}{i}"
        tree(t)
        w = Walks()
        # swapped once "a" is queued (the last component), or once "a/b" is
        # (a component on the way): both must fail to open
        w.advance({"c": t}, 1 + i % 2 * 2)
        os.rename(os.path.join(t, "a"), os.path.join(t, "a.old"))
        os.symlink(outside, os.path.join(t, "a"))
        figure = finish(w, t)
        wins += figure >= 8 << 20
    assert wins == 0


def test_a_mount_inside_the_tree_is_not_counted(tmp_path):
    top = str(tmp_path / "upper")
    tree(top)
    inner = os.path.join(top, "a", "m")
    os.makedirs(inner)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", inner], check=True)
    try:
        with open(os.path.join(inner, "big"), "wb") as f:
            f.write(b"z" * (8 << 20))
        figure = finish(Walks(), top, budget=3)
        assert figure < 8 << 20
    finally:
        subprocess.run(["umount", inner], check=True)
    # du after the unmount also counts the mount point's own directory block
    assert du(top) - 4096 <= figure <= du(top)
