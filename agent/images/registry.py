"""Pull images over the OCI distribution API (Docker Hub's protocol).

GET /v2/NAME/manifests/REF with an Accept header naming the OCI and Docker
media types, blobs by digest; a 401 carries a WWW-Authenticate challenge,
answered with a Bearer token fetched from its realm (anonymous, or with the
stored credentials) or with Basic credentials. Every manifest and blob is
checked against its digest before the store makes it visible.

HTTP is the `requests` library's. Registries on a loopback address, and the
ones given --insecure, are reached over HTTPS first and over plain HTTP when
they do not speak TLS (Docker does the same). TLS is verified against the
system's CAs, or against CERTS_DIR/HOST[:PORT]/ca.crt when that file exists
([images] certs_dir); a loopback registry that speaks TLS is verified too
(unlike Docker, which trusts any certificate there): only --insecure skips
the check. A certificate not trusted is one line naming the CA tried.
"""
from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import warnings

import requests

from agent.images import reference
from agent.images.store import ImageError, ImageStore, sha256_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
CONFIG_TYPES = ("application/vnd.oci.image.config.v1+json",
                "application/vnd.docker.container.image.v1+json")
LAYER_TYPES = ("application/vnd.oci.image.layer.v1.tar",
               "application/vnd.oci.image.layer.v1.tar+gzip",
               "application/vnd.oci.image.layer.v1.tar+zstd",
               "application/vnd.docker.image.rootfs.diff.tar.gzip",
               "application/vnd.docker.image.rootfs.diff.tar")
ACCEPT = ", ".join(INDEX_TYPES + MANIFEST_TYPES)
MANIFEST_MAX = 4 << 20
TIMEOUT = (10, 60)   # connect, read: a registry that stops sending fails the pull
DEFAULT_PLATFORM = "linux/amd64"
PROBE_TIMEOUT = 3

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(ImageError):
    """The registry refused or failed; one line naming the registry and what happened."""


def parse_platform(text: str) -> tuple[str, str, str | None]:
    parts = (text or DEFAULT_PLATFORM).split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ImageError(f"platform {text!r}: accepted: OS/ARCH[/VARIANT], e.g. linux/amd64, linux/arm64/v8")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0].strip("[]") if not host.startswith("[") or "]:" in host else host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Credentials:
    """Registry credentials, one file (0600) under the state dir:
    {"HOST[:PORT]": {"auth": base64("user:password")}} as Docker's config.json."""

    def __init__(self, path: str):
        self.path = path

    def _load(self) -> dict:
        try:
            with open(self.path) as f:
                return json.load(f).get("auths", {})
        except FileNotFoundError:
            return {}

    def get(self, host: str) -> tuple[str, str] | None:
        entry = self._load().get(host)
        if not entry:
            return None
        user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        return user, password

    def set(self, host: str, user: str, password: str | None) -> None:
        auths = self._load()
        if password is None:
            auths.pop(host, None)
        else:
            auths[host] = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"auths": auths}, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.path)


