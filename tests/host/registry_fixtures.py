"""A real OCI registry (Debian's docker-registry, the CNCF distribution
registry) on 127.0.0.1, and test images built with umoci and pushed with
skopeo: the same tools and protocol as any registry, nothing mocked."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request

import bcrypt

from helpers import free_port

BUSYBOX = "/bin/busybox"


class Registry:
    def __init__(self, top: str, user: str | None = None, password: str | None = None, *,
                 tls: "Pki | None" = None, token: "TokenIssuer | None" = None):
        self.top = top
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.data = os.path.join(top, "data")
        self.user, self.password = user, password
        conf = os.path.join(top, "config.yml")
        auth = ""
        if user:
            htpasswd = os.path.join(top, "htpasswd")
            with open(htpasswd, "w") as f:
                f.write(f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()}\n")
            auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {htpasswd}\n"
        if token:
            auth = (f"auth:\n  token:\n    realm: {token.realm}\n    service: {token.service}\n"
                    f"    issuer: {token.issuer}\n    rootcertbundle: {token.cert}\n")
        self.token = token
        self.scheme = "https" if tls else "http"
        tls_conf = f"  tls:\n    certificate: {tls.server_cert}\n    key: {tls.server_key}\n" if tls else ""
        with open(conf, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {self.data}\n"
                    f"  delete:\n    enabled: true\nhttp:\n  addr: {self.host}\n{tls_conf}{auth}")
        self.log = open(os.path.join(top, "registry.log"), "wb")
        self.proc = subprocess.Popen(["docker-registry", "serve", conf], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.scheme}://{self.host}/v2/", timeout=2,
                                       context=ssl._create_unverified_context() if tls else None)
                break
            except urllib.error.HTTPError as e:
                if e.code == 401:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError("docker-registry did not start: " + open(self.log.name).read()[-1000:])
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

    def creds(self, repo: str = "") -> list[str]:
        if self.token:
            return [f"--dest-registry-token={self.token.sign(['push', 'pull'], repo)}"]
        return [f"--dest-creds={self.user}:{self.password}"] if self.user else []

    def push(self, layout: str, tag: str, repo: str) -> str:
        """skopeo copy oci:LAYOUT:TAG docker://HOST/REPO:TAG; returns the reference."""
        ref = f"{self.host}/{repo}:{tag}"
        subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", *self.creds(repo),
                        f"oci:{layout}:{tag}", f"docker://{ref}"], check=True, capture_output=True)
        return ref

    def put_manifest(self, repo: str, tag: str, body: bytes, media_type: str) -> None:
        req = urllib.request.Request(f"http://{self.host}/v2/{repo}/manifests/{tag}", data=body, method="PUT",
                                     headers={"Content-Type": media_type})
        urllib.request.urlopen(req, timeout=10).close()

    def get_manifest(self, repo: str, tag: str) -> tuple[bytes, str]:
        req = urllib.request.Request(f"http://{self.host}/v2/{repo}/manifests/{tag}",
                                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read(), r.headers["Content-Type"]

    def blob_file(self, digest: str) -> str:
        hexd = digest.split(":", 1)[1]
        return os.path.join(self.data, "docker", "registry", "v2", "blobs", "sha256", hexd[:2], hexd, "data")


class ImageBuilder:
    """OCI layouts made with umoci: each `layer()` call is one layer, built
    from the previous one's tree (deletions become whiteouts)."""

    def __init__(self, top: str, name: str):
        self.layout = os.path.join(top, name)
        self.bundle = os.path.join(top, name + "-bundle")
        self.tag = "1"
        subprocess.run(["umoci", "init", "--layout", self.layout], check=True, capture_output=True)
        subprocess.run(["umoci", "new", "--image", f"{self.layout}:{self.tag}"], check=True, capture_output=True)
        subprocess.run(["umoci", "unpack", "--image", f"{self.layout}:{self.tag}", self.bundle],
                       check=True, capture_output=True)
        self.root = os.path.join(self.bundle, "rootfs")

    def busybox(self) -> "ImageBuilder":
        os.makedirs(os.path.join(self.root, "bin"), exist_ok=True)
        shutil.copy(BUSYBOX, os.path.join(self.root, "bin", "busybox"))
        for tool in ("sh", "ls", "cat", "echo", "sleep", "test", "id", "stat", "mkdir", "touch"):
            os.symlink("busybox", os.path.join(self.root, "bin", tool))
        os.makedirs(os.path.join(self.root, "etc"), exist_ok=True)
        with open(os.path.join(self.root, "etc", "passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
        with open(os.path.join(self.root, "etc", "group"), "w") as f:
            f.write("root:x:0:\nnogroup:x:65534:\n")
        return self

    def layer(self) -> "ImageBuilder":
        """The changes to the tree since the last layer, as one more layer."""
        subprocess.run(["umoci", "repack", "--refresh-bundle", "--image", f"{self.layout}:{self.tag}", self.bundle],
                       check=True, capture_output=True)
        return self

    def config(self, *args: str) -> "ImageBuilder":
        subprocess.run(["umoci", "config", "--image", f"{self.layout}:{self.tag}", *args],
                       check=True, capture_output=True)
        return self


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def index_of(manifests: list[tuple[bytes, str, dict]]) -> bytes:
    """An OCI image index over (manifest body, media type, platform)."""
    return json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                       "manifests": [{"mediaType": mt, "digest": sha256(b), "size": len(b), "platform": p}
                                     for b, mt, p in manifests]}).encode()


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class Pki:
    """A CA and a server certificate for 127.0.0.1 signed by it, made with openssl."""

    def __init__(self, top: str):
        os.makedirs(top, exist_ok=True)
        self.ca_cert, self.ca_key = os.path.join(top, "ca.crt"), os.path.join(top, "ca.key")
        self.server_cert, self.server_key = os.path.join(top, "server.crt"), os.path.join(top, "server.key")
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
                 "-days", "2", "-subj", "/CN=cgroup-agent test CA", cwd=top)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
                 "-subj", "/CN=127.0.0.1", cwd=top)
        with open(os.path.join(top, "ext.cnf"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf", cwd=top)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """The signing side of the registry's token auth: an RSA key and a
    self-signed certificate (the registry's rootcertbundle); tokens are JWTs
    signed RS256 with openssl, the certificate in the x5c header."""

    def __init__(self, top: str, realm: str, service: str = "test-registry", issuer: str = "test-issuer"):
        os.makedirs(top, exist_ok=True)
        self.top, self.realm, self.service, self.issuer = top, realm, service, issuer
        self.key, self.cert = os.path.join(top, "token.key"), os.path.join(top, "token.crt")
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "token.key", "-out", "token.crt",
                 "-days", "2", "-subj", "/CN=token issuer", cwd=top)
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"], check=True,
                             capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()

    def sign(self, actions: list[str], repo: str, subject: str = "tester") -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + 600, "nbf": now - 60,
                  "iat": now, "jti": os.urandom(8).hex(),
                  "access": [{"type": "repository", "name": repo, "actions": actions}]}
        signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=signing_input.encode(),
                             check=True, capture_output=True).stdout
        return signing_input + "." + _b64url(sig)
