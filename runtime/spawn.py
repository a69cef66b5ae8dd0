"""Container process setup, run in a freshly forked child of the launcher.

`SpawnSpec.from_dict()` (runtime/spawnspec.py) validates the spawn spec the
supervisor sends (one clear line per bad field). `run_child()` is what the
forked child executes (runtime/intermediate.py's protocol); it never returns:

  intermediate (the forked child, see cgroupfork.fork_in_cgroup):
    1. born in the container's cgroup (clone3 CLONE_INTO_CGROUP), or, where
       the kernel lacks that, its first step writes "0" to
       <cgroup>/cgroup.procs: everything from here on, including the
       container's first instruction, is accounted to its cgroup
    2. stdio onto the log pipes, every other descriptor closed
    3. unshare(NEWNS), / recursively private; then the detached trees
       (runtime/mounts.py): the rootfs and each volume source opened once
       (openat2, no magic links), checked as what was opened (its path from
       /proc/self/fd, its fstat), cloned with its submounts (open_tree) and
       flagged on every submount (mount_setattr AT_RECURSIVE: nodev, nosuid,
       ro, noexec; private propagation). Nothing is attached yet
       (runtime/trees.py).
   3u. with spec.userns (runtime/userns.py): a user namespace made by a
       helper process with the mapping (before step 3's trees: an image
       container's overlay is made of layers idmapped with it,
       runtime/idmapped_layers.py); the mount points /proc, /dev, /sys made
       in the rootfs, every tree given its idmap (or mounted without, the
       reason reported), the namespace entered as its root; step 4
       then unshares NEWNS too, so that the namespace owns every namespace
       the container gets; the idmap outcome goes to `pid_w` after the pid
    4. unshare(UTS | IPC | PID [| NET] [| CGROUP]): a rootfs container's
       cgroup namespace is made once it is in its cgroup, so that cgroup is
       the namespace's root
    5. fork PID 1, write its host pid to `pid_w`, _exit(0): PID 1 is
       reparented to the launcher (the child subreaper)
  PID 1 (runtime/container_init.py):
    6. the spec's namespaced sysctls, written into its own namespaces; the
       trees attached (move_mount onto descriptors): the rootfs on its
       own directory (with a user namespace: on "/", where no host path has
       to be walked); a fresh /proc (made inside the new PID namespace), a
       minimal /dev, a read-only /sys (the host's, every submount read-only,
       where a user namespace does not own the network namespace) and, in its cgroup namespace, the
       container's own cgroup read-only at /sys/fs/cgroup; Docker's masked
       and read-only paths (runtime/kernelfs.py); the volumes, each destination resolved inside
       the root (RESOLVE_IN_ROOT, made when missing); readonly_rootfs: the
       rootfs tree read-only (mount points made first) before anything is
       attached on it; pivot_root. Host
       root: a fresh /proc, the host's /sys read-only without submounts,
       the volumes on existing destinations.
    7. a session of its own; spec.tty: a terminal of its own devpts as its
       stdio and controlling terminal, owned by its user, the multiplexer
       end sent to the launcher (runtime/terminal.py); hostname; loopback
       up when the network namespace is new
  (spec.netns: the intermediate joins that network namespace with setns
   right after step 2, as the host's root, instead of step 4 making one;
   spec.userns_path: the user namespace owning it, bound beside it with
   spec.userns's mapping, is opened in step 3u instead of made)
    8. no_new_privs, seccomp filter, rlimits, bounding set,
       setgroups/setgid/setuid, capabilities (or the OCI capability sets)
       (runtime/privileges.py)
    9. working dir, signal dispositions back to default, execve
       (runtime/execve.py)

Any failure before execve is written as one line to `err_w` (close-on-exec,
so the launcher sees EOF without a line when execve succeeded) and the child
exits 127.
"""

from __future__ import annotations

import json
import os

from . import container_init
from . import intermediate
from . import namespaces as ns
from . import userns as usernsmod
from .intermediate import step
from .trees import enter_userns, open_trees
# the public names of the spawn side, importable from here as before
from .cgroupfork import CgroupRefused, fork_in_cgroup, probe_clone3
from .execve import exec_failure
from .rules import DEFAULT_PATH
from .spawnspec import DeviceNode, Mount, Overlay, SpawnSpec, SpecError

__all__ = ["run_child", "CgroupRefused", "fork_in_cgroup", "probe_clone3", "exec_failure", "DEFAULT_PATH",
           "DeviceNode", "Mount", "Overlay", "SpawnSpec", "SpecError"]


def run_child(spec: SpawnSpec, *, stdout_fd: int, stderr_fd: int,
              err_w: int, pid_w: int, nofile: tuple[int, int] | None = None,
              joined: bool = False, stdin_fd: int | None = None, device_nodes: dict | None = None,
              tty_fd: int | None = None) -> None:
    """Executed in the launcher's forked child. Never returns. `nofile`:
    the RLIMIT_NOFILE the container gets (the launcher raises its own).
    `joined`: fork_in_cgroup put it in spec.cgroup already. `device_nodes`:
    --device nodes the launcher made for a user namespace (trees.make_device_nodes).
    `tty_fd` (spec.tty): the unix socket PID 1 sends its terminal's multiplexer on."""
    keep = (err_w, pid_w) if tty_fd is None else (err_w, pid_w, tty_fd)

    def setup():
        intermediate.begin(spec.cgroup, joined=joined, nofile=nofile, stdin_fd=stdin_fd,
                           stdout_fd=stdout_fd, stderr_fd=stderr_fd, keep=keep)
        if spec.netns:   # as the host's root, before any user namespace
            step(f"join network namespace {spec.netns}", _join_netns, spec.netns)
        # a private copy of the host's mount namespace, where the host
        # paths the container gets become detached, checked, flagged
        # trees before any other namespace is made
        step("unshare mount namespace", ns.unshare, ns.CLONE_NEWNS)
        step("make / private", ns.mount, None, "/", None, ns.MS_REC | ns.MS_PRIVATE)
        # the user namespace before the trees: an image container's
        # overlay is made of layers idmapped with it
        userns_fd = -1
        if spec.userns_path:      # the one owning the joined network namespace
            userns_fd = step("open user namespace", usernsmod.open_bound, spec.userns_path)
        elif spec.userns:
            userns_fd = step("create user namespace", usernsmod.create, spec.userns)
        trees = open_trees(spec, userns_fd, device_nodes)
        idmap = None
        if spec.userns:
            # then entered, so that it owns every namespace made after
            # it, a mount namespace of its own included
            idmap = enter_userns(spec, trees, userns_fd)
        step("unshare namespaces", ns.unshare,
             spec.unshare_flags if spec.userns else spec.unshare_flags & ~ns.CLONE_NEWNS)
        return trees, json.dumps(idmap) if idmap else ""

    intermediate.run("container setup", err_w=err_w, pid_w=pid_w, setup=setup,
                     fork_what="fork container init", child=lambda trees: container_init.run(spec, trees, tty_fd))


def _join_netns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        ns.setns(fd, ns.CLONE_NEWNET)   # EINVAL: not a network namespace
    finally:
        os.close(fd)
