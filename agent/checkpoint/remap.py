"""A checkpoint's user namespace moved onto another block of host ids: the
restore of a checkpoint whose block is held here (an import onto an agentd
where another container has it, or another agentd of the host does).

CRIU restores the mapping its images hold (`userns-*.img`): rewritten here
(with CRIU's own `crit`, decode and encode) for the new block. What else of
the images is in host ids: the tmpfs mounts CRIU dumps as tar archives
(`tmpfs-*.tar.gz.img`: the container's /dev, /dev/shm, --tmpfs), whose
owners in the old block are moved to the new one. Process credentials are
stored as the container sees them (nothing to do). Files of the root and
the volumes are on disk as the container sees them only when they were
idmapped: so a remap is offered only when all were (`service.py` refuses
the others as before: their files carry the old block's owners).

`images_mapping(images)`: the mapping the images hold. `rewrite(images,
new)`: both rewritten, each file replaced by rename. Runs in agentd before
the launcher's restore, on the checkpoint's own images (a later restore
reads the block they hold).
"""
from __future__ import annotations

import glob
import gzip
import json
import os
import shutil
import subprocess
import tarfile

from runtime.userns import host_id

CRIT = "crit"
TIMEOUT = 120.0


class RemapError(Exception):
    """The images cannot be moved to the new block (one line)."""


def _crit(*args: str, data: str | None = None) -> str:
    exe = shutil.which(CRIT) or "/usr/bin/crit"
    try:
        p = subprocess.run([exe, *args], input=data, capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RemapError(f"crit {args[0]} could not be run ({e}); it comes with Debian's criu package") from None
    if p.returncode != 0:
        raise RemapError(f"crit {args[0]} failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
    return p.stdout


def _userns_images(images: str) -> list[str]:
    found = sorted(glob.glob(os.path.join(images, "userns-*.img")))
    if len(found) != 1:
        raise RemapError(f"the checkpoint holds {len(found)} user namespace images; a remap needs exactly one")
    return found


def _lines(extents: list) -> list[list[int]]:
    return [[int(e["first"]), int(e["lower_first"]), int(e["count"])] for e in extents]


def images_mapping(images: str) -> dict:
    """{"uid": [[inside, host, count], ...], "gid": [...]} of the images' user namespace."""
    doc = json.loads(_crit("decode", "-i", _userns_images(images)[0]))
    entry = doc["entries"][0]
    return {"uid": _lines(entry.get("uid_map") or []), "gid": _lines(entry.get("gid_map") or [])}


def shifter(old: dict, new: dict, side: str):
    """host id in `old` -> the host id of the same container id in `new` (others unchanged)."""
    def shift(h: int) -> int:
        for inside, host, count in old[side]:
            if host <= h < host + count:
                moved = host_id(new[side], inside + h - host)
                return h if moved is None else moved
        return h
    return shift


def rewrite(images: str, new: dict) -> dict:
    """Move the images onto `new`; returns the mapping they held."""
    old = images_mapping(images)
    if old == {k: [list(x) for x in new[k]] for k in ("uid", "gid")}:
        return old
    path = _userns_images(images)[0]
    doc = json.loads(_crit("decode", "-i", path))
    for side, key in (("uid", "uid_map"), ("gid", "gid_map")):
        shift = shifter(old, new, side)
        for ext in doc["entries"][0].get(key) or []:
            ext["lower_first"] = shift(int(ext["lower_first"]))
    _crit("encode", "-o", path + ".new", data=json.dumps(doc))
    os.rename(path + ".new", path)
    uid, gid = shifter(old, new, "uid"), shifter(old, new, "gid")
    for tar in sorted(glob.glob(os.path.join(images, "tmpfs-*.tar.gz.img"))):
        _retar(tar, uid, gid)
    return old


def _retar(path: str, uid, gid) -> None:
    """The tar archive of a tmpfs (gzip), its members' owners shifted."""
    tmp = path + ".new"
    try:
        with gzip.open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as src, \
                gzip.open(tmp, "wb") as out, tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as dst:
            for m in src:
                if m.issparse():            # written out in full
                    m.type, m.sparse = tarfile.REGTYPE, None
                m.uid, m.gid = uid(m.uid), gid(m.gid)
                m.uname = m.gname = ""
                for key in ("uid", "gid", "uname", "gname"):    # a PAX record would win over the field
                    m.pax_headers.pop(key, None)
                dst.addfile(m, src.extractfile(m) if m.isreg() else None)
        os.rename(tmp, path)
    except (OSError, tarfile.TarError, EOFError) as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise RemapError(f"{os.path.basename(path)}: {e}") from None
