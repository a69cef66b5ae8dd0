"""Image archives: load a `docker save` tar or an OCI image layout tar, save
an image as an OCI image layout tar (which `docker load`, podman and skopeo's
oci-archive: read).

A docker-archive holds manifest.json ([{Config, RepoTags, Layers}]), the
config JSON and uncompressed layer tars; it is imported by writing the
config and layers as blobs and a Docker v2 manifest for them. An OCI layout
holds oci-layout, index.json and blobs/sha256/*: its manifests are imported
as they are. Either way every blob goes through the store's digest check.
"""
from __future__ import annotations

import io
import json
import os
import tarfile

from agent.images import reference
from agent.images.registry import DOCKER_MANIFEST, INDEX_TYPES, MANIFEST_TYPES, import_manifest, select_platform
from agent.images.store import ImageError, ImageStore, sha256_digest

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
OCI_LAYOUT_VERSION = '{"imageLayoutVersion": "1.0.0"}'
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


def _member_info(tar: tarfile.TarFile, name: str) -> tarfile.TarInfo:
    """The member named name, written with or without a leading "./"."""
    name = name.removeprefix("./")
    for candidate in (name, "./" + name):
        try:
            return tar.getmember(candidate)
        except KeyError:
            continue
    raise ImageError(f"archive: {name} is missing")


def _member(tar: tarfile.TarFile, name: str):
    f = tar.extractfile(_member_info(tar, name))
    if f is None:
        raise ImageError(f"archive: {name} is not a regular file")
    return f


def _chunks(f, size=1 << 20):
    while True:
        b = f.read(size)
        if not b:
            return
        yield b


def load(store: ImageStore, path: str, platform: str = "linux/amd64") -> list[tuple[str, list[str]]]:
    """Import every image of the archive; returns [(manifest digest, names)]."""
    try:
        tar = tarfile.open(path, "r:*")
    except (OSError, tarfile.TarError) as e:
        raise ImageError(f"archive {path}: cannot be read as a tar ({e})") from None
    with tar:
        names = set(m.name.lstrip("./") for m in tar.getmembers())
        if "manifest.json" in names:
            return _load_docker(store, tar, path)
        if "index.json" in names and "oci-layout" in names:
            return _load_oci(store, tar, path, platform)
    raise ImageError(f"archive {path}: neither a docker save archive (manifest.json) "
                     "nor an OCI image layout (oci-layout, index.json)")


def _load_docker(store: ImageStore, tar, path: str):
    try:
        entries = json.load(_member(tar, "manifest.json"))
        assert isinstance(entries, list)
    except (ValueError, AssertionError):
        raise ImageError(f"archive {path}: manifest.json is malformed") from None
    out = []
    for entry in entries:
        config_bytes = _member(tar, entry["Config"]).read()
        config_digest = store.put_bytes(config_bytes)
        layers = []
        for name in entry["Layers"]:
            size = _member_info(tar, name).size
            # read once: the store hashes it on the way and names it by that digest
            layer_digest = store.ingest(None, _chunks(_member(tar, name)))
            layers.append({"mediaType": DOCKER_LAYER_TAR, "digest": layer_digest, "size": size})
        manifest = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                    "config": {"mediaType": DOCKER_CONFIG, "digest": config_digest,
                               "size": len(config_bytes)},
                    "layers": layers}
        body = json.dumps(manifest, separators=(",", ":")).encode()
        record = import_manifest(store, body, f"archive {path}", DOCKER_MANIFEST, fetch=lambda d, cb=None: None)
        digest = sha256_digest(body)
        tags = [str(reference.parse(t)) for t in entry.get("RepoTags") or []]
        store.add_image(digest, record, tags)
        out.append((digest, tags))
    return out


def _load_oci(store: ImageStore, tar, path: str, platform: str):
    def blob(digest: str) -> bytes:
        return _member(tar, "blobs/sha256/" + digest.split(":", 1)[1]).read()

    def fetch(digest: str, cb=None):
        store.ingest(digest, _chunks(_member(tar, "blobs/sha256/" + digest.split(":", 1)[1])), cb)

    index = json.loads(_member(tar, "index.json").read())
    out = []
    for desc in index.get("manifests", []):
        body = blob(desc["digest"])
        if sha256_digest(body) != desc["digest"]:
            raise ImageError(f"archive {path}: manifest {desc['digest']} does not match its digest; refused")
        media = desc.get("mediaType") or json.loads(body).get("mediaType", "")
        if media in INDEX_TYPES:
            chosen = select_platform(json.loads(body), platform, f"archive {path}")
            body = blob(chosen)
            if sha256_digest(body) != chosen:
                raise ImageError(f"archive {path}: manifest {chosen} does not match its digest; refused")
            media = json.loads(body).get("mediaType") or MANIFEST_TYPES[0]
        record = import_manifest(store, body, f"archive {path}", media, fetch=fetch)
        digest = sha256_digest(body)
        ann = desc.get("annotations") or {}
        tags = []
        for candidate in (ann.get(CONTAINERD_NAME), ann.get(REF_NAME)):
            if candidate:
                try:
                    tags = [str(reference.parse(candidate))]
                    break
                except reference.ReferenceError:
                    continue
        store.add_image(digest, record, tags)
        out.append((digest, tags))
    return out


def save(store: ImageStore, text: str, path: str) -> str:
    """Write the image as an OCI image layout tar; returns its manifest digest."""
    digest, rec = store.resolve(text)
    names = [n for n, d in store._index["names"].items() if d == digest]
    blobs = [digest, rec["config"]] + [layer["digest"] for layer in rec["layers"]]
    manifest = json.loads(store.read_blob(digest))
    desc = {"mediaType": manifest.get("mediaType") or rec.get("media_type") or MANIFEST_TYPES[0],
            "digest": digest, "size": len(store.read_blob(digest))}
    if names:
        ref = reference.parse(names[0])
        desc["annotations"] = {CONTAINERD_NAME: str(ref), REF_NAME: ref.tag or ""}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [desc]}
    tmp = path + ".tmp"
    with tarfile.open(tmp, "w") as tar:
        def add(name: str, data: bytes):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            tar.addfile(ti, io.BytesIO(data))
        add("oci-layout", OCI_LAYOUT_VERSION.encode())
        add("index.json", json.dumps(index).encode())
        for d in dict.fromkeys(blobs):
            tar.add(store.blob_path(d), arcname="blobs/sha256/" + d.split(":", 1)[1], recursive=False)
    os.replace(tmp, path)
    return digest
