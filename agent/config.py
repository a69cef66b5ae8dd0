"""agentd configuration: TOML file over the embedded defaults (agent/default.toml).

`load_config(path | None, overrides) -> Config`. Every value is checked;
an unknown key or a bad value raises ConfigError with one line naming the
key, e.g. `collector.interval: "fast" is not a duration; use e.g. 200ms, 2s, 1m`.
Durations become float seconds, sizes int bytes, prices Decimal.

This module is the entry; the parts are in agent/configparts/ (values,
checkers, sections, schema, loader). The names other modules import are
re-exported here.
"""
from __future__ import annotations

from dataclasses import fields

from agent.configparts.checkers import OPTIONAL_METRICS
from agent.configparts.loader import DEFAULT_TOML, load_config
from agent.configparts.schema import SCHEMA, SINK_DEFAULTS
from agent.configparts.sections import (AgentSection, ApiSection, BillingSection, BudgetsSection, CollectorSection,
                                        Config, ImagesSection, LogsSection, NetworkSection, PostgresSinkSection,
                                        SecuritySection)
from agent.configparts.values import ConfigError, parse_duration, parse_size

__all__ = [  # what other modules import from here
    "Config", "ConfigError", "load_config", "default_config", "diff_keys", "parse_duration", "parse_size",
    "SCHEMA", "SINK_DEFAULTS", "DEFAULT_TOML", "OPTIONAL_METRICS",
    "AgentSection", "ApiSection", "BillingSection", "BudgetsSection", "CollectorSection", "ImagesSection",
    "LogsSection", "NetworkSection", "PostgresSinkSection", "SecuritySection",
]


def default_config(**agent_overrides) -> Config:
    """The embedded defaults with some [agent] keys replaced (handy for tests)."""
    return load_config(None, agent_overrides)


def diff_keys(old: Config, new: Config) -> list[str]:
    """Dotted keys whose value differs between two configs (for SIGHUP reload logs)."""
    changed = []
    for f in fields(Config):
        if f.name == "source":
            continue
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a == b:
            continue
        if a is None or b is None:
            changed.append(f.name)
            continue
        for sf in fields(a):
            if getattr(a, sf.name) != getattr(b, sf.name):
                changed.append(f"{f.name}.{sf.name}")
    return changed
