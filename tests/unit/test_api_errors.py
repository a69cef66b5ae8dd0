"""Errors carry a kind; one map (agent.errors.HTTP_STATUS) turns a kind into the API's status.

Also: the resource modules the router registers each keep the shape a new
one must have (ROUTES, QUERY_PARAMS, HANDLERS with an h_<handler> per route).
"""
from __future__ import annotations

import os
import re

import pytest

from agent import errors
from agent.api import errors as api_errors
from agent.api import router as api
from agent.images import reference
from agent.images import store as image_store
from agent.store import StoreFull
from runtime import errors as rt

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_no_error_class_sets_a_status_of_its_own():
    """A status written on an error class would be a second map: kinds only."""
    found = []
    for top in ("agent", "exporters"):
        for dirpath, _, files in os.walk(os.path.join(REPO, top)):
            for name in files:
                if name.endswith(".py"):
                    with open(os.path.join(dirpath, name)) as f:
                        for n, line in enumerate(f, 1):
                            if re.match(r"\s+status\s*=\s*\d{3}\b", line):
                                found.append(f"{name}:{n}: {line.strip()}")
    assert not found, found


def test_every_error_kind_has_a_status():
    assert reference.ReferenceError, image_store.ImageError  # imported: their classes are registered
    for cls in [errors.KindedError, *_subclasses(errors.KindedError)]:
        assert cls.kind in errors.HTTP_STATUS, cls


@pytest.mark.parametrize("exc,status", [
    (errors.UserError("x: bad"), 400),
    (errors.Forbidden("no"), 403),
    (errors.NotFound("no such container"), 404),
    (errors.Conflict("running"), 409),
    (errors.HostLimitation("no memory controller"), 422),
    (errors.CannotExecute("exec /x: not found", "exec_not_found"), 400),
    (reference.ReferenceError("bad ref"), 400),
    (image_store.ImageError("registry said no"), 422),
    (image_store.ImageNotFound("no image"), 404),
    (image_store.ImageInUse("in use"), 409),
    (StoreFull("disk full"), 507),
    (api_errors.RequestError("method_not_allowed", "no", {"Allow": "GET"}), 405),
    (rt.LimitError("memory", "12Q", "is not a size"), 400),
    (rt.ControllerMissing("memory", "not in parent subtree_control"), 422),
    (rt.CgroupGone("/sys/fs/cgroup/x"), 404),
    (rt.FreezeTimeout("not frozen"), 409),
    (rt.KillTimeout("still populated"), 409),
    (KeyError("bug"), 500),
])
def test_classify_gives_each_error_its_status(exc, status):
    got, message, reason, headers = api_errors.classify(exc)
    assert got == status
    assert message and "\n" not in message
    if isinstance(exc, errors.KindedError):
        assert exc.status == status  # derived from the same map
    assert reason == ("exec_not_found" if isinstance(exc, errors.CannotExecute) else None)
    assert headers == ({"Allow": "GET"} if status == 405 else {})


def test_runtime_errors_keep_their_prefixes_and_internal_errors_say_nothing_inside():
    assert api_errors.classify(rt.ControllerMissing("memory", "absent"))[1].startswith(
        "cannot enforce this limit on this host: memory controller is absent")
    assert api_errors.classify(rt.CgroupGone("/x"))[1] == "container cgroup vanished: /x"
    assert api_errors.classify(KeyError("secret"))[1] == "internal error (KeyError); see the agentd log"


def test_a_request_error_of_no_known_kind_is_a_bug():
    with pytest.raises(ValueError):
        api_errors.RequestError("teapot", "no")


def test_every_resource_module_has_the_registered_shape():
    for m in api.RESOURCES:
        assert isinstance(m.ROUTES, list) and isinstance(m.QUERY_PARAMS, dict), m.__name__
        for _pattern, methods in m.ROUTES:
            for handler in methods.values():
                assert hasattr(api._handlers(m), "h_" + handler), (m.__name__, handler)
                assert hasattr(api.Handler, "h_" + handler)
    assert api.ROUTES == [r for m in api.RESOURCES for r in m.ROUTES]


@pytest.mark.parametrize("status,kind", [(400, "invalid"), (403, "forbidden"), (404, "not_found"),
                                         (405, "method_not_allowed"), (409, "conflict"), (422, "refused"),
                                         (503, "unavailable")])
def test_http_error_of_handlers_written_before_kinds_becomes_its_kind(status, kind):
    e = api.HttpError(status, "no", {"Allow": "GET"})
    assert isinstance(e, api_errors.RequestError) and e.kind == kind
    assert api_errors.classify(e)[0] == status and api_errors.classify(e)[3] == {"Allow": "GET"}
