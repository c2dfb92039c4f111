"""pytest's root: the shared fixtures (tests/fixtures.py) for tests/ and for the built-in
plugins' own tests in plugins/*/tests."""

pytest_plugins = ["tests.fixtures"]
