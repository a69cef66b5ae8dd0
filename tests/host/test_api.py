"""The control API at the HTTP level: a real ApiServer on a real Unix socket.

The supervisor here is a small in-test stand-in that records calls (the end
to end tests with a real agentd are in test_agentctl.py): these tests are
about routing, status codes, JSON errors, streams, and who may do what,
judged from SO_PEERCRED of real connections made by real unprivileged users
created with useradd (the client drops to that user with setgroups/setgid/
setuid in a subprocess before it connects).
"""
from __future__ import annotations

import grp
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import uuid
from types import SimpleNamespace

import pytest
from openapi_schema_validator import OAS30Validator

from agent.api.router import FRAME_HEADER, ApiServer
from agent.cli.client import Client, iter_frames
from agent.config import default_config
from agent.errors import Conflict, NotFound, UserError
from agent.model import ContainerInfo
from runtime.limits import Limits

with open(os.path.join(os.path.dirname(__file__), "..", "..", "agent", "openapi.json")) as _f:
    OPENAPI = json.load(_f)


def conforms(obj, schema_name: str) -> bool:
    validator = OAS30Validator({"components": OPENAPI["components"], "$ref": f"#/components/schemas/{schema_name}"})
    errors = [e.message for e in validator.iter_errors(obj)]
    assert not errors, errors
    return True


class FakeSupervisor:
    """Records calls; containers "web" (running), "busy" (conflicts), "boom" (raises a bug)."""

    def __init__(self, logdir):
        self.calls = []
        self.logdir = logdir
        self.exited = threading.Event()
        self.state = "running"
        self.exit_code = None
        self.created = set()

    def _info(self, name, **kw):
        base = dict(id="0123456789ab", name=name, cgroup=f"/sys/fs/cgroup/x/{name}", limits=Limits.parse(memory="1G"),
                    state=self.state, pid=4242, exit_code=self.exit_code, labels={"team": "a"})
        base.update(kw)
        return ContainerInfo(**base)

    def _find(self, name):
        if name == "boom":
            raise RuntimeError("a bug in the supervisor")
        if name not in ("web", "busy") and name not in self.created:
            raise NotFound(f"name: no container named {name!r}")
        if name == "busy":
            raise Conflict(f"name: container {name!r} is busy")

    def get(self, name):
        self._find(name)
        return self._info(name)

    def containers(self, all=True):
        self.calls.append(("containers", all))
        return [self._info("web")]

    def create(self, spec):
        self.calls.append(("create", spec))
        if spec.name == "taken":
            raise Conflict("name: a container named 'taken' already exists")
        self.created.add(spec.name)
        return self._info(spec.name)

    def start(self, name):
        self._find(name)
        self.calls.append(("start", name))
        return self._info(name)

    def stop(self, name, timeout=None):
        self._find(name)
        self.calls.append(("stop", name, timeout))
        return self._info(name, state="exited")

    def kill(self, name, signal="KILL"):
        self._find(name)
        self.calls.append(("kill", name, signal))
        return self._info(name)

    def freeze(self, name):
        self._find(name)
        self.calls.append(("freeze", name))
        return self._info(name, state="paused")

    def thaw(self, name):
        self._find(name)
        self.calls.append(("thaw", name))
        return self._info(name)

    def remove(self, name, force=False):
        self.calls.append(("remove", name, force))
        return self._info(name, state="exited")

    def set_limits(self, name, limits):
        self._find(name)
        self.calls.append(("set_limits", name, limits))
        return limits

    def log_path(self, name, stream="stdout"):
        if stream not in ("stdout", "stderr"):
            raise UserError(f"stream: {stream!r} is not stdout or stderr")
        return os.path.join(self.logdir, f"{stream}.log")

    def wait(self, name, timeout=None):
        self._find(name)
        self.exited.wait(timeout)
        if self.exited.is_set():
            return self._info(name, state="exited", exit_code=self.exit_code)
        return self._info(name)


