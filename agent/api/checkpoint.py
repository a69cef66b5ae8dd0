"""The checkpoint endpoints of the control API (a mixin of agent.api.router's handler).

    POST   /v1/containers/{name}/checkpoint  {"leave_running": bool, "export": "/abs/file.tar",
                                              "tcp_established": bool}
    GET    /v1/checkpoints                   the checkpoints kept under the state dir
    POST   /v1/checkpoints/import            {"path": "/abs/file.tar", "name": NEW}   import and restore
    DELETE /v1/checkpoints/{name}
    POST   /v1/checkpoints/{name}/restore

A refusal (CRIU missing or failing its check on this kernel, a container
CRIU cannot take, an incompatible import) is a 422 with one line. Paths are
read and written by agentd as root: admin requests (POST/DELETE).
"""
from __future__ import annotations

import threading

from agent.api.backend import Checkpoints
from agent.checkpoint import metrics as _metrics  # noqa: F401 - its families exported from agentd's start
from agent.errors import UserError

NAME = "{name}"   # the same placeholder as agent.api.router's routes

ROUTES = [
    (("v1", "containers", NAME, "checkpoint"), {"POST": "checkpoint"}),
    (("v1", "checkpoints"), {"GET": "checkpoint_ls"}),
    (("v1", "checkpoints", "import"), {"POST": "checkpoint_import"}),
    (("v1", "checkpoints", NAME), {"DELETE": "checkpoint_rm"}),
    (("v1", "checkpoints", NAME, "restore"), {"POST": "checkpoint_restore"}),
]

QUERY_PARAMS = {"checkpoint": {}, "checkpoint_ls": {}, "checkpoint_import": {}, "checkpoint_rm": {},
                "checkpoint_restore": {}}

_lock = threading.Lock()


def _field(body, key: str, kind, default=None):
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise UserError("request body: expected a JSON object")
    v = body.get(key, default)
    if v is not None and not isinstance(v, kind):
        raise UserError(f"{key}: {v!r} is not a {kind.__name__}")
    return v


class CheckpointHandlers:
    @property
    def checkpoints(self) -> Checkpoints:
        """One CheckpointService per API server, made on first use."""
        with _lock:
            svc = getattr(self.api, "checkpoints", None)
            if svc is None:
                from agent.checkpoint.service import CheckpointService
                svc = self.api.checkpoints = CheckpointService(self.api.config, self.api.supervisor)
            return svc

    def h_checkpoint(self, name, query, body):
        leave = _field(body, "leave_running", bool, False)
        export = _field(body, "export", str)
        tcp = _field(body, "tcp_established", bool, False)
        self._send_json(200, self.checkpoints.checkpoint(name, leave_running=leave, export=export,
                                                         tcp_established=tcp))

    def h_checkpoint_ls(self, query, body):
        self._send_json(200, self.checkpoints.list())

    def h_checkpoint_rm(self, name, query, body):
        self._send_json(200, self.checkpoints.remove(name))

    def h_checkpoint_restore(self, name, query, body):
        self._send_json(200, self.checkpoints.restore(name))

    def h_checkpoint_import(self, query, body):
        path = _field(body, "path", str)
        if not path:
            raise UserError("path: required (the exported checkpoint file, absolute)")
        self._send_json(200, self.checkpoints.import_(path, _field(body, "name", str)))
