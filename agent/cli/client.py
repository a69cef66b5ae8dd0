"""A small HTTP/1.1 client for the agent's control socket (standard library only).

agentctl must start fast, so this speaks just enough HTTP/1.1 over an AF_UNIX
socket itself instead of importing http.client (which pulls in ssl and email,
about 20 ms). One request per connection (the server answers with
``Connection: close``); bodies are JSON; a response is either sized
(Content-Length), chunked, or delimited by the end of the connection.

Streams (container output, ``POST /v1/containers`` with ``detach: false``)
use the frame format documented in agent/openapi.json: an 8-byte header
``[stream id, 0, 0, 0, length as 4 bytes big-endian]`` then ``length`` bytes.
Stream 1 is stdout, 2 is stderr, 3 is a JSON event (created, exited).

    client = Client("/run/cgroup-agent/agent.sock")
    info = client.call("GET", "/v1/containers/web")          # dict, or raises ApiError
    for stream, data in client.stream("GET", "/v1/containers/web/logs", {"follow": "1"}):
        ...

Two transports carry the same HTTP: the agent's Unix socket (the default), or,
with ``host="ssh://[USER@]HOST[:PORT]"`` (agentctl --host, $AGENT_HOST), an
OpenSSH client running ``agentctl system dial-stdio`` on that host, its stdin
and stdout joined to one end of a socketpair (one ssh process per request).
The ssh side is imported only when a host is given (agent/cli/ssh_transport.py).
"""
from __future__ import annotations

import json
import os
import socket
from collections import namedtuple
from collections.abc import Iterator   # typing costs ~8 ms of agentctl's start

DEFAULT_SOCKET = "/run/cgroup-agent/agent.sock"

from agent.cli.errors import ConnectError  # noqa: E402  (raised here and by the ssh transport)
from agent.wire import EVENT, FRAME_HEADER, STDERR, STDOUT, STREAM_CONTENT_TYPE  # noqa: E402,F401

_MAX_HEADER_LINE = 65536


class ApiError(Exception):
    """The server answered with a 4xx or 5xx status; ``message`` is its one-line error."""

    def __init__(self, status: int, message: str, reason: str | None = None):
        self.status = status
        self.message = message
        self.reason = reason   # the body's optional "reason" (e.g. "exec_not_found")
        super().__init__(f"{status}: {message}")


class ProtocolError(Exception):
    """The server's answer was not valid HTTP/1.1 (or it hung up half-way)."""


class Response(namedtuple("Response", "status headers body")):
    """status: int; headers: dict, lower-case name -> value; body: bytes."""
    __slots__ = ()

    def json(self):
        return json.loads(self.body) if self.body else None


def socket_path(explicit: str | None = None) -> str:
    """--socket, else $AGENT_SOCKET, else the default path."""
    return explicit or os.environ.get("AGENT_SOCKET") or DEFAULT_SOCKET


def encode_query(query: dict | None) -> str:
    if not query:
        return ""
    from urllib.parse import urlencode  # only needed when there is a query

    return "?" + urlencode({k: v for k, v in query.items() if v is not None})


def iter_frames(chunks: Iterator[bytes]) -> Iterator[tuple[int, bytes]]:
    """Reassemble (stream, data) frames from arbitrary byte chunks."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        while len(buf) >= FRAME_HEADER.size:
            stream, length = FRAME_HEADER.unpack_from(buf)
            end = FRAME_HEADER.size + length
            if len(buf) < end:
                break
            yield stream, buf[FRAME_HEADER.size:end]
            buf = buf[end:]
    if buf:
        raise ProtocolError("stream ended inside a frame")


def api_error(status: int, body: bytes) -> ApiError:
    """The ApiError for a refused request: its one-line message and optional reason."""
    reason = None
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("reason"), str):
            reason = doc["reason"]
    except ValueError:
        pass
    return ApiError(status, error_message(status, body), reason)


def error_message(status: int, body: bytes) -> str:
    """The server's {"error": "..."} line, or a readable stand-in."""
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return doc["error"]
    except ValueError:
        pass
    text = body.decode("utf-8", "replace").strip().splitlines()
    return text[0] if text else f"HTTP status {status}"


def host_url(explicit: str | None = None) -> str | None:
    """--host, else $AGENT_HOST, else None (the local socket)."""
    return explicit or os.environ.get("AGENT_HOST") or None


