"""Registries beyond plain HTTP and basic auth, all real: docker-registry on
127.0.0.1 with TLS from a CA the test makes with openssl (certs.d), with
token auth (a token server in the test, JWTs signed with openssl and checked
by the registry itself), a zstd layer, and `image save` then `image load` of
a multi-layer image. agentd runs with [images] certs_dir pointed at a temp dir.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from registry_fixtures import ImageBuilder, Pki, Registry, TokenIssuer, free_port
from helpers import ctl, one_line, start_agentd, stop_agentd
from helpers import kill_tree as _kill_tree

pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in ("docker-registry", "umoci", "skopeo", "openssl")),
                                reason="docker-registry/umoci/skopeo/openssl not installed (scripts/setup.sh)")


@pytest.fixture(scope="module")
def top(tmp_path_factory):
    return str(tmp_path_factory.mktemp("registries"))


@pytest.fixture(scope="module")
def certs_dir(top):
    d = os.path.join(top, "certs.d")
    os.makedirs(d)
    return d


@pytest.fixture(scope="module")
def agentd(top, certs_dir):
    from runtime.cgroupfs import Cgroup, find_mount

    root = Cgroup(os.path.join(find_mount(), f"cga-test-{uuid.uuid4().hex[:10]}"))
    os.mkdir(root.path)
    os.makedirs(os.path.join(top, "agentd"))
    d = None
    try:
        d = start_agentd(root, os.path.join(top, "agentd"), extra_toml=f'\n[images]\ncerts_dir = "{certs_dir}"\n')
        d.state = os.path.join(d.top, "state")
        yield d
    finally:
        if d is not None:
            stop_agentd(d)
        _kill_tree(root)


@pytest.fixture(scope="module")
def busybox(top):
    b = ImageBuilder(top, "bb").busybox().layer()
    b.config("--config.cmd", "sh", "--config.cmd", "-c", "--config.cmd", "echo hello-from-the-image")
    return b


def run_ok(d, *args, timeout=120):
    r = ctl(d, *args, timeout=timeout)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


# -- TLS with a registry's own CA (certs.d) --------------------------------------


def test_a_tls_registry_needs_its_ca_in_certs_d(agentd, top, certs_dir, busybox):
    pki = Pki(os.path.join(top, "pki"))
    os.makedirs(os.path.join(top, "tlsreg"))
    reg = Registry(os.path.join(top, "tlsreg"), tls=pki)
    try:
        ref = reg.push(busybox.layout, "1", "secure")
        r = ctl(agentd, "pull", ref)
        assert r.returncode == 1, r.stdout
        line = one_line(r)
        assert f"registry {reg.host}: TLS certificate not trusted by the system's CAs" in line, line
        assert f"certs.d/{reg.host}/ca.crt" in line
        assert os.listdir(os.path.join(agentd.state, "images", "tmp")) == []
        os.makedirs(os.path.join(certs_dir, reg.host))
        shutil.copy(pki.ca_cert, os.path.join(certs_dir, reg.host, "ca.crt"))
        run_ok(agentd, "pull", ref)
        assert run_ok(agentd, "run", "--rm", "--image", ref).stdout == "hello-from-the-image\n"
        # a CA that did not sign the server's certificate is named as the one tried
        other = Pki(os.path.join(top, "pki-other"))
        shutil.copy(other.ca_cert, os.path.join(certs_dir, reg.host, "ca.crt"))
        r = ctl(agentd, "pull", ref)
        assert r.returncode == 1 and f"not trusted by the CA in {certs_dir}/{reg.host}/ca.crt" in one_line(r)
    finally:
        reg.stop()


# -- bearer tokens ----------------------------------------------------------------


class TokenServer:
    """The registry's token realm: grants pull on the repository asked, to
    one user and password (HTTP basic) or anonymously; records each request.
    `signer`: the TokenIssuer whose key signs (a stranger's key: forged)."""

    def __init__(self, issuer: TokenIssuer, user: str = "", password: str = ""):
        self.issuer, self.signer, self.user, self.password = issuer, issuer, user, password
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                auth = self.headers.get("Authorization", "")
                who = base64.b64decode(auth[6:]).decode() if auth.startswith("Basic ") else ""
                outer.requests.append({**q, "auth": who})
                if outer.user and who != f"{outer.user}:{outer.password}":
                    self.send_response(401)
                    self.end_headers()
                    return
                _, repo, actions = q.get("scope", "::").split(":", 2)
                body = json.dumps({"token": outer.signer.sign(["pull"] if "pull" in actions else [], repo)})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_bearer_token_auth_against_the_registrys_own_check(agentd, top, busybox):
    port = free_port()
    issuer = TokenIssuer(os.path.join(top, "tok"), realm=f"http://127.0.0.1:{port}/token")
    os.makedirs(os.path.join(top, "tokreg"))
    reg = Registry(os.path.join(top, "tokreg"), token=issuer)
    srv = None
    try:
        ref = reg.push(busybox.layout, "1", "tokened")
        # nothing listens on the realm yet: one line naming the token service
        r = ctl(agentd, "pull", ref)
        assert r.returncode == 1 and f"registry {reg.host}: token service http://127.0.0.1:{port}/token" \
            in one_line(r), r.stderr
        srv = TokenServer(issuer)
        srv.httpd.server_close()   # rebind on the realm's port
        srv.httpd = ThreadingHTTPServer(("127.0.0.1", port), srv.httpd.RequestHandlerClass)
        threading.Thread(target=srv.httpd.serve_forever, daemon=True).start()
        # a token signed by a key the registry does not trust: refused by the registry
        srv.signer = TokenIssuer(os.path.join(top, "forger"), realm=issuer.realm)
        r = ctl(agentd, "pull", ref)
        assert r.returncode == 1 and f"registry {reg.host}: authentication refused" in one_line(r), r.stderr
        assert os.listdir(os.path.join(agentd.state, "images", "tmp")) == []
        # the real issuer's token: the pull works, the scope and service were the registry's
        srv.signer = issuer
        run_ok(agentd, "pull", ref)
        assert srv.requests[-1]["scope"] == "repository:tokened:pull"
        assert srv.requests[-1]["service"] == issuer.service
        assert run_ok(agentd, "run", "--rm", "--image", ref).stdout == "hello-from-the-image\n"
        # a realm that wants a login: anonymous is refused, the stored login gets the token
        srv.user, srv.password = "bob", "pw-of-bob"
        run_ok(agentd, "rmi", ref)
        r = ctl(agentd, "pull", ref)
        assert r.returncode == 1 and "token service refused (HTTP 401)" in one_line(r), r.stderr
        good = subprocess.run([*ctl_argv(agentd), "login", "-u", "bob", "--password-stdin", reg.host],
                              input="pw-of-bob\n", capture_output=True, text=True, timeout=60)
        assert good.returncode == 0, good.stderr
        run_ok(agentd, "pull", ref)
        assert srv.requests[-1]["auth"] == "bob:pw-of-bob"
    finally:
        if srv:
            srv.close()
        reg.stop()


def ctl_argv(d) -> list[str]:
    import sys
    return [sys.executable, "-m", "agent.cli", "--socket", d.sock]


# -- zstd layers -------------------------------------------------------------------


def test_a_zstd_layer_is_pulled_verified_and_run(agentd, top, busybox):
    os.makedirs(os.path.join(top, "zreg"))
    reg = Registry(os.path.join(top, "zreg"))
    try:
        # skopeo recompresses every layer with zstd on the way to the registry
        ref = f"{reg.host}/zbox:1"
        subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", "--dest-compress-format", "zstd",
                        "--dest-compress", f"oci:{busybox.layout}:1", f"docker://{ref}"], check=True,
                       capture_output=True)
        body, _ = reg.get_manifest("zbox", "1")
        media = [layer["mediaType"] for layer in json.loads(body)["layers"]]
        assert media == ["application/vnd.oci.image.layer.v1.tar+zstd"], media
        blob = reg.blob_file(json.loads(body)["layers"][0]["digest"])
        with open(blob, "rb") as f:
            assert f.read(4) == b"\x28\xb5\x2f\xfd"   # zstd frame magic
        run_ok(agentd, "pull", ref)
        assert run_ok(agentd, "run", "--rm", "--image", ref).stdout == "hello-from-the-image\n"
    finally:
        reg.stop()


