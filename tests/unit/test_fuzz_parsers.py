"""Bad input never escapes as the wrong exception (issue 5, "bad input").

Hypothesis feeds the config loader arbitrary TOML (random text, and valid
TOML whose keys are the real schema's keys with values of every type), every
cgroup-file parser of runtime.stats (random text and real captured kernel
files mutated) and every limit parser of runtime.limits (user strings, JSON
values, OCI linux.resources objects, kernel file texts).

The contracts checked:

- agent.config.load_config raises only ConfigError (one line, naming a key).
- runtime.stats parse_* raise only ValueError (a malformed kernel file).
- runtime.limits user-facing parsers (Limits.parse, parse_size, parse_cpus,
  parse_weight, parse_pids, parse_bool, parse_cpuset_list, parse_io_max,
  from_oci) raise only LimitError, whose message is one line naming the field.
- runtime.limits kernel-text parsers (parse_limit_files, parse_io_max_line)
  raise only ValueError.

Violations found by this fuzzing (parse_pressure KeyError, Limits.parse
io_max TypeError, from_oci AttributeError) were fixed by the owners; each
is kept as a plain regression test below.
"""
from __future__ import annotations

import os
import string

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from agent.config import SCHEMA, ConfigError, load_config
from runtime import limits as L
from runtime import stats as S
from runtime.errors import LimitError

from conftest import fixture_files

