"""The control socket's server: who connects, how many, and the server's life.

    api = ApiServer(config, supervisor, collector, ledger)   # agent.api.router: this with the router
    api.start()          # binds config.agent.socket (0660, group socket_group), serves in threads
    api.reload(config)   # SIGHUP: re-resolve read_group / admin_group (the container guard stays)
    api.stop()           # stops accepting, ends streams, removes the socket

What one client may hold is capped (agent/api/limits.py, [api] in the
config): connections in total and per peer (a container, or a uid; host
admins are exempt from the per-peer cap and have the last eighth of the
total kept for them), refused in the accept loop without a thread. The
Access that decides who may do what (agent/api/access.py) is built in one
place, ``_build_access``, always with the containers cgroup.
"""
from __future__ import annotations

import os
import socket
import threading
import time

import structlog

from agent import selfmetrics
from agent.api.access import Access, Peer, containers_cgroup, group_id, peer_credentials
from agent.api.backend import Budgets, Checkpoints, Containers, Images, Stats, Usage
from agent.api.errors import ApiSetupError
from agent.api.http import UnixServer
from agent.api.limits import ConnectionGate, refuse_now
from agent.errors import NotFound, UserError
from agent.model import State

log = structlog.get_logger("agent.api")

selfmetrics.declare("api_connections", "gauge", "Connections to the control socket being served now.")
selfmetrics.declare("api_connections_refused_total", "counter",
                    "Control socket connections closed at accept because a cap was reached, by reason "
                    "(total: [api] max_connections, peer: max_connections_per_peer, threads: no thread).",
                    ("reason",))


class ControlSocket:
    """The control socket's server: connections, caps, access, start/stop/reload.

    ``handler_class`` (the router's request handler) is set by the subclass,
    agent.api.router.ApiServer."""

    handler_class: type
    # The daemon's objects the handlers use, typed by what the API needs of
    # them (agent/api/backend.py). budgets is set by the daemon after
    # construction; checkpoints is made on first use (agent/api/checkpoint.py).
    supervisor: Containers
    collector: Stats | None
    ledger: Usage | None
    images: Images | None
    budgets: Budgets | None
    checkpoints: Checkpoints | None

    def __init__(self, config, supervisor: Containers, collector: Stats | None = None, ledger: Usage | None = None,
                 images: Images | None = None):
        self.config = config
        self.images = images
        self.supervisor = supervisor
        self.collector = collector
        self.ledger = ledger
        self._containers_cgroup = containers_cgroup(supervisor)  # fixed for the life of the server
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
        self._server: UnixServer | None = None
        self._thread: threading.Thread | None = None
        self.path = config.agent.socket

    def start(self) -> None:
        """Bind the socket (mode 0660, group socket_group) and serve in a background thread."""
        gid = group_id("socket_group", self.config.agent.socket_group)
        parent = os.path.dirname(self.path) or "."
        try:
            os.makedirs(parent, mode=0o755, exist_ok=True)
        except OSError as e:
            raise ApiSetupError(f"agent.socket: cannot create {parent}: {e.strerror}") from None
        server = UnixServer(self.path, self, gid, self.handler_class)
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
        gid = group_id("socket_group", config.agent.socket_group)
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
                if info is None or info.state == State.EXITED:
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