class Registry:
    """One registry host: scheme, TLS, auth, and the calls a pull needs."""

    def __init__(self, host: str, *, credentials: tuple[str, str] | None = None,
                 insecure: bool = False, certs_dir: str = "", api_host: str | None = None):
        self.host = host
        self.api_host = api_host or host
        self.credentials = credentials
        self.insecure = insecure or _is_loopback(self.api_host)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "cgroup-agent"
        ca = os.path.join(certs_dir, self.host, "ca.crt") if certs_dir else ""
        self.ca_file = ca if ca and os.path.isfile(ca) else ""
        # --insecure: TLS unverified (or plain HTTP); a loopback registry may
        # speak plain HTTP, but when it speaks TLS its certificate is checked
        self.session.verify = False if insecure else (self.ca_file or True)
        self.scheme = "https"
        self._probed = not self.insecure
        self._token: str | None = None
        self._basic = False

    # -- transport ------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.scheme}://{self.api_host}/v2/{path}"

    def _probe(self) -> None:
        """An insecure registry: HTTPS if it answers TLS quickly, else plain HTTP
        (a plain HTTP server may never answer a TLS hello)."""
        self._probed = True
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # urllib3's InsecureRequestWarning: this is only a probe
                self.session.get(self._url(""), timeout=PROBE_TIMEOUT, verify=False).close()
        except requests.exceptions.RequestException:
            self.scheme = "http"

    def _send(self, method: str, path: str, **kw) -> requests.Response:
        if not self._probed:
            self._probe()
        headers = dict(kw.pop("headers", {}))
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        elif self._basic and self.credentials:
            headers["Authorization"] = "Basic " + base64.b64encode(
                ":".join(self.credentials).encode()).decode()
        try:
            # verify per request: a session-wide one loses to REQUESTS_CA_BUNDLE in the environment
            return self.session.request(method, self._url(path), headers=headers, timeout=TIMEOUT,
                                        verify=self.session.verify, **kw)
        except requests.exceptions.SSLError as e:
            where = f"the CA in {self.ca_file}" if self.ca_file else "the system's CAs"
            raise RegistryError(f"registry {self.host}: TLS certificate not trusted by {where} "
                                f"({_tls_reason(e)}); put its CA in certs.d/{self.host}/ca.crt "
                                "under [images] certs_dir, or use --insecure") from None
        except requests.exceptions.ConnectionError as e:
            if self.scheme == "https" and self.insecure:
                self.scheme = "http"
                return self._send(method, path, headers=headers, **kw)
            raise RegistryError(f"registry {self.host}: cannot connect ({_short(e)})") from None
        except requests.exceptions.RequestException as e:
            raise RegistryError(f"registry {self.host}: {_short(e)}") from None

    def request(self, method: str, path: str, scope: str, **kw) -> requests.Response:
        r = self._send(method, path, **kw)
        if r.status_code == 401 and not (self._token or self._basic):
            self._authenticate(r.headers.get("WWW-Authenticate", ""), scope)
            r.close()
            r = self._send(method, path, **kw)
        if r.status_code == 401:
            r.close()
            who = "the stored credentials" if self.credentials else "anonymous access"
            hint = "" if self.credentials else " (agentctl login " + self.host + ")"
            raise RegistryError(f"registry {self.host}: authentication refused for {who}{hint}")
        return r

    def _authenticate(self, challenge: str, scope: str) -> None:
        kind, _, params = challenge.partition(" ")
        if kind.lower() == "basic":
            if not self.credentials:
                raise RegistryError(f"registry {self.host}: needs a login (agentctl login {self.host})")
            self._basic = True
            return
        if kind.lower() != "bearer":
            raise RegistryError(f"registry {self.host}: unsupported authentication {kind or '(none)'!r}")
        p = dict(_CHALLENGE_PARAM.findall(params))
        if "realm" not in p:
            raise RegistryError(f"registry {self.host}: Bearer challenge without a realm")
        query = {"scope": p.get("scope", scope)}
        if "service" in p:
            query["service"] = p["service"]
        try:
            r = self.session.get(p["realm"], params=query, auth=self.credentials, timeout=TIMEOUT,
                                 verify=self.session.verify)
        except requests.exceptions.RequestException as e:
            raise RegistryError(f"registry {self.host}: token service {p['realm']}: {_short(e)}") from None
        if r.status_code != 200:
            raise RegistryError(f"registry {self.host}: token service refused (HTTP {r.status_code})")
        try:
            body = r.json()
            self._token = body.get("token") or body["access_token"]
        except (ValueError, KeyError):
            raise RegistryError(f"registry {self.host}: token service answered without a token") from None

    # -- the API calls ----------------------------------------------------------

    def manifest(self, path: str, ref: str) -> tuple[bytes, str]:
        """(body, media type) of a manifest or index; the body is checked
        against ref when ref is a digest."""
        r = self.request("GET", f"{path}/manifests/{ref}", f"repository:{path}:pull",
                         headers={"Accept": ACCEPT}, stream=True)
        with r:
            if r.status_code == 404:
                what = "manifest" if ref.startswith("sha256:") else "tag"
                raise RegistryError(f"registry {self.host}: {what} {path}:{ref} not found")
            if r.status_code != 200:
                raise RegistryError(f"registry {self.host}: manifest {path}:{ref}: HTTP {r.status_code}")
            body = r.raw.read(MANIFEST_MAX + 1, decode_content=True)
        if len(body) > MANIFEST_MAX:
            raise RegistryError(f"registry {self.host}: manifest {path}:{ref} larger than {MANIFEST_MAX} bytes")
        if ref.startswith("sha256:") and sha256_digest(body) != ref:
            raise RegistryError(f"registry {self.host}: manifest {ref} does not match its digest; refused")
        media = r.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            media = json.loads(body).get("mediaType") or media
        except ValueError:
            raise RegistryError(f"registry {self.host}: manifest {path}:{ref} is not JSON") from None
        return body, media

    def blob(self, store: ImageStore, path: str, digest: str, progress=None) -> None:
        """Fetch a blob into the store (verified there)."""
        if store.has_blob(digest):
            return
        r = self.request("GET", f"{path}/blobs/{digest}", f"repository:{path}:pull", stream=True)
        with r:
            if r.status_code == 404:
                raise RegistryError(f"registry {self.host}: blob {digest} of {path} not found")
            if r.status_code != 200:
                raise RegistryError(f"registry {self.host}: blob {digest}: HTTP {r.status_code}")
            try:
                store.ingest(digest, r.iter_content(1 << 20), progress)
            except requests.exceptions.RequestException as e:
                raise RegistryError(f"registry {self.host}: connection lost while fetching blob "
                                    f"{digest} ({_short(e)})") from None

    def ping(self) -> None:
        """Check that the registry answers and accepts our credentials (login)."""
        r = self.request("GET", "", "registry:catalog:*")
        r.close()
        if r.status_code not in (200, 404):
            raise RegistryError(f"registry {self.host}: /v2/ answered HTTP {r.status_code}")


