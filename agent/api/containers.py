"""The container endpoints of the control API (a resource module, registered in agent/api/router.py).

    GET    /v1/containers[?all=1]              list
    POST   /v1/containers                      create (detach: false streams the run)
    GET    /v1/containers/{name}               inspect
    DELETE /v1/containers/{name}[?force=1]     remove
    POST   /v1/containers/{name}/start|stop|kill|freeze|thaw
    PUT|PATCH /v1/containers/{name}/limits     change limits live
    GET    /v1/containers/{name}/logs          a stream of frames (follow, stream, tail)
    GET    /v1/containers/{name}/wait          block until it exits (timeout)
    GET    /v1/stats[?all=1], /v1/containers/{name}/stats   from the collector's latest snapshot
"""
from __future__ import annotations

import dataclasses
import os
import signal as _signal

import structlog

from agent.api import logstream
from agent.api import exec as api_exec
from agent.api.backend import StatsSnapshot
from agent.api.errors import RequestError
from agent.api.http import STDERR, STDOUT
from agent.api.logstream import pump_tails
from agent.api.query import NAME_PARAM, bool_param, seconds_param, signal_param, stream_param, tail_param
from agent.api.views import container_json, plain, stats_json
from agent.logtail import start_of_last_lines
from agent.model import State
from agent.spec import from_json, parse_limits

log = structlog.get_logger("agent.api")

LOG_CHUNK = 65536

_NAME = NAME_PARAM
ROUTES = [
    (("v1", "containers"), {"GET": "list", "POST": "create"}),
    (("v1", "stats"), {"GET": "stats_all"}),
    (("v1", "containers", _NAME), {"GET": "inspect", "DELETE": "remove"}),
    (("v1", "containers", _NAME, "start"), {"POST": "start"}),
    (("v1", "containers", _NAME, "stop"), {"POST": "stop"}),
    (("v1", "containers", _NAME, "kill"), {"POST": "kill"}),
    (("v1", "containers", _NAME, "freeze"), {"POST": "freeze"}),
    (("v1", "containers", _NAME, "thaw"), {"POST": "thaw"}),
    (("v1", "containers", _NAME, "limits"), {"PUT": "limits", "PATCH": "limits"}),
    (("v1", "containers", _NAME, "logs"), {"GET": "logs"}),
    (("v1", "containers", _NAME, "wait"), {"GET": "wait"}),
    (("v1", "containers", _NAME, "stats"), {"GET": "stats_one"}),
]

QUERY_PARAMS = {
    "create": {}, "inspect": {}, "start": {}, "freeze": {}, "thaw": {}, "limits": {}, "stats_one": {},
    "list": {"all": bool_param},
    "stats_all": {"all": bool_param},
    "remove": {"force": bool_param},
    "stop": {"timeout": seconds_param},
    "kill": {"signal": signal_param},
    "logs": {"follow": bool_param, "stream": stream_param, "tail": tail_param,
             "since": logstream.since_param, "timestamps": bool_param},
    "wait": {"timeout": seconds_param},
}

# handlers that answer with a stream (or block): no HEAD for them
STREAMING = ("logs", "wait")


def limits_from_api(body) -> object:
    """The body of PUT/PATCH .../limits ({"memory": "512M", "cpus": 1.5, ...}) -> runtime Limits.

    Keys are those of runtime.limits.Limits.parse (the same as "limits" in
    POST /v1/containers). Only the keys given change; the others stay as they are.
    """
    if not isinstance(body, dict):
        raise RequestError("invalid", "request body: expected a JSON object of limits, e.g. {\"memory\": \"512M\"}")
    limits = parse_limits(body, "limits")
    if limits.is_empty():
        raise RequestError("invalid", "limits: no limit given; use e.g. {\"memory\": \"512M\", \"cpus\": \"0.5\"}")
    return limits


class LogTail:
    """Reads a growing log file from where it stopped; survives rotation/truncation."""

    def __init__(self, path: str, tail: int | None = None):
        self.path = path
        self.f = None
        self.ino = None
        self.tail = tail  # first open only: start at the last `tail` lines

    def read(self, final: bool = False) -> bytes:
        """What was written since the last read (b"" when nothing); ``final`` changes nothing:
        raw bytes hold no partial line back (agent/api/logstream.py passes it to every tail)."""
        if self.f is None:
            try:
                self.f = open(self.path, "rb")  # noqa: SIM115 - kept open between reads
            except FileNotFoundError:
                self.tail = None  # written from now on: every line of it is new
                return b""
            self.ino = os.fstat(self.f.fileno()).st_ino
            if self.tail is not None:
                self.f.seek(start_of_last_lines(self.f, self.tail))
                self.tail = None
        data = self.f.read(LOG_CHUNK)
        if data:
            return data
        try:  # nothing new: was it rotated or truncated?
            st = os.stat(self.path)
        except FileNotFoundError:
            return b""
        if st.st_ino != self.ino:
            self.close()
            return self.read()
        if st.st_size < self.f.tell():
            self.f.seek(0)
            return self.f.read(LOG_CHUNK)
        return b""

    def close(self):
        if self.f is not None:
            self.f.close()
            self.f = None


