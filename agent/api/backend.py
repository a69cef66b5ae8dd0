"""What the control API needs of the daemon: one typed interface per backend object.

The API (agent/api/) is a router over these. The daemon (agent/daemon/agentd.py)
builds the concrete objects and hands them to ``ApiServer``; the handlers call
nothing on them that is not declared here. tests/unit/test_api_backend.py holds
both ends to it: each concrete class has every member with a compatible
signature, and every call the handlers make on a backend object is declared.

    Containers   agent.supervisor.Supervisor        (ApiServer.supervisor, handler.sup)
    Launcher     agent.launcher.client.LauncherClient   (Containers.launcher: exec, stdin)
    Networks     agent.network.service.NetworkService   (Containers.net, None without networks)
    CgroupLayout agent.supervision.layout.Layout     (Containers.layout: the cgroups it placed)
    UsernsPool   runtime.userns.Pool                 (Containers.userns_pool, None without one)
    Stats        agent.collector.Collector           (ApiServer.collector, may be None)
    StatsSnapshot agent.snapshot.Snapshot            (what Stats.latest() answers)
    Usage        agent.ledger.Ledger                 (ApiServer.ledger, None without a ledger)
    Budgets      agent.budgets.Budgets               (ApiServer.budgets, None without a ledger)
    Images       agent.images.service.ImageService   (ApiServer.images, None when disabled)
    Checkpoints  agent.checkpoint.service.CheckpointService (ApiServer.checkpoints, made on first use)

Only typing and agent.model here: the interface costs the API no import.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol

from agent.model import ContainerInfo


class Launcher(Protocol):
    def exec(self, container_id: str, argv: list[str], env: dict | None = None, cwd: str | None = None,
             user: str | None = None, tty: bool = False, stdin: bool = False,
             tty_size: list | None = None) -> tuple[int, list[int]]:
        """Start a process in a running container: (host pid, descriptors the caller closes)."""

    def take_stdin(self, container_id: str) -> int:
        """The write end of a container's stdin (the caller owns it)."""


class Networks(Protocol):
    def networks(self) -> list[dict]: ...

    def create_network(self, name, subnet) -> dict: ...

    def network(self, name) -> dict: ...

    def remove_network(self, name) -> dict: ...


class CgroupNode(Protocol):
    path: str


class CgroupLayout(Protocol):
    root: CgroupNode
    containers: CgroupNode      # the in-container guard is built from its path
    enabled: frozenset
    missing: dict               # controller -> reason


class UsernsPool(Protocol):
    source: str

    @property
    def blocks(self) -> int: ...

    def describe(self) -> str: ...


class Containers(Protocol):
    """The supervisor: containers' lifecycle, their logs and events."""

    launcher: Launcher
    net: Networks | None
    layout: CgroupLayout
    userns_pool: UsernsPool | None

    def get(self, name: str) -> ContainerInfo: ...

    def containers(self, all: bool = True) -> list[ContainerInfo]: ...

    def create(self, spec: Any) -> ContainerInfo:
        """``spec``: an agent.spec.ContainerSpec."""

    def start(self, name: str) -> ContainerInfo: ...

    def stop(self, name: str, timeout: float | None = None) -> ContainerInfo: ...

    def kill(self, name: str, signal: Any = "KILL") -> ContainerInfo: ...

    def freeze(self, name: str) -> ContainerInfo: ...

    def thaw(self, name: str) -> ContainerInfo: ...

    def rename(self, old: str, new: str) -> ContainerInfo: ...

    def remove(self, name: str, force: bool = False) -> ContainerInfo: ...

    def set_limits(self, name: str, limits) -> Any:
        """``limits``: a runtime.limits.Limits; answers what was applied (None: nothing to show)."""

    def wait(self, name: str, timeout: float | None = None) -> ContainerInfo: ...

    def log_path(self, name: str, stream: str = "stdout") -> str: ...

    def events(self, name: str | None = None, since: int = 0, limit: int = 1000) -> list[dict]: ...


class StatsSnapshot(Protocol):
    taken_at: float
    samples: Mapping[str, Any]      # absolute cgroup path -> runtime.stats.CgroupSample


class Stats(Protocol):
    def latest(self) -> StatsSnapshot | None: ...


class Usage(Protocol):
    def query(self, params: dict) -> dict: ...


class Budgets(Protocol):
    def list(self) -> list[dict]: ...

    def get(self, name: str) -> dict: ...

    def set(self, body: dict) -> dict: ...

    def remove(self, name: str) -> dict: ...


class Images(Protocol):
    in_use: Callable[[], set]       # manifest digests of existing containers

    def list(self) -> list[dict]: ...

    def inspect(self, text: str) -> dict: ...

    def pull(self, text: str, insecure: bool = False, platform: str | None = None, progress=None): ...

    def load(self, path: str) -> list[dict]: ...

    def save(self, text: str, path: str) -> dict: ...

    def remove(self, text: str, force: bool = False) -> list[str]: ...

    def prune(self) -> dict: ...

    def login(self, host: str, user: str, password: str, insecure: bool = False) -> None: ...

    def logout(self, host: str) -> None: ...


class Checkpoints(Protocol):
    def checkpoint(self, name: str, leave_running: bool = False, export: str | None = None,
                   tcp_established: bool = False) -> dict: ...

    def list(self) -> list[dict]: ...

    def remove(self, name: str) -> dict: ...

    def restore(self, name: str) -> dict: ...

    def import_(self, path: str, name: str | None = None) -> dict: ...


# Each interface and the class the daemon builds for it (a dotted name: this
# module imports none of them); the unit test checks one against the other.
IMPLEMENTED_BY = {
    Containers: "agent.supervisor.Supervisor",
    Launcher: "agent.launcher.client.LauncherClient",
    Networks: "agent.network.service.NetworkService",
    CgroupLayout: "agent.supervision.layout.Layout",
    CgroupNode: "runtime.cgroupfs.Cgroup",
    UsernsPool: "runtime.userns.Pool",
    Stats: "agent.collector.Collector",
    StatsSnapshot: "agent.snapshot.Snapshot",
    Usage: "agent.ledger.Ledger",
    Budgets: "agent.budgets.Budgets",
    Images: "agent.images.service.ImageService",
    Checkpoints: "agent.checkpoint.service.CheckpointService",
}
