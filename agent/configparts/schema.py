"""Which keys each config section has and the checker of each (the
embedded agent/default.toml lists them with their defaults), and the checks
that span keys."""
from __future__ import annotations

from agent.configparts import checkers as c
from agent.configparts.checkers import Checker
from agent.configparts.values import ConfigError, fmt
from agent.labels import LABEL_KEY_ACCEPTED, is_label_key, metric_label_name

SCHEMA: dict[str, dict[str, Checker]] = {
    "agent": {
        "host": c.hostname,
        "state_dir": c.path(False),
        "cgroup_root": c.cgroup_path,
        "socket": c.path(False),
        "socket_group": c.group,
        "read_group": c.group,
        "admin_group": c.group,
        "metrics_listen": c.listen,
        "log_level": c.choice("debug", "info", "warning", "error"),
        "stop_containers_on_exit": c.boolean,
        "stop_timeout": c.duration(zero_ok=True),
        "events_max": c.int_at_least(100),
    },
    "collector": {
        "interval": c.duration(min_seconds=0.01),
        "watch_roots": c.string_list,
        "label_allowlist": c.string_list,
        "enable": c.metric_sets,
    },
    "billing": {
        "period": c.duration(min_seconds=1),
        "retention": c.duration(min_seconds=1),
        "currency": c.currency,
        "basis": c.choice("usage", "reserved", "max"),
        "price_cpu_core_hour": c.money,
        "price_memory_gib_hour": c.money,
        "price_io_read_gib": c.money,
        "price_io_write_gib": c.money,
        "price_disk_gib_hour": c.money,
        "price_net_gib": c.money,
    },
    "sink.postgres": {
        "dsn": c.dsn,
        "batch": c.int_at_least(1),
        "interval": c.duration(min_seconds=0.01),
    },
    "security": {"allow_sensitive_binds": c.boolean, "userns_range": c.userns_range},
    "logs": {"max_bytes": c.size},
    "api": {
        "max_connections": c.int_at_least(1),
        "max_connections_per_peer": c.int_at_least(1),
        "header_timeout": c.duration(min_seconds=0.01),
        "body_timeout": c.duration(min_seconds=0.01),
    },
    "images": {"certs_dir": c.path(allow_empty=True)},
    "network": {"default": c.choice("bridge", "none", "host"), "bridge": c.ifname, "subnet": c.subnet,
                "nft_table": c.nft_table, "files_dir": c.path(allow_empty=True)},
}

SINK_DEFAULTS = {"batch": 500, "interval": "5s"}


def check_label_allowlist(keys: tuple) -> None:
    """Two allow-listed keys must never become the same metric label (that breaks every scrape)."""
    seen: dict[str, str] = {}
    for k in keys:
        if not is_label_key(k):
            raise ConfigError("collector.label_allowlist", f"{fmt(k)} is not a label key; {LABEL_KEY_ACCEPTED}")
        name = metric_label_name(k)
        if name in seen:
            what = "is listed twice" if seen[name] == k else f"and {fmt(k)} both become {name}"
            raise ConfigError("collector.label_allowlist", f"{fmt(seen[name])} {what}; keep one of them")
        seen[name] = k
