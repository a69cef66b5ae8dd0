"""What a container is called and tagged with: its name and labels."""
from __future__ import annotations

from typing import Any

from agent.errors import UserError
from agent.labels import LABEL_KEY_RE
from agent.rules import NAME_RE  # one rule, shared with agentctl and the API
from agent.specparts.fields import pairs, quote


def check_name(v: Any) -> str:
    if not isinstance(v, str) or not NAME_RE.fullmatch(v):
        raise UserError(f"name: {quote(v)} is not a valid name; use 1-63 of letters, digits, _ . - "
                        "starting with a letter or digit")
    return v


def parse_labels(v: Any) -> dict:
    labels = {}
    for k, val, where in pairs("labels", v, "label"):
        if not LABEL_KEY_RE.fullmatch(k):
            raise UserError(f"{where}: {quote(k)} is not a label key; use 1-63 of letters, digits, _ . - / "
                            "starting with a letter or digit")
        if len(val) > 1024 or any(ord(c) < 32 for c in val):
            raise UserError(f"{where}: value must be at most 1024 printable characters")
        labels[k] = val
    return labels