class FakeCollector:
    def __init__(self):
        cpu = SimpleNamespace(usage_usec=1500, user_usec=1000, system_usec=500, nr_periods=10, nr_throttled=2,
                              throttled_usec=300)
        io = {(8, 0): SimpleNamespace(rbytes=100, wbytes=50, rios=1, wios=2),
              (8, 16): SimpleNamespace(rbytes=1, wbytes=2, rios=3, wios=4)}
        sample = SimpleNamespace(cpu=cpu, memory_current=1 << 20, memory_peak=2 << 20, io=io, pids_current=3)
        self.snapshot = SimpleNamespace(taken_at=1700000000.5, samples={"/sys/fs/cgroup/x/web": sample})

    def latest(self):
        return self.snapshot


class FakeLedger:
    def __init__(self):
        self.queries = []

    def query(self, params):
        self.queries.append(params)
        if "bad" in params:
            raise UserError("bad: not a known filter")
        return [{"container": "web", "cpu_seconds": "1.5"}]


@pytest.fixture
def server(tmp_path):
    os.chmod(tmp_path, 0o755)  # the unprivileged users below must reach the socket
    logdir = tmp_path / "logs"
    logdir.mkdir()
    sup = FakeSupervisor(str(logdir))
    cfg = default_config(socket=str(tmp_path / "run" / "agent.sock"), state_dir=str(tmp_path / "state"))
    api = ApiServer(cfg, sup, FakeCollector(), FakeLedger())
    api.start()
    yield SimpleNamespace(api=api, sup=sup, path=cfg.agent.socket, client=Client(cfg.agent.socket, timeout=30),
                          logdir=logdir, tmp=tmp_path)
    api.stop()


