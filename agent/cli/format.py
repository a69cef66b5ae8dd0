"""agentctl output shaping: RFC 3339 times, `--format` templates, `ps --filter`,
and the printers every verb uses (aligned tables, JSON documents, raw bytes,
a run or exec stream's output).

Tables. ``table(headers, rows)`` aligns columns two spaces apart, each as
wide as its widest cell (None prints empty), trailing blanks cut; with
``ragged_last=True`` the last column is written as is, unpadded (a command
line in `top`).

Times. The API keeps times as epoch seconds (numbers); agentctl shows every
``*_at`` field of its JSON and tables as RFC 3339 UTC, second precision
(fractions kept in JSON): ``2026-12-03T07:36:27Z``.

Templates (`--format`), a small subset of Go's text/template as Docker uses it:

    json                one JSON object per line (Docker's `--format json`)
    table               the default table
    table TEMPLATE      a table: one column per {{...}}, headers from the field names
    TEMPLATE            one line per item

In a TEMPLATE, ``{{.Field}}`` is a field of the item and ``{{.Field.Key}}`` a
key inside it (``{{.Labels.team}}``, ``{{.Limits.memory_max}}``); field names
match case-insensitively and without underscores (``.CreatedAt`` is
``created_at``). ``{{json .Field}}`` and ``{{json .}}`` print JSON. ``\\t`` and
``\\n`` stand for a tab and a newline. A missing value prints ``<no value>``
as Docker does; a field the item never has is bad usage (exit 2) naming the
fields it has. Nothing else of Go templates (pipelines, if/range) is
understood: such a template is refused with one line.

Filters (`ps --filter KEY=VALUE`, repeatable): ``name`` (substring of the
name), ``id`` (prefix of the id), ``label`` (``KEY`` or ``KEY=VALUE``),
``status`` (created, running, paused, exited, restarting). The same key given
twice matches either value; different keys must all match (Docker's rules).
"""
from __future__ import annotations

import json
import re
import sys

FILTER_KEYS = ("name", "id", "label", "status")
_ACTION_RE = re.compile(r"{{\s*(.*?)\s*}}", re.S)
_FIELD_RE = re.compile(r"(?:json\s+)?\.(?:[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_.-]+)?)?")


class FormatError(ValueError):
    """A --format or --filter the user gave cannot be used (agentctl exits 2)."""


# -- times --------------------------------------------------------------------


def rfc3339(ts) -> str | None:
    """Epoch seconds -> '2026-12-03T07:36:27Z' (UTC); None stays None."""
    if ts is None or isinstance(ts, bool) or not isinstance(ts, (int, float)):
        return ts
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def rfc3339_precise(ts):
    """Epoch seconds -> RFC 3339 UTC with microseconds when the value has a fraction."""
    if ts is None or isinstance(ts, bool) or not isinstance(ts, (int, float)):
        return ts
    import datetime

    dt = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    text = dt.isoformat(timespec="microseconds" if ts != int(ts) else "seconds")
    return text.replace("+00:00", "Z")


def with_rfc3339(doc):
    """A copy of an API document with every numeric ``*_at`` field as an RFC 3339 string."""
    if isinstance(doc, list):
        return [with_rfc3339(x) for x in doc]
    if isinstance(doc, dict):
        return {k: (rfc3339_precise(v) if (k.endswith("_at") or k == "at") and isinstance(v, (int, float))
                    and not isinstance(v, bool) else with_rfc3339(v)) for k, v in doc.items()}
    return doc


# -- printers -----------------------------------------------------------------


def table(headers: list[str], rows: list[list], ragged_last: bool = False) -> str:
    """An aligned table: a header line, then one line per row."""
    cells = [list(headers)] + [["" if v is None else str(v) for v in r] for r in rows]
    if ragged_last:
        widths = [max(len(r[i]) for r in cells) for i in range(len(headers) - 1)]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1] for r in cells)
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells)


def print_json(obj) -> None:
    """One indented JSON document on stdout, its times in RFC 3339."""
    print(json.dumps(with_rfc3339(obj), indent=2, sort_keys=True))


def write(stream, data: bytes) -> None:
    """Raw container output to stdout/stderr, flushed."""
    stream.buffer.write(data)
    stream.flush()


def copy_output(frames):
    """The events (parsed JSON) of a run or exec stream of (stream id, data) frames;
    its output is copied to stdout and stderr as it comes."""
    from agent.wire import EVENT, STDERR, STDOUT

    for stream, data in frames:
        if stream == STDOUT:
            write(sys.stdout, data)
        elif stream == STDERR:
            write(sys.stderr, data)
        elif stream == EVENT:
            yield json.loads(data)


# -- filters ------------------------------------------------------------------


def _states() -> tuple:
    """The one state enum (agent.model), imported when a filter needs it: agent.model
    loads dataclasses, which agentctl's start-up does not otherwise pay for."""
    from agent.model import STATES

    return STATES


