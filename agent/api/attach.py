"""The attach endpoint of the control API (Docker's `attach`):

    POST /v1/containers/NAME/attach

A running container's output from now on as a stream (STDOUT/STDERR frames,
as `logs -f` without the past), then an EVENT {"event": "exited",
"exit_code", "exit_signal"}. A container on a terminal (run -t) also takes
the client's raw frames sent after the answer's headers: STDIN typed into
its terminal, RESIZE {"rows", "cols"} its window size (agent/api/exec.py
forward_stdin, through a copy of the terminal the launcher keeps). Leaving
(agentctl's detach keys, a closed connection) leaves it running.
"""
from __future__ import annotations

import structlog

from agent.api import exec as api_exec
from agent.api.containers import LogTail
from agent.api.http import STDERR, STDOUT
from agent.api.logstream import pump_tails
from agent.api.views import container_json
from agent.errors import Conflict
from agent.model import State

log = structlog.get_logger("agent.api")

ROUTES = [
    (("v1", "containers", "{name}", "attach"), {"POST": "attach"}),
]
QUERY_PARAMS = {"attach": {}}


class AttachHandlers:
    def h_attach(self, name, query, body):
        info = self.sup.get(name)
        if info.state != State.RUNNING:
            raise Conflict(f"container {name} is {info.state}, not running: attach needs a running container")
        self._start_stream()
        try:
            tails = [(STDOUT, LogTail(self.sup.log_path(name, "stdout"), 0)),
                     (STDERR, LogTail(self.sup.log_path(name, "stderr"), 0))]
            for sid, tail in tails:     # opened at their end before any input goes in: its echo is sent
                data = tail.read()
                if data:
                    self._frame(sid, data)
            if info.tty:
                api_exec.forward_stdin(self, info, stdin=True, tty=True)
            final = pump_tails(self, name, tails, follow=True) or self.sup.get(name)
            if final.state != State.EXITED:     # agentd is stopping: the container lives on
                self._event({"event": "error", "status": 503, "container": container_json(final),
                             "error": f"agentd is stopping; container {name} keeps running"})
            else:
                self._event({"event": "exited", "exit_code": final.exit_code, "exit_signal": final.exit_signal,
                             "oom_killed": final.oom_killed, "container": container_json(final)})
            self._end_stream()
        except OSError:
            log.info("api.attach_client_gone", name=name)


HANDLERS = AttachHandlers
