"""Pure rules: the paywall decision, periods, billing, experiments, time, tokens. Stdlib and pydantic only."""
