"""Tests of the attention plugin, next to it (run by `make test` with the rest)."""
