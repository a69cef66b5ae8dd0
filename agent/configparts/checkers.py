"""One checker per kind of config key: (key, value) -> the parsed value, or
ConfigError with one line naming the key and what is accepted."""
from __future__ import annotations

import os
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from agent.configparts.values import ConfigError, fmt, parse_duration, parse_size
from runtime.rules import HOSTNAME_RE

# Each checker takes (key, value) and returns the parsed value or raises ConfigError.

Checker = Callable[[str, Any], Any]


def string(key: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ConfigError(key, f"{fmt(v)} is not a string")
    if "\x00" in v or "\n" in v:
        raise ConfigError(key, f"{fmt(v)} contains a control character")
    return v


def path(allow_empty: bool) -> Checker:
    def check(key: str, v: Any) -> str:
        s = string(key, v)
        if not s:
            if allow_empty:
                return ""
            raise ConfigError(key, "must not be empty; use a path such as /var/lib/cgroup-agent")
        return os.path.abspath(s)
    return check


def cgroup_path(key: str, v: Any) -> str:
    s = string(key, v)
    if s and not s.startswith("/"):
        raise ConfigError(key, f"{fmt(s)} is not an absolute path; use a cgroupfs path such as "
                               "/sys/fs/cgroup/cgroup-agent, or \"\" for the agent's own delegated cgroup")
    if ".." in s.split("/"):
        raise ConfigError(key, f"{fmt(s)} must not contain ..")
    return os.path.normpath(s) if s else ""


def group(key: str, v: Any) -> str:
    s = string(key, v)
    if s and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|\d+", s):
        raise ConfigError(key, f"{fmt(s)} is not a group name or gid")
    return s


def userns_range(key: str, v: Any) -> str:
    from runtime.userns import UsernsError, parse_range
    s = string(key, v)
    try:
        parse_range(s, key)
    except UsernsError as e:
        raise ConfigError("", str(e)) from None
    return s


def boolean(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(key, f"{fmt(v)} is not a boolean; use true or false")
    return v


def duration(min_seconds: float = 0.0, zero_ok: bool = False) -> Checker:
    def check(key: str, v: Any) -> float:
        try:
            d = parse_duration(v)
        except ValueError:
            raise ConfigError(key, f"{fmt(v)} is not a duration; use e.g. 200ms, 2s, 1m") from None
        if d == 0 and zero_ok:
            return d
        if d <= 0 or d < min_seconds:
            lowest = f"{min_seconds:g}s" if min_seconds else "more than 0"
            raise ConfigError(key, f"{fmt(v)} is too short; use at least {lowest}")
        return d
    return check


def size(key: str, v: Any) -> int:
    try:
        n = parse_size(v)
    except ValueError:
        raise ConfigError(key, f"{fmt(v)} is not a size; use e.g. 512K, 10M, 1G") from None
    if n <= 0:
        raise ConfigError(key, f"{fmt(v)} must be more than 0")
    return n


def choice(*choices: str) -> Checker:
    def check(key: str, v: Any) -> str:
        if not isinstance(v, str) or v not in choices:
            raise ConfigError(key, f"{fmt(v)} is not one of {', '.join(choices)}")
        return v
    return check


def string_list(key: str, v: Any) -> tuple:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(key, f"{fmt(v)} is not a list of strings; use e.g. [\"a\", \"b\"]")
    return tuple(v)


# Optional metric sets, named as cAdvisor's --enable_metrics names them.
OPTIONAL_METRICS = ("process", "cpuLoad", "hugetlb")


def metric_sets(key: str, v: Any) -> tuple:
    names = string_list(key, v)
    for n in names:
        if n not in OPTIONAL_METRICS:
            raise ConfigError(key, f"{fmt(n)} is not an optional metric set; use any of "
                                   f"{', '.join(OPTIONAL_METRICS)}")
    return tuple(dict.fromkeys(names))


def money(key: str, v: Any) -> Decimal:
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise ConfigError(key, f"{fmt(v)} is not a price; use a decimal string such as \"0.031\"")
    try:
        d = Decimal(str(v))
    except InvalidOperation:
        raise ConfigError(key, f"{fmt(v)} is not a price; use a decimal string such as \"0.031\"") from None
    if not d.is_finite() or d < 0:
        raise ConfigError(key, f"{fmt(v)} is not a price; use a decimal >= 0 such as \"0.031\"")
    return d


def currency(key: str, v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[A-Z]{3}", v):
        raise ConfigError(key, f"{fmt(v)} is not a currency code; use ISO 4217 such as USD, EUR")
    return v


def int_at_least(lowest: int) -> Checker:
    def check(key: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < lowest:
            raise ConfigError(key, f"{fmt(v)} is not accepted; use an integer of at least {lowest}")
        return v
    return check


def listen(key: str, v: Any) -> str:
    s = string(key, v)
    if s == "":
        return s
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535) or not host:
        raise ConfigError(key, f"{fmt(s)} is not HOST:PORT; use e.g. 127.0.0.1:9101 (\"\" disables)")
    return s


DNS_NAME_MAX = 253


def hostname(key: str, v: Any) -> str:
    """agent.host: the one host-name rule (runtime.rules.HOSTNAME_RE, RFC
    1123), up to a DNS name's 253 characters (a container's own host name
    stops at the kernel's 64)."""
    s = string(key, v)
    if s and (len(s) > DNS_NAME_MAX or not HOSTNAME_RE.fullmatch(s)):
        raise ConfigError(key, f"{fmt(s)} is not a host name; use dot-separated labels of letters, digits and "
                               f"inner hyphens (RFC 1123), at most {DNS_NAME_MAX} characters")
    return s


def dsn(key: str, v: Any) -> str:
    s = string(key, v)
    if not s:
        raise ConfigError(key, "must not be empty; remove [sink.postgres] to disable shipping")
    return s


def ifname(key: str, v: Any) -> str:
    if not isinstance(v, str) or (v and not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", v)):
        raise ConfigError(key, f"{fmt(v)} is not an interface name; use 1-15 of [A-Za-z0-9_.-], or \"\" for the default")
    return v


def subnet(key: str, v: Any) -> str:
    import ipaddress
    if v == "":
        return v
    try:
        return str(ipaddress.IPv4Network(v, strict=True))
    except (ValueError, TypeError):
        raise ConfigError(key, f"{fmt(v)} is not an IPv4 CIDR like 10.88.0.0/16 (host bits zero)") from None


def nft_table(key: str, v: Any) -> str:
    if not isinstance(v, str) or (v and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", v)):
        raise ConfigError(key, f"{fmt(v)} is not an nftables table name; use [A-Za-z][A-Za-z0-9_]*, or \"\"")
    return v
