"""Container labels as metric labels: the one rule for the name a key becomes and for a value that renders.

    metric_label_name("app.kubernetes.io/name") -> "container_label_app_kubernetes_io_name"
    unrenderable("\\ud800") -> "contains a lone surrogate (U+D800) ..."   (None when it renders)
    is_label_key("team")   -> True  (the key syntax, LABEL_KEY_RE)
    cgroup_id("/sys/fs/cgroup/a/b", "/sys/fs/cgroup") -> "/a/b"   (the ``id`` label, as cAdvisor)

Used by agent.spec (a label, and every other string a spec takes, is
refused at creation when it could not be rendered), agent.config (allow-listed keys that would become the same metric
label are refused) and exporters.prometheus (which renders them).
"""
from __future__ import annotations

import re

METRIC_LABEL_PREFIX = "container_label_"
LABEL_KEY_ACCEPTED = "use 1-63 of letters, digits, _ . - / starting with a letter or digit"
_NOT_IN_METRIC_NAME = re.compile(r"[^a-zA-Z0-9_]")
LABEL_KEY_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-/]{0,62}")   # a label key (agent.spec validates with it)


def metric_label_name(key: str) -> str:
    """container_label_<key> with every character a Prometheus label name cannot hold replaced by _."""
    return METRIC_LABEL_PREFIX + _NOT_IN_METRIC_NAME.sub("_", key)


def is_label_key(key) -> bool:
    return isinstance(key, str) and LABEL_KEY_RE.fullmatch(key) is not None


def unrenderable(text: str) -> str | None:
    """Why `text` cannot appear in the exposition formats (UTF-8 text), or None when it can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"contains a lone surrogate (U+{ord(text[e.start]):04X}) at character {e.start}, which is not valid Unicode text"
    return None


def cgroup_id(path: str, mount: str) -> str:
    """cAdvisor's ``id``: the cgroup path relative to the cgroup2 mount, with a leading "/"."""
    rel = path[len(mount):] if mount and path.startswith(mount) else path
    return rel if rel.startswith("/") else "/" + rel
