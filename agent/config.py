"""agentd configuration: TOML file over the embedded defaults (agent/default.toml).

`load_config(path | None, overrides) -> Config`. Every value is checked;
an unknown key or a bad value raises ConfigError with one line naming the
key, e.g. `collector.interval: "fast" is not a duration; use e.g. 200ms, 2s, 1m`.
Durations become float seconds, sizes int bytes, prices Decimal.
"""
from __future__ import annotations

import os
import re
import socket as _socket
import tomllib
from dataclasses import dataclass, fields, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable

from runtime.controllers.values import parse_size as _parse_size
from runtime.errors import LimitError

DEFAULT_TOML = Path(__file__).with_name("default.toml")


class ConfigError(ValueError):
    """A config file or override is wrong; str() is one line naming the key."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


# ---------------------------------------------------------------- value parsers

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """"200ms", "2s", "1m", "1h", "30d" (or a bare number of seconds) -> seconds."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError
        return float(value)
    if not isinstance(value, str):
        raise ValueError
    m = _DURATION_RE.match(value)
    if not m:
        raise ValueError
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_size(value: Any) -> int:
    """"10M", "512K", "1.5G", "4096" -> bytes (binary multiples); ValueError otherwise.

    The project's one size rule (runtime.controllers.values.parse_size),
    without "max": a unit may follow a decimal number, a bare number is
    whole bytes."""
    try:
        return _parse_size(value, "size", allow_max=False)
    except LimitError:
        raise ValueError(f"{value!r} is not a size") from None


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    return repr(value)


# ---------------------------------------------------------------- sections


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
    enable: tuple = ()   # optional metric sets (OPTIONAL_METRICS), off by default


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
    price_disk_gib_hour: Decimal = Decimal(0)   # disk space of an image container's rootfs (upper dir)
    price_net_gib: Decimal = Decimal(0)         # bytes transmitted (egress) from its network namespace


@dataclass(frozen=True)
class PostgresSinkSection:
    dsn: str
    batch: int
    interval: float


@dataclass(frozen=True)
class SecuritySection:
    allow_sensitive_binds: bool
    userns_range: str = ""  # "START:LENGTH": host ids for containers' user namespaces


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
    certs_dir: str = "/etc/cgroup-agent/certs.d"   # HOST[:PORT]/ca.crt: a registry's own CA


@dataclass(frozen=True)
class BudgetsSection:
    # ((name, ((key, value), ...)), ...): the [budgets.NAME] tables, checked
    # by agent/budgets.py
    entries: tuple = ()


@dataclass(frozen=True)
class NetworkSection:
    default: str = "bridge"   # the network of rootfs and image containers that name none
    bridge: str = ""          # "" = cga<tag> (tag: 8 hex digits of the state dir's SHA-256)
    subnet: str = ""          # "" = a /20 of 10.128.0.0/10 picked by the tag
    nft_table: str = ""       # "" = cgroup_agent_<tag>
    files_dir: str = ""       # "" = /run/cgroup-agent-net-<tag> (containers' /etc/hosts, resolv.conf)


@dataclass(frozen=True)
class Config:
    agent: AgentSection
    collector: CollectorSection
    billing: BillingSection
    sink_postgres: PostgresSinkSection | None
    security: SecuritySection
    logs: LogsSection
    api: ApiSection
    source: str = ""  # the file it came from ("" = embedded defaults only)
    images: ImagesSection = ImagesSection()
    budgets: BudgetsSection = BudgetsSection()
    network: NetworkSection = NetworkSection()

    def replace(self, **sections) -> "Config":
        return replace(self, **sections)


# ---------------------------------------------------------------- field checkers
# Each checker takes (key, value) and returns the parsed value or raises ConfigError.

Checker = Callable[[str, Any], Any]


