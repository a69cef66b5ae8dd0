"""One Limits value: parse what people type, render cgroup files, read back.

Conventions of a ``Limits`` value:

- ``None``: not set (the cgroup file is left as it is, ``files()`` omits it).
- ``MAX`` (the string "max"): explicitly unlimited.
- sizes are bytes (int), cpu quota/period are µs, cpusets are canonical
  kernel lists ("0-2,5"; "" = no restriction).

Sizes accept a number with an optional binary unit K, M, G, T, P (also
"Ki", "KiB", "KB", any case; all powers of 1024) or "max". A bare number is
bytes and must be a whole number; with a unit the result is floored to whole
bytes ("0.5K" = 512, "1.1K" = 1126). Negative values are refused. Note that
the kernel keeps memory limits in pages: it rounds memory.* down to a
multiple of the page size, which ``read_limits`` then shows.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields, replace
from decimal import ROUND_HALF_UP, Decimal, DecimalException
from typing import NamedTuple

from runtime.errors import LimitError

MAX = "max"
DEFAULT_CPU_PERIOD_US = 100_000
CPU_PERIOD_MIN_US, CPU_PERIOD_MAX_US = 1_000, 1_000_000
CPU_QUOTA_MIN_US = 1_000
WEIGHT_MIN, WEIGHT_MAX = 1, 10_000
SIZE_LIMIT = 2**63 - 1

_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)

SIZE_ACCEPTED = ('is not a size; use bytes or a number with K, M, G or T (e.g. 512M), '
                 'or "max"')
CPUS_ACCEPTED = ('is not a CPU amount; use cores (e.g. 0.5), a percentage of one core '
                 '(e.g. 150%), QUOTA/PERIOD in microseconds (e.g. 50000/100000), or "max"')
WEIGHT_ACCEPTED = "is not a weight; use a whole number from 1 to 10000 (default 100)"
PIDS_ACCEPTED = 'is not a process count; use a whole number >= 1, or "max"'
CPUSET_ACCEPTED = 'is not a CPU/node list; use numbers and ranges like "0-1,3"'
IO_MAX_ACCEPTED = ('is not an io.max entry; use DEVICE:key=value,... or "MAJ:MIN key=value ..." '
                   'with keys rbps, wbps (sizes, e.g. 10M), riops, wiops (counts) or "max", '
                   'e.g. /dev/vda:rbps=10M,wbps=5M or "8:0 rbps=10M riops=100"')
BOOL_ACCEPTED = "is not a boolean; use true or false (1 or 0)"


class IoMax(NamedTuple):
    """One io.max line. Rates are ints; None means "max" (no limit)."""

    major: int
    minor: int
    rbps: int | None = None
    wbps: int | None = None
    riops: int | None = None
    wiops: int | None = None

    @property
    def devno(self) -> tuple[int, int]:
        return (self.major, self.minor)

    def render(self) -> str:
        vals = " ".join(f"{k}={MAX if getattr(self, k) is None else getattr(self, k)}"
                        for k in ("rbps", "wbps", "riops", "wiops"))
        return f"{self.major}:{self.minor} {vals}"


# -- value parsers ----------------------------------------------------------

_HUGE_BITS = 256  # far above any limit; str() of an int over 4300 digits raises ValueError


def _shown(value):
    """``value``, except an absurdly large int becomes a short description.

    Python refuses str() of an int with more than 4300 digits (ValueError),
    which would escape from a parser, or from LimitError's own message.
    """
    if isinstance(value, (str, bool, float)) or value is None:
        return value
    if isinstance(value, int):
        if value.bit_length() > _HUGE_BITS:
            digits = int(value.bit_length() * 0.30103) + 1
            return f"<a {'negative ' if value < 0 else ''}{digits}-digit number>"
        return value
    try:
        str(value)  # a list or dict holding such an int
    except ValueError:
        return f"<{_kind(value)} holding a number too large to show>"
    return value


def _kind(value) -> str:
    """The JSON kind of a value, for "is an array, not an object" messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _text(value) -> str:
    value = _shown(value)
    return value.strip() if isinstance(value, str) else str(value)


