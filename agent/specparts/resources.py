"""What a container may use: its limits (runtime Limits.parse) and the size
its logs may grow to."""
from __future__ import annotations

from typing import Any

from agent.configparts.values import parse_size
from agent.errors import UserError
from agent.specparts.fields import key_path, quote


def parse_limits(v: Any, fieldname: str = "limits"):
    from runtime.errors import LimitError
    from runtime.limits import Limits
    if v is None:
        return Limits()
    if isinstance(v, Limits):
        return v
    if not isinstance(v, dict):
        raise UserError(f"{fieldname}: {quote(v)} is not an object such as {{\"memory_max\": \"512M\"}}")
    args = {}
    for k, val in v.items():
        if not isinstance(k, str) or not k.isidentifier():
            raise UserError(f"{key_path(fieldname, k)}: unknown limit")
        if val is None:
            continue
        args[k] = val
    try:
        return Limits.parse(**args)
    except LimitError as e:
        raise UserError(f"{fieldname}.{e}") from None
    except Exception:  # a value of the wrong JSON type: find the key it belongs to
        pass
    for key, val in args.items():
        try:
            Limits.parse(**{key: val})
        except LimitError as e:
            raise UserError(f"{fieldname}.{e}") from None
        except Exception:
            raise UserError(f"{fieldname}.{key}: {quote(val)} is not a valid value for this limit") from None
    raise UserError(f"{fieldname}: {quote(v)} is not a valid set of limits")


def log_size(fieldname: str, v: Any) -> int:
    """log_max_bytes: the config's size rule, at least 4K."""
    try:
        n = parse_size(v)
    except ValueError:
        raise UserError(f"{fieldname}: {quote(v)} is not a size; use e.g. 512K, 10M") from None
    if n < 4096:
        raise UserError(f"{fieldname}: {quote(v)} is too small; use at least 4K")
    return n
