"""Loading: the embedded defaults (agent/default.toml), then a TOML file,
then overrides; every value checked (agent/configparts/schema.py) and
built into a Config."""
from __future__ import annotations

import os
import socket as _socket
import tomllib
from pathlib import Path
from typing import Any

from agent.configparts.schema import SCHEMA, SINK_DEFAULTS, check_label_allowlist
from agent.configparts.sections import (AgentSection, ApiSection, BillingSection, BudgetsSection, CollectorSection,
                                        Config, ImagesSection, LogsSection, NetworkSection, PostgresSinkSection,
                                        SecuritySection)
from agent.configparts.values import ConfigError

DEFAULT_TOML = Path(__file__).parent.parent / "default.toml"


def _flatten(doc: dict) -> dict[str, dict[str, Any]]:
    """Turn the TOML document into {section: {key: value}}, rejecting unknown keys."""
    out: dict[str, dict[str, Any]] = {}
    for top, body in doc.items():
        if top == "budgets":
            out["budgets"] = _budget_tables(body)
            continue
        if top == "sink":
            if not isinstance(body, dict):
                raise ConfigError("sink", "must be a table such as [sink.postgres]")
            for sub, sbody in body.items():
                name = f"sink.{sub}"
                if name not in SCHEMA:
                    raise ConfigError(name, "unknown section; known sinks: postgres")
                if not isinstance(sbody, dict):
                    raise ConfigError(name, "must be a table")
                out[name] = dict(sbody)
            continue
        if top not in SCHEMA:
            known = ", ".join(sorted({s.split(".")[0] for s in SCHEMA} | {"budgets"}))
            raise ConfigError(top, f"unknown section; known: {known}")
        if not isinstance(body, dict):
            raise ConfigError(top, f"must be a table [{top}]")
        out[top] = dict(body)
    for section, body in out.items():
        if section == "budgets":
            continue
        for key in body:
            if key not in SCHEMA[section]:
                known = ", ".join(SCHEMA[section])
                raise ConfigError(f"{section}.{key}", f"unknown key; known keys of [{section}]: {known}")
    return out


def _budget_tables(body: Any) -> dict[str, tuple]:
    """[budgets.NAME] tables, kept as given: agent/budgets.py owns their
    rules and checks them (agentd --check, start, reload); here only their
    shape. Each becomes a hashable tuple of (key, value) pairs."""
    if not isinstance(body, dict):
        raise ConfigError("budgets", "must hold tables such as [budgets.team-a]")
    out = {}
    for name, table in body.items():
        if not isinstance(table, dict):
            raise ConfigError(f"budgets.{name}", "must be a table [budgets.NAME] with match, limit, per, action")
        out[name] = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in table.items()))
    return out


def _read_toml(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("", f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError("", f"{path}: is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError("", f"{path}: permission denied") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError("", f"{path}: not valid UTF-8") from None


def _split_override(key: str) -> tuple[str, str]:
    """Overrides may say "agent.state_dir" or just "state_dir" (an [agent] key)."""
    if "." in key:
        section, _, name = key.rpartition(".")
    else:
        section, name = "agent", key
    if section not in SCHEMA:
        raise ConfigError(key, "unknown section")
    if name not in SCHEMA[section]:
        raise ConfigError(key, f"unknown key; known keys of [{section}]: {', '.join(SCHEMA[section])}")
    return section, name


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> Config:
    """Embedded defaults, then the file at `path`, then `overrides` (None values ignored)."""
    raw = _flatten(tomllib.loads(DEFAULT_TOML.read_text()))
    raw.pop("sink.postgres", None)
    budgets: dict[str, tuple] = {}
    if path is not None:
        for section, body in _flatten(_read_toml(os.fspath(path))).items():
            if section == "budgets":
                budgets = body
                continue
            raw.setdefault(section, {}).update(body)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        section, name = _split_override(key)
        raw.setdefault(section, {})[name] = value

    parsed: dict[str, dict[str, Any]] = {}
    for section, body in raw.items():
        if section == "sink.postgres":
            body = {**SINK_DEFAULTS, **body}
            if "dsn" not in body:
                raise ConfigError("sink.postgres.dsn", "missing; set a PostgreSQL DSN or remove [sink.postgres]")
        parsed[section] = {k: SCHEMA[section][k](f"{section}.{k}", v) for k, v in body.items()}

    check_label_allowlist(parsed["collector"]["label_allowlist"])
    agent = parsed["agent"]
    agent.setdefault("host", "")
    if not agent["host"]:
        agent["host"] = _socket.gethostname()
    return Config(
        agent=AgentSection(**agent),
        collector=CollectorSection(**parsed["collector"]),
        billing=BillingSection(**parsed["billing"]),
        sink_postgres=PostgresSinkSection(**parsed["sink.postgres"]) if "sink.postgres" in parsed else None,
        security=SecuritySection(**parsed["security"]),
        logs=LogsSection(**parsed["logs"]),
        api=ApiSection(**parsed["api"]),
        source=os.path.abspath(os.fspath(path)) if path is not None else "",
        images=ImagesSection(**parsed["images"]),
        budgets=BudgetsSection(entries=tuple(sorted(budgets.items()))),
        network=NetworkSection(**parsed["network"]),
    )