def _tls_reason(e: Exception) -> str:
    m = re.search(r"certificate verify failed: ([^(\])'\"]+)", str(e))
    return m.group(1).strip() if m else "verification failed"


def _short(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:200]


def select_platform(index: dict, platform: str, host: str) -> str:
    want_os, want_arch, want_variant = parse_platform(platform)
    offered = []
    for m in index.get("manifests", []):
        p = m.get("platform") or {}
        offered.append("/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x))
        if p.get("os") == want_os and p.get("architecture") == want_arch and \
                (want_variant is None or p.get("variant") == want_variant):
            return m["digest"]
    raise RegistryError(f"registry {host}: no manifest for platform {platform}; offered: "
                        + (", ".join(o for o in offered if o) or "none"))


def pull(store: ImageStore, text: str, *, credentials: "Credentials | None" = None,
         insecure: bool = False, certs_dir: str = "", platform: str = DEFAULT_PLATFORM,
         progress=None) -> tuple[str, dict]:
    """Pull text (an image reference) into the store; returns (manifest digest, record).

    progress(event) gets {"status": ..., "layer": digest, "bytes": n, "total": size}."""
    ref = reference.parse(text)
    parse_platform(platform)
    reg = Registry(ref.domain, credentials=credentials.get(ref.domain) if credentials else None,
                   insecure=insecure, certs_dir=certs_dir, api_host=ref.api_host)
    body, media = reg.manifest(ref.path, ref.manifest_ref)
    if media in INDEX_TYPES:
        chosen = select_platform(json.loads(body), platform, ref.domain)
        body, media = reg.manifest(ref.path, chosen)
    if media not in MANIFEST_TYPES:
        raise RegistryError(f"registry {ref.domain}: manifest of {ref} has unknown media type "
                            f"{media!r}; accepted: " + ", ".join(MANIFEST_TYPES + INDEX_TYPES))
    manifest_digest = sha256_digest(body)
    record = import_manifest(store, body, ref.domain, media,
                             fetch=lambda d, cb=None: reg.blob(store, ref.path, d, cb), progress=progress)
    # a tag names the image from now on; a digest reference finds it by digest
    store.add_image(manifest_digest, record, [] if ref.digest else [str(ref)])
    return manifest_digest, record


def import_manifest(store: ImageStore, body: bytes, source: str, media: str, fetch, progress=None) -> dict:
    """Check a manifest, fetch (or find) its config and layers, unpack the
    layers; returns the store record. fetch(digest, progress_cb) puts a blob
    in the store."""
    try:
        manifest = json.loads(body)
        config_desc = manifest["config"]
        layer_descs = manifest["layers"]
    except (ValueError, KeyError, TypeError):
        raise ImageError(f"{source}: manifest is malformed (no config or layers)") from None
    if config_desc.get("mediaType") not in CONFIG_TYPES:
        raise ImageError(f"{source}: unknown config media type {config_desc.get('mediaType')!r}; "
                         "accepted: " + ", ".join(CONFIG_TYPES))
    for d in layer_descs:
        if d.get("mediaType") not in LAYER_TYPES:
            raise ImageError(f"{source}: layer {d.get('digest')} has unknown media type "
                             f"{d.get('mediaType')!r}; accepted: " + ", ".join(LAYER_TYPES))
    manifest_digest = store.put_bytes(body)
    fetch(config_desc["digest"])
    config = json.loads(store.read_blob(config_desc["digest"]))
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(layer_descs):
        raise ImageError(f"{source}: config lists {len(diff_ids)} layers, the manifest {len(layer_descs)}")
    layers = []
    total = sum(int(d.get("size", 0)) for d in layer_descs)
    done = 0
    for i, (desc, diff_id) in enumerate(zip(layer_descs, diff_ids)):
        digest = desc["digest"]
        if progress:
            progress({"status": "layer", "layer": digest, "index": i + 1, "count": len(layer_descs),
                      "bytes": done, "total": total})

        def tick(n, _d=digest):
            nonlocal done
            done += n
            if progress:
                progress({"status": "bytes", "layer": _d, "bytes": done, "total": total})
        fetch(digest, tick)
        store.unpack_layer(digest, diff_id)
        layers.append({"digest": digest, "diff_id": diff_id, "size": int(desc.get("size", 0)),
                       "media_type": desc["mediaType"]})
    return {"config": config_desc["digest"], "layers": layers, "manifest": manifest_digest,
            "media_type": manifest.get("mediaType") or media,
            "platform": f"{config.get('os', '')}/{config.get('architecture', '')}",
            "created": config.get("created"),
            "size": sum(layer["size"] for layer in layers)}
