"""Tests of the rome plugin, next to it (run by `make test` with the rest)."""