def _int(text: str, field: str, value, accepted: str) -> int:
    """int() of a string of digits; LimitError (not ValueError) if it has too many."""
    try:
        return int(text)
    except ValueError:
        raise LimitError(field, value, accepted) from None


def parse_size(value, field: str = "memory", allow_max: bool = True) -> int | str:
    """ "512M" -> 536870912, "max" -> MAX; LimitError naming ``field`` otherwise."""
    value = _shown(value)
    if isinstance(value, bool):
        raise LimitError(field, value, SIZE_ACCEPTED)
    if isinstance(value, int):
        if value < 0 or value > SIZE_LIMIT:
            raise LimitError(field, value, SIZE_ACCEPTED)
        return value
    text = _text(value)
    if text.lower() == MAX and allow_max:
        return MAX
    m = _SIZE_RE.match(text)
    if not m:
        raise LimitError(field, value, SIZE_ACCEPTED)
    number, unit, suffix = m.group(1), m.group(2).lower(), m.group(3).lower()
    if not unit and suffix not in ("", "b"):
        raise LimitError(field, value, SIZE_ACCEPTED)  # "12i", "12ib"
    if not unit and "." in number:
        raise LimitError(field, value, "is a fraction of a byte; use a whole number of bytes "
                         "or a unit (e.g. 1.5G)")
    n = int(Decimal(number) * (1024 ** _UNITS[unit]))  # floor: Decimal >= 0
    if n > SIZE_LIMIT:
        raise LimitError(field, value, "is too large; the largest size is 8E (2^63-1 bytes), "
                         'use "max" for no limit')
    return n


def format_size(n) -> str:
    """Shortest exact human form: 536870912 -> "512M", MAX -> "max"."""
    if n == MAX or n is None:
        return MAX
    for unit in ("P", "T", "G", "M", "K"):
        scale = 1024 ** _UNITS[unit.lower()]
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


def format_cpus(quota_us: int, period_us: int) -> str:
    """50000, 100000 -> "0.5"; 1000000, 100000 -> "10" (cores, up to 4 decimals)."""
    q = (Decimal(quota_us) / Decimal(period_us)).quantize(Decimal("0.0001"))
    return format(q.normalize(), "f")


def _parse_int(value, field, accepted, lo=None, hi=None, allow_max=False):
    value = _shown(value)
    if isinstance(value, bool):
        raise LimitError(field, value, accepted)
    if isinstance(value, str):
        text = value.strip()
        if allow_max and text.lower() == MAX:
            return MAX
        if not re.fullmatch(r"[+]?\d+", text):
            raise LimitError(field, value, accepted)
        n = _int(text, field, value, accepted)
    elif isinstance(value, int):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    else:
        raise LimitError(field, value, accepted)
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        raise LimitError(field, value, accepted)
    return n


def parse_weight(value, field: str = "cpu_weight") -> int:
    return _parse_int(value, field, WEIGHT_ACCEPTED, WEIGHT_MIN, WEIGHT_MAX)


def parse_pids(value, field: str = "pids") -> int | str:
    value = _shown(value)
    if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
        raise LimitError(field, value, PIDS_ACCEPTED)
    return _parse_int(value, field, PIDS_ACCEPTED, 1, SIZE_LIMIT, allow_max=True)


