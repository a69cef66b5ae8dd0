"""The control API's HTTP plumbing: the Unix socket server and the request handler's base.

One request per connection (every answer says Connection: close), read under
the deadlines of agent/api/limits.py; answers are JSON, or a chunked stream
of frames (``FRAME_HEADER``: stream id, 3 zero bytes, length; then the data)
for logs, attached runs and pulls. What a request means is decided by the
router (agent/api/router.py), which subclasses ``BaseHandler`` with the resource
handlers and a ``_dispatch`` method.
"""
from __future__ import annotations

import os
import socket
import socketserver
import stat
from http.server import BaseHTTPRequestHandler

import structlog

from agent import selfmetrics
from agent.api.backend import Containers
from agent.api.errors import ApiSetupError, RequestError
from agent.api.limits import DeadlineReader, HeadTooLarge
from agent.api.views import json_bytes
from agent.wire import EVENT, FRAME_HEADER, STDERR, STDOUT, STREAM_CONTENT_TYPE  # noqa: F401 (defined once there)

log = structlog.get_logger("agent.api")

MAX_BODY = 1 << 20  # 1 MiB: a container spec is a few KiB
MAX_HEAD = 64 << 10  # request line and headers together
MAX_LINE = 8192      # one request line or header line

selfmetrics.declare("api_request_timeouts_total", "counter",
                    "Control API requests whose headers or body did not arrive within [api] header_timeout / "
                    "body_timeout, by phase.", ("phase",))

try:  # the package version, for /v1/health
    from importlib.metadata import version as _dist_version

    VERSION = _dist_version("cgroup-agent")
