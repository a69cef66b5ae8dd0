"""The image store under the state dir: content-addressed and crash-safe.

    images/blobs/sha256/<hex>    manifests, configs, compressed layers; the
                                 name is the sha256 of the content, checked
                                 on arrival
    images/layers/<hex>/         one unpacked layer each (an overlayfs lower
                                 directory), named by its diff_id and shared
                                 by every image that has it
    images/index.json            images by manifest digest, names -> digest
    images/tmp/                  partial downloads and unpacks

Nothing is visible under its final name before it is complete: a blob is
written to tmp/, verified, fsynced and renamed; a layer is unpacked into
tmp/ and renamed; an image enters index.json (rewritten atomically) only
after every one of its blobs and layers is in place. A kill at any instant
therefore leaves at most files in tmp/, which the next start removes; a
re-pull starts those parts again.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import uuid

from agent.errors import Conflict, NotFound, UserError
from agent.images import reference, unpack

INDEX_VERSION = 1
_CHUNK = 1 << 20


class ImageError(UserError):
    """An image operation failed; the message is one line for the user.
    422: the request was understood, the registry or the image said no."""

    kind = "refused"


class ImageNotFound(NotFound, ImageError):
    pass


class ImageInUse(Conflict, ImageError):
    pass


class DigestMismatch(ImageError):
    pass


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _hex(digest: str) -> str:
    if not reference.DIGEST_RE.fullmatch(digest or ""):
        raise ImageError(f"digest {digest!r} is not sha256: followed by 64 lowercase hex digits")
    return digest[len("sha256:"):]


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ImageStore:
    def __init__(self, root: str):
        self.root = root
        self.blobs = os.path.join(root, "blobs", "sha256")
        self.layers = os.path.join(root, "layers")
        self.tmp = os.path.join(root, "tmp")
        self.index_path = os.path.join(root, "index.json")
        self._lock = threading.RLock()
        for d in (root, os.path.dirname(self.blobs), self.blobs, self.layers, self.tmp):
            os.makedirs(d, 0o700, exist_ok=True)   # each level: makedirs gives parents 0777 & ~umask
            os.chmod(d, 0o700)
        self._clean_tmp()
        self._index = self._load_index()

    # ---------------------------------------------------------------- blobs

    def _clean_tmp(self) -> None:
        for name in os.listdir(self.tmp):
            p = os.path.join(self.tmp, name)
            shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)

    def blob_path(self, digest: str) -> str:
        return os.path.join(self.blobs, _hex(digest))

    def has_blob(self, digest: str) -> bool:
        return os.path.isfile(self.blob_path(digest))

    def read_blob(self, digest: str) -> bytes:
        try:
            with open(self.blob_path(digest), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ImageNotFound(f"blob {digest} is not in the store") from None

    def ingest(self, digest: str | None, chunks, progress=None) -> str:
        """Write the blob that chunks yields, check it is digest, make it
        visible; returns its digest. digest None: the content names itself
        (a blob read once from an archive, hashed on the way).

        Raises DigestMismatch (nothing is left behind) when the content differs."""
        if digest is not None and self.has_blob(digest):
            return digest
        tmp = os.path.join(self.tmp, f"blob-{_hex(digest)[:16] if digest else 'new'}-{uuid.uuid4().hex[:8]}")
        sha = hashlib.sha256()
        try:
            with open(tmp, "wb") as f:
                for chunk in chunks:
                    sha.update(chunk)
                    f.write(chunk)
                    if progress:
                        progress(len(chunk))
                f.flush()
                os.fsync(f.fileno())
            got = "sha256:" + sha.hexdigest()
            if digest is not None and got != digest:
                raise DigestMismatch(f"blob {digest}: content has digest {got}; refused")
            os.chmod(tmp, 0o600)
            os.rename(tmp, self.blob_path(got))   # an existing same blob is replaced by itself
            _fsync_dir(self.blobs)
            return got
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def put_bytes(self, data: bytes, digest: str | None = None) -> str:
        return self.ingest(digest or sha256_digest(data), [data])

    # --------------------------------------------------------------- layers

    def layer_path(self, diff_id: str) -> str:
        return os.path.join(self.layers, _hex(diff_id))

    def has_layer(self, diff_id: str) -> bool:
        return os.path.isdir(self.layer_path(diff_id))

    def unpack_layer(self, blob_digest: str, diff_id: str) -> str:
        """Unpack the layer blob into layers/<diff_id> (once; shared afterwards)."""
        final = self.layer_path(diff_id)
        if os.path.isdir(final):
            return final
        work = tempfile.mkdtemp(prefix=f"layer-{_hex(diff_id)[:16]}-", dir=self.tmp)
        try:
            os.chmod(work, 0o755)
            with open(self.blob_path(blob_digest), "rb") as f:
                got, _size = unpack.apply_layer(f, work)
            if got != diff_id:
                raise DigestMismatch(f"layer {blob_digest}: uncompressed content has digest {got}, "
                                     f"the image config says {diff_id}; refused")
            os.rename(work, final)
            _fsync_dir(self.layers)
            return final
        except unpack.LayerError as e:
            shutil.rmtree(work, ignore_errors=True)
            raise ImageError(f"layer {blob_digest}: {e}") from None
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    # ---------------------------------------------------------------- index

    def _load_index(self) -> dict:
        try:
            with open(self.index_path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {"version": INDEX_VERSION, "images": {}, "names": {}}
        if data.get("version") != INDEX_VERSION:
            raise ImageError(f"{self.index_path}: unknown index version {data.get('version')!r}")
        return data

    def _save_index(self) -> None:
        tmp = self.index_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self._index, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.rename(tmp, self.index_path)
        _fsync_dir(self.root)

    def add_image(self, manifest_digest: str, record: dict, names=()) -> None:
        """Register a complete image (every blob and layer present) under names."""
        for layer in record["layers"]:
            if not self.has_blob(layer["digest"]) or not self.has_layer(layer["diff_id"]):
                raise ImageError(f"image {manifest_digest}: layer {layer['digest']} is missing")
        if not self.has_blob(record["config"]):
            raise ImageError(f"image {manifest_digest}: config {record['config']} is missing")
        with self._lock:
            old = self._index["images"].get(manifest_digest)
            rec = dict(record)
            rec.setdefault("added_at", time.time())
            if old:
                rec["added_at"] = old.get("added_at", rec["added_at"])
            self._index["images"][manifest_digest] = rec
            for name in names:
                self._index["names"][name] = manifest_digest
            self._save_index()

    def tag(self, manifest_digest: str, name: str) -> None:
        with self._lock:
            if manifest_digest not in self._index["images"]:
                raise ImageNotFound(f"image {manifest_digest} is not in the store")
            self._index["names"][name] = manifest_digest
            self._save_index()

    def images(self) -> list[dict]:
        """Every image: {id, names, config, layers, size, ...}, newest first."""
        with self._lock:
            names: dict[str, list[str]] = {}
            for n, d in self._index["names"].items():
                names.setdefault(d, []).append(n)
            out = []
            for d, rec in self._index["images"].items():
                out.append(dict(rec, id=d, names=sorted(names.get(d, []))))
        out.sort(key=lambda r: -r.get("added_at", 0))
        return out

    def resolve(self, text: str) -> tuple[str, dict]:
        """(manifest digest, record) for a name, a digest reference or an id prefix."""
        with self._lock:
            images = self._index["images"]
            if text.startswith("sha256:") and text in images:
                return text, images[text]
            try:
                ref = reference.parse(text)
            except reference.ReferenceError:
                ref = None
            if ref is not None:
                if ref.digest and ref.digest in images:
                    return ref.digest, images[ref.digest]
                d = self._index["names"].get(str(ref))
                if d and not ref.digest:
                    return d, images[d]
            prefix = text[len("sha256:"):] if text.startswith("sha256:") else text
            if len(prefix) >= 4 and all(c in "0123456789abcdef" for c in prefix):
                hits = [d for d in images if d[len("sha256:"):].startswith(prefix)]
                if len(hits) == 1:
                    return hits[0], images[hits[0]]
                if len(hits) > 1:
                    raise ImageError(f"image id {text!r} is ambiguous: {len(hits)} images start with it")
        raise ImageNotFound(f"image {text!r} is not in the store (pull it, or load it with "
                            "'agentctl image load -i FILE')")

    def config(self, manifest_digest: str) -> dict:
        rec = self._index["images"][manifest_digest]
        return json.loads(self.read_blob(rec["config"]))

    def lower_dirs(self, manifest_digest: str) -> list[str]:
        """The layer directories, topmost first (overlayfs lowerdir order)."""
        rec = self._index["images"][manifest_digest]
        return [self.layer_path(layer["diff_id"]) for layer in reversed(rec["layers"])]

    def remove(self, text: str, in_use: set[str] = frozenset(), force: bool = False) -> list[str]:
        """Untag a name, or delete an image given by id. Returns what was removed
        ("untagged: NAME", "deleted: DIGEST"). Refused while a container uses
        the image unless force."""
        with self._lock:
            digest, _rec = self.resolve(text)
            names = [n for n, d in self._index["names"].items() if d == digest]
            by_name = None
            try:
                ref = reference.parse(text)
                if str(ref) in self._index["names"]:
                    by_name = str(ref)
            except reference.ReferenceError:
                pass
            out = []
            if by_name and len(names) > 1:
                del self._index["names"][by_name]
                self._save_index()
                return [f"untagged: {by_name}"]
            if digest in in_use and not force:
                raise ImageInUse(f"image {text!r} is used by a container; remove the container "
                                 "first, or use -f to remove the image anyway")
            for n in names:
                del self._index["names"][n]
                out.append(f"untagged: {n}")
            del self._index["images"][digest]
            self._save_index()
            out.append(f"deleted: {digest}")
            return out

    def gc(self, in_use_layers: set[str] = frozenset()) -> dict:
        """Remove blobs and layers no image references (and no container
        uses: in_use_layers holds layer directories still mounted)."""
        with self._lock:
            keep_blobs, keep_layers = set(), set()
            for d, rec in self._index["images"].items():
                keep_blobs.add(_hex(d))
                keep_blobs.add(_hex(rec["config"]))
                for layer in rec["layers"]:
                    keep_blobs.add(_hex(layer["digest"]))
                    keep_layers.add(_hex(layer["diff_id"]))
            keep_layers |= {os.path.basename(p) for p in in_use_layers}
            freed, removed = 0, 0
            for name in os.listdir(self.blobs):
                if name not in keep_blobs:
                    p = os.path.join(self.blobs, name)
                    freed += os.path.getsize(p)
                    os.unlink(p)
                    removed += 1
            for name in os.listdir(self.layers):
                if name not in keep_layers:
                    shutil.rmtree(os.path.join(self.layers, name), ignore_errors=True)
                    removed += 1
            return {"removed": removed, "freed_bytes": freed}
