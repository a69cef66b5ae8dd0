"""Pure value parsers every controller shares: sizes, whole numbers,
weights, booleans, and the showing of absurd values in error messages.

Imports nothing of the project but runtime.errors (no cycle possible).

Sizes accept a number with an optional binary unit K, M, G, T, P (also
"Ki", "KiB", "KB", any case; all powers of 1024) or "max". A bare number is
bytes and must be a whole number; with a unit the result is floored to whole
bytes ("0.5K" = 512, "1.1K" = 1126). Negative values are refused. This is
the one size rule of the project: the agent's config (e.g. logs.max_bytes)
parses its sizes with ``parse_size(..., allow_max=False)`` too.
"""
from __future__ import annotations

import re
from decimal import Decimal

from runtime.errors import LimitError

MAX = "max"
SIZE_LIMIT = 2**63 - 1
WEIGHT_MIN, WEIGHT_MAX = 1, 10_000

_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)

SIZE_ACCEPTED = ('is not a size; use bytes or a number with K, M, G or T (e.g. 512M), '
                 'or "max"')
WEIGHT_ACCEPTED = "is not a weight; use a whole number from 1 to 10000 (default 100)"
BOOL_ACCEPTED = "is not a boolean; use true or false (1 or 0)"

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


def size_or_max(text: str) -> int | str:
    """A size as the kernel prints it: a number of bytes or "max"."""
    t = text.strip()
    return MAX if t == MAX else int(t)
