"""The control API: HTTP/1.1 + JSON on a Unix socket (described in agent/openapi.json).

    api = ApiServer(config, supervisor, collector, ledger)   # ledger may be None
    api.start()          # binds config.agent.socket (0660, group socket_group), serves in threads
    api.reload(config)   # SIGHUP: re-resolve read_group / admin_group (the container guard stays)
    api.stop()           # stops accepting, ends streams, removes the socket

Who may do what is decided per connection from the peer's credentials
(SO_PEERCRED, and SO_PEERGROUPS for its supplementary groups):

- uid 0, the agent's own uid, and members of ``admin_group`` may do anything;
- members of ``read_group`` may send GET requests; when ``read_group`` is
  empty, anyone who can open the socket (mode 0660, group ``socket_group``)
  may read;
- everyone else gets 403.

A process inside one of the agent's containers never gets access (its
cgroup is below R/containers); the Access object that decides it is built in
one place (ApiServer._build_access) with that cgroup, at start and on reload.

What one client may hold is capped (agent/api_limits.py, [api] in the
config): connections in total and per peer (a container, or a uid; host
admins are exempt from the per-peer cap and have the last eighth of the
total kept for them), refused in the accept loop without a thread; the request head and body each have a deadline for the whole read.
HTTP/0.9, conflicting Content-Length values and Transfer-Encoding are refused.

Every client error is a 4xx with ``{"error": "one line"}``. An unexpected
exception is logged with its traceback and answered 500; the server itself
never dies of a request.
"""
from __future__ import annotations

import dataclasses
import grp
import json
import os
import pwd
import re
import signal as _signal
import socket
import socketserver
import stat
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

import structlog

from agent import api_images
from agent import api_checkpoint
from agent import api_system
from agent import selfmetrics
from agent.api_limits import ConnectionGate, DeadlineReader, HeadTooLarge, refuse_now
from agent.errors import Conflict, Forbidden, NotFound, UserError

log = structlog.get_logger("agent.api")

MAX_BODY = 1 << 20  # 1 MiB: a container spec is a few KiB
MAX_HEAD = 64 << 10  # request line and headers together
MAX_LINE = 8192      # one request line or header line
STREAM_CONTENT_TYPE = "application/vnd.cgroup-agent.stream"
STDOUT, STDERR, EVENT = 1, 2, 3
FRAME_HEADER = struct.Struct(">BxxxI")
NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
NAME_ACCEPTED = "names match [a-zA-Z0-9][a-zA-Z0-9_.-]{0,62} (no / and no ..)"
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13; not exported by Python 3.11
LOG_POLL = 0.1  # seconds between reads of a followed log file
LOG_CHUNK = 65536

selfmetrics.declare("api_connections", "gauge", "Connections to the control socket being served now.")
selfmetrics.declare("api_connections_refused_total", "counter",
                    "Control socket connections closed at accept because a cap was reached, by reason "
                    "(total: [api] max_connections, peer: max_connections_per_peer, threads: no thread).",
                    ("reason",))
selfmetrics.declare("api_request_timeouts_total", "counter",
                    "Control API requests whose headers or body did not arrive within [api] header_timeout / "
                    "body_timeout, by phase.", ("phase",))

try:  # the package version, for /v1/health
    from importlib.metadata import version as _dist_version

    VERSION = _dist_version("cgroup-agent")
except Exception:  # noqa: BLE001 - not installed: still serve
    VERSION = "0"


class ApiSetupError(Exception):
    """The API cannot start: unknown group, socket path in use, ... (one line)."""


