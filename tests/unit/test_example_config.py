"""deploy/config.example.toml is a valid config and documents every key.

The key list comes from the Config dataclasses in agent/config.py, so a new
key added there without documentation here fails this test.
"""
from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from agent import config as agent_config
from agent.config import Config, ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "config.example.toml"

# Config field name -> TOML section name
SECTION_NAMES = {"sink_postgres": "sink.postgres"}
# tables of tables ([budgets.NAME]): no fixed keys; the example shows one,
# commented out, checked by test_example_budget_block_is_a_valid_budget
TABLE_SECTIONS = {"budgets"}


def config_keys() -> dict[str, list[str]]:
    """{toml section: [keys]} derived from the Config dataclass and its sections."""
    out = {}
    hints = {f.name: f for f in dataclasses.fields(Config)}
    for name, f in hints.items():
        if name == "source" or name in TABLE_SECTIONS:
            continue
        section_cls = _section_class(f)
        out[SECTION_NAMES.get(name, name)] = [sf.name for sf in dataclasses.fields(section_cls)]
    return out


def _section_class(field):
    t = field.type
    if isinstance(t, str):  # from __future__ annotations
        t = t.split("|")[0].strip()
        return getattr(agent_config, t)
    return t


def uncommented_sink(text: str) -> str:
    """The example with its commented-out [sink.postgres] block enabled."""
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith("# [sink.postgres]"):
            inside = True
            out.append("[sink.postgres]")
            continue
        if inside:
            if not line.startswith("# "):
                inside = False
            elif re.match(r"# [a-z_]+ = ", line):
                out.append(line[2:])
                continue
            else:
                continue
        out.append(line)
    return "\n".join(out) + "\n"


def test_keys_derived_from_dataclasses():
    keys = config_keys()
    assert set(keys) == {"agent", "collector", "billing", "sink.postgres", "security", "logs", "api", "images",
                         "network"}
    assert "state_dir" in keys["agent"] and "dsn" in keys["sink.postgres"]


def test_example_parses():
    cfg = load_config(EXAMPLE, {})
    assert cfg.source == str(EXAMPLE)
    assert cfg.sink_postgres is None  # shipping is off until uncommented


def test_example_values_are_the_defaults():
    """The example shows defaults; copying it unchanged changes nothing."""
    example = load_config(EXAMPLE, {})
    default = load_config(None, {})
    assert dataclasses.replace(example, source="") == default


def test_example_with_sink_enabled_parses(tmp_path):
    p = tmp_path / "with-sink.toml"
    p.write_text(uncommented_sink(EXAMPLE.read_text()))
    cfg = load_config(p, {})
    assert cfg.sink_postgres is not None
    assert cfg.sink_postgres.dsn.startswith("postgresql://")
    assert cfg.sink_postgres.batch == 500 and cfg.sink_postgres.interval == 5.0


@pytest.mark.parametrize("section,key", [(s, k) for s, ks in config_keys().items() for k in ks])
def test_every_key_is_set_and_commented(section, key):
    text = uncommented_sink(EXAMPLE.read_text())
    doc = tomllib.loads(text)
    body = doc
    for part in section.split("."):
        body = body[part]
    assert key in body, f"[{section}] {key} missing from {EXAMPLE.name}"
    original = EXAMPLE.read_text().splitlines()
    # the line above the assignment (in the original file) is a comment saying what it does
    idx = next(i for i, l in enumerate(original) if re.match(rf"(# )?{key} = ", l)
               and _section_at(original, i) == section)
    above = original[idx - 1].lstrip("# ").strip() if idx else ""
    assert original[idx - 1].startswith("#") and len(above) > 10, f"{section}.{key} has no comment"


def _section_at(lines, idx):
    for i in range(idx, -1, -1):
        m = re.match(r"(?:# )?\[([a-z.]+)\]$", lines[i])
        if m:
            return m.group(1)
    return None


def test_example_documents_no_unknown_key(tmp_path):
    """Nothing in the example is a key agentd would refuse (the loader is strict)."""
    p = tmp_path / "bad.toml"
    p.write_text(EXAMPLE.read_text().replace("[logs]\n", "[logs]\nmax_byte = \"1M\"\n"))
    with pytest.raises(ConfigError) as e:
        load_config(p, {})
    assert "logs.max_byte" in str(e.value)


def _comment_block_above(lines, idx):
    block = []
    i = idx - 1
    while i >= 0 and lines[i].startswith("#"):
        block.append(lines[i])
        i -= 1
    return "\n".join(reversed(block))


@pytest.mark.parametrize("section,key", [(s, k) for s, ks in config_keys().items() for k in ks])
def test_live_marks_match_the_daemon(section, key):
    """A key is documented as changing live on SIGHUP exactly when agentd applies it live."""
    from agent.daemon.agentd import LIVE_KEYS

    original = EXAMPLE.read_text().splitlines()
    idx = next(i for i, l in enumerate(original) if re.match(rf"(# )?{key} = ", l)
               and _section_at(original, i) == section)
    says_live = "Changes live on SIGHUP" in _comment_block_above(original, idx)
    assert says_live == (f"{section}.{key}" in LIVE_KEYS), f"{section}.{key}: live mark wrong"


def test_agentd_check_accepts_the_example_and_names_a_bad_key(tmp_path):
    """The README's `agentd --config F --check`: 0 for the example, 2 and one line for a typo."""
    import shutil
    import subprocess

    agentd = shutil.which("agentd")
    assert agentd, "agentd not on PATH (pip install -e .)"
    ok = subprocess.run([agentd, "--config", str(EXAMPLE), "--check"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "typo.toml"
    bad.write_text(EXAMPLE.read_text().replace('stop_timeout = "10s"', 'stop_timeout = "soon"'))
    r = subprocess.run([agentd, "--config", str(bad), "--check"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    err = (r.stdout + r.stderr).strip().splitlines()
    assert len(err) == 1 and "agent.stop_timeout" in err[0] and "soon" in err[0], err


def test_example_budget_block_is_a_valid_budget(tmp_path):
    """The commented [budgets.team-a] block of the example, uncommented, is a
    budget agentd accepts."""
    from agent.budgets import check_config, from_config
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("# [budgets.team-a]")
    block = []
    for line in lines[start:]:
        if not line.startswith("# "):
            break
        block.append(line[2:].split("  #")[0].rstrip())
    p = tmp_path / "budget.toml"
    p.write_text("\n".join(block) + "\n")
    cfg = load_config(p, {})
    check_config(cfg)
    (b,) = from_config(cfg.budgets.entries)
    assert b.name == "team-a" and b.action == "freeze" and b.warn == [50, 80]
