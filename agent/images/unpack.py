"""Apply one image layer (a tar, maybe compressed) to an empty directory.

Each layer is unpacked on its own, to serve as one overlayfs lower directory,
so OCI whiteouts become what overlayfs reads: ``.wh.NAME`` a 0:0 character
device NAME, ``.wh..wh..opq`` the ``trusted.overlay.opaque`` xattr on its
directory.

Every entry is created relative to a descriptor of its parent directory,
resolved with openat2(RESOLVE_IN_ROOT): a symlink in the layer (``a -> /etc``
followed by ``a/passwd``) resolves inside the layer, never on the host.
The uncompressed stream is hashed on the way: the result is the layer's
diff_id, checked against the image config by the caller.
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import os
import stat
import tarfile

from runtime import mounts

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20


class LayerError(ValueError):
    """A layer that cannot be applied; the message names the entry and why."""


class _Hashing:
    """A read-only stream that hashes what passes through it."""

    def __init__(self, raw):
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n=-1):
        data = self.raw.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


def decompressed(f):
    """A readable uncompressed stream over f (gzip, zstd or plain tar, by magic)."""
    head = f.peek(4)[:4] if hasattr(f, "peek") else b""
    if head.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=f, mode="rb")
    if head.startswith(ZSTD_MAGIC):
        try:
            import zstandard
        except ImportError:  # pragma: no cover - a dependency of the package
            raise LayerError("layer is zstd-compressed and the zstandard module is missing") from None
        return zstandard.ZstdDecompressor().stream_reader(f)
    return f


def _clean(name: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise LayerError(f"layer entry {name!r}: '..' is not allowed in a layer path")
    return "/".join(parts)


class _Root:
    """Directory descriptors inside the layer directory, resolved in-root."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.path = os.path.realpath(path)

    def close(self) -> None:
        os.close(self.fd)

    def _rel(self, fd: int) -> str:
        """Where fd is, relative to the layer directory."""
        return os.path.relpath(os.readlink(f"/proc/self/fd/{fd}"), self.path)

    def dir(self, rel: str, create: bool = True, _depth: int = 0) -> int:
        """An O_RDONLY descriptor of directory rel (made, mode 0755, if missing;
        through a symlink of the layer, its target is made, inside the layer)."""
        if not rel or rel == ".":
            return os.dup(self.fd)
        if _depth > 40:
            raise OSError(errno.ELOOP, "too many levels of symbolic links", rel)
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        how = mounts.RESOLVE_IN_ROOT | mounts.RESOLVE_NO_MAGICLINKS
        try:
            return mounts.openat2(self.fd, rel, flags, how)
        except FileNotFoundError:
            if not create:
                raise
        parent, _, base = rel.rpartition("/")
        pfd = self.dir(parent, _depth=_depth + 1)
        try:
            try:
                os.mkdir(base, 0o755, dir_fd=pfd)
            except FileExistsError:
                st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):   # a dangling link: make its target, in the layer
                    target = os.readlink(base, dir_fd=pfd)
                    if target.startswith("/"):
                        nxt = target.lstrip("/")
                    else:
                        nxt = os.path.normpath(os.path.join(self._rel(pfd), target))
                    nxt = "/".join(p for p in nxt.split("/") if p not in ("", ".", ".."))
                    return self.dir(nxt, create, _depth + 1)
            return mounts.openat2(pfd, base, flags, how & ~mounts.RESOLVE_IN_ROOT | mounts.RESOLVE_NO_SYMLINKS)
        finally:
            os.close(pfd)