def connect_unix(path: str, timeout: float | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Blocking connect: with a full listen backlog it waits for room instead of failing
        # with EAGAIN, as a non-blocking (timeout) socket would.
        sock.connect(path)
        sock.settimeout(timeout)
    except OSError as e:
        sock.close()
        hint = ""
        if isinstance(e, (FileNotFoundError, ConnectionRefusedError)):
            hint = " (is agentd running? use --socket or AGENT_SOCKET)"
        elif isinstance(e, PermissionError):
            hint = " (are you in the agent's socket group?)"
        raise ConnectError(f"cannot connect to agentd at {path}: {e.strerror or e}{hint}") from None
    return sock


class UnixTransport:
    """A connection per request to the agent's Unix socket."""

    def __init__(self, path: str, timeout: float | None = None):
        self.path = path
        self.timeout = timeout
        self.where = f"agentd at {path}"

    def connect(self) -> socket.socket:
        return connect_unix(self.path, self.timeout)

    def failure(self, sock) -> None:
        """Raise a ConnectError if the transport itself failed (nothing to say for a socket)."""

    def close(self, sock) -> None:
        sock.close()


class Client:
    def __init__(self, path: str | None = None, timeout: float | None = None, host: str | None = None):
        self.host = host_url(host)
        self.timeout = timeout
        if self.host:
            from agent.cli.ssh_transport import SshTransport  # subprocess, shlex: only for remote hosts

            self.path = path   # None: the remote agentctl's own default ($AGENT_SOCKET there, or the default)
            self.transport = SshTransport(self.host, path, timeout)
        else:
            self.path = socket_path(path)
            self.transport = UnixTransport(self.path, timeout)
        self.where = self.transport.where

    # -- transport ---------------------------------------------------------

    def _connect(self) -> socket.socket:
        return self.transport.connect()

    def _close(self, sock) -> None:
        self.transport.close(sock)

    def _hung_up(self, sock, e) -> ProtocolError:
        """The error for a connection that ended early: the transport's own (ssh) or a hang-up."""
        self.transport.failure(sock)
        return ProtocolError(f"{self.where} hung up: {e}")


    def _send(self, method: str, target: str, body) -> tuple[socket.socket, object, int, dict]:
        payload = b""
        if body is not None:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        head = [f"{method} {target} HTTP/1.1", "Host: agentd", "Connection: close",
                "Accept: application/json", f"Content-Length: {len(payload)}"]
        if payload:
            head.append("Content-Type: application/json")
        sock = self._connect()
        try:
            try:
                sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
                f = sock.makefile("rb")
                status, headers = _read_head(f)
            except OSError as e:
                raise self._hung_up(sock, e) from None
            except ProtocolError:
                self.transport.failure(sock)   # ssh: it says why (unreachable, refused key, ...)
                raise
        except BaseException:
            self._close(sock)
            raise
        return sock, f, status, headers

    def request(self, method: str, path: str, query: dict | None = None, body=None) -> Response:
        """Send one request; return the whole response whatever its status."""
        sock, f, status, headers = self._send(method, path + encode_query(query), body)
        try:
            bodiless = method == "HEAD" or status in (204, 304) or status < 200
            data = b"" if bodiless else b"".join(_read_body(f, headers))
        except OSError as e:
            raise self._hung_up(sock, e) from None
        finally:
            f.close()
            self._close(sock)
        return Response(status, headers, data)

    def call(self, method: str, path: str, query: dict | None = None, body=None):
        """Send one request; return the decoded JSON, or raise ApiError for status >= 400."""
        r = self.request(method, path, query, body)
        if r.status >= 400:
            raise api_error(r.status, r.body)
        try:
            return r.json()
        except ValueError:
            raise ProtocolError(f"agentd answered {r.status} with a body that is not JSON") from None

    def stream(self, method: str, path: str, query: dict | None = None, body=None) -> Iterator[tuple[int, bytes]]:
        """Send one request; yield (stream, data) frames as they arrive.

        Raises ApiError (before yielding anything) when the server refuses.
        """
        sock, f, status, headers = self._send(method, path + encode_query(query), body)
        try:
            if status >= 400:
                raise api_error(status, b"".join(_read_body(f, headers)))
            if not headers.get("content-type", "").startswith(STREAM_CONTENT_TYPE):
                raise ProtocolError(f"agentd answered {status} without a stream")
            yield from iter_frames(_read_body(f, headers, incremental=True))
        except OSError as e:
            raise self._hung_up(sock, e) from None
        finally:
            f.close()
            self._close(sock)


def _read_line(f) -> bytes:
    line = f.readline(_MAX_HEADER_LINE + 1)
    if len(line) > _MAX_HEADER_LINE:
        raise ProtocolError("response header line too long")
    return line


def _read_head(f) -> tuple[int, dict]:
    line = _read_line(f)
    if not line:
        raise ProtocolError("agentd closed the connection without answering")
    parts = line.decode("latin-1").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ProtocolError(f"bad status line from agentd: {line[:80]!r}")
    headers: dict[str, str] = {}
    while True:
        line = _read_line(f)
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def _read_body(f, headers: dict, incremental: bool = False) -> Iterator[bytes]:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = _read_line(f)
            if not size_line:
                raise ProtocolError("chunked response ended early")
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {size_line[:40]!r}") from None
            if size == 0:
                while _read_line(f) not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return
            data = f.read(size)
            if len(data) < size:
                raise ProtocolError("chunked response ended inside a chunk")
            f.read(2)  # CRLF after the chunk
            yield data
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise ProtocolError("bad Content-Length from agentd") from None
        data = f.read(length)
        if len(data) < length:
            raise ProtocolError("response ended before Content-Length bytes")
        yield data
    else:
        while True:
            data = f.read1(65536) if incremental else f.read()
            if not data:
                return
            yield data