def parse_bool(value, field: str = "memory_oom_group") -> bool:
    value = _shown(value)
    if isinstance(value, bool):
        return value
    text = _text(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise LimitError(field, value, BOOL_ACCEPTED)


def parse_cpus(value, field: str = "cpus") -> tuple[int | str, int]:
    """ "0.5" / "150%" / "50000/100000" / "max" -> (quota_us | MAX, period_us)."""
    value = _shown(value)
    if isinstance(value, bool):
        raise LimitError(field, value, CPUS_ACCEPTED)
    text = _text(value)
    if text.lower() == MAX:
        return MAX, DEFAULT_CPU_PERIOD_US
    period = DEFAULT_CPU_PERIOD_US
    try:
        if "/" in text:
            q, _, p = text.partition("/")
            q, p = q.strip(), p.strip()
            if not p.isdigit() or not (q.isdigit() or q.lower() == MAX):
                raise LimitError(field, value, CPUS_ACCEPTED)
            period = _int(p, field, value, CPUS_ACCEPTED)
            if not CPU_PERIOD_MIN_US <= period <= CPU_PERIOD_MAX_US:
                raise LimitError(field, value, "has a period out of range; the period must be "
                                 "1000 to 1000000 microseconds (e.g. 50000/100000)")
            if q.lower() == MAX:
                return MAX, period
            quota = int(q)
        else:
            if text.endswith("%"):
                cores = Decimal(text[:-1].strip()) / 100
            else:
                cores = Decimal(text)
            if not cores.is_finite() or cores < 0:
                raise LimitError(field, value, CPUS_ACCEPTED)
            if cores * period > SIZE_LIMIT:  # before int(): "1e999999" would make a million digits
                raise LimitError(field, value, 'is too large; use "max" for no limit')
            quota = int((cores * period).to_integral_value(rounding=ROUND_HALF_UP))
    except LimitError:
        raise
    except (DecimalException, ValueError):  # DecimalException: InvalidOperation, Overflow ("1e999999999")
        raise LimitError(field, value, CPUS_ACCEPTED) from None
    if quota < CPU_QUOTA_MIN_US:
        raise LimitError(field, value, "is too small; the kernel's minimum quota is 1000 "
                         "microseconds (0.01 cores at the default period of 100000)")
    if quota > SIZE_LIMIT:
        raise LimitError(field, value, 'is too large; use "max" for no limit')
    return quota, period


def parse_cpuset_list(value, field: str = "cpuset_cpus") -> str:
    """ "0-1,3" -> canonical "0-1,3" (validated); "" = no restriction."""
    from runtime.stats import format_cpuset, parse_cpuset

    value = _shown(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        value = ",".join(_text(v) for v in value)
    text = _text(value)
    if not re.fullmatch(r"[\d\s,\-]*", text):
        raise LimitError(field, value, CPUSET_ACCEPTED)
    try:
        cpus = parse_cpuset(text)
    except ValueError:
        raise LimitError(field, value, CPUSET_ACCEPTED) from None
    if max(cpus, default=0) > 65535:
        raise LimitError(field, value, CPUSET_ACCEPTED)
    return format_cpuset(cpus)


_DEVNO_RE = re.compile(r"^(\d+):(\d+)(?:[\s:,]+(.*))?$", re.S)
_DEVPATH_RE = re.compile(r"^(/[^:\s]+)(?:[\s:]+(.*))?$", re.S)
_IO_RATE_KEYS = ("rbps", "wbps", "riops", "wiops")
_MAJOR_MAX, _MINOR_MAX = 2**12 - 1, 2**20 - 1  # the kernel's dev_t: 12-bit major, 20-bit minor


def parse_io_max(value, field: str = "io_max") -> IoMax:
    """ "/dev/vda:rbps=10M,wbps=5M" or "8:0 rbps=10M riops=100" -> IoMax."""
    from runtime.devices import block_devno

    value = _shown(value)
    text = _text(value)
    m = _DEVNO_RE.match(text)
    if m:
        devno = (_int(m.group(1), field, value, IO_MAX_ACCEPTED), _int(m.group(2), field, value, IO_MAX_ACCEPTED))
        rest = m.group(3) or ""
        if devno[0] > _MAJOR_MAX or devno[1] > _MINOR_MAX:
            raise LimitError(field, value, f"has no such device number; a major is at most {_MAJOR_MAX} "
                             f"and a minor at most {_MINOR_MAX}")
    else:
        m = _DEVPATH_RE.match(text)
        if not m:
            raise LimitError(field, value, IO_MAX_ACCEPTED)
        devno, rest = block_devno(m.group(1), field), m.group(2) or ""
    rates: dict[str, int | None] = {}
    items = [x for x in re.split(r"[\s,]+", rest.strip()) if x]
    if not items:
        raise LimitError(field, value, IO_MAX_ACCEPTED)
    for item in items:
        key, sep, val = item.partition("=")
        key = key.lower()
        if not sep or key not in _IO_RATE_KEYS or key in rates:
            raise LimitError(field, value, IO_MAX_ACCEPTED)
        if key.endswith("bps"):
            n = parse_size(val, f"{field} {key}")
        else:
            n = _parse_int(val, f"{field} {key}", 'is not an IO operation count; use a whole '
                           'number of operations per second, or "max"', 1, SIZE_LIMIT,
                           allow_max=True)
        if n == 0 and key.endswith("bps"):
            raise LimitError(f"{field} {key}", val, 'is zero; use a positive rate or "max"')
        rates[key] = None if n == MAX else n
    return IoMax(devno[0], devno[1], **rates)


def parse_io_max_line(line: str) -> IoMax:
    """One line as the kernel prints io.max ("8:0 rbps=1 wbps=max ..."); ValueError if not."""
    if not isinstance(line, str):
        raise ValueError(f"io.max line must be text, not {type(line).__name__}")
    dev, _, rest = line.strip().partition(" ")
    maj, _, mnr = dev.partition(":")
    vals = {}
    for item in rest.split():
        k, _, v = item.partition("=")
        if k in _IO_RATE_KEYS:
            vals[k] = None if v == MAX else int(v)
    return IoMax(int(maj), int(mnr), **vals)


# -- the value --------------------------------------------------------------

# user-facing name -> Limits field (aliases people type)
_ALIASES = {
    "memory": "memory_max",
    "memory_limit": "memory_max",
    "memory_reservation": "memory_low",
    "memory_swap": "memory_swap_max",
    "swap": "memory_swap_max",
    "oom_group": "memory_oom_group",
    "cpu_shares_weight": "cpu_weight",
    "pids": "pids_max",
    "pids_limit": "pids_max",
    "cpuset": "cpuset_cpus",
}


@dataclass(frozen=True)
class Limits:
    """Resource limits of one cgroup; None = not set, MAX = unlimited."""

    memory_max: int | str | None = None
    memory_high: int | str | None = None
    memory_low: int | str | None = None
    memory_swap_max: int | str | None = None
    memory_oom_group: bool | None = None
    cpu_quota_us: int | str | None = None
    cpu_period_us: int | None = None
    cpu_weight: int | None = None
    io_weight: int | None = None
    io_max: tuple[IoMax, ...] | None = None
    pids_max: int | str | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None

    def __post_init__(self):
        # cpu.max always carries both halves: fill the one left out.
        if self.cpu_quota_us is not None or self.cpu_period_us is not None:
            if self.cpu_quota_us is None:
                object.__setattr__(self, "cpu_quota_us", MAX)
            if self.cpu_period_us is None:
                object.__setattr__(self, "cpu_period_us", DEFAULT_CPU_PERIOD_US)
        if self.io_max is not None and not isinstance(self.io_max, tuple):
            object.__setattr__(self, "io_max", tuple(self.io_max))
        if self.io_max:
            devs = [e.devno for e in self.io_max]
            if len(set(devs)) != len(devs):
                raise LimitError("io_max", "has two entries for one device; give each "
                                 "device once with all its keys")
            object.__setattr__(self, "io_max", tuple(sorted(self.io_max, key=lambda e: e.devno)))

    # -- building ----------------------------------------------------------
    @classmethod
    def parse(cls, **user) -> "Limits":
        """Build from what people type, e.g. Limits.parse(memory="512M", cpus="0.5").

        Keys: memory (memory_max), memory_high, memory_low, memory_swap
        (memory_swap_max), memory_oom_group, cpus (cores, "150%",
        "QUOTA/PERIOD" or "max"), cpu_quota_us, cpu_period_us, cpu_weight,
        io_weight, io_max (one entry or a list), pids (pids_max),
        cpuset_cpus, cpuset_mems. None values are skipped.
        """
        vals: dict = {}
        for key, value in user.items():
            if value is None:
                continue
            name = _ALIASES.get(key, key)
            if name in ("memory_max", "memory_high", "memory_low", "memory_swap_max"):
                vals[name] = parse_size(value, key)
            elif name == "memory_oom_group":
                vals[name] = parse_bool(value, key)
            elif name == "cpus":
                vals["cpu_quota_us"], vals["cpu_period_us"] = parse_cpus(value, key)
            elif name == "cpu_quota_us":
                vals[name] = _parse_int(value, key, 'is not a quota; use microseconds >= 1000, '
                                        'or "max"', CPU_QUOTA_MIN_US, SIZE_LIMIT,
                                        allow_max=True)
            elif name == "cpu_period_us":
                vals[name] = _parse_int(value, key, "is not a period; use 1000 to 1000000 "
                                        "microseconds", CPU_PERIOD_MIN_US, CPU_PERIOD_MAX_US)
            elif name in ("cpu_weight", "io_weight"):
                vals[name] = parse_weight(value, key)
            elif name == "io_max":
                if isinstance(value, (str, IoMax)):
                    entries = [value]
                elif isinstance(value, (list, tuple)):
                    entries = list(value)
                else:
                    raise LimitError(key, _shown(value), "is not an io.max entry or a list of them; give "
                                     "one entry or a list, each DEVICE:key=value,... or "
                                     '"MAJ:MIN key=value ..." (e.g. ["/dev/vda:rbps=10M"])')
                vals[name] = tuple(e if isinstance(e, IoMax) else parse_io_max(e, key)
                                   for e in entries)
            elif name == "pids_max":
                vals[name] = parse_pids(value, key)
            elif name in ("cpuset_cpus", "cpuset_mems"):
                vals[name] = parse_cpuset_list(value, key)
            else:
                known = ("memory, memory_high, memory_low, memory_swap, memory_oom_group, "
                         "cpus, cpu_quota_us, cpu_period_us, cpu_weight, io_weight, io_max, "
                         "pids, cpuset_cpus, cpuset_mems")
                raise LimitError(key, f"is not a known limit; use one of {known}")
        return cls(**vals)

    def merge(self, other: "Limits") -> "Limits":
        """Fields set in ``other`` override this one's."""
        changes = {f.name: getattr(other, f.name) for f in fields(other)
                   if getattr(other, f.name) is not None}
        return replace(self, **changes)

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    # -- kernel side -------------------------------------------------------
    def controllers(self) -> set[str]:
        """The cgroup v2 controllers these limits need."""
        need = set()
        for f in fields(self):
            if getattr(self, f.name) is None:
                continue
            need.add(_CONTROLLER[f.name])
        return need

    def files(self) -> dict[str, str]:
        """Exact contents to write to each cgroup file (set fields only).

        io.max may hold several lines: each must be written by its own write().
        """
        out: dict[str, str] = {}
        if self.cpuset_cpus is not None:
            out["cpuset.cpus"] = self.cpuset_cpus
        if self.cpuset_mems is not None:
            out["cpuset.mems"] = self.cpuset_mems
        for name, file in (("memory_low", "memory.low"), ("memory_high", "memory.high"),
                           ("memory_max", "memory.max"),
                           ("memory_swap_max", "memory.swap.max")):
            v = getattr(self, name)
            if v is not None:
                out[file] = str(v)
        if self.memory_oom_group is not None:
            out["memory.oom.group"] = "1" if self.memory_oom_group else "0"
        if self.cpu_quota_us is not None:
            out["cpu.max"] = f"{self.cpu_quota_us} {self.cpu_period_us}"
        if self.cpu_weight is not None:
            out["cpu.weight"] = str(self.cpu_weight)
        if self.io_weight is not None:
            out["io.weight"] = f"default {self.io_weight}"
        if self.io_max is not None and self.io_max:
            out["io.max"] = "\n".join(e.render() for e in self.io_max)
        if self.pids_max is not None:
            out["pids.max"] = str(self.pids_max)
        return out

    # -- serialisation -----------------------------------------------------
    def to_json(self) -> dict:
        """Plain JSON-able dict of the set fields (json.dumps it to store)."""
        out: dict = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if f.name == "io_max":
                v = [e._asdict() for e in v]
            out[f.name] = v
        return out

    @classmethod
    def from_json(cls, data) -> "Limits":
        """Inverse of to_json(); also accepts the JSON text."""
        if data is None:
            return cls()
        if isinstance(data, (str, bytes)):
            data = json.loads(data)
            if isinstance(data, str):
                data = json.loads(data)
        known = {f.name for f in fields(cls)}
        vals = {}
        for k, v in data.items():
            if k not in known:
                raise LimitError(k, "is not a known limit field")
            if k == "io_max" and v is not None:
                v = tuple(IoMax(**e) if isinstance(e, dict) else IoMax(*e) for e in v)
            vals[k] = v
        return cls(**vals)

    def describe(self) -> dict[str, str]:
        """Human forms of the set fields ("memory_max": "512M", "cpus": "0.5")."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None or f.name == "cpu_period_us":
                continue
            if f.name.startswith("memory_") and f.name != "memory_oom_group":
                out[f.name] = format_size(v)
            elif f.name == "cpu_quota_us":
                out["cpus"] = MAX if v == MAX else format_cpus(v, self.cpu_period_us)
            elif f.name == "io_max":
                out[f.name] = ", ".join(e.render() for e in v)
            else:
                out[f.name] = str(v)
        return out


_CONTROLLER = {
    "memory_max": "memory", "memory_high": "memory", "memory_low": "memory",
    "memory_swap_max": "memory", "memory_oom_group": "memory",
    "cpu_quota_us": "cpu", "cpu_period_us": "cpu", "cpu_weight": "cpu",
    "io_weight": "io", "io_max": "io", "pids_max": "pids",
    "cpuset_cpus": "cpuset", "cpuset_mems": "cpuset",
}

# cgroup file -> Limits field (first field for multi-field files)
FILE_FIELDS = {
    "memory.max": "memory_max", "memory.high": "memory_high", "memory.low": "memory_low",
    "memory.swap.max": "memory_swap_max", "memory.oom.group": "memory_oom_group",
    "cpu.max": "cpu_quota_us", "cpu.weight": "cpu_weight", "io.weight": "io_weight",
    "io.max": "io_max", "pids.max": "pids_max", "cpuset.cpus": "cpuset_cpus",
    "cpuset.mems": "cpuset_mems",
}


# -- reading back -------------------------------------------------------------

def _size_or_max(text: str) -> int | str:
    t = text.strip()
    return MAX if t == MAX else int(t)


def parse_limit_files(texts: dict[str, str | None]) -> Limits:
    """Limits from cgroup file contents as the kernel prints them (absent -> None).

    ValueError if a text is malformed (or not a string).
    """
    if not isinstance(texts, dict):
        raise ValueError(f"cgroup file texts must be a dict, not {type(texts).__name__}")
    for file, t in texts.items():
        if t is not None and not isinstance(t, str):
            raise ValueError(f"{file}: contents must be text, not {type(t).__name__}")
    vals: dict = {}
    for file, name in (("memory.max", "memory_max"), ("memory.high", "memory_high"),
                       ("memory.low", "memory_low"), ("memory.swap.max", "memory_swap_max"),
                       ("pids.max", "pids_max")):
        t = texts.get(file)
        if t is not None:
            vals[name] = _size_or_max(t)
    t = texts.get("memory.oom.group")
    if t is not None:
        vals["memory_oom_group"] = t.strip() == "1"
    t = texts.get("cpu.max")
    if t is not None:
        q, _, p = t.strip().partition(" ")
        vals["cpu_quota_us"] = MAX if q == MAX else int(q)
        vals["cpu_period_us"] = int(p) if p else DEFAULT_CPU_PERIOD_US
    t = texts.get("cpu.weight")
    if t is not None:
        vals["cpu_weight"] = int(t.strip())
    t = texts.get("io.weight")
    if t is not None:
        for line in t.splitlines():
            k, _, v = line.strip().partition(" ")
            if k == "default":
                vals["io_weight"] = int(v)
    t = texts.get("io.max")
    if t is not None:
        vals["io_max"] = tuple(parse_io_max_line(x) for x in t.splitlines() if x.strip())
    for file, name in (("cpuset.cpus", "cpuset_cpus"), ("cpuset.mems", "cpuset_mems")):
        t = texts.get(file)
        if t is not None:
            vals[name] = parse_cpuset_list(t, file)
    return Limits(**vals)


def read_limits(cg) -> Limits:
    """The limits in effect in a cgroup; fields None where the file is absent."""
    from runtime.cgroupfs import Cgroup

    cg = cg if isinstance(cg, Cgroup) else Cgroup(cg)
    return parse_limit_files({f: cg.read(f) for f in FILE_FIELDS})


# -- OCI runtime-spec linux.resources ----------------------------------------

def cpu_shares_to_weight(shares: int) -> int | None:
    """OCI cpu.shares -> cgroup v2 cpu.weight, as runc >= 1.3.2 and crun >= 1.23 do.

    A quadratic in log2(shares) fitted through (2 -> 1), (1024 -> 100) and
    (262144 -> 10000): weight = ceil(10 ** ((l*l + 125*l) / 612 - 7/34)).
    0 means unset (None).
    """
    import math

    if shares == 0:
        return None
    if shares <= 2:
        return 1
    if shares >= 262144:
        return 10000
    l2 = math.log2(shares)
    exponent = (l2 * l2 + 125 * l2) / 612.0 - 7.0 / 34.0
    return int(math.ceil(math.pow(10, exponent)))


def blkio_weight_to_io_weight(weight: int) -> int | None:
    """OCI blockIO.weight (10..1000) -> io.weight (1..10000) as runc does; 0 = unset."""
    if weight == 0:
        return None
    return 1 + (weight - 10) * 9999 // 990


def _oci_int(value, field, lo=None, hi=SIZE_LIMIT):
    if isinstance(value, (str, float)):
        raise LimitError(field, value, "is not an integer")
    if isinstance(value, bool) or not isinstance(value, int):
        raise LimitError(field, f"is {_kind(value)}, not an integer")
    if hi is not None and value > hi:
        raise LimitError(field, _shown(value), f"is out of range; use an integer <= {hi}")
    if value.bit_length() > _HUGE_BITS:
        raise LimitError(field, _shown(value), "is out of range")
    if lo is not None and value < lo:
        raise LimitError(field, value, f"is out of range; use an integer >= {lo}")
    return value


def _oci_object(parent: dict, key: str, where: str) -> dict:
    """parent[key] as an object; absent or null -> {}; LimitError otherwise."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LimitError(f"{where}.{key}", f"is {_kind(value)}, not an object")
    return value


def _oci_list(parent: dict, key: str, where: str) -> list:
    """parent[key] as an array; absent or null -> []; LimitError otherwise."""
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise LimitError(f"{where}.{key}", f"is {_kind(value)}, not an array")
    return value


def _oci_text(value, field: str) -> str:
    if not isinstance(value, str):
        raise LimitError(field, f'is {_kind(value)}, not a string; use a CPU/node list like "0-1,3"')
    return value


def from_oci(resources: dict | None) -> Limits:
    """OCI runtime-spec ``linux.resources`` -> Limits, converted like runc/crun."""
    r = resources or {}
    if not isinstance(r, dict):
        raise LimitError("linux.resources", f"is {_kind(r)}, not an object")
    vals: dict = {}

    cpu = _oci_object(r, "cpu", "linux.resources")
    shares = cpu.get("shares")
    if shares is not None:
        _oci_int(shares, "linux.resources.cpu.shares", 0)
        weight = cpu_shares_to_weight(shares)
        if weight is not None:
            vals["cpu_weight"] = weight
    quota, period = cpu.get("quota"), cpu.get("period")
    if quota is not None:
        _oci_int(quota, "linux.resources.cpu.quota")
    if period is not None:
        _oci_int(period, "linux.resources.cpu.period", 0)
    if quota or period:
        p = period or DEFAULT_CPU_PERIOD_US
        if not CPU_PERIOD_MIN_US <= p <= CPU_PERIOD_MAX_US:
            raise LimitError("linux.resources.cpu.period", p,
                             "is out of range; use 1000 to 1000000 microseconds")
        if quota is not None and quota > 0:
            if quota < CPU_QUOTA_MIN_US:
                raise LimitError("linux.resources.cpu.quota", quota,
                                 "is too small; the kernel's minimum is 1000 microseconds")
            vals["cpu_quota_us"] = quota
        else:
            vals["cpu_quota_us"] = MAX
        vals["cpu_period_us"] = p
    for key, name in (("cpus", "cpuset_cpus"), ("mems", "cpuset_mems")):
        if cpu.get(key) is not None:
            text = _oci_text(cpu[key], f"linux.resources.cpu.{key}")
            if text:
                vals[name] = parse_cpuset_list(text, f"linux.resources.cpu.{key}")

    mem = _oci_object(r, "memory", "linux.resources")
    limit = mem.get("limit")
    swap = mem.get("swap")
    reservation = mem.get("reservation")
    if limit is not None:
        _oci_int(limit, "linux.resources.memory.limit", -1)
        if limit != 0:
            vals["memory_max"] = MAX if limit == -1 else limit
    if reservation is not None:
        _oci_int(reservation, "linux.resources.memory.reservation", -1)
        if reservation != 0:
            vals["memory_low"] = MAX if reservation == -1 else reservation
    if swap is not None:
        _oci_int(swap, "linux.resources.memory.swap", -1)
    swap_v2 = _oci_swap(swap or 0, limit or 0)
    if swap_v2 is not None:
        vals["memory_swap_max"] = swap_v2

    blkio = _oci_object(r, "blockIO", "linux.resources")
    bw = blkio.get("weight")
    if bw is not None:
        _oci_int(bw, "linux.resources.blockIO.weight", 0)
        if bw and not 10 <= bw <= 1000:
            raise LimitError("linux.resources.blockIO.weight", bw,
                             "is out of range; use 10 to 1000 (or 0 for unset)")
        w = blkio_weight_to_io_weight(bw)
        if w is not None:
            vals["io_weight"] = w
    devs: dict[tuple[int, int], dict] = {}
    for key, rate in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                      ("throttleReadIOPSDevice", "riops"), ("throttleWriteIOPSDevice", "wiops")):
        for i, dev in enumerate(_oci_list(blkio, key, "linux.resources.blockIO")):
            where = f"linux.resources.blockIO.{key}[{i}]"
            if not isinstance(dev, dict) or "major" not in dev or "minor" not in dev:
                raise LimitError(where, "is not a {major, minor, rate} object")
            major, minor, value = dev["major"], dev["minor"], dev.get("rate")
            if value is None:
                value = 0
            _oci_int(major, where + ".major", 0, _MAJOR_MAX)
            _oci_int(minor, where + ".minor", 0, _MINOR_MAX)
            _oci_int(value, where + ".rate", 0)
            devs.setdefault((major, minor), {})[rate] = value or None  # 0 = no limit
    if devs:
        vals["io_max"] = tuple(IoMax(maj, mnr, **rates) for (maj, mnr), rates in devs.items())

    pids = _oci_object(r, "pids", "linux.resources")
    if pids.get("limit") is not None:
        n = _oci_int(pids["limit"], "linux.resources.pids.limit")
        vals["pids_max"] = MAX if n <= 0 else n
    return Limits(**vals)


def _oci_swap(swap: int, limit: int) -> int | str | None:
    """OCI memory.swap is memory+swap; cgroup v2 memory.swap.max is swap alone."""
    if limit == -1 and swap == 0:
        return MAX  # unlimited memory and no swap given: both unlimited
    if swap == 0:
        return None  # unset
    if swap == -1:
        return MAX
    if limit in (0, -1):
        raise LimitError("linux.resources.memory.swap", swap,
                         "needs a memory limit; set linux.resources.memory.limit too")
    if swap < limit:
        raise LimitError("linux.resources.memory.swap", swap,
                         f"is below the memory limit ({limit}); OCI swap is memory+swap, "
                         f"so use a value >= the limit")
    return swap - limit
