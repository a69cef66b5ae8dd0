"""What agentd does with images: the store, registry credentials, pulls,
archives, and the questions the supervisor asks (which layers make a
container's root, which images are in use).

One instance per agentd, shared by the API threads: the store serialises
its index; two pulls of the same blob write separate temporary files and
the second rename finds the blob already there.
"""
from __future__ import annotations

import os
import threading

import structlog

from agent.images import archive, reference, registry
from agent.images.store import ImageError, ImageStore

log = structlog.get_logger("agent.images")

CERTS_DIR = "/etc/cgroup-agent/certs.d"   # the default of [images] certs_dir (agent/config.py)


class ImageService:
    def __init__(self, state_dir: str, certs_dir: str = CERTS_DIR, platform: str = registry.DEFAULT_PLATFORM):
        self.store = ImageStore(os.path.join(state_dir, "images"))
        self.credentials = registry.Credentials(os.path.join(state_dir, "registry-auth.json"))
        self.certs_dir = certs_dir
        self.platform = platform
        self.in_use = lambda: set()   # the supervisor sets this: manifest digests of existing containers
        self._pull_lock = threading.Lock()

    # -- pull, load, save ----------------------------------------------------

    def pull(self, text: str, insecure: bool = False, platform: str | None = None, progress=None):
        ref = reference.parse(text)
        with self._pull_lock:
            digest, rec = registry.pull(self.store, text, credentials=self.credentials, insecure=insecure,
                                        certs_dir=self.certs_dir, platform=platform or self.platform,
                                        progress=progress)
        log.info("image.pulled", reference=str(ref), digest=digest, layers=len(rec["layers"]), size=rec["size"])
        return self.view(digest)

    def ensure(self, text: str, policy: str = "missing", insecure: bool = False, progress=None) -> str:
        """The manifest digest for text, pulling per policy: missing, always, never."""
        if policy not in ("missing", "always", "never"):
            raise ImageError(f"pull policy {policy!r}: accepted: missing, always, never")
        if policy != "always":
            try:
                return self.store.resolve(text)[0]
            except ImageError:
                if policy == "never":
                    raise
        return self.pull(text, insecure=insecure, progress=progress)["id"]

    def load(self, path: str) -> list[dict]:
        loaded = archive.load(self.store, path, self.platform)
        for digest, names in loaded:
            log.info("image.loaded", path=path, digest=digest, names=names)
        return [self.view(d) for d, _ in loaded]

    def save(self, text: str, path: str) -> dict:
        digest = archive.save(self.store, text, path)
        return self.view(digest)

    # -- reading -------------------------------------------------------------

    def view(self, digest: str) -> dict:
        for rec in self.store.images():
            if rec["id"] == digest:
                return _view(rec)
        raise ImageError(f"image {digest} is not in the store")

    def list(self) -> list[dict]:
        return [_view(r) for r in self.store.images()]

    def inspect(self, text: str) -> dict:
        digest, _ = self.store.resolve(text)
        out = self.view(digest)
        out["config"] = self.store.config(digest)
        out["layers"] = self.store._index["images"][digest]["layers"]
        return out

    def resolve(self, text: str) -> tuple[str, dict]:
        """(manifest digest, image config) for a reference already in the store."""
        digest, _ = self.store.resolve(text)
        return digest, self.store.config(digest)

    def lower_dirs(self, digest: str) -> list[str]:
        return self.store.lower_dirs(digest)

    # -- removing ------------------------------------------------------------

    def remove(self, text: str, force: bool = False) -> list[str]:
        out = self.store.remove(text, in_use=self.in_use(), force=force)
        log.info("image.removed", reference=text, force=force, result=out)
        return out

    def prune(self) -> dict:
        """Delete images no container uses and that have no name, then unused layers."""
        used = self.in_use()
        removed = []
        for rec in self.store.images():
            if not rec["names"] and rec["id"] not in used:
                removed += self.store.remove(rec["id"])
        layers_in_use = set()
        for d in used:
            try:
                layers_in_use.update(self.store.lower_dirs(d))
            except KeyError:
                pass
        freed = self.store.gc(layers_in_use)
        log.info("image.pruned", images=removed, **freed)
        return {"images": removed, "removed_files": freed["removed"], "freed_bytes": freed["freed_bytes"]}

    # -- credentials ---------------------------------------------------------

    def login(self, host: str, user: str, password: str, insecure: bool = False) -> None:
        reg = registry.Registry(host, credentials=(user, password), insecure=insecure, certs_dir=self.certs_dir,
                                api_host=reference.DOCKER_HUB_API if host == reference.DEFAULT_DOMAIN else host)
        reg.ping()
        self.credentials.set(host, user, password)
        log.info("registry.login", registry=host, user=user)

    def logout(self, host: str) -> None:
        self.credentials.set(host, "", None)
        log.info("registry.logout", registry=host)


def _view(rec: dict) -> dict:
    return {"id": rec["id"], "names": rec["names"], "size": rec["size"], "created": rec.get("created"),
            "platform": rec.get("platform"), "config_digest": rec["config"],
            "layer_count": len(rec["layers"]), "added_at": rec.get("added_at")}
