"""Shared fixtures: real models only (the lab model shipped in assets/, the embedded SmolLM2)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests never use the user's cache: converted models and fingerprints go to a per-session folder,
# except the SmolLM2 conversion, which is slow and content-keyed, so it is shared when present.
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def lab_model():
    from workbench.models import load_model

    return load_model("lab:induction")


@pytest.fixture(scope="session")
def smollm2():
    from workbench.models import load_model

    return load_model("smollm2")


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    from tests.support.make_gguf import write_tiny_llama_gguf

    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    return write_tiny_llama_gguf(path)


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
