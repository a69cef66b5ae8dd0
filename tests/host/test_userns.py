"""runtime/userns.py on the real kernel: a user namespace made by the helper,
idmapped detached trees of real directories, and the fallback where a
filesystem cannot be idmapped."""
from __future__ import annotations

import os
import shutil
import tempfile
import traceback

import pytest

from runtime import namespaces as ns
from runtime import userns

H = 1 << 30                                         # host ids for container 0..65535 in these tests
MAPPING = {"uid": [[0, H, 65536]], "gid": [[0, H + (1 << 20), 65536]]}


def in_child(fn) -> int:
    """Run fn() in a forked child (single-threaded: setns CLONE_NEWUSER needs
    it); returns its exit code (fn's return value, 99 for an exception)."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = fn()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.fixture
def userns_fd():
    fd = userns.create(MAPPING)
    yield fd
    os.close(fd)


@pytest.fixture
def open_dir():
    """A directory every uid may enter and write (pytest's tmp_path is 0700)."""
    d = tempfile.mkdtemp(prefix="cga-userns-")
    os.chmod(d, 0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_namespace_gets_the_mapping_and_its_root_is_an_unprivileged_host_uid(userns_fd):
    r, w = os.pipe()

    def child():
        userns.enter(userns_fd)
        with open("/proc/self/uid_map") as f, open("/proc/self/gid_map") as g:
            os.write(w, (f.read() + g.read() + f"{os.getuid()} {os.getgid()}\n").encode())
        return 0
    assert in_child(child) == 0
    os.close(w)
    with os.fdopen(r) as f:
        lines = [line.split() for line in f.read().splitlines()]
    assert lines == [["0", str(H), "65536"], ["0", str(H + (1 << 20)), "65536"], ["0", "0"]]


def test_idmapped_tree_shifts_owners_and_writes_map_back(userns_fd, tmp_path):
    d = tmp_path / "vol"
    d.mkdir()
    (d / "root-owned").write_text("x")
    (d / "user-owned").write_text("x")
    os.chown(d / "user-owned", 1000, 1000)
    os.chown(d, 1000, 1000)
    tree = userns.open_tree_clone(str(d))
    try:
        assert userns.idmap_tree(tree, userns_fd) is None
        st_root, st_user = os.stat("root-owned", dir_fd=tree), os.stat("user-owned", dir_fd=tree)
        assert (st_root.st_uid, st_root.st_gid) == (H, H + (1 << 20))           # shown shifted
        assert (st_user.st_uid, st_user.st_gid) == (H + 1000, H + (1 << 20) + 1000)
        # the host's root is not mapped in the tree: it cannot create there
        with pytest.raises(OSError) as exc:
            os.open("by-host-root", os.O_CREAT | os.O_WRONLY, dir_fd=tree)
        assert exc.value.errno == 75                                             # EOVERFLOW

        def child():
            userns.enter(userns_fd)
            os.close(os.open("by-container-root", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=tree))
            os.setresgid(1000, 1000, 1000)
            os.setresuid(1000, 1000, 1000)
            # uid 1000 inside owns the volume through the idmap, as without a user namespace
            os.close(os.open("by-container-1000", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=tree))
            return 0
        assert in_child(child) == 0
        # through the idmapped tree the container's root owns it: host uid H ...
        assert os.stat("by-container-root", dir_fd=tree).st_uid == H
        assert os.stat("by-container-1000", dir_fd=tree).st_uid == H + 1000
    finally:
        os.close(tree)
    # ... stored on disk with the ids the container used, as without a user namespace
    assert os.stat(d / "by-container-root").st_uid == 0
    assert (os.stat(d / "by-container-1000").st_uid, os.stat(d / "by-container-1000").st_gid) == (1000, 1000)


def test_without_an_idmap_container_root_writes_as_its_host_uid(userns_fd, open_dir):
    made = os.path.join(open_dir, "made")

    def child():
        userns.enter(userns_fd)
        os.close(os.open(made, os.O_CREAT | os.O_WRONLY, 0o644))
        return 0
    assert in_child(child) == 0
    st = os.stat(made)
    assert (st.st_uid, st.st_gid) == (H, H + (1 << 20))


def test_a_filesystem_without_idmap_support_gives_a_one_line_reason(userns_fd, tmp_path):
    d = tmp_path / "ram"
    d.mkdir()
    ns.mount("ramfs", str(d), "ramfs", 0)
    try:
        tree = userns.open_tree_clone(str(d))
        try:
            reason = userns.idmap_tree(tree, userns_fd)
            assert reason.startswith("ramfs (or a filesystem mounted below it) does not support idmapped mounts")
            assert "\n" not in reason
            assert os.stat(".", dir_fd=tree).st_uid == 0                         # left as it was
        finally:
            os.close(tree)
    finally:
        ns.umount2(str(d), ns.MNT_DETACH)


def test_a_map_the_kernel_refuses_names_the_step():
    with pytest.raises(OSError) as exc:
        userns.create({"uid": [[0, H, 10], [5, H + 100, 10]], "gid": [[0, H, 10]]})
    assert exc.value.strerror.startswith("write uid_map 0:") and exc.value.errno == 22
