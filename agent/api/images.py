"""The image endpoints of the control API (a resource module, registered in agent/api/router.py).

    GET  /v1/images                       list
    GET  /v1/images/inspect?reference=R   one image, with its config and layers
    POST /v1/images/pull   {"reference", "insecure", "platform"}   streams progress events
    POST /v1/images/load   {"path"}       a docker save or OCI layout tar, read by agentd
    POST /v1/images/save   {"reference", "path"}   an OCI layout tar, written by agentd
    POST /v1/images/remove {"reference", "force"}
    POST /v1/images/prune
    POST /v1/registries/login  {"registry", "username", "password", "insecure"}
    POST /v1/registries/logout {"registry"}

Paths are read and written by agentd as root: these are admin requests (a
POST), and the admin group is root-equivalent (docs/security.md).
"""
from __future__ import annotations

import os

from agent.api.backend import Images
from agent.api.errors import status_of
from agent.api.resource import backend
from agent.images.reference import ReferenceError
from agent.images.store import ImageError

ROUTES = [
    (("v1", "images"), {"GET": "images_list"}),
    (("v1", "images", "inspect"), {"GET": "images_inspect"}),
    (("v1", "images", "pull"), {"POST": "images_pull"}),
    (("v1", "images", "load"), {"POST": "images_load"}),
    (("v1", "images", "save"), {"POST": "images_save"}),
    (("v1", "images", "remove"), {"POST": "images_remove"}),
    (("v1", "images", "prune"), {"POST": "images_prune"}),
    (("v1", "registries", "login"), {"POST": "registry_login"}),
    (("v1", "registries", "logout"), {"POST": "registry_logout"}),
]


def _text_param(key: str, value: str) -> str:
    return value


QUERY_PARAMS = {"images_list": {}, "images_inspect": {"reference": _text_param}, "images_pull": {},
                "images_load": {}, "images_save": {}, "images_remove": {}, "images_prune": {},
                "registry_login": {}, "registry_logout": {}}


class BadRequest(ImageError):
    """A malformed body (400)."""

    kind = "invalid"


def _field(body, key: str, kind=str, required: bool = True, default=None):
    if not isinstance(body, dict):
        raise BadRequest("request body: expected a JSON object")
    v = body.get(key, default)
    if v is None and required:
        raise BadRequest(f"{key}: required")
    if v is not None and not isinstance(v, kind):
        raise BadRequest(f"{key}: {v!r} is not a {kind.__name__}")
    return v


def _abs(key: str, v: str) -> str:
    if not os.path.isabs(v):
        raise BadRequest(f"{key}: {v!r} is not an absolute path")
    return v


class ImageHandlers:
    @property
    def images(self) -> Images:
        return backend(self.api, "images", BadRequest("images are not enabled on this agentd"))

    def h_images_list(self, query, body):
        self._send_json(200, self.images.list())

    def h_images_inspect(self, query, body):
        ref = query.get("reference")
        if not ref:
            raise BadRequest("reference: required (GET /v1/images/inspect?reference=NAME)")
        self._send_json(200, self.images.inspect(ref))

    def h_images_pull(self, query, body):
        ref = _field(body, "reference")
        insecure = _field(body, "insecure", bool, required=False, default=False)
        platform = _field(body, "platform", str, required=False)
        svc = self.images
        self._start_stream()
        try:
            info = svc.pull(ref, insecure=insecure, platform=platform,
                            progress=lambda ev: self._event(dict(ev, event="progress")))
            self._event({"event": "pulled", "image": info})
        except (ImageError, ReferenceError) as e:
            self._event({"event": "error", "status": status_of(e.kind), "error": str(e)})
        self._end_stream()

    def h_images_load(self, query, body):
        path = _abs("path", _field(body, "path"))
        self._send_json(200, self.images.load(path))

    def h_images_save(self, query, body):
        ref = _field(body, "reference")
        path = _abs("path", _field(body, "path"))
        self._send_json(200, self.images.save(ref, path))

    def h_images_remove(self, query, body):
        ref = _field(body, "reference")
        force = _field(body, "force", bool, required=False, default=False)
        self._send_json(200, {"result": self.images.remove(ref, force=force)})

    def h_images_prune(self, query, body):
        self._send_json(200, self.images.prune())

    def h_registry_login(self, query, body):
        host = _field(body, "registry")
        user = _field(body, "username")
        password = _field(body, "password")
        insecure = _field(body, "insecure", bool, required=False, default=False)
        self.images.login(host, user, password, insecure=insecure)
        self._send_json(200, {"status": "logged in", "registry": host})

    def h_registry_logout(self, query, body):
        host = _field(body, "registry")
        self.images.logout(host)
        self._send_json(200, {"status": "logged out", "registry": host})


HANDLERS = ImageHandlers