def __getattr__(name: str):
    if name == "STATES":  # format.STATES, as before the import became lazy
        return _states()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_filters(values: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for v in values:
        key, sep, val = v.partition("=")
        key = key.strip().lower()
        if not sep or key not in FILTER_KEYS or (not val and key != "label"):
            raise FormatError(f"--filter {v!r}: use KEY=VALUE with KEY one of {', '.join(FILTER_KEYS)}")
        if key == "status" and val not in _states():
            raise FormatError(f"--filter {v!r}: status is one of {', '.join(_states())}")
        out.setdefault(key, []).append(val)
    return out


def _match_one(key: str, val: str, c: dict) -> bool:
    if key == "name":
        return val in c.get("name", "")
    if key == "id":
        return c.get("id", "").startswith(val)
    if key == "status":
        return c.get("state") == val
    labels = c.get("labels") or {}
    k, sep, want = val.partition("=")
    return k in labels and (not sep or str(labels[k]) == want)


def matches(filters: dict[str, list[str]], c: dict) -> bool:
    return all(any(_match_one(key, v, c) for v in vals) for key, vals in filters.items())


# -- templates ----------------------------------------------------------------


def _norm(name: str) -> str:
    return name.replace("_", "").lower()


def _lookup(item, path: list[str]):
    """Follow .A.B through dicts, matching keys case-insensitively without underscores."""
    cur = item
    for i, part in enumerate(path):
        if not isinstance(cur, dict):
            return _MISSING_VALUE
        if part in cur:
            cur = cur[part]
            continue
        keys = {_norm(k): k for k in cur}
        if _norm(part) in keys:
            cur = cur[keys[_norm(part)]]
        elif i == 0:
            raise FormatError(f"--format: no field .{part}; fields: "
                              + ", ".join("." + _camel(k) for k in sorted(item)))
        else:
            return _MISSING_VALUE
    return cur


_MISSING_VALUE = object()


def _camel(key: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in key.split("_")) or key


def _text(value) -> str:
    if value is _MISSING_VALUE or value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return ",".join(f"{k}={_text(v)}" for k, v in sorted(value.items()))
    if isinstance(value, (list, tuple)):
        return " ".join(_text(v) for v in value)
    return str(value)


class Template:
    """A parsed TEMPLATE: literal text and {{.Field}} / {{json .Field}} actions."""

    def __init__(self, text: str):
        self.parts: list[tuple[str, object]] = []   # ("text", str) | ("field", (json?, path))
        pos = 0
        text = text.replace("\\t", "\t").replace("\\n", "\n")
        for m in _ACTION_RE.finditer(text):
            if m.start() > pos:
                self.parts.append(("text", text[pos:m.start()]))
            action = m.group(1)
            if not _FIELD_RE.fullmatch(action):
                raise FormatError(f"--format: {{{{{action}}}}} is not understood; use {{{{.Field}}}}, "
                                  "{{.Field.Key}}, {{json .Field}} or {{json .}} (see docs/cli.md)")
            as_json = action.startswith("json")
            path = action.split(None, 1)[-1] if as_json else action
            self.parts.append(("field", (as_json, [p for p in path[1:].split(".") if p] if path != "." else [])))
            pos = m.end()
        if pos < len(text):
            self.parts.append(("text", text[pos:]))
        if "{{" in "".join(t for kind, t in self.parts if kind == "text"):
            raise FormatError("--format: an unclosed {{; actions look like {{.Name}}")

    def columns(self) -> list[str]:
        """Header names for `table TEMPLATE`: the fields, upper case, words split (CreatedAt -> CREATED AT)."""
        out = []
        for kind, v in self.parts:
            if kind == "field":
                as_json, path = v
                name = path[-1] if path else "json"
                out.append(re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ").upper())
        return out

    def cells(self, item: dict) -> list[str]:
        out = []
        for kind, v in self.parts:
            if kind == "field":
                as_json, path = v
                value = _lookup(item, path) if path else item
                if as_json:
                    out.append(json.dumps(None if value is _MISSING_VALUE else value, sort_keys=True))
                else:
                    out.append(_text(value))
        return out

    def render(self, item: dict) -> str:
        cells = iter(self.cells(item))
        return "".join(v if kind == "text" else next(cells) for kind, v in self.parts)


def check(fmt: str) -> None:
    """FormatError now (before asking the agent) if ``fmt`` cannot be used."""
    spec = fmt.strip()
    if spec in ("json", "table"):
        return
    Template(spec[6:] if spec.startswith(("table ", "table\t")) else fmt)


def render(fmt: str, items: list[dict], default_table, table) -> str:
    """The output of `--format fmt` for ``items`` (rows of dicts); default_table() -> the plain
    table; table(headers, rows) -> an aligned table (agentctl's)."""
    spec = fmt.strip()
    if spec == "json":
        return "".join(json.dumps(i, sort_keys=True) + "\n" for i in items)
    if spec == "table":
        return default_table() + "\n"
    if spec.startswith("table ") or spec.startswith("table\t"):
        t = Template(spec[6:])
        return table(t.columns(), [t.cells(i) for i in items]) + "\n"
    t = Template(fmt)
    return "".join(t.render(i) + "\n" for i in items)