def _remove(dfd: int, base: str) -> None:
    """Remove base in dfd if present (a directory with everything below it)."""
    try:
        st = os.stat(base, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        sub = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        try:
            for name in os.listdir(sub):
                _remove(sub, name)
        finally:
            os.close(sub)
        os.rmdir(base, dir_fd=dfd)
    else:
        os.unlink(base, dir_fd=dfd)


def _meta(dfd: int, base: str, m: tarfile.TarInfo) -> None:
    os.chown(base, m.uid, m.gid, dir_fd=dfd, follow_symlinks=False)
    if not m.issym():
        os.chmod(base, m.mode & 0o7777, dir_fd=dfd)
    os.utime(base, (m.mtime, m.mtime), dir_fd=dfd, follow_symlinks=False)
    for key, value in (m.pax_headers or {}).items():
        if key.startswith("SCHILY.xattr.") and not m.issym():
            name = key[len("SCHILY.xattr."):]
            fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_DIRECTORY if m.isdir() else 0),
                         dir_fd=dfd)
            try:
                os.setxattr(fd, name, value.encode("utf-8", "surrogateescape"))
            finally:
                os.close(fd)


def apply_layer(stream, dest: str) -> tuple[str, int]:
    """Unpack the layer read from stream into dest (an empty directory).

    Returns (diff_id, uncompressed size). Raises LayerError for a malformed
    layer; the caller removes dest then."""
    hashed = _Hashing(decompressed(stream))
    root = _Root(dest)
    dirs: list[tuple[str, tarfile.TarInfo]] = []
    try:
        try:
            tar = tarfile.open(fileobj=hashed, mode="r|")
        except tarfile.TarError as e:
            raise LayerError(f"layer is not a tar archive: {e}") from None
        try:
            for m in tar:
                _entry(tar, root, m, dirs)
        except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as e:
            raise LayerError(f"layer is truncated or corrupt: {e}") from None
        hashed.drain()
        # directory modes and times last: a read-only directory would refuse its entries
        for rel, m in reversed(dirs):
            parent, _, base = rel.rpartition("/")
            pfd = root.dir(parent, create=False)
            try:
                _meta(pfd, base, m)
            finally:
                os.close(pfd)
    finally:
        root.close()
    return hashed.digest(), hashed.size


def _entry(tar, root: _Root, m: tarfile.TarInfo, dirs: list) -> None:
    rel = _clean(m.name)
    if not rel:
        return
    parent, _, base = rel.rpartition("/")
    pfd = root.dir(parent)
    try:
        if base == OPAQUE:
            os.setxattr(pfd, OPAQUE_XATTR, b"y")
            return
        if base.startswith(WHITEOUT_PREFIX):
            gone = base[len(WHITEOUT_PREFIX):]
            if not gone:
                raise LayerError(f"layer entry {m.name!r}: empty whiteout name")
            _remove(pfd, gone)
            os.mknod(gone, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
            return
        if m.isdir():
            try:
                st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    _remove(pfd, base)
                    os.mkdir(base, 0o700, dir_fd=pfd)
            except FileNotFoundError:
                os.mkdir(base, 0o700, dir_fd=pfd)
            dirs.append((rel, m))
            return
        _remove(pfd, base)
        if m.isreg():
            src = tar.extractfile(m)
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=pfd)
            try:
                while True:
                    chunk = src.read(_CHUNK)
                    if not chunk:
                        break
                    os.write(fd, chunk)
            finally:
                os.close(fd)
        elif m.issym():
            os.symlink(m.linkname, base, dir_fd=pfd)
        elif m.islnk():
            target = _clean(m.linkname)
            tparent, _, tbase = target.rpartition("/")
            tfd = root.dir(tparent, create=False)
            try:
                os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                raise LayerError(f"layer entry {m.name!r}: hard link to missing {m.linkname!r}") from None
            finally:
                os.close(tfd)
            return  # a hard link shares the target's metadata
        elif m.ischr() or m.isblk():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(base, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=pfd)
        elif m.isfifo():
            os.mkfifo(base, 0o600, dir_fd=pfd)
        else:
            raise LayerError(f"layer entry {m.name!r}: unsupported tar entry type {m.type!r}")
        _meta(pfd, base, m)
    finally:
        os.close(pfd)