# no "explain" phase: it imports libcst and re-runs failures, slow on a loaded 2-core CI box
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink]
FUZZ = settings(max_examples=120, deadline=None, phases=PHASES,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# -------------------------------------------------------------- value strategies

_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
json_values = st.recursive(_json_scalar, lambda c: st.one_of(st.lists(c, max_size=4),
                                                             st.dictionaries(st.text(max_size=8), c, max_size=4)),
                           max_leaves=12)

# text that looks like what people type for limits and durations
_limit_alphabet = string.digits + "KMGTPkmgtpiIbB.%/-:,=_ maxrbpswiopsdev/\t\n" + "é\x00"
limit_text = st.one_of(st.text(alphabet=_limit_alphabet, max_size=24), st.text(max_size=12),
                       st.sampled_from(["max", "0", "-1", "1e3", "nan", "inf", "0x10", "1_000", "٣",
                                        "9" * 30, "1.5", "150%", "50000/100000", "/dev/null:rbps=1M",
                                        "8:0 rbps=10M", "0-1,3", "1-0", "true", "1K", ".5M", "5.M"]))


# -------------------------------------------------------------- config


def _toml_value(v) -> str:
    """A TOML rendering of a JSON-ish value (tables inline)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v in (float("inf"), float("-inf")):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in v) + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f'"{_esc(k)}" = {_toml_value(x)}' for k, x in v.items()) + "}"
    return '""'


def _esc(k: str) -> str:
    return "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in k)


_toml_scalar = st.one_of(st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
                         st.floats(), limit_text, st.text(max_size=30))
toml_values = st.recursive(_toml_scalar, lambda c: st.one_of(st.lists(c, max_size=3),
                                                             st.dictionaries(st.text(max_size=6), c, max_size=3)),
                           max_leaves=6)
section_names = st.sampled_from(sorted(SCHEMA) + ["sink", "nope", "agent.x"])


@st.composite
def config_docs(draw) -> str:
    lines = []
    for section in draw(st.lists(section_names, max_size=4, unique=True)):
        keys = list(SCHEMA.get(section, {})) + ["unknown_key"]
        lines.append(f'[{section}]' if section != "agent.x" else '["agent.x"]')
        for key in draw(st.lists(st.sampled_from(keys), max_size=5, unique=True)):
            lines.append(f"{key} = {_toml_value(draw(toml_values))}")
    return "\n".join(lines) + "\n"


def _load_text(tmp_path, text: str | bytes):
    p = tmp_path / "fuzz.toml"
    if isinstance(text, str):
        p.write_text(text, encoding="utf-8", errors="surrogatepass")
    else:
        p.write_bytes(text)
    return load_config(str(p))


def _assert_config_error(tmp_path, text):
    try:
        _load_text(tmp_path, text)
    except ConfigError as e:
        msg = str(e)
        assert msg and "\n" not in msg, f"ConfigError message is not one line: {msg!r}"


@FUZZ
@given(text=config_docs())
@example(text='[agent]\nstop_timeout = 1e400\n')
@example(text='[collector]\ninterval = -0.0\n')
@example(text='[sink.postgres]\ndsn = "postgresql://x"\nbatch = 9223372036854775807\n')
@example(text='sink = 1\n')
@example(text='[billing]\nprice_cpu_core_hour = "NaN"\n')
@example(text='[billing]\nprice_cpu_core_hour = "1e999999999"\n')
@example(text='[logs]\nmax_bytes = 1e30\n')
def test_config_schema_shaped_toml_raises_only_config_error(tmp_path, text):
    _assert_config_error(tmp_path, text)


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_config_arbitrary_text_raises_only_config_error(tmp_path, text):
    if isinstance(text, str):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "surrogatepass")
    _assert_config_error(tmp_path, text)


# -------------------------------------------------------------- runtime.stats

STATS_PARSERS = {
    "cpu.stat": S.parse_cpu_stat,
    "memory.stat": S.parse_flat_keyed,
    "memory.events": S.parse_flat_keyed,
    "pids.events": S.parse_flat_keyed,
    "io.stat": S.parse_io_stat,
    "cpu.pressure": S.parse_pressure,
    "memory.pressure": S.parse_pressure,
    "io.pressure": S.parse_pressure,
    "cgroup.events": S.parse_events,
    "memory.current": S.parse_int_or_max,
    "pids.max": S.parse_int_or_max,
    "cpuset.cpus.effective": S.parse_cpuset,
}
_kernel_alphabet = string.ascii_lowercase[:12] + string.digits + " =:._-,\n\t" + "avg10totalsomefull"


def _seeds(file: str) -> list[str]:
    out = []
    for path in fixture_files(file):
        with open(path, errors="replace") as f:
            out.append(f.read())
    return out or [""]


@st.composite
def mutated(draw, file: str) -> str:
    """A real captured kernel file with one span replaced by random text."""
    text = draw(st.sampled_from(_seeds(file)))
    i = draw(st.integers(0, len(text)))
    j = draw(st.integers(i, min(len(text), i + 12)))
    junk = draw(st.text(alphabet=_kernel_alphabet, max_size=10))
    return text[:i] + junk + text[j:]


def _only_value_error(parser, text):
    try:
        parser(text)
    except ValueError:
        pass


@pytest.mark.parametrize("file", sorted(STATS_PARSERS))
@settings(max_examples=60, deadline=None, phases=PHASES)
@given(data=st.data())
def test_stats_parsers_raise_only_value_error(file, data):
    text = data.draw(st.one_of(mutated(file), st.text(alphabet=_kernel_alphabet, max_size=80), st.text(max_size=40)))
    _only_value_error(STATS_PARSERS[file], text)


def test_parse_pressure_with_a_missing_key_raises_value_error():
    """Found by this fuzzing (it raised KeyError); fixed in bd0e727."""
    with pytest.raises(ValueError):
        S.parse_pressure("some avg10=0.00 avg60=0.00 total=0\n")


@given(text=st.sampled_from([t for f in ("cpu.stat", "memory.stat", "io.stat", "cpu.pressure", "cgroup.events")
                             for t in _seeds(f) if t]))
@settings(max_examples=20, deadline=None, phases=PHASES)
def test_real_kernel_files_parse_without_error(text):
    """The fuzz seeds themselves are valid: the parsers accept every captured file."""
    for parser in (S.parse_flat_keyed, S.parse_io_stat):
        parser(text)


# -------------------------------------------------------------- runtime.limits

USER_PARSERS = [L.parse_size, L.parse_cpus, L.parse_weight, L.parse_pids, L.parse_bool,
                L.parse_cpuset_list, L.parse_io_max]
LIMIT_KEYS = ["memory", "memory_high", "memory_low", "memory_swap", "memory_oom_group", "cpus",
              "cpu_quota_us", "cpu_period_us", "cpu_weight", "io_weight", "io_max", "pids",
              "cpuset_cpus", "cpuset_mems", "swap", "bogus"]


def _assert_limit_error(fn, *a, known=(), **kw):
    """fn(...) succeeds or raises LimitError; ``known``: exception types of pinned bugs."""
    try:
        fn(*a, **kw)
    except LimitError as e:
        msg = str(e)
        assert msg and "\n" not in msg and e.field, f"LimitError not one line naming a field: {msg!r}"
    except known:
        pass


@pytest.mark.parametrize("parser", USER_PARSERS, ids=lambda p: p.__name__)
@settings(max_examples=80, deadline=None, phases=PHASES)
@given(value=st.one_of(limit_text, json_values))
def test_user_limit_parsers_raise_only_limit_error(parser, value):
    _assert_limit_error(parser, value)


@FUZZ
@given(kw=st.dictionaries(st.sampled_from(LIMIT_KEYS), st.one_of(limit_text, json_values), max_size=5))
@example(kw={"io_max": ["8:0 rbps=1M", "8:0 wbps=1M"]})
@example(kw={"io_max": 5})
@example(kw={"io_max": {"a": 1}})
def test_limits_parse_raises_only_limit_error(kw):
    _assert_limit_error(lambda: L.Limits.parse(**kw))


def test_limits_parse_io_max_not_a_list_raises_limit_error():
    """Found by this fuzzing (it raised TypeError); fixed in 64939ef."""
    with pytest.raises(LimitError, match="io_max"):
        L.Limits.parse(io_max=5)


_oci_keys = st.sampled_from(["cpu", "memory", "pids", "blockIO", "cpuset", "shares", "quota", "period",
                             "limit", "reservation", "swap", "weight", "throttleReadBpsDevice",
                             "major", "minor", "rate", "cpus", "mems", "realtimeRuntime"])
oci_values = st.recursive(_json_scalar, lambda c: st.one_of(st.lists(c, max_size=3),
                                                            st.dictionaries(_oci_keys, c, max_size=4)),
                          max_leaves=10)


@FUZZ
@given(resources=st.one_of(st.dictionaries(_oci_keys, oci_values, max_size=5), json_values))
def test_from_oci_raises_only_limit_error(resources):
    _assert_limit_error(L.from_oci, resources)


def test_from_oci_with_a_non_object_section_raises_limit_error():
    """Found by this fuzzing (it raised AttributeError); fixed in 18c7e49."""
    with pytest.raises(LimitError, match="cpu"):
        L.from_oci({"cpu": [1]})


_kernel_limit_files = st.dictionaries(st.sampled_from(sorted(L.FILE_FIELDS)),
                                      st.one_of(st.text(alphabet=_limit_alphabet, max_size=30),
                                                st.sampled_from(["max", "max 100000", "100000", "8:0 rbps=1 wbps=max",
                                                                 "default 100", "0-1", ""])),
                                      max_size=6)


@FUZZ
@given(texts=_kernel_limit_files)
def test_kernel_limit_texts_raise_only_value_error(texts):
    _only_value_error(L.parse_limit_files, texts)


@FUZZ
@given(line=st.text(alphabet=_limit_alphabet, max_size=40))
def test_io_max_line_raises_only_value_error(line):
    _only_value_error(L.parse_io_max_line, line)