except Exception:  # noqa: BLE001 - not installed: still serve
    VERSION = "0"


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = socket.SOMAXCONN  # a burst of agentctl calls must not see EAGAIN

    def __init__(self, path: str, api, gid: int | None, handler: type):
        self.api = api
        self._gid = gid
        super().__init__(path, handler, bind_and_activate=False)

    def server_bind(self):
        path = self.server_address
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise ApiSetupError(f"agent.socket: {path} exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # stale socket of a previous agentd
            else:
                raise ApiSetupError(f"agent.socket: {path} is in use by another process")
            finally:
                probe.close()
        # Nobody can connect before listen(), which runs after the mode and group are set.
        self.socket.bind(path)
        os.chmod(path, 0o660)
        if self._gid is not None:
            os.chown(path, -1, self._gid)

    def handle_error(self, request, client_address):
        log.exception("api.connection_error")

    # -- connection caps: decided here, in the accept loop, before a thread exists --

    def verify_request(self, request, client_address):
        try:
            return self.api.admit(request)
        except Exception:  # noqa: BLE001 - the accept loop must never die
            log.exception("api.admit_failed")
            return False

    def process_request(self, request, client_address):
        try:
            super().process_request(request, client_address)
        except RuntimeError:  # no thread could be started: refuse like a full server
            self.api.release(request)
            self.api.refused(request, "threads")
            self.shutdown_request(request)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.api.release(request)


class BaseHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cgroup-agent/" + VERSION
    sys_version = ""
    timeout = 60  # reading a request; a silent client does not hold a thread forever
    server: UnixServer

    # -- plumbing --

    def setup(self):
        super().setup()
        self.peer, self.access = self.server.api.peer_of(self.connection)
        self._streaming = False
        self.rfile = DeadlineReader(self.connection, self.timeout)

    def handle_one_request(self):
        """One request per connection (every answer says Connection: close), read under deadlines."""
        self.close_connection = True
        limits = self.server.api.config.api
        reader = self.rfile
        reader.limit(limits.header_timeout, MAX_HEAD)
        try:
            self.raw_requestline = reader.readline(MAX_LINE + 1)
            if not self.raw_requestline:
                return  # closed without a request
            if len(self.raw_requestline) > MAX_LINE:
                self.requestline = self.command = ""
                self.request_version = "HTTP/1.1"
                self.send_error(414, f"request line longer than {MAX_LINE} bytes")
                return
            if not self.parse_request():
                return
        except TimeoutError:
            selfmetrics.inc("api_request_timeouts_total", phase="headers")
            self.command = self.command or ""
            self.send_error(408, f"request headers not received within {limits.header_timeout:g} seconds")
            return
        except HeadTooLarge:
            self.command = self.command or ""
            self.send_error(431, f"request headers larger than {MAX_HEAD} bytes")
            return
        if reader.eof:  # the head never ended: the client is gone, nothing to answer
            return
        reader.limit(None)
        self.connection.settimeout(self.timeout)
        getattr(self, "do_" + self.command)()
        try:
            self.wfile.flush()
        except OSError:
            pass

    def parse_request(self):
        words = str(self.raw_requestline, "iso-8859-1").split()
        if len(words) == 2:  # "GET /path": HTTP/0.9, no headers and no status line
            self.command = ""
            self.send_error(400, "HTTP/0.9 requests are not accepted; send HTTP/1.1 (or HTTP/1.0) with headers")
            return False
        return super().parse_request()

    def address_string(self):
        return f"pid={self.peer.pid} uid={self.peer.uid}"

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        log.debug("api.http", message=format % args, pid=self.peer.pid, uid=self.peer.uid)

    def log_request(self, code="-", size="-"):
        log.debug("api.request", method=getattr(self, "command", None), path=getattr(self, "path", None),
                  status=int(code) if str(code).isdigit() else code, pid=self.peer.pid, uid=self.peer.uid)

    def send_error(self, code, message=None, explain=None):
        """Errors found by http.server itself (bad request line, unknown method, ...) as JSON too."""
        text = message or self.responses.get(code, ("error",))[0]
        self.request_version = "HTTP/1.1"  # answer with a status line and headers even to garbage
        self._send_json(code, {"error": " ".join(str(text).split())}, close=True)

    def _send_json(self, status: int, obj, headers: dict | None = None, close: bool = True):
        body = json_bytes(obj)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            pass  # the client went away
        self.close_connection = True

    def _start_stream(self):
        self.send_response(200)
        self.send_header("Content-Type", STREAM_CONTENT_TYPE)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self._streaming = True
        self.close_connection = True

    def _frame(self, stream: int, data: bytes):
        payload = FRAME_HEADER.pack(stream, len(data)) + data
        self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))

    def _event(self, obj):
        self._frame(EVENT, json_bytes(obj))

    def _end_stream(self):
        self.wfile.write(b"0\r\n\r\n")

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def __getattr__(self, name):
        # http.server answers a method with no do_<METHOD> (TRACE, CONNECT, ...)
        # with its own 501. Route every method instead: the route table then
        # gives a 405 naming the allowed methods (Allow header), or a 404.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _dispatch(self):  # the router's
        raise NotImplementedError

    def _fail(self, status: int, message: str, headers: dict | None = None, reason: str | None = None):
        message = " ".join(str(message).split()) or self.responses.get(status, ("error",))[0]
        if self._streaming:  # headers are gone: report in-band, then end the stream
            try:
                self._event({"event": "error", "status": status, "error": message})
                self._end_stream()
            except OSError:
                pass
            return
        body = {"error": message}
        if reason:  # machine-readable cause where a client acts on it (agentctl: exit 127/126)
            body["reason"] = reason
        self._send_json(status, body, headers)

    def _read_body(self) -> bytes:
        lengths = [v.strip() for h in (self.headers.get_all("Content-Length") or []) for v in h.split(",")]
        if "Transfer-Encoding" in self.headers:
            if lengths:  # which one frames the body? A proxy and we could disagree (request smuggling)
                raise RequestError("invalid", "request has both Transfer-Encoding and Content-Length; send Content-Length only")
            raise RequestError("length_required", "Transfer-Encoding is not accepted in requests; send Content-Length")
        if not lengths:
            return b""
        if len(set(lengths)) > 1:
            shown = ", ".join(v[:20] for v in lengths[:4])
            raise RequestError("invalid", f"Content-Length: conflicting values ({shown}); send one Content-Length")
        raw_len = lengths[0]
        if not raw_len.isdigit():
            raise RequestError("invalid", f"Content-Length: {raw_len[:40]!r} is not a number")
        length = int(raw_len)
        if length > MAX_BODY:
            raise RequestError("too_large", f"request body of {length} bytes is too large; the limit is {MAX_BODY} bytes")
        body_timeout = self.server.api.config.api.body_timeout
        self.rfile.limit(body_timeout)
        try:
            data = self.rfile.read(length) if length else b""
        except TimeoutError:
            data = None
        finally:
            self.rfile.limit(None)
            self.connection.settimeout(self.timeout)
        if data is None or (len(data) < length and self.rfile.expired()):
            selfmetrics.inc("api_request_timeouts_total", phase="body")
            raise RequestError("timeout", f"request body not received within {body_timeout:g} seconds")
        if len(data) < length:
            raise RequestError("invalid", "request body shorter than Content-Length")
        return data

    # -- helpers for handlers --

    @property
    def api(self):
        return self.server.api

    @property
    def sup(self) -> Containers:
        return self.api.supervisor