class HttpError(Exception):
    """A 4xx decided by the API layer itself (routing, query, body)."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


# -- peers and access -------------------------------------------------------


class Peer(NamedTuple):
    pid: int
    uid: int
    gid: int
    groups: frozenset  # primary and supplementary gids


def peer_credentials(sock: socket.socket) -> Peer:
    """The connecting process's pid/uid/gid (SO_PEERCRED) and its groups."""
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    groups: set[int] = {gid}
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * 4096)
        groups.update(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    except OSError:  # old kernel or too many groups: ask the group database
        try:
            groups.update(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
        except (KeyError, OSError):
            pass
    return Peer(pid, uid, gid, frozenset(groups))


def _gid(key: str, name: str) -> int | None:
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        if name.isdigit():
            return int(name)
        raise ApiSetupError(f"agent.{key}: group {name!r} does not exist on this host") from None


def peer_cgroup(pid: int) -> str | None:
    """The peer's cgroup2 path (relative to the mount), None if unknown."""
    try:
        with open(f"/proc/{pid}/cgroup", "rb") as f:
            for line in f.read().decode(errors="replace").splitlines():
                if line.startswith("0::"):
                    return line[3:]
    except OSError:
        pass
    return None


class Access:
    """Maps a peer to "admin", "read" or None (no access), and to who it is for the connection caps.

    A process inside one of our own containers never gets access, whatever
    its uid: a container on the host root can reach the socket by path, and
    root inside it is uid 0 here (no user namespaces). `containers_cgroup`
    (R/containers as /proc/PID/cgroup shows it, None when the API serves no
    real supervisor) has no default: whoever builds an Access must say it."""

    def __init__(self, admin_group: str, read_group: str, containers_cgroup: str | None):
        self.admin_gid = _gid("admin_group", admin_group)
        self.read_gid = _gid("read_group", read_group)
        self.own_uid = os.geteuid()
        self.containers_cgroup = containers_cgroup.rstrip("/") + "/" if containers_cgroup else None

    def _container_of(self, peer: Peer) -> str | None:
        """The peer's container (first cgroup component below R/containers), "?" when unknown, None outside."""
        if self.containers_cgroup is None:
            return None
        if peer.pid <= 0:  # the peer's pid is invisible from here: another PID namespace
            return "?"
        cg = peer_cgroup(peer.pid)
        if cg is None:
            return "?"
        cg = cg.rstrip("/") + "/"
        if not cg.startswith(self.containers_cgroup):
            return None
        return cg[len(self.containers_cgroup):].split("/", 1)[0] or "?"

    def in_container(self, peer: Peer) -> bool:
        return self._container_of(peer) is not None

    def _level(self, peer: Peer, container: str | None) -> str | None:
        if container is not None:
            return None
        if peer.uid in (0, self.own_uid):
            return "admin"
        if self.admin_gid is not None and self.admin_gid in peer.groups:
            return "admin"
        if self.read_gid is None or self.read_gid in peer.groups:
            return "read"
        return None

    def level(self, peer: Peer) -> str | None:
        return self._level(peer, self._container_of(peer))

    def classify(self, peer: Peer) -> tuple[str | None, tuple]:
        """(level, key): key is ("container", id) for a process inside one, else ("uid", uid)."""
        container = self._container_of(peer)
        key = ("container", container) if container is not None else ("uid", peer.uid)
        return self._level(peer, container), key


# -- JSON views --------------------------------------------------------------


def _plain(value):
    """Make supervisor/ledger values JSON-serialisable."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "to_json") and not isinstance(value, type):
        out = value.to_json()
        if isinstance(out, (str, bytes)):
            out = json.loads(out)
        return _plain(out)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_plain(v) for v in value]
        return sorted(items) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)  # Decimal, paths, enums


def container_json(info) -> dict:
    """ContainerInfo -> the JSON object of GET /v1/containers/{name}."""
    doc = _plain(info)
    doc["limits"] = _plain(info.limits) if info.limits is not None else {}
    return doc


def _sum_io(io) -> dict:
    total = {"rbytes": 0, "wbytes": 0, "rios": 0, "wios": 0}
    for dev in (io or {}).values():
        for k in total:
            total[k] += getattr(dev, k, 0) or 0
    return total


def _limit(limits, field: str):
    return getattr(limits, field, None) if limits is not None else None


def stats_json(info, sample) -> dict:
    """One container's row of /v1/stats from its latest CgroupSample (None: no sample)."""
    limits = info.limits
    quota, period = _limit(limits, "cpu_quota_us"), _limit(limits, "cpu_period_us")
    row = {
        "name": info.name, "id": info.id, "state": info.state, "pid": info.pid,
        "cpu_usage_usec": None, "cpu_user_usec": None, "cpu_system_usec": None,
        "cpu_nr_periods": None, "cpu_nr_throttled": None, "cpu_throttled_usec": None,
        "cpu_limit": (quota / (period or 100000)) if quota else None,
        "memory_current": None, "memory_peak": None,
        "memory_limit": _limit(limits, "memory_max"), "memory_high": _limit(limits, "memory_high"),
        "io_read_bytes": None, "io_write_bytes": None, "io_read_ops": None, "io_write_ops": None,
        "pids_current": None, "pids_limit": _limit(limits, "pids_max"),
        "oom_kills": info.oom_kills,
    }
    if sample is None:
        return row
    cpu = getattr(sample, "cpu", None)
    if cpu is not None:
        row.update(cpu_usage_usec=cpu.usage_usec, cpu_user_usec=cpu.user_usec, cpu_system_usec=cpu.system_usec,
                   cpu_nr_periods=cpu.nr_periods, cpu_nr_throttled=cpu.nr_throttled,
                   cpu_throttled_usec=cpu.throttled_usec)
    row.update(memory_current=getattr(sample, "memory_current", None),
               memory_peak=getattr(sample, "memory_peak", None),
               pids_current=getattr(sample, "pids_current", None))
    io = getattr(sample, "io", None)
    if io is not None:
        t = _sum_io(io)
        row.update(io_read_bytes=t["rbytes"], io_write_bytes=t["wbytes"], io_read_ops=t["rios"], io_write_ops=t["wios"])
    return row


# -- request parsing ---------------------------------------------------------


def _bool_param(key: str, value: str) -> bool:
    v = value.lower()
    if v in ("1", "true", "yes"):
        return True
    if v in ("0", "false", "no", ""):
        return False
    raise HttpError(400, f"query parameter {key}: {value!r} is not a boolean; use 1/0 or true/false")


def _seconds_param(key: str, value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        f = -1.0
    if not (0 <= f <= 86400 * 365):
        raise HttpError(400, f"query parameter {key}: {value!r} is not a number of seconds >= 0")
    return f


def parse_signal(value) -> int:
    """A signal by name (KILL, SIGKILL, kill) or number (1..64) -> its number; UserError otherwise."""
    text = str(value).strip()
    if text.isdigit():
        n = int(text)
        if 1 <= n <= _signal.SIGRTMAX:
            return n
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        sig = getattr(_signal.Signals, name, None) if name.isidentifier() else None
        if isinstance(sig, _signal.Signals):
            return int(sig)
    raise UserError(f"signal: {text!r} is not a signal; use a name like TERM, KILL, HUP or a number 1..{int(_signal.SIGRTMAX)}")


def _signal_param(key: str, value: str) -> int:
    try:
        return parse_signal(value)
    except UserError as e:
        raise HttpError(400, f"query parameter {e}") from None


def _stream_param(key: str, value: str) -> str:
    if value not in ("stdout", "stderr", "all"):
        raise HttpError(400, f"query parameter {key}: {value!r} is not a stream; use stdout, stderr or all")
    return value


def _tail_param(key: str, value: str) -> int:
    if not value.isdigit() or len(value) > 9:
        raise HttpError(400, f"query parameter {key}: {value!r} is not a number of lines; use 0..999999999")
    return int(value)


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise HttpError(400, f"name: {name!r} is not a valid container name; {NAME_ACCEPTED}")
    return name


def limits_from_api(body) -> object:
    """The body of PUT/PATCH .../limits ({"memory": "512M", "cpus": 1.5, ...}) -> runtime Limits.

    Keys are those of runtime.limits.Limits.parse (the same as "limits" in
    POST /v1/containers). Only the keys given change; the others stay as they are.
    """
    from agent.spec import parse_limits

    if not isinstance(body, dict):
        raise HttpError(400, "request body: expected a JSON object of limits, e.g. {\"memory\": \"512M\"}")
    limits = parse_limits(body, "limits")
    if limits.is_empty():
        raise HttpError(400, "limits: no limit given; use e.g. {\"memory\": \"512M\", \"cpus\": \"0.5\"}")
    return limits


# -- the HTTP server ---------------------------------------------------------


def _json_bytes(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


class _LogTail:
    """Reads a growing log file from where it stopped; survives rotation/truncation."""

    def __init__(self, path: str, tail: int | None = None):
        self.path = path
        self.f = None
        self.ino = None
        self.tail = tail  # first open only: start at the last `tail` lines

    def read(self) -> bytes:
        if self.f is None:
            try:
                self.f = open(self.path, "rb")  # noqa: SIM115 - kept open between reads
            except FileNotFoundError:
                self.tail = None  # written from now on: every line of it is new
                return b""
            self.ino = os.fstat(self.f.fileno()).st_ino
            if self.tail is not None:
                from agent.logtail import start_of_last_lines
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


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = socket.SOMAXCONN  # a burst of agentctl calls must not see EAGAIN

    def __init__(self, path: str, api: "ApiServer", gid: int | None):
        self.api = api
        self._gid = gid
        super().__init__(path, _Handler, bind_and_activate=False)

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


class _Handler(api_images.ImageHandlers, api_system.SystemHandlers, api_checkpoint.CheckpointHandlers,
               BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cgroup-agent/" + VERSION
    sys_version = ""
    timeout = 60  # reading a request; a silent client does not hold a thread forever
    server: _Server

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
        body = _json_bytes(obj)
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
        self._frame(EVENT, _json_bytes(obj))

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

    # -- dispatch --

    def _dispatch(self):
        try:
            self._route()
        except HttpError as e:
            self._fail(e.status, str(e), e.headers)
        except NotFound as e:
            self._fail(404, str(e))
        except Conflict as e:
            self._fail(409, str(e))
        except Forbidden as e:
            self._fail(403, str(e))
        except UserError as e:
            self._fail(getattr(e, "status", 400), str(e), reason=getattr(e, "reason", None))
        except (BrokenPipeError, ConnectionResetError):  # the client hung up (agentctl logs -f, then Ctrl-C)
            log.debug("api.client_gone", method=self.command, path=self.path, pid=self.peer.pid)
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 - the server must survive anything
            status, message = _classify(e)
            if status >= 500:
                log.exception("api.internal_error", method=self.command, path=self.path)
            self._fail(status, message)

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

    def _route(self):
        url = urlsplit(self.path)
        raw = url.path
        if not raw.startswith("/"):
            raise HttpError(400, f"request target {self.path[:80]!r} is not a path")
        raw_body = self._read_body()  # first, so that an early error never leaves it unread
        try:
            segs = [unquote(s, errors="strict") for s in raw[1:].split("/")]
        except UnicodeDecodeError:
            raise HttpError(400, "request path: percent-encoding is not valid UTF-8") from None
        handler, params = _match(segs, self.command)
        if self.access is None and self.server.api.access.in_container(self.peer):
            raise HttpError(403, "permission denied: processes inside the agent's containers have no access to its control socket")
        if self.command in ("GET", "HEAD"):
            if self.access is None:
                raise HttpError(403, f"permission denied: uid {self.peer.uid} is not in the agent's read or admin group")
        elif self.access != "admin":
            raise HttpError(403, f"permission denied: uid {self.peer.uid} may only read; changes need root or the agent's admin group")
        query = self._query(url.query, handler)
        body = self._json(raw_body)
        getattr(self, "h_" + handler)(*params, query=query, body=body)

    def _query(self, qs: str, handler: str) -> dict:
        spec = QUERY_PARAMS.get(handler)
        try:
            pairs = parse_qs(qs, keep_blank_values=True, strict_parsing=False, errors="strict", max_num_fields=64)
        except (ValueError, UnicodeDecodeError) as e:
            raise HttpError(400, f"query string: {e}") from None
        if spec is None:  # passed through (usage: the ledger validates)
            return {k: v[-1] for k, v in pairs.items()}
        out = {}
        for key, values in pairs.items():
            if key not in spec:
                accepted = ", ".join(spec) or "none"
                raise HttpError(400, f"query parameter {key!r} is not accepted here; accepted: {accepted}")
            out[key] = spec[key](key, values[-1])
        return out

    def _read_body(self) -> bytes:
        lengths = [v.strip() for h in (self.headers.get_all("Content-Length") or []) for v in h.split(",")]
        if "Transfer-Encoding" in self.headers:
            if lengths:  # which one frames the body? A proxy and we could disagree (request smuggling)
                raise HttpError(400, "request has both Transfer-Encoding and Content-Length; send Content-Length only")
            raise HttpError(411, "Transfer-Encoding is not accepted in requests; send Content-Length")
        if not lengths:
            return b""
        if len(set(lengths)) > 1:
            shown = ", ".join(v[:20] for v in lengths[:4])
            raise HttpError(400, f"Content-Length: conflicting values ({shown}); send one Content-Length")
        raw_len = lengths[0]
        if not raw_len.isdigit():
            raise HttpError(400, f"Content-Length: {raw_len[:40]!r} is not a number")
        length = int(raw_len)
        if length > MAX_BODY:
            raise HttpError(413, f"request body of {length} bytes is too large; the limit is {MAX_BODY} bytes")
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
            raise HttpError(408, f"request body not received within {body_timeout:g} seconds")
        if len(data) < length:
            raise HttpError(400, "request body shorter than Content-Length")
        return data

    @staticmethod
    def _json(data: bytes):
        if not data.strip():
            return None
        try:
            return json.loads(data, parse_constant=_reject_constant)
        except RecursionError:
            raise HttpError(400, "request body: JSON nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise HttpError(400, f"request body is not valid JSON: {e}") from None

    # -- helpers for handlers --

    @property
    def api(self) -> "ApiServer":
        return self.server.api

    @property
    def sup(self):
        return self.api.supervisor

    def _info(self, name: str, result=None):
        """The container view after an action (the supervisor's return value if it is one)."""
        if result is not None and hasattr(result, "cgroup") and hasattr(result, "state"):
            return container_json(result)
        return container_json(self.sup.get(name))

    # -- handlers (h_<route>) --

    def h_health(self, query, body):
        self._send_json(200, {"status": "ok", "version": VERSION, "pid": os.getpid(),
                              "access": self.access, "uid": self.peer.uid,
                              "usage": self.api.ledger is not None})

    def h_list(self, query, body):
        infos = self.sup.containers(all=query.get("all", False))
        self._send_json(200, [container_json(i) for i in infos])

    def h_create(self, query, body):
        if not isinstance(body, dict):
            raise HttpError(400, "request body: expected a JSON object describing the container, e.g. "
                                 "{\"name\": \"web\", \"command\": [\"/bin/sh\"]}")
        body = dict(body)
        detach = body.pop("detach", True)
        if not isinstance(detach, bool):
            raise HttpError(400, f"detach: {detach!r} is not a boolean; use true or false")
        from agent.spec import from_json

        spec = from_json(body, self.api.config, self.api.images)
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
            final = self._pump_logs(name, "all", follow=True)
            final = final or self.sup.get(name)
            if final.state != "exited":  # agentd is stopping: the container lives on (live restore)
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
            raise HttpError(400, "request body: expected a JSON object of limits, e.g. {\"memory\": \"512M\"}")
        limits = limits_from_api(body)
        self.sup.get(name)  # 404 before anything else
        back = self.sup.set_limits(name, limits)
        self._send_json(200, _plain(back) if back is not None else {})

    def h_logs(self, name, query, body):
        self.sup.get(name)  # 404 before the stream starts
        self._start_stream()
        self._pump_logs(name, query.get("stream", "all"), follow=query.get("follow", False), tail=query.get("tail"))
        self._end_stream()

    def _pump_logs(self, name: str, which: str, follow: bool, tail: int | None = None):
        """Send the log files as frames; with follow, until the container exits. Returns the final info."""
        tails = []
        for sid, stream in ((STDOUT, "stdout"), (STDERR, "stderr")):
            if which in (stream, "all"):
                tails.append((sid, _LogTail(self.sup.log_path(name, stream), tail)))
        done = threading.Event()
        final = {}
        if follow:
            threading.Thread(target=self.api.wait_into, args=(name, done, final), daemon=True,
                             name=f"api-wait-{name}").start()
        try:
            while True:
                ended = done.is_set() or not follow or self.api.stopping.is_set()
                moved = False
                for sid, tail in tails:
                    while data := tail.read():
                        self._frame(sid, data)
                        moved = True
                if ended:
                    break
                if not moved:
                    done.wait(LOG_POLL)
        finally:
            for _, tail in tails:
                tail.close()
            done.set()
        return final.get("info")

    def h_wait(self, name, query, body):
        info = self.sup.wait(name, query.get("timeout"))
        self._send_json(200, container_json(info) if info is not None else self._info(name))

    def _snapshot(self):
        collector = self.api.collector
        snap = collector.latest() if collector is not None else None
        if snap is None:
            raise HttpError(503, "no stats yet: the collector has not taken its first sample")
        return snap

    def h_stats_all(self, query, body):
        snap = self._snapshot()
        rows = [stats_json(i, snap.samples.get(i.cgroup)) for i in self.sup.containers(all=query.get("all", False))]
        self._send_json(200, {"taken_at": snap.taken_at, "containers": rows})

    def h_stats_one(self, name, query, body):
        snap = self._snapshot()
        info = self.sup.get(name)
        self._send_json(200, {"taken_at": snap.taken_at, "containers": [stats_json(info, snap.samples.get(info.cgroup))]})

    def h_usage(self, query, body):
        ledger = self.api.ledger
        if ledger is None:
            raise HttpError(503, "usage is not available: this agentd runs without a billing ledger")
        self._send_json(200, _plain(ledger.query(query)))

    def _budgets(self):
        budgets = getattr(self.api, "budgets", None)
        if budgets is None:
            raise HttpError(503, "budgets are not available: this agentd runs without a billing ledger")
        return budgets

    def h_budgets(self, query, body):
        self._send_json(200, {"budgets": self._budgets().list()})

    def h_budget_set(self, query, body):
        self._send_json(200, self._budgets().set(body))

    def h_budget(self, name, query, body):
        self._send_json(200, self._budgets().get(name))

    def h_budget_rm(self, name, query, body):
        self._send_json(200, self._budgets().remove(name))


def _classify(e: Exception) -> tuple[int, str]:
    """Status for exceptions that are not agent.errors: runtime errors a request can meet."""
    try:
        from runtime import errors as rt
    except ImportError:  # pragma: no cover
        return 500, f"internal error: {type(e).__name__}"
    if isinstance(e, rt.LimitError):
        return 400, str(e)
    if isinstance(e, rt.ControllerMissing):
        return 422, f"cannot enforce this limit on this host: {e}"
    if isinstance(e, rt.CgroupGone):
        return 404, f"container cgroup vanished: {e}"
    if isinstance(e, rt.FreezeTimeout):
        return 409, str(e)
    from agent.store import StoreFull
    if isinstance(e, StoreFull):  # the state dir is full: 507 Insufficient Storage, nothing was changed
        return 507, str(e)
    return 500, f"internal error ({type(e).__name__}); see the agentd log"


_NAME = "{name}"
# (path segments, {method: handler}); "{name}" captures a container name.
ROUTES = [
    (("v1", "health"), {"GET": "health"}),
    (("v1", "containers"), {"GET": "list", "POST": "create"}),
    (("v1", "stats"), {"GET": "stats_all"}),
    (("v1", "usage"), {"GET": "usage"}),
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
    *api_images.ROUTES,
    (("v1", "budgets"), {"GET": "budgets", "POST": "budget_set"}),
    (("v1", "budgets", _NAME), {"GET": "budget", "DELETE": "budget_rm"}),
    *api_system.ROUTES,
    *api_checkpoint.ROUTES,
]

QUERY_PARAMS = {
    "health": {}, "create": {}, "inspect": {}, "start": {}, "freeze": {}, "thaw": {}, "limits": {}, "stats_one": {},
    "list": {"all": _bool_param},
    "stats_all": {"all": _bool_param},
    "remove": {"force": _bool_param},
    "stop": {"timeout": _seconds_param},
    "kill": {"signal": _signal_param},
    "logs": {"follow": _bool_param, "stream": _stream_param, "tail": _tail_param},
    "wait": {"timeout": _seconds_param},
    **api_images.QUERY_PARAMS,
    **api_system.QUERY_PARAMS,
    **api_checkpoint.QUERY_PARAMS,
    # "usage": absent -> passed through to ledger.query
    "budgets": {}, "budget_set": {}, "budget": {}, "budget_rm": {},
}


# handlers that answer with a stream (or block): no HEAD for them
_STREAMING = ("logs", "wait")


def _match(segs: list[str], method: str) -> tuple[str, list[str]]:
    for pattern, methods in ROUTES:
        if len(pattern) != len(segs):
            continue
        params = []
        for p, s in zip(pattern, segs):
            if p == _NAME:
                params.append(s)
            elif p != s:
                break
        else:
            head_ok = methods.get("GET") not in (None, *_STREAMING)
            if method == "HEAD" and head_ok:
                method = "GET"  # HEAD is GET without the body (_send_json skips it)
            if method not in methods:
                allow = ", ".join(sorted(set(methods) | ({"HEAD"} if head_ok else set())))
                raise HttpError(405, f"method {method} is not allowed on {'/' + '/'.join(segs)}; allowed: {allow}",
                                {"Allow": allow})
            for p in params:
                check_name(p)
            return methods[method], params
    raise HttpError(404, f"no such endpoint: /{'/'.join(segs)[:200]}; see agent/openapi.json")


def _containers_cgroup(supervisor) -> str | None:
    """R/containers relative to the cgroup2 mount (as /proc/PID/cgroup shows it).

    None only without a cgroup layout (an API over a stand-in supervisor); a
    real one whose containers cgroup cannot be placed is refused: the API never
    serves without the in-container guard."""
    layout = getattr(supervisor, "layout", None)
    if layout is None:
        return None
    path = layout.containers.path
    try:
        from runtime.cgroupfs import find_mount
        mount = find_mount().rstrip("/")
    except Exception as e:  # noqa: BLE001
        raise ApiSetupError(f"cannot find the cgroup2 mount ({e}); refusing to serve without the in-container guard") from None
    if not path.startswith(mount + "/"):
        raise ApiSetupError(f"containers cgroup {path} is not below the cgroup2 mount {mount}; "
                            "refusing to serve without the in-container guard")
    return path[len(mount):]


class ApiServer:
    def __init__(self, config, supervisor, collector=None, ledger=None, images=None):
        self.config = config
        self.images = images
        self.supervisor = supervisor
        self.collector = collector
        self.ledger = ledger
        self._containers_cgroup = _containers_cgroup(supervisor)  # fixed for the life of the server
        self.access = self._build_access(config)
        self.gate = ConnectionGate(config.api.max_connections, config.api.max_connections_per_peer)
        self._peers: dict[socket.socket, tuple] = {}  # admitted connection -> (Peer, access level)
        self._peers_lock = threading.Lock()
        self._refusals = {"logged_at": 0.0, "since": 0}
        for reason in ("total", "peer", "threads"):  # exported at 0 from the start
            selfmetrics.inc("api_connections_refused_total", 0, reason=reason)
        for phase in ("headers", "body"):
            selfmetrics.inc("api_request_timeouts_total", 0, phase=phase)
        selfmetrics.set_gauge("api_connections", 0)
        self.stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.path = config.agent.socket

    def start(self) -> None:
        """Bind the socket (mode 0660, group socket_group) and serve in a background thread."""
        gid = _gid("socket_group", self.config.agent.socket_group)
        parent = os.path.dirname(self.path) or "."
        try:
            os.makedirs(parent, mode=0o755, exist_ok=True)
        except OSError as e:
            raise ApiSetupError(f"agent.socket: cannot create {parent}: {e.strerror}") from None
        server = _Server(self.path, self, gid)
        try:
            server.server_bind()
            server.server_activate()
        except OSError as e:
            server.server_close()
            raise ApiSetupError(f"agent.socket: cannot listen on {self.path}: {e.strerror or e}") from None
        except BaseException:
            server.server_close()
            raise
        self._server = server
        self.stopping.clear()
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="api", daemon=True)
        self._thread.start()
        log.info("api.listening", socket=self.path, socket_group=self.config.agent.socket_group or None,
                 read_group=self.config.agent.read_group or None, admin_group=self.config.agent.admin_group or None)

    def _build_access(self, config) -> Access:
        """The one place an Access is made: always with the containers cgroup (the in-container guard)."""
        return Access(config.agent.admin_group, config.agent.read_group, self._containers_cgroup)

    # -- connections (called from the accept loop and the handler threads) --

    def admit(self, conn: socket.socket) -> bool:
        """Decide in the accept loop whether `conn` gets a thread; a refused one is answered 503 and closed."""
        try:
            peer = peer_credentials(conn)
        except OSError:  # no credentials, no access
            peer = Peer(0, -1, -1, frozenset())
        access = self.access
        level, key = access.classify(peer)
        if peer.uid < 0:
            level = None
        reason = self.gate.admit(conn, key, admin=level == "admin")
        if reason is not None:
            self.refused(conn, reason, key)
            return False
        with self._peers_lock:
            self._peers[conn] = (peer, level)
        selfmetrics.set_gauge("api_connections", self.gate.count())
        return True

    def peer_of(self, conn: socket.socket) -> tuple:
        with self._peers_lock:
            return self._peers.get(conn) or (Peer(0, -1, -1, frozenset()), None)

    def release(self, conn: socket.socket) -> None:
        with self._peers_lock:
            self._peers.pop(conn, None)
        self.gate.release(conn)
        selfmetrics.set_gauge("api_connections", self.gate.count())

    def refused(self, conn: socket.socket, reason: str, key=None) -> None:
        """Count, log (at most one line per 10 s), answer 503 without blocking; the caller closes."""
        selfmetrics.inc("api_connections_refused_total", reason=reason)
        if reason == "peer":
            limit = f"this client already holds {self.gate.max_per_peer} connections ([api] max_connections_per_peer)"
        elif reason == "total":
            limit = f"the agent already serves {self.gate.max_total} connections ([api] max_connections)"
        else:
            limit = "the agent cannot start another thread"
        refuse_now(conn, b"HTTP/1.1 503 Service Unavailable", f"too many connections: {limit}; retry later")
        now = time.monotonic()
        r = self._refusals
        r["since"] += 1
        if now - r["logged_at"] >= 10:
            log.warning("api.connection_refused", reason=reason, peer="/".join(map(str, key or ())),
                        refused_since_last_line=r["since"])
            r["logged_at"], r["since"] = now, 0

    def reload(self, config) -> None:
        """Apply a reloaded config: groups are re-resolved; the socket path and caps cannot change live."""
        access = self._build_access(config)
        gid = _gid("socket_group", config.agent.socket_group)
        if gid is not None and self._server is not None:
            os.chown(self.path, -1, gid)
        self.access = access
        self.config = config

    def stop(self) -> None:
        """Stop accepting requests, end log streams, remove the socket."""
        self.stopping.set()
        server, self._server = self._server, None
        if server is None:
            return
        stopper = threading.Thread(target=server.shutdown, name="api-stop")
        stopper.start()
        try:  # wake the accept loop now instead of at its next poll
            poke = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            poke.settimeout(1)
            poke.connect(self.path)
            poke.close()
        except OSError:
            pass
        stopper.join()
        server.server_close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        log.info("api.stopped", socket=self.path)

    # -- used by handlers --

    def wait_into(self, name: str, done: threading.Event, out: dict) -> None:
        """Wait for a container to exit (in its own thread); set `done` when it did or is gone."""
        try:
            while not done.is_set() and not self.stopping.is_set():
                info = self.supervisor.wait(name, 1.0)
                if info is None or info.state == "exited":
                    out["info"] = info
                    break
                done.wait(0.05)  # never spin if wait() returns early
        except UserError:  # removed meanwhile
            pass
        except Exception:  # noqa: BLE001
            log.exception("api.wait_failed", name=name)
        finally:
            done.set()

    def remove_after_exit(self, name: str) -> None:
        """Auto-removal of an attached --rm container, once it exited (even if its client left)."""
        done, out = threading.Event(), {}
        self.wait_into(name, done, out)
        if self.stopping.is_set() and "info" not in out:
            return
        try:
            self.supervisor.remove(name, force=True)
        except NotFound:
            pass
        except Exception:  # noqa: BLE001
            log.exception("api.auto_remove_failed", name=name)
