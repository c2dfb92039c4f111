"""Helpers for the tests (the fixtures are in tests/fixtures.py, shared with the plugins' tests)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests never use the user's cache: converted models and fingerprints go to a per-session folder,
# except the SmolLM2 conversion, which is slow and content-keyed, so it is shared when present.
REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict | None = None, timeout: int = 300):
    """Run the installed `workbench` command as a user would; returns CompletedProcess."""
    import subprocess

    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "workbench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=str(REPO),
    )
