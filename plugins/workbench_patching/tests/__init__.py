"""Tests of the patching plugin, next to it (run by `make test` with the rest)."""
