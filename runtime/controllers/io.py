"""The io controller: io.weight (the default weight) and io.max (per device
rate limits). User input, rendering to the files and reading back."""
from __future__ import annotations

import re
from typing import NamedTuple

from runtime.controllers.values import (MAX, SIZE_LIMIT, LimitError, _int, _parse_int, _shown, _text,
                                        parse_size, parse_weight)

NAME = "io"
FIELDS = ("io_weight", "io_max")
FILES = {"io.weight": "io_weight", "io.max": "io_max"}
IO_MAX_ACCEPTED = ('is not an io.max entry; use DEVICE:key=value,... or "MAJ:MIN key=value ..." '
                   'with keys rbps, wbps (sizes, e.g. 10M), riops, wiops (counts) or "max", '
                   'e.g. /dev/vda:rbps=10M,wbps=5M or "8:0 rbps=10M riops=100"')

_DEVNO_RE = re.compile(r"^(\d+):(\d+)(?:[\s:,]+(.*))?$", re.S)
_DEVPATH_RE = re.compile(r"^(/[^:\s]+)(?:[\s:]+(.*))?$", re.S)
_IO_RATE_KEYS = ("rbps", "wbps", "riops", "wiops")
_MAJOR_MAX, _MINOR_MAX = 2**12 - 1, 2**20 - 1  # the kernel's dev_t: 12-bit major, 20-bit minor


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


def _io_max_entries(value, key) -> dict:
    if isinstance(value, (str, IoMax)):
        entries = [value]
    elif isinstance(value, (list, tuple)):
        entries = list(value)
    else:
        raise LimitError(key, _shown(value), "is not an io.max entry or a list of them; give "
                         "one entry or a list, each DEVICE:key=value,... or "
                         '"MAJ:MIN key=value ..." (e.g. ["/dev/vda:rbps=10M"])')
    return {"io_max": tuple(e if isinstance(e, IoMax) else parse_io_max(e, key) for e in entries)}


PARSERS = {
    "io_weight": lambda value, key: {"io_weight": parse_weight(value, key)},
    "io_max": _io_max_entries,
}


def render(limits, out: dict) -> None:
    """io.max may hold several lines: each must be written by its own write()."""
    if limits.io_weight is not None:
        out["io.weight"] = f"default {limits.io_weight}"
    if limits.io_max is not None and limits.io_max:
        out["io.max"] = "\n".join(e.render() for e in limits.io_max)


def read_back(texts: dict, vals: dict) -> None:
    t = texts.get("io.weight")
    if t is not None:
        for line in t.splitlines():
            k, _, v = line.strip().partition(" ")
            if k == "default":
                vals["io_weight"] = int(v)
    t = texts.get("io.max")
    if t is not None:
        vals["io_max"] = tuple(parse_io_max_line(x) for x in t.splitlines() if x.strip())
