"""Configuration read at start-up: GATE_* variables, site.toml and presets, resource folders."""
