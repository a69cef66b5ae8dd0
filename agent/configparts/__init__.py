"""The parts of agent.config, one job each; import them through agent.config.

- `values`    ConfigError and the value rules a config shares with other modules:
              durations, sizes
- `checkers`  one checker per kind of key: (key, value) -> parsed value or ConfigError
- `sections`  the Config dataclass and one frozen dataclass per section
- `schema`    which keys each section has and the checker of each; the checks
              that span keys (label allow-list)
- `loader`    the embedded defaults (agent/default.toml), the TOML file and
              overrides, merged, checked and built into a Config
"""
