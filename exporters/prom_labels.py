"""Label and value text for the exposition formats: escaping a label value,
the ``container_label_<k>`` names, the base label string of a cgroup (built
once per cgroup and reused by every series of it) and how a number is written.
"""
from __future__ import annotations

from agent.labels import cgroup_id, metric_label_name


def escape(value) -> str:
    """Escape a label value for the exposition formats."""
    s = str(value)
    if "\\" in s or '"' in s or "\n" in s:
        s = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return s


def label_key(k: str) -> str:
    """container_label_<k> with characters invalid in a label name replaced by _."""
    return metric_label_name(k)


def num(v) -> str:
    """A sample value as the exposition formats write it (ints exact, floats by repr)."""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def base_labels(path, info, mount, allowlist) -> str:
    """The labels every series of one cgroup starts with: the allow-listed
    container labels, then id, image and name ("" for a non-container cgroup)."""
    parts = []
    labels = info.labels if info is not None else {}
    for k in allowlist:
        parts.append(f'{label_key(k)}="{escape(labels.get(k, "") if labels else "")}"')
    parts.append(f'id="{escape(cgroup_id(path, mount))}"')
    parts.append(f'image="{escape(info.image if info is not None else "")}"')
    parts.append(f'name="{escape(info.name if info is not None else "")}"')
    return ",".join(parts)


def label_str(names, values) -> str:
    return ",".join(f'{n}="{escape(v)}"' for n, v in zip(names, values))