def raw(path: str, data: bytes) -> tuple[int, dict, bytes]:
    """Send raw bytes, return (status, headers, body) of the answer."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(path)
    s.sendall(data)
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    s.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def error_of(resp) -> str:
    doc = resp.json()
    assert set(doc) == {"error"} and "\n" not in doc["error"] and doc["error"], doc
    return doc["error"]


# -- the socket ------------------------------------------------------------------


def test_socket_is_0660_and_removed_on_stop(server):
    st = os.stat(server.path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    server.api.stop()
    assert not os.path.exists(server.path)


def test_a_stale_socket_is_replaced_but_a_live_one_is_not_taken_over(server, tmp_path):
    cfg = default_config(socket=server.path, state_dir=str(tmp_path / "s2"))
    from agent.api.router import ApiSetupError

    with pytest.raises(ApiSetupError, match="in use"):
        ApiServer(cfg, server.sup).start()
    assert server.client.call("GET", "/v1/health")["status"] == "ok"  # the first one still serves
    stale = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()  # a socket file nobody listens on
    api2 = ApiServer(default_config(socket=stale, state_dir=str(tmp_path / "s3")), server.sup)
    api2.start()
    try:
        assert Client(stale).call("GET", "/v1/health")["status"] == "ok"
    finally:
        api2.stop()


# -- routing and errors -------------------------------------------------------------


def test_health_and_list_conform_to_the_openapi_schemas(server):
    health = server.client.call("GET", "/v1/health")
    assert conforms(health, "Health") and health["access"] == "admin" and health["uid"] == os.getuid()
    items = server.client.call("GET", "/v1/containers", {"all": "1"})
    assert [c["name"] for c in items] == ["web"] and conforms(items[0], "Container")
    assert items[0]["limits"] == {"memory_max": 1 << 30}
    assert server.sup.calls[-1] == ("containers", True)
    server.client.call("GET", "/v1/containers")
    assert server.sup.calls[-1] == ("containers", False)


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/v1/nothing", 404), ("GET", "/v2/containers", 404), ("GET", "/", 404),
    ("GET", "/v1/containers/web/nothing", 404), ("GET", "/v1/containers/nope", 404),
    ("DELETE", "/v1/health", 405), ("PUT", "/v1/containers", 405), ("GET", "/v1/containers/web/stop", 405),
    ("POST", "/v1/containers/web/limits", 405),
    ("GET", "/v1/containers/a%2Fb", 400), ("GET", "/v1/containers/..", 400), ("GET", "/v1/containers/%2E%2E", 400),
    ("POST", "/v1/containers/..%2F..%2Fetc/freeze", 400), ("GET", "/v1/containers/-x", 400),
    ("GET", "/v1/containers/%ff", 400),
    ("GET", "/v1/containers?all=maybe", 400), ("GET", "/v1/containers?colour=red", 400),
    ("POST", "/v1/containers/web/kill?signal=FOO", 400), ("POST", "/v1/containers/web/kill?signal=0", 400),
    ("POST", "/v1/containers/web/stop?timeout=-1", 400), ("POST", "/v1/containers/web/stop?timeout=soon", 400),
    ("GET", "/v1/containers/web/logs?stream=stdin", 400), ("DELETE", "/v1/containers/web?force=2", 400),
    ("POST", "/v1/containers/busy/freeze", 409),
])
def test_client_errors_are_4xx_with_one_json_line(server, method, path, status):
    r = server.client.request(method, path)
    assert r.status == status, r.body
    assert r.headers["content-type"] == "application/json"
    error_of(r)
    if status == 405:
        assert r.headers["allow"]


def test_405_names_the_allowed_methods(server):
    r = server.client.request("DELETE", "/v1/containers/web/limits")
    assert r.status == 405 and r.headers["allow"] == "PATCH, PUT"


@pytest.mark.parametrize("body,needle", [
    (b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object"), (b'"web"', "JSON object"),
    (b'{"name": NaN}', "NaN"), (b"[" * 100000 + b"]" * 100000, "JSON"), (b"\xff\xfe", "JSON"),
    (b'{"name": "web", "argv": ["true"], "bogus": 1}', "bogus"),
    (b'{"name": "../x", "argv": ["true"]}', "name"), (b'{"name": "a/b", "argv": ["true"]}', "name"),
    (b'{"name": "web", "argv": ["true"], "detach": "yes"}', "detach"),
    (b'{"name": "web", "argv": ["true"], "limits": {"memory": "12Q"}}', "memory"),
])
def test_bad_create_bodies_are_400_naming_the_problem(server, body, needle):
    r = server.client.request("POST", "/v1/containers", body=body)
    assert r.status == 400, r.body
    assert needle in error_of(r)
    assert not [c for c in server.sup.calls if c[0] == "create"]


def test_create_passes_a_validated_spec_and_answers_201(server):
    r = server.client.request("POST", "/v1/containers", body={"name": "web2", "argv": ["/bin/true"],
                                                              "env": {"A": "1"}, "labels": ["k=v"]})
    assert r.status == 201 and conforms(r.json(), "Container")
    (call,) = [c for c in server.sup.calls if c[0] == "create"]
    assert call[1].name == "web2" and call[1].argv == ("/bin/true",) and call[1].env["A"] == "1"


def test_duplicate_name_is_409(server):
    r = server.client.request("POST", "/v1/containers", body={"name": "taken", "argv": ["/bin/true"]})
    assert r.status == 409 and "already exists" in error_of(r)


def test_body_too_large_is_413_without_reading_it(server):
    status, headers, body = raw(server.path, b"POST /v1/containers HTTP/1.1\r\nHost: x\r\n"
                                             b"Content-Length: 2000000\r\n\r\n{")
    assert status == 413 and "too large" in json.loads(body)["error"]


def test_a_body_that_never_arrives_is_408_and_frees_the_thread(server, tmp_path):
    from agent.config import load_config

    cfg = load_config(None, {"agent.socket": str(tmp_path / "slow.sock"), "agent.state_dir": str(tmp_path / "s"),
                             "api.body_timeout": "300ms"})
    api = ApiServer(cfg, server.sup)
    api.start()
    try:
        status, _, body = raw(cfg.agent.socket, b"POST /v1/containers HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
        assert status == 408 and "not received" in json.loads(body)["error"]
        assert Client(cfg.agent.socket).call("GET", "/v1/health")["status"] == "ok"
    finally:
        api.stop()


def test_chunked_request_is_411(server):
    status, _, body = raw(server.path, b"POST /v1/containers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert status == 411 and json.loads(body)["error"]


@pytest.mark.parametrize("request_bytes,status,needle", [
    (b"GET /v1/health\r\n\r\n", 400, "HTTP/0.9"),  # no version: HTTP/0.9, which has no status line or headers
    (b"GET /v1/containers\r\n", 400, "HTTP/0.9"),
    (b"POST /v1/containers HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}", 400, "conflicting"),
    (b"POST /v1/containers HTTP/1.1\r\nContent-Length: 2, 40\r\n\r\n{}", 400, "conflicting"),
    (b"POST /v1/containers HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n{}", 400,
     "both Transfer-Encoding and Content-Length"),
    (b"GET /v1/health HTTP/1.1\r\nX-Big: " + b"a" * 60000 + b"\r\nX-Big2: " + b"a" * 8000 + b"\r\n\r\n", 431,
     "larger than"),
])
def test_ambiguous_or_ancient_requests_are_refused_with_a_status_line(server, request_bytes, status, needle):
    got, headers, body = raw(server.path, request_bytes)
    assert got == status and headers["content-type"] == "application/json"
    assert needle in json.loads(body)["error"]
    assert not [c for c in server.sup.calls if c[0] == "create"]


def test_identical_repeated_content_length_is_accepted(server):
    body = b'{"name": "same", "argv": ["/bin/true"]}'
    n = str(len(body)).encode()
    status, _, _ = raw(server.path, b"POST /v1/containers HTTP/1.1\r\nContent-Length: " + n +
                       b"\r\nContent-Length: " + n + b"\r\n\r\n" + body)
    assert status == 201


@pytest.mark.parametrize("garbage", [b"HELLO\r\n\r\n", b"GET\r\n\r\n", b"BREW /v1/health HTTP/1.1\r\n\r\n",
                                     b"GET /v1/health HTTP/9.9\r\n\r\n", b"GET /v1/health HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n"])
def test_garbage_gets_a_json_error_and_the_server_keeps_serving(server, garbage):
    status, headers, body = raw(server.path, garbage)
    assert 400 <= status < 600 and status != 500
    assert json.loads(body)["error"]
    assert server.client.call("GET", "/v1/health")["status"] == "ok"


def test_a_client_that_hangs_up_does_not_hurt_the_server(server):
    for _ in range(20):
        s = socket.socket(socket.AF_UNIX)
        s.connect(server.path)
        s.sendall(b"POST /v1/containers HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"na")
        s.close()
    assert server.client.call("GET", "/v1/health")["status"] == "ok"


def test_an_unexpected_exception_is_a_logged_500_and_the_server_survives(server):
    r = server.client.request("GET", "/v1/containers/boom")
    assert r.status == 500 and "agentd log" in error_of(r)
    assert "a bug" not in r.json()["error"]  # internals are logged, not sent
    assert server.client.call("GET", "/v1/health")["status"] == "ok"


# -- actions --------------------------------------------------------------------------


def test_actions_reach_the_supervisor_with_parsed_parameters(server):
    c = server.client
    assert conforms(c.call("POST", "/v1/containers/web/stop", {"timeout": "2.5"}), "Container")
    assert c.call("POST", "/v1/containers/web/kill", {"signal": "sigterm"})["name"] == "web"
    c.call("POST", "/v1/containers/web/kill", {"signal": "9"})
    c.call("POST", "/v1/containers/web/kill")
    assert c.call("POST", "/v1/containers/web/freeze")["state"] == "paused"
    c.call("POST", "/v1/containers/web/thaw")
    c.call("POST", "/v1/containers/web/start")
    assert c.call("DELETE", "/v1/containers/web", {"force": "1"}) == {"name": "web", "removed": True}
    assert server.sup.calls == [("stop", "web", 2.5), ("kill", "web", 15), ("kill", "web", 9), ("kill", "web", 9),
                                ("freeze", "web"), ("thaw", "web"), ("start", "web"), ("remove", "web", True)]


def test_stop_without_timeout_uses_the_configured_grace(server):
    server.client.call("POST", "/v1/containers/web/stop")
    assert server.sup.calls[-1] == ("stop", "web", server.api.config.agent.stop_timeout)


def test_limits_are_parsed_applied_and_read_back(server):
    back = server.client.call("PATCH", "/v1/containers/web/limits", body={"memory": "512M", "cpus": "0.5", "pids": 64})
    assert back == {"memory_max": 512 << 20, "cpu_quota_us": 50000, "cpu_period_us": 100000, "pids_max": 64}
    assert conforms(back, "Limits")
    assert server.sup.calls[-1] == ("set_limits", "web", Limits(memory_max=512 << 20, cpu_quota_us=50000,
                                                               cpu_period_us=100000, pids_max=64))
    assert server.client.call("PUT", "/v1/containers/web/limits", body={"cpu_weight": 200}) == {"cpu_weight": 200}


@pytest.mark.parametrize("body,needle", [({"memory": "12Q"}, "memory"), ({"cpus": "fast"}, "cpus"),
                                         ({"colour": "red"}, "colour"), ({}, "no limit"), ([1], "object"),
                                         (None, "body")])
def test_bad_limits_are_400_and_change_nothing(server, body, needle):
    r = server.client.request("PATCH", "/v1/containers/web/limits", body=body)
    assert r.status == 400 and needle in error_of(r)
    assert not [c for c in server.sup.calls if c[0] == "set_limits"]


def test_limits_of_an_unknown_container_are_404(server):
    r = server.client.request("PATCH", "/v1/containers/nope/limits", body={"memory": "1G"})
    assert r.status == 404


# -- streams ---------------------------------------------------------------------------


def test_logs_without_follow_send_both_streams_as_frames(server):
    (server.logdir / "stdout.log").write_bytes(b"out1\nout2\n")
    (server.logdir / "stderr.log").write_bytes(b"err1\n")
    frames = list(server.client.stream("GET", "/v1/containers/web/logs"))
    assert b"".join(d for s, d in frames if s == 1) == b"out1\nout2\n"
    assert b"".join(d for s, d in frames if s == 2) == b"err1\n"
    only_err = list(server.client.stream("GET", "/v1/containers/web/logs", {"stream": "stderr"}))
    assert {s for s, _ in only_err} == {2}


def test_logs_follow_streams_new_output_until_the_container_exits(server):
    out = server.logdir / "stdout.log"
    out.write_bytes(b"first\n")
    got = []
    seen_first = threading.Event()

    def reader():
        for stream, data in server.client.stream("GET", "/v1/containers/web/logs", {"follow": "1"}):
            got.append(data)
            if b"first" in b"".join(got):
                seen_first.set()

    t = threading.Thread(target=reader)
    t.start()
    assert seen_first.wait(30)
    with open(out, "ab") as f:
        f.write(b"second\n")
    assert t.is_alive()  # still following: the container has not exited
    server.sup.exit_code = 0
    server.sup.exited.set()
    t.join(30)
    assert not t.is_alive()
    assert b"".join(got) == b"first\nsecond\n"


def test_logs_of_an_unknown_container_are_a_plain_404(server):
    r = server.client.request("GET", "/v1/containers/nope/logs")
    assert r.status == 404 and r.headers["content-type"] == "application/json"


def test_attached_run_streams_output_then_the_exit_status_and_removes_after(server):
    (server.logdir / "stdout.log").write_bytes(b"hello\n")
    server.sup.exit_code = 7
    server.sup.exited.set()
    frames = list(server.client.stream("POST", "/v1/containers",
                                       body={"name": "run1", "argv": ["/bin/true"], "rm": True, "detach": False}))
    events = [json.loads(d) for s, d in frames if s == 3]
    assert [e["event"] for e in events] == ["created", "exited"]
    assert events[1]["exit_code"] == 7 and events[1]["container"]["name"] == "run1"
    assert b"".join(d for s, d in frames if s == 1) == b"hello\n"
    (create,) = [c for c in server.sup.calls if c[0] == "create"]
    assert create[1].auto_remove is False  # the API removes it itself, after the client saw the status
    assert ("remove", "run1", True) in server.sup.calls


def test_attached_run_when_agentd_stops_says_the_container_keeps_running(server):
    events, created = [], threading.Event()

    def reader():
        for stream, data in server.client.stream("POST", "/v1/containers", body={
                "name": "run2", "argv": ["/bin/sleep", "600"], "rm": True, "detach": False}):
            if stream == 3:
                events.append(json.loads(data))
                created.set()

    t = threading.Thread(target=reader)
    t.start()
    assert created.wait(30)
    server.api.stop()  # SIGTERM of agentd: containers live on
    t.join(30)
    assert not t.is_alive()
    assert [e["event"] for e in events] == ["created", "error"]
    assert "keeps running" in events[1]["error"] and events[1]["container"]["state"] == "running"
    assert not [c for c in server.sup.calls if c[0] == "remove"]  # --rm only once it exited


def test_stream_frames_are_well_formed_on_the_wire(server):
    (server.logdir / "stdout.log").write_bytes(b"x" * 100000)
    status, headers, body = raw(server.path, b"GET /v1/containers/web/logs?stream=stdout HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    chunks, rest = [], body
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        chunks.append(rest[:size])
        rest = rest[size + 2:]
    frames = list(iter_frames(iter(chunks)))
    assert b"".join(d for _, d in frames) == b"x" * 100000
    assert all(len(c) == FRAME_HEADER.size + len(d) for c, (_, d) in zip(chunks, frames))


# -- stats and usage -----------------------------------------------------------------


def test_stats_come_from_the_collector_snapshot(server):
    doc = server.client.call("GET", "/v1/stats")
    assert conforms(doc, "Stats") and doc["taken_at"] == 1700000000.5
    (row,) = doc["containers"]
    assert row["cpu_usage_usec"] == 1500 and row["cpu_nr_throttled"] == 2 and row["memory_current"] == 1 << 20
    assert row["memory_limit"] == 1 << 30 and row["io_read_bytes"] == 101 and row["io_write_ops"] == 6
    assert row["pids_current"] == 3 and row["state"] == "running"
    assert server.client.call("GET", "/v1/containers/web/stats")["containers"][0]["cpu_usage_usec"] == 1500
    assert server.client.request("GET", "/v1/containers/nope/stats").status == 404


def test_stats_and_usage_without_collector_or_ledger_are_503(tmp_path):
    sup = FakeSupervisor(str(tmp_path))
    api = ApiServer(default_config(socket=str(tmp_path / "a.sock"), state_dir=str(tmp_path)), sup, None, None)
    api.start()
    try:
        c = Client(str(tmp_path / "a.sock"))
        for path in ("/v1/stats", "/v1/usage"):
            r = c.request("GET", path)
            assert r.status == 503 and error_of(r)
        assert "ledger" in c.request("GET", "/v1/usage").json()["error"]
    finally:
        api.stop()


def test_usage_passes_its_query_to_the_ledger(server):
    assert server.client.call("GET", "/v1/usage", {"since": "2026-01-01", "container": "web"}) == [
        {"container": "web", "cpu_seconds": "1.5"}]
    assert server.api.ledger.queries[-1] == {"since": "2026-01-01", "container": "web"}
    r = server.client.request("GET", "/v1/usage", {"bad": "1"})
    assert r.status == 400 and "bad" in error_of(r)


# -- who may do what (SO_PEERCRED with real users) ------------------------------------------

AS_USER = r"""
import json, os, sys
from agent.cli.client import Client, ConnectError
import agent.cli.client, urllib.parse
name, sock, method, path = sys.argv[1:5]
import pwd
pw = pwd.getpwnam(name)
os.initgroups(name, pw.pw_gid)   # supplementary groups from the real group database
os.setgid(pw.pw_gid)
os.setuid(pw.pw_uid)
assert os.getuid() == pw.pw_uid and os.geteuid() == pw.pw_uid
try:
    r = Client(sock, timeout=30).request(method, path)
    print(json.dumps({"status": r.status, "body": r.body.decode()}))
