"""The Config dataclass and one frozen dataclass per section: durations
are float seconds, sizes int bytes, prices Decimal. No field has a default
here: every default is in agent/default.toml, once, and the loader fills
every field from it."""
from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal


@dataclass(frozen=True)
class AgentSection:
    host: str
    state_dir: str
    cgroup_root: str
    socket: str
    socket_group: str
    read_group: str
    admin_group: str
    metrics_listen: str
    log_level: str
    stop_containers_on_exit: bool
    stop_timeout: float
    events_max: int


@dataclass(frozen=True)
class CollectorSection:
    interval: float
    watch_roots: tuple
    label_allowlist: tuple
    enable: tuple       # optional metric sets (OPTIONAL_METRICS)


@dataclass(frozen=True)
class BillingSection:
    period: float
    retention: float
    currency: str
    basis: str
    price_cpu_core_hour: Decimal
    price_memory_gib_hour: Decimal
    price_io_read_gib: Decimal
    price_io_write_gib: Decimal
    price_disk_gib_hour: Decimal   # disk space of an image container's rootfs (upper dir)
    price_net_gib: Decimal         # bytes transmitted (egress) from its network namespace


@dataclass(frozen=True)
class PostgresSinkSection:
    dsn: str
    batch: int
    interval: float


@dataclass(frozen=True)
class SecuritySection:
    allow_sensitive_binds: bool
    userns_range: str   # "START:LENGTH": host ids for containers' user namespaces


@dataclass(frozen=True)
class LogsSection:
    max_bytes: int


@dataclass(frozen=True)
class ApiSection:
    max_connections: int
    max_connections_per_peer: int
    header_timeout: float
    body_timeout: float


@dataclass(frozen=True)
class ImagesSection:
    certs_dir: str   # HOST[:PORT]/ca.crt: a registry's own CA


@dataclass(frozen=True)
class BudgetsSection:
    # ((name, ((key, value), ...)), ...): the [budgets.NAME] tables, checked
    # by agent/budgets.py
    entries: tuple


@dataclass(frozen=True)
class NetworkSection:
    default: str     # the network of rootfs and image containers that name none
    bridge: str      # "" = cga<tag> (tag: 8 hex digits of the state dir's SHA-256)
    subnet: str      # "" = a /20 of 10.128.0.0/10 picked by the tag
    nft_table: str   # "" = cgroup_agent_<tag>
    files_dir: str   # "" = /run/cgroup-agent-net-<tag> (containers' /etc/hosts, resolv.conf)


@dataclass(frozen=True)
class Config:
    agent: AgentSection
    collector: CollectorSection
    billing: BillingSection
    sink_postgres: PostgresSinkSection | None
    security: SecuritySection
    logs: LogsSection
    api: ApiSection
    source: str   # the file it came from ("" = embedded defaults only)
    images: ImagesSection
    budgets: BudgetsSection
    network: NetworkSection

    def replace(self, **sections) -> "Config":
        return replace(self, **sections)
