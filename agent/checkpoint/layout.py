"""A checkpoint on disk, under the agent's state dir:

    state_dir/checkpoints/<name>/
        checkpoint.json   the record (RECORD_KEYS): the container's spec,
                          limits and labels, the ledger's position (its
                          cgroup's cpu usage at the dump), the CRIU version
                          and kernel that made it, the launcher's pipes,
                          whether TCP connections were dumped, whether the
                          network namespace was dumped empty (netns_empty),
                          which mounts were idmapped (idmapped: the root)
        upper/            an image container's writable layer (upper.py)
        images/           CRIU's image files (dump.log, restore.log in it);
                          during the restore of a user-namespace container
                          owned by that namespace's root (`own`)
        stage/            during a restore only: the volumes staged for
                          CRIU (volumes.py)
    state_dir/checkpoints/.tmp-<name>-<hex>/   one being written; renamed
                          into place only when complete, removed at start
    state_dir/checkpoints/.failed-<name>-dump.log   CRIU's log of the last
                          failed dump of <name> (its .tmp- dir is removed)

A checkpoint is named for its container and outlives it: `restore NAME`
works after `rm NAME` and after an agentd restart.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil

from agent.spec import check_name

DIR = "checkpoints"
RECORD = "checkpoint.json"
IMAGES = "images"
UPPER = "upper"                 # an image container's writable layer (upper.py)
RECORD_KEYS = ("name", "container_id", "created_at", "spec", "limits", "labels", "cgroup",
               "cpu_usage_usec_at_dump", "criu_version", "kernel", "pipes", "leave_running",
               "image_bytes", "duration_seconds", "externals", "netns_external", "tcp_established", "upper",
               "netns_empty", "idmapped")


def root(state_dir: str) -> str:
    return os.path.join(state_dir, DIR)


def path(state_dir: str, name: str) -> str:
    return os.path.join(root(state_dir), check_name(name))


def new_tmp(state_dir: str, name: str) -> str:
    top = root(state_dir)
    os.makedirs(top, mode=0o700, exist_ok=True)
    tmp = os.path.join(top, f".tmp-{check_name(name)}-{secrets.token_hex(4)}")
    os.makedirs(os.path.join(tmp, IMAGES), mode=0o700)
    return tmp


def clean_tmp(state_dir: str) -> None:
    top = root(state_dir)
    try:
        names = os.listdir(top)
    except FileNotFoundError:
        return
    for n in names:
        if n.startswith(".tmp-"):
            shutil.rmtree(os.path.join(top, n), ignore_errors=True)


def write_record(d: str, record: dict) -> None:
    tmp = os.path.join(d, RECORD + ".tmp")
    with open(tmp, "w") as f:
        json.dump({k: record.get(k) for k in RECORD_KEYS}, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, os.path.join(d, RECORD))


def read_record(d: str) -> dict | None:
    try:
        with open(os.path.join(d, RECORD)) as f:
            rec = json.load(f)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def size_of(d: str) -> int:
    total = 0
    for top, _dirs, files in os.walk(d):
        for f in files:
            try:
                total += os.lstat(os.path.join(top, f)).st_size
            except OSError:
                pass
    return total


def listing(state_dir: str) -> list[dict]:
    top = root(state_dir)
    try:
        names = sorted(os.listdir(top))
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        if n.startswith("."):
            continue
        rec = read_record(os.path.join(top, n))
        if rec is not None:
            out.append({"name": n, "container_id": rec.get("container_id"), "created_at": rec.get("created_at"),
                        "criu_version": rec.get("criu_version"), "image_bytes": rec.get("image_bytes"),
                        "leave_running": rec.get("leave_running")})
    return out


def failed_log(state_dir_or_top: str, name: str) -> str:
    return os.path.join(state_dir_or_top, f".failed-{check_name(name)}-dump.log")


def keep_failed_log(tmp: str, name: str, err: Exception) -> Exception:
    """Keep CRIU's dump.log of a failed dump in `tmp` (about to be removed) beside
    it; the error's message then names the kept copy."""
    src = os.path.join(tmp, IMAGES, "dump.log")
    dst = failed_log(os.path.dirname(tmp), name)
    try:
        shutil.copyfile(src, dst)
    except OSError:
        return err
    if src not in str(err):
        return err
    try:
        return type(err)(str(err).replace(src, dst))
    except Exception:  # noqa: BLE001 - an error type that takes other arguments: the original
        return err


def own(images: str, uid: int, gid: int) -> None:
    """Give images/ and its files to uid:gid. CRIU reads some images after it
    entered the restored user namespace, as that namespace's root: the
    container's root's host ids (their own data), back to 0:0 after the restore."""
    os.chown(images, uid, gid, follow_symlinks=False)
    for top, dirs, files in os.walk(images):
        for n in dirs + files:
            os.chown(os.path.join(top, n), uid, gid, follow_symlinks=False)
