"""Flask glue shared by the web and the CLI: per-request state, the database, rate limits, clock operations."""
