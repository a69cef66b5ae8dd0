"""One tar file for `checkpoint --export` and `restore --import`: the
checkpoint's record, CRIU's images and, for an image container, its
writable layer (upper.py; the image itself is pulled on the importing host).
A rootfs container's root stays where it is: the importing host must have
the same rootfs path.

The writable layer is kept as overlayfs needs it: whiteouts (0:0 character
devices), hard links, numeric owners, modes as they were, and the extended
attributes that carry meaning there (XATTRS, as PAX SCHILY.xattr records).
An import extracts it with the member checks of tarfile's "tar" filter (no
path out of the checkpoint dir, through a link or otherwise) but the modes
kept, and takes no device other than a whiteout.
"""
from __future__ import annotations

import os
import tarfile

from agent.checkpoint import layout
from agent.errors import UserError

XATTRS = ("trusted.overlay.opaque", "trusted.overlay.redirect", "security.capability")
XATTR_PREFIXES = ("user.",)
PAX_XATTR = "SCHILY.xattr."


def _kept(name: str) -> bool:
    return name in XATTRS or name.startswith(XATTR_PREFIXES)


def export(checkpoint_dir: str, path: str) -> dict:
    tmp = f"{path}.tmp-{os.getpid()}"
    upper = os.path.join(checkpoint_dir, layout.UPPER)

    def with_xattrs(info: tarfile.TarInfo) -> tarfile.TarInfo:
        src = os.path.join(checkpoint_dir, info.name)
        for name in os.listxattr(src, follow_symlinks=False):
            if _kept(name):
                value = os.getxattr(src, name, follow_symlinks=False)
                info.pax_headers[PAX_XATTR + name] = value.decode("utf-8", "surrogateescape")
        return info

    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT, errors="surrogateescape") as tar:
            tar.add(os.path.join(checkpoint_dir, layout.RECORD), arcname=layout.RECORD)
            tar.add(os.path.join(checkpoint_dir, layout.IMAGES), arcname=layout.IMAGES)
            if os.path.isdir(upper):
                tar.add(upper, arcname=layout.UPPER, filter=with_xattrs)
        os.rename(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise UserError(f"export: cannot write {path}: {e.strerror or e}") from None
    return {"path": path, "bytes": os.path.getsize(path)}


def _upper_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """tarfile's "tar" filter (paths and links stay in dest), the mode kept as it was."""
    checked = tarfile.tar_filter(member, dest)
    return checked.replace(mode=member.mode, deep=False) if checked is not None else None


def unpack(path: str, dest: str) -> dict:
    """Extract an exported checkpoint into dest (a fresh dir); returns its record."""
    try:
        with tarfile.open(path, "r", errors="surrogateescape") as tar:
            members = tar.getmembers()
            plain, layer = [], []
            for m in members:
                top = m.name.split("/", 1)[0]
                if (top not in (layout.RECORD, layout.IMAGES, layout.UPPER) or ".." in m.name.split("/")
                        or m.name.startswith("/")):
                    raise UserError(f"import: {path}: unexpected member {m.name!r}; an export holds only "
                                    f"{layout.RECORD}, {layout.IMAGES}/ and {layout.UPPER}/")
                if top == layout.UPPER:
                    whiteout = m.ischr() and m.devmajor == 0 and m.devminor == 0
                    if not (m.isfile() or m.isdir() or m.issym() or m.islnk() or m.isfifo() or whiteout):
                        raise UserError(f"import: {path}: member {m.name!r} is a device; a writable layer "
                                        "holds no device but whiteouts (0:0)")
                    layer.append(m)
                elif not (m.isfile() or m.isdir()):
                    raise UserError(f"import: {path}: member {m.name!r} is not a file or directory")
                else:
                    plain.append(m)
            tar.extractall(dest, members=plain, filter="data")
            tar.extractall(dest, members=layer, filter=_upper_filter, numeric_owner=True)
            for m in layer:
                for key, value in m.pax_headers.items():
                    name = key[len(PAX_XATTR):]
                    if key.startswith(PAX_XATTR) and _kept(name):
                        os.setxattr(os.path.join(dest, m.name), name, value.encode("utf-8", "surrogateescape"),
                                    follow_symlinks=False)
    except (OSError, tarfile.TarError, KeyError) as e:     # KeyError: a hard link to no member
        raise UserError(f"import: {path}: not a readable checkpoint export ({e})") from None
    rec = layout.read_record(dest)
    if rec is None:
        raise UserError(f"import: {path}: no {layout.RECORD} in it; not a checkpoint export")
    return rec
