"""Tests of the induction plugin, next to it (run by `make test` with the rest)."""