def _string(key: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ConfigError(key, f"{_fmt(v)} is not a string")
    if "\x00" in v or "\n" in v:
        raise ConfigError(key, f"{_fmt(v)} contains a control character")
    return v


def _path(allow_empty: bool) -> Checker:
    def check(key: str, v: Any) -> str:
        s = _string(key, v)
        if not s:
            if allow_empty:
                return ""
            raise ConfigError(key, "must not be empty; use a path such as /var/lib/cgroup-agent")
        return os.path.abspath(s)
    return check


def _cgroup_path(key: str, v: Any) -> str:
    s = _string(key, v)
    if s and not s.startswith("/"):
        raise ConfigError(key, f"{_fmt(s)} is not an absolute path; use a cgroupfs path such as "
                               "/sys/fs/cgroup/cgroup-agent, or \"\" for the agent's own delegated cgroup")
    if ".." in s.split("/"):
        raise ConfigError(key, f"{_fmt(s)} must not contain ..")
    return os.path.normpath(s) if s else ""


def _group(key: str, v: Any) -> str:
    s = _string(key, v)
    if s and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|\d+", s):
        raise ConfigError(key, f"{_fmt(s)} is not a group name or gid")
    return s


def _userns_range(key: str, v: Any) -> str:
    from runtime.userns import UsernsError, parse_range
    s = _string(key, v)
    try:
        parse_range(s, key)
    except UsernsError as e:
        raise ConfigError("", str(e)) from None
    return s


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(key, f"{_fmt(v)} is not a boolean; use true or false")
    return v


def _duration(min_seconds: float = 0.0, zero_ok: bool = False) -> Checker:
    def check(key: str, v: Any) -> float:
        try:
            d = parse_duration(v)
        except ValueError:
            raise ConfigError(key, f"{_fmt(v)} is not a duration; use e.g. 200ms, 2s, 1m") from None
        if d == 0 and zero_ok:
            return d
        if d <= 0 or d < min_seconds:
            lowest = f"{min_seconds:g}s" if min_seconds else "more than 0"
            raise ConfigError(key, f"{_fmt(v)} is too short; use at least {lowest}")
        return d
    return check


def _size(key: str, v: Any) -> int:
    try:
        n = parse_size(v)
    except ValueError:
        raise ConfigError(key, f"{_fmt(v)} is not a size; use e.g. 512K, 10M, 1G") from None
    if n <= 0:
        raise ConfigError(key, f"{_fmt(v)} must be more than 0")
    return n


def _choice(*choices: str) -> Checker:
    def check(key: str, v: Any) -> str:
        if not isinstance(v, str) or v not in choices:
            raise ConfigError(key, f"{_fmt(v)} is not one of {', '.join(choices)}")
        return v
    return check


def _string_list(key: str, v: Any) -> tuple:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(key, f"{_fmt(v)} is not a list of strings; use e.g. [\"a\", \"b\"]")
    return tuple(v)


# Optional metric sets, named as cAdvisor's --enable_metrics names them.
OPTIONAL_METRICS = ("process", "cpuLoad", "hugetlb")


def _metric_sets(key: str, v: Any) -> tuple:
    names = _string_list(key, v)
    for n in names:
        if n not in OPTIONAL_METRICS:
            raise ConfigError(key, f"{_fmt(n)} is not an optional metric set; use any of "
                                   f"{', '.join(OPTIONAL_METRICS)}")
    return tuple(dict.fromkeys(names))


def _money(key: str, v: Any) -> Decimal:
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise ConfigError(key, f"{_fmt(v)} is not a price; use a decimal string such as \"0.031\"")
    try:
        d = Decimal(str(v))
    except InvalidOperation:
        raise ConfigError(key, f"{_fmt(v)} is not a price; use a decimal string such as \"0.031\"") from None
    if not d.is_finite() or d < 0:
        raise ConfigError(key, f"{_fmt(v)} is not a price; use a decimal >= 0 such as \"0.031\"")
    return d


def _currency(key: str, v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[A-Z]{3}", v):
        raise ConfigError(key, f"{_fmt(v)} is not a currency code; use ISO 4217 such as USD, EUR")
    return v


def _int_at_least(lowest: int) -> Checker:
    def check(key: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < lowest:
            raise ConfigError(key, f"{_fmt(v)} is not accepted; use an integer of at least {lowest}")
        return v
    return check


def _listen(key: str, v: Any) -> str:
    s = _string(key, v)
    if s == "":
        return s
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535) or not host:
        raise ConfigError(key, f"{_fmt(s)} is not HOST:PORT; use e.g. 127.0.0.1:9101 (\"\" disables)")
    return s


def _hostname(key: str, v: Any) -> str:
    s = _string(key, v)
    if s and not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", s):
        raise ConfigError(key, f"{_fmt(s)} is not a host name")
    return s


def _dsn(key: str, v: Any) -> str:
    s = _string(key, v)
    if not s:
        raise ConfigError(key, "must not be empty; remove [sink.postgres] to disable shipping")
    return s


def _ifname(key: str, v: Any) -> str:
    if not isinstance(v, str) or (v and not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", v)):
        raise ConfigError(key, f"{_fmt(v)} is not an interface name; use 1-15 of [A-Za-z0-9_.-], or \"\" for the default")
    return v


def _subnet(key: str, v: Any) -> str:
    import ipaddress
    if v == "":
        return v
    try:
        return str(ipaddress.IPv4Network(v, strict=True))
    except (ValueError, TypeError):
        raise ConfigError(key, f"{_fmt(v)} is not an IPv4 CIDR like 10.88.0.0/16 (host bits zero)") from None


def _nft_table(key: str, v: Any) -> str:
    if not isinstance(v, str) or (v and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", v)):
        raise ConfigError(key, f"{_fmt(v)} is not an nftables table name; use [A-Za-z][A-Za-z0-9_]*, or \"\"")
    return v


SCHEMA: dict[str, dict[str, Checker]] = {
    "agent": {
        "host": _hostname,
        "state_dir": _path(False),
        "cgroup_root": _cgroup_path,
        "socket": _path(False),
        "socket_group": _group,
        "read_group": _group,
        "admin_group": _group,
        "metrics_listen": _listen,
        "log_level": _choice("debug", "info", "warning", "error"),
        "stop_containers_on_exit": _bool,
        "stop_timeout": _duration(zero_ok=True),
        "events_max": _int_at_least(100),
    },
    "collector": {
        "interval": _duration(min_seconds=0.01),
        "watch_roots": _string_list,
        "label_allowlist": _string_list,
        "enable": _metric_sets,
    },
    "billing": {
        "period": _duration(min_seconds=1),
        "retention": _duration(min_seconds=1),
        "currency": _currency,
        "basis": _choice("usage", "reserved", "max"),
        "price_cpu_core_hour": _money,
        "price_memory_gib_hour": _money,
        "price_io_read_gib": _money,
        "price_io_write_gib": _money,
        "price_disk_gib_hour": _money,
        "price_net_gib": _money,
    },
    "sink.postgres": {
        "dsn": _dsn,
        "batch": _int_at_least(1),
        "interval": _duration(min_seconds=0.01),
    },
    "security": {"allow_sensitive_binds": _bool, "userns_range": _userns_range},
    "logs": {"max_bytes": _size},
    "api": {
        "max_connections": _int_at_least(1),
        "max_connections_per_peer": _int_at_least(1),
        "header_timeout": _duration(min_seconds=0.01),
        "body_timeout": _duration(min_seconds=0.01),
    },
    "images": {"certs_dir": _path(allow_empty=True)},
    "network": {"default": _choice("bridge", "none", "host"), "bridge": _ifname, "subnet": _subnet,
                "nft_table": _nft_table, "files_dir": _path(allow_empty=True)},
}

SINK_DEFAULTS = {"batch": 500, "interval": "5s"}


# ---------------------------------------------------------------- loading


def _flatten(doc: dict) -> dict[str, dict[str, Any]]:
    """Turn the TOML document into {section: {key: value}}, rejecting unknown keys."""
    out: dict[str, dict[str, Any]] = {}
    for top, body in doc.items():
        if top == "budgets":
            out["budgets"] = _budget_tables(body)
            continue
        if top == "sink":
            if not isinstance(body, dict):
                raise ConfigError("sink", "must be a table such as [sink.postgres]")
            for sub, sbody in body.items():
                name = f"sink.{sub}"
                if name not in SCHEMA:
                    raise ConfigError(name, "unknown section; known sinks: postgres")
                if not isinstance(sbody, dict):
                    raise ConfigError(name, "must be a table")
                out[name] = dict(sbody)
            continue
        if top not in SCHEMA:
            known = ", ".join(sorted({s.split(".")[0] for s in SCHEMA} | {"budgets"}))
            raise ConfigError(top, f"unknown section; known: {known}")
        if not isinstance(body, dict):
            raise ConfigError(top, f"must be a table [{top}]")
        out[top] = dict(body)
    for section, body in out.items():
        if section == "budgets":
            continue
        for key in body:
            if key not in SCHEMA[section]:
                known = ", ".join(SCHEMA[section])
                raise ConfigError(f"{section}.{key}", f"unknown key; known keys of [{section}]: {known}")
    return out


def _budget_tables(body: Any) -> dict[str, tuple]:
    """[budgets.NAME] tables, kept as given: agent/budgets.py owns their
    rules and checks them (agentd --check, start, reload); here only their
    shape. Each becomes a hashable tuple of (key, value) pairs."""
    if not isinstance(body, dict):
        raise ConfigError("budgets", "must hold tables such as [budgets.team-a]")
    out = {}
    for name, table in body.items():
        if not isinstance(table, dict):
            raise ConfigError(f"budgets.{name}", "must be a table [budgets.NAME] with match, limit, per, action")
        out[name] = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in table.items()))
    return out


def _read_toml(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("", f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError("", f"{path}: is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError("", f"{path}: permission denied") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError("", f"{path}: not valid UTF-8") from None


def _split_override(key: str) -> tuple[str, str]:
    """Overrides may say "agent.state_dir" or just "state_dir" (an [agent] key)."""
    if "." in key:
        section, _, name = key.rpartition(".")
    else:
        section, name = "agent", key
    if section not in SCHEMA:
        raise ConfigError(key, "unknown section")
    if name not in SCHEMA[section]:
        raise ConfigError(key, f"unknown key; known keys of [{section}]: {', '.join(SCHEMA[section])}")
    return section, name


def _check_label_allowlist(keys: tuple) -> None:
    """Two allow-listed keys must never become the same metric label (that breaks every scrape)."""
    from agent.labels import LABEL_KEY_ACCEPTED, is_label_key, metric_label_name

    seen: dict[str, str] = {}
    for k in keys:
        if not is_label_key(k):
            raise ConfigError("collector.label_allowlist", f"{_fmt(k)} is not a label key; {LABEL_KEY_ACCEPTED}")
        name = metric_label_name(k)
        if name in seen:
            what = "is listed twice" if seen[name] == k else f"and {_fmt(k)} both become {name}"
            raise ConfigError("collector.label_allowlist", f"{_fmt(seen[name])} {what}; keep one of them")
        seen[name] = k


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> Config:
    """Embedded defaults, then the file at `path`, then `overrides` (None values ignored)."""
    raw = _flatten(tomllib.loads(DEFAULT_TOML.read_text()))
    raw.pop("sink.postgres", None)
    budgets: dict[str, tuple] = {}
    if path is not None:
        for section, body in _flatten(_read_toml(os.fspath(path))).items():
            if section == "budgets":
                budgets = body
                continue
            raw.setdefault(section, {}).update(body)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        section, name = _split_override(key)
        raw.setdefault(section, {})[name] = value

    parsed: dict[str, dict[str, Any]] = {}
    for section, body in raw.items():
        if section == "sink.postgres":
            body = {**SINK_DEFAULTS, **body}
            if "dsn" not in body:
                raise ConfigError("sink.postgres.dsn", "missing; set a PostgreSQL DSN or remove [sink.postgres]")
        parsed[section] = {k: SCHEMA[section][k](f"{section}.{k}", v) for k, v in body.items()}

    _check_label_allowlist(parsed["collector"]["label_allowlist"])
    agent = parsed["agent"]
    agent.setdefault("host", "")
    if not agent["host"]:
        agent["host"] = _socket.gethostname()
    return Config(
        agent=AgentSection(**agent),
        collector=CollectorSection(**parsed["collector"]),
        billing=BillingSection(**parsed["billing"]),
        sink_postgres=PostgresSinkSection(**parsed["sink.postgres"]) if "sink.postgres" in parsed else None,
        security=SecuritySection(**parsed["security"]),
        logs=LogsSection(**parsed["logs"]),
        api=ApiSection(**parsed["api"]),
        source=os.path.abspath(os.fspath(path)) if path is not None else "",
        images=ImagesSection(**parsed.get("images", {})),
        budgets=BudgetsSection(entries=tuple(sorted(budgets.items()))),
        network=NetworkSection(**parsed.get("network", {})),
    )


def default_config(**agent_overrides) -> Config:
    """The embedded defaults with some [agent] keys replaced (handy for tests)."""
    return load_config(None, agent_overrides)


def diff_keys(old: Config, new: Config) -> list[str]:
    """Dotted keys whose value differs between two configs (for SIGHUP reload logs)."""
    changed = []
    for f in fields(Config):
        if f.name == "source":
            continue
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a == b:
            continue
        if a is None or b is None:
            changed.append(f.name)
            continue
        for sf in fields(a):
            if getattr(a, sf.name) != getattr(b, sf.name):
                changed.append(f"{f.name}.{sf.name}")
    return changed
