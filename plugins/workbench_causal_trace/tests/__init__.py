"""Tests of the causal_trace plugin, next to it (run by `make test` with the rest)."""
