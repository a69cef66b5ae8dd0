"""One tar file for `checkpoint --export` and `restore --import`: the
checkpoint's record and CRIU's images (a rootfs container's root stays
where it is: the importing host must have the same rootfs path)."""
from __future__ import annotations

import os
import tarfile

from agent.checkpoint import layout
from agent.errors import UserError


def export(checkpoint_dir: str, path: str) -> dict:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with tarfile.open(tmp, "w") as tar:
            tar.add(os.path.join(checkpoint_dir, layout.RECORD), arcname=layout.RECORD)
            tar.add(os.path.join(checkpoint_dir, layout.IMAGES), arcname=layout.IMAGES)
        os.rename(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise UserError(f"export: cannot write {path}: {e.strerror or e}") from None
    return {"path": path, "bytes": os.path.getsize(path)}


def unpack(path: str, dest: str) -> dict:
    """Extract an exported checkpoint into dest (a fresh dir); returns its record."""
    try:
        with tarfile.open(path, "r") as tar:
            members = tar.getmembers()
            for m in members:
                top = m.name.split("/", 1)[0]
                if top not in (layout.RECORD, layout.IMAGES) or ".." in m.name.split("/") or m.name.startswith("/"):
                    raise UserError(f"import: {path}: unexpected member {m.name!r}; "
                                    f"an export holds only {layout.RECORD} and {layout.IMAGES}/")
                if not (m.isfile() or m.isdir()):
                    raise UserError(f"import: {path}: member {m.name!r} is not a file or directory")
            tar.extractall(dest, members=members, filter="data")
    except (OSError, tarfile.TarError) as e:
        raise UserError(f"import: {path}: not a readable checkpoint export ({e})") from None
    rec = layout.read_record(dest)
    if rec is None:
        raise UserError(f"import: {path}: no {layout.RECORD} in it; not a checkpoint export")
    return rec