# -- save then load ------------------------------------------------------------------


def test_save_then_load_round_trips_a_multi_layer_image(agentd, top):
    b = ImageBuilder(top, "three").busybox().layer()
    for i in (1, 2):
        with open(os.path.join(b.root, f"l{i}"), "w") as f:
            f.write(f"layer {i}\n")
        if i == 2:
            os.unlink(os.path.join(b.root, "l1"))   # a whiteout in the third layer
        b.layer()
    b.config("--config.cmd", "sh", "--config.cmd", "-c", "--config.cmd", "ls / | grep '^l'; cat /l2")
    os.makedirs(os.path.join(top, "savereg"))
    reg = Registry(os.path.join(top, "savereg"))
    try:
        ref = reg.push(b.layout, "1", "three")
        run_ok(agentd, "pull", ref)
        before = json.loads(run_ok(agentd, "image", "inspect", ref, "--json").stdout)
        assert len(before["layers"]) == 3
        out = run_ok(agentd, "run", "--rm", "--image", ref).stdout
        saved = os.path.join(top, "three.tar")
        run_ok(agentd, "image", "save", "-o", saved, ref)
        with tarfile.open(saved) as t:
            names = t.getnames()
        assert "oci-layout" in names and "index.json" in names
        run_ok(agentd, "rmi", ref)
        run_ok(agentd, "image", "prune")
        assert ctl(agentd, "image", "inspect", ref).returncode == 1
        run_ok(agentd, "image", "load", "-i", saved)
        after = json.loads(run_ok(agentd, "image", "inspect", ref, "--json").stdout)
        assert after["id"] == before["id"] and after["layers"] == before["layers"]
        assert run_ok(agentd, "run", "--rm", "--pull", "never", "--image", ref).stdout == out == "l2\nlayer 2\n"
    finally:
        reg.stop()
