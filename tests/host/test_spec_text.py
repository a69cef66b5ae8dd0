"""A lone surrogate ("\\ud800", valid JSON, not Unicode text) in any string
of a create request, against a real agentd: 400 with one line naming the
field, nothing created, and agentd keeps serving (a container created
right after runs and exits 0).

Before the fix, argv, env, workdir and volume paths with one were accepted
(the launcher could not encode them), and a device path answered 500.
"""
from __future__ import annotations

import json

import pytest

from agent.cli.client import Client
from helpers import agentd_in_own_cgroup, names, uname, wait_for


@pytest.fixture(scope="module")
def agentd():
    with agentd_in_own_cgroup("cga-text-") as d:
        yield d


def post(d, body: dict) -> tuple[int, dict]:
    raw = json.dumps(body).encode()   # ensure_ascii: the surrogate travels as \ud800, as any JSON client sends it
    assert b"\\ud800" in raw or b"\\udfff" in raw
    r = Client(d.sock, timeout=30).request("POST", "/v1/containers", body=raw)
    return r.status, r.json()


CASES = [
    ("argv", {"argv": ["sh", "-c", "echo \ud800"]}, "argv[2]: "),
    ("env value", {"env": {"K": "x\udfffy"}}, 'env.K: the value of variable "K" '),
    ("env key", {"env": ["K\ud800=v"]}, 'env[0]: the variable name "K\\ud800" '),
    ("workdir", {"workdir": "/srv/\ud800"}, "workdir: "),
    ("hostname", {"hostname": "web\ud800"}, "hostname: "),
    ("volume", {"volumes": ["/usr/\ud800:/data"]}, "volumes[0] source: "),
    ("device", {"devices": ["/dev/null:/dev/n\ud800"]}, "devices[0]: "),
    ("label", {"labels": {"team": "\ud800"}}, 'labels.team: the value of label "team" '),
]


@pytest.mark.parametrize("what,fields,where", CASES, ids=[c[0] for c in CASES])
def test_a_lone_surrogate_is_refused_with_400_naming_the_field(agentd, what, fields, where):
    name = uname("sur")
    status, doc = post(agentd, {"name": name, "argv": ["true"], **fields})
    assert status == 400, doc
    error = doc["error"]
    assert error.startswith(where) and "\n" not in error, error
    assert name not in names(agentd)   # nothing half-created


def test_agentd_keeps_serving_after_every_refusal(agentd):
    for _, fields, _ in CASES:
        status, _ = post(agentd, {"name": uname("sur"), "argv": ["true"], **fields})
        assert status == 400
    c = Client(agentd.sock, timeout=30)
    assert c.call("GET", "/v1/health")["status"] == "ok"
    name = uname("after")
    c.call("POST", "/v1/containers", body={"name": name, "argv": ["sh", "-c", "echo ünïcødé"],
                                            "env": {"K": "ü"}, "network": "host"})
    info = wait_for(lambda: (lambda i: i if i["state"] == "exited" else None)(
        c.call("GET", f"/v1/containers/{name}")), what="the container to exit")
    assert info["exit_code"] == 0, info
    assert agentd.proc.poll() is None


EXEC_CASES = [
    ("command", {"command": ["sh", "-c", "echo \ud800"]}, "command[2]: "),
    ("env", {"command": ["true"], "env": {"K": "\udfff"}}, "env.K: "),
    ("workdir", {"command": ["true"], "workdir": "/\ud800"}, "workdir: "),
]


@pytest.mark.parametrize("what,body,where", EXEC_CASES, ids=[c[0] for c in EXEC_CASES])
def test_exec_refuses_a_lone_surrogate_naming_the_field(agentd, what, body, where):
    c = Client(agentd.sock, timeout=30)
    name = uname("exsur")
    c.call("POST", "/v1/containers", body={"name": name, "argv": ["sleep", "1000"], "network": "host"})
    try:
        raw = json.dumps(body).encode()
        r = c.request("POST", f"/v1/containers/{name}/exec", body=raw)
        assert r.status == 400, r.status
        error = r.json()["error"]
        assert error.startswith(where) and "\n" not in error, error
    finally:
        c.call("DELETE", f"/v1/containers/{name}", query={"force": "1"})