except ConnectError as e:
    print(json.dumps({"connect_error": str(e)}))
"""


def _run(argv):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def users():
    """Groups sock/read/admin and users none (sock only), reader, admin, outsider (no group)."""
    tag = uuid.uuid4().hex[:6]
    groups = {g: f"cga{tag}{g}" for g in ("sock", "read", "admin")}
    members = {"none": ["sock"], "reader": ["sock", "read"], "admin": ["sock", "admin"], "outsider": []}
    names = {u: f"cga{tag}{u}" for u in members}
    made_groups, made_users = [], []
    try:
        for g in groups.values():
            _run(["groupadd", g])
            made_groups.append(g)
        for u, gs in members.items():
            extra = ["-G", ",".join(groups[g] for g in gs)] if gs else []
            _run(["useradd", "-M", "-N", "-g", "nogroup", "-s", "/usr/sbin/nologin", *extra, names[u]])
            made_users.append(names[u])
        yield SimpleNamespace(groups=groups, names=names)
    finally:
        for u in made_users:
            subprocess.run(["userdel", u], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for g in made_groups:
            subprocess.run(["groupdel", g], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def guarded(users):
    # pytest's tmp_path lives under a 0700 directory: the users below could not reach a socket there
    top = tempfile.mkdtemp(prefix="cga-api-")
    os.chmod(top, 0o755)
    sup = FakeSupervisor(top)
    cfg = default_config(socket=os.path.join(top, "agent.sock"), state_dir=os.path.join(top, "state"),
                         socket_group=users.groups["sock"], read_group=users.groups["read"],
                         admin_group=users.groups["admin"])
    api = ApiServer(cfg, sup)
    api.start()
    yield SimpleNamespace(api=api, sup=sup, path=cfg.agent.socket)
    api.stop()
    shutil.rmtree(top, ignore_errors=True)


def as_user(user: str, sock: str, method: str, path: str) -> dict:
    out = subprocess.run([sys.executable, "-c", AS_USER, user, sock, method, path], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_socket_group_is_the_configured_one(guarded, users):
    st = os.stat(guarded.path)
    assert st.st_gid == grp.getgrnam(users.groups["sock"]).gr_gid and stat.S_IMODE(st.st_mode) == 0o660


def test_a_user_outside_the_socket_group_cannot_even_connect(guarded, users):
    r = as_user(users.names["outsider"], guarded.path, "GET", "/v1/health")
    assert "Permission denied" in r["connect_error"]
    assert as_user(users.names["none"], guarded.path, "GET", "/v1/health")["status"] == 403  # the path is reachable


def test_a_user_in_no_access_group_is_refused_reads_and_writes(guarded, users):
    for method, path in (("GET", "/v1/health"), ("GET", "/v1/containers"), ("POST", "/v1/containers/web/freeze")):
        r = as_user(users.names["none"], guarded.path, method, path)
        assert r["status"] == 403, r
        assert "permission denied" in json.loads(r["body"])["error"]
    assert not [c for c in guarded.sup.calls if c[0] in ("freeze", "containers")]


def test_a_reader_may_read_but_not_change_anything(guarded, users):
    r = as_user(users.names["reader"], guarded.path, "GET", "/v1/health")
    body = json.loads(r["body"])
    assert r["status"] == 200 and body["access"] == "read"
    assert body["uid"] == __import__("pwd").getpwnam(users.names["reader"]).pw_uid  # SO_PEERCRED, not a claim
    for method, path in (("POST", "/v1/containers/web/freeze"), ("DELETE", "/v1/containers/web?force=1"),
                         ("PATCH", "/v1/containers/web/limits"), ("POST", "/v1/containers")):
        r = as_user(users.names["reader"], guarded.path, method, path)
        assert r["status"] == 403, (method, path, r)
    assert not [c for c in guarded.sup.calls if c[0] in ("freeze", "remove", "set_limits", "create")]


def test_an_admin_group_member_may_change_state(guarded, users):
    r = as_user(users.names["admin"], guarded.path, "POST", "/v1/containers/web/freeze")
    assert r["status"] == 200, r
    assert guarded.sup.calls == [("freeze", "web")]
    assert json.loads(as_user(users.names["admin"], guarded.path, "GET", "/v1/health")["body"])["access"] == "admin"


def test_reload_changes_who_may_read(guarded, users):
    from dataclasses import replace

    cfg = guarded.api.config
    guarded.api.reload(replace(cfg, agent=replace(cfg.agent, read_group=users.groups["sock"])))
    assert as_user(users.names["none"], guarded.path, "GET", "/v1/health")["status"] == 200


def test_an_unknown_group_is_a_clear_setup_error(tmp_path):
    from agent.api.router import ApiSetupError

    cfg = default_config(socket=str(tmp_path / "a.sock"), state_dir=str(tmp_path), admin_group="cga-no-such-group")
    with pytest.raises(ApiSetupError, match="admin_group.*cga-no-such-group"):
        ApiServer(cfg, None).start()


# -- fuzzing: whatever a client sends, the answer is a JSON 4xx (or success), never a 500 -------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
_keys = st.sampled_from(["name", "argv", "env", "workdir", "user", "hostname", "rootfs", "bundle", "volumes",
                         "network", "limits", "restart", "labels", "log_max_bytes", "rm", "start", "detach",
                         "memory", "cpus", "pids", "io_max", "cpuset", "bogus"])
_bodies = st.one_of(
    _json,
    st.dictionaries(_keys, _json, max_size=6),
    st.fixed_dictionaries({"name": st.sampled_from(["web", "f1", "..", "a/b", ""]),
                           "argv": st.lists(st.text(max_size=8), max_size=3)},
                          optional={"limits": st.dictionaries(_keys, _json, max_size=3),
                                    "detach": st.booleans(), "rm": st.booleans(), "volumes": _json}),
)
_segment = st.one_of(st.sampled_from(["web", "nope", "busy", "..", "%2F", "%ff", "a%2Fb", "", "x" * 70]),
                     st.text(alphabet="abc./%-_~09", max_size=8))
_paths = st.one_of(
    st.builds(lambda s: f"/v1/containers/{s}", _segment),
    st.builds(lambda s, a: f"/v1/containers/{s}/{a}", _segment,
              st.sampled_from(["start", "stop", "kill", "freeze", "thaw", "limits", "logs", "wait", "stats", "x"])),
    st.sampled_from(["/v1/health", "/v1/containers", "/v1/stats", "/v1/usage", "/", "/v1", "//v1//health", "*"]),
)
_queries = st.dictionaries(st.sampled_from(["all", "force", "timeout", "signal", "follow", "stream", "x"]),
                           st.text(alphabet="01tfKILsigTERM-.e9", max_size=6), max_size=3)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]), path=_paths,
       query=_queries, body=st.one_of(st.none(), _bodies))
def test_fuzzed_requests_never_get_a_500(server, method, path, query, body):
    server.sup.exited.set()  # streams and waits end at once
    server.sup.exit_code = 0
    r = server.client.request(method, path, query, body=body)
    assert r.status < 500 or r.status == 503, (r.status, r.body)
    if r.status >= 400 and method != "HEAD":
        error_of(r)
