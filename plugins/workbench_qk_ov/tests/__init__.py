"""Tests of the qk_ov plugin, next to it (run by `make test` with the rest)."""