class ContainerHandlers:
    def _info(self, name: str, result=None):
        """The container view after an action (the supervisor's return value if it is one)."""
        if result is not None and hasattr(result, "cgroup") and hasattr(result, "state"):
            return container_json(result)
        return container_json(self.sup.get(name))

    def h_list(self, query, body):
        infos = self.sup.containers(all=query.get("all", False))
        self._send_json(200, [container_json(i) for i in infos])

    def h_create(self, query, body):
        if not isinstance(body, dict):
            raise RequestError("invalid", "request body: expected a JSON object describing the container, e.g. "
                                          "{\"name\": \"web\", \"command\": [\"/bin/sh\"]}")
        body = dict(body)
        detach = body.pop("detach", True)
        if not isinstance(detach, bool):
            raise RequestError("invalid", f"detach: {detach!r} is not a boolean; use true or false")
        spec = from_json(body, self.api.config, self.api.images)
        api_exec.check_stdin(spec, detach)
        if detach:
            info = self.sup.create(spec)
            self._send_json(201, container_json(info))
            return
        self._run_attached(spec)

    def _run_attached(self, spec):
        """Create and start, stream its output, then its exit status (agentctl run without -d).

        Auto-removal is done here, after the exit status was read and sent, so a
        short-lived --rm container cannot vanish before its client saw the end.
        """
        remove = spec.auto_remove
        if remove:
            spec = dataclasses.replace(spec, auto_remove=False)
        info = self.sup.create(spec)
        name = info.name
        try:
            self._start_stream()
            self._event({"event": "created", "container": container_json(info)})
            if spec.stdin or spec.tty:
                api_exec.forward_stdin(self, info, stdin=spec.stdin, tty=spec.tty)
            final = self._pump_logs(name, "all", follow=True)
            final = final or self.sup.get(name)
            if final.state != State.EXITED:  # agentd is stopping: the container lives on (live restore)
                self._event({"event": "error", "status": 503, "container": container_json(final),
                             "error": f"agentd is stopping; container {name} keeps running "
                                      f"(agentctl logs -f {name} once it is back)"})
                self._end_stream()
                return
            self._event({"event": "exited", "exit_code": final.exit_code, "exit_signal": final.exit_signal,
                         "oom_killed": final.oom_killed, "container": container_json(final)})
            if remove:  # before the stream ends: once `run --rm` returns, the container is gone
                remove = False
                self.api.remove_after_exit(name)
            self._end_stream()
        except OSError:
            log.info("api.attach_client_gone", name=name)
        finally:
            if remove:
                self.api.remove_after_exit(name)

    def h_inspect(self, name, query, body):
        self._send_json(200, self._info(name))

    def h_remove(self, name, query, body):
        self.sup.remove(name, force=query.get("force", False))
        self._send_json(200, {"name": name, "removed": True})

    def h_start(self, name, query, body):
        self._send_json(200, self._info(name, self.sup.start(name)))

    def h_stop(self, name, query, body):
        timeout = query.get("timeout", getattr(self.api.config.agent, "stop_timeout", 10.0))
        self._send_json(200, self._info(name, self.sup.stop(name, timeout)))

    def h_kill(self, name, query, body):
        self._send_json(200, self._info(name, self.sup.kill(name, query.get("signal", int(_signal.SIGKILL)))))

    def h_freeze(self, name, query, body):
        self._send_json(200, self._info(name, self.sup.freeze(name)))

    def h_thaw(self, name, query, body):
        self._send_json(200, self._info(name, self.sup.thaw(name)))

    def h_limits(self, name, query, body):
        if body is None:
            raise RequestError("invalid", "request body: expected a JSON object of limits, e.g. {\"memory\": \"512M\"}")
        limits = limits_from_api(body)
        self.sup.get(name)  # 404 before anything else
        back = self.sup.set_limits(name, limits)
        self._send_json(200, plain(back) if back is not None else {})

    def h_logs(self, name, query, body):
        self.sup.get(name)  # 404 before the stream starts
        if query.get("since") is not None or query.get("timestamps"):
            return logstream.pump_timed(self, name, query)  # times from the launcher's index (agent/logtimes.py)
        self._start_stream()
        self._pump_logs(name, query.get("stream", "all"), follow=query.get("follow", False), tail=query.get("tail"))
        self._end_stream()

    def _pump_logs(self, name: str, which: str, follow: bool, tail: int | None = None):
        """Send the log files as frames; with follow, until the container exits. Returns the final info."""
        tails = []
        for sid, stream in ((STDOUT, "stdout"), (STDERR, "stderr")):
            if which in (stream, "all"):
                tails.append((sid, LogTail(self.sup.log_path(name, stream), tail)))
        return pump_tails(self, name, tails, follow)

    def h_wait(self, name, query, body):
        info = self.sup.wait(name, query.get("timeout"))
        self._send_json(200, container_json(info) if info is not None else self._info(name))

    def _snapshot(self) -> StatsSnapshot:
        collector = self.api.collector
        snap = collector.latest() if collector is not None else None
        if snap is None:
            raise RequestError("unavailable", "no stats yet: the collector has not taken its first sample")
        return snap

    def h_stats_all(self, query, body):
        snap = self._snapshot()
        rows = [stats_json(i, snap.samples.get(i.cgroup)) for i in self.sup.containers(all=query.get("all", False))]
        self._send_json(200, {"taken_at": snap.taken_at, "containers": rows})

    def h_stats_one(self, name, query, body):
        snap = self._snapshot()
        info = self.sup.get(name)
        self._send_json(200, {"taken_at": snap.taken_at, "containers": [stats_json(info, snap.samples.get(info.cgroup))]})


HANDLERS = ContainerHandlers
