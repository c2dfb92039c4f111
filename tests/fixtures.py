"""Fixtures shared by tests/ and the built-in plugins' tests (plugins/*/tests): real models
only (the lab model shipped in assets/, the embedded SmolLM2). Registered for the whole
repository by the root conftest.py."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def lab_model():
    from workbench.models import load_model

    return load_model("lab:induction")


@pytest.fixture(scope="session")
def smollm2():
    from workbench.models import load_model

    return load_model("smollm2")


@pytest.fixture(scope="session")
def nnsight_lab():
    """The lab model on the nnsight engine (workbench.engines)."""
    from workbench.models import load_model

    return load_model("nnsight:lab:induction")


@pytest.fixture(scope="session")
def nnsight_smollm2():
    from workbench.models import load_model

    return load_model("nnsight:smollm2")


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    from tests.support.make_gguf import write_tiny_llama_gguf

    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    return write_tiny_llama_gguf(path)


@pytest.fixture(autouse=True)
def no_question_before_long_jobs(monkeypatch):
    """Whether a job counts as long (over 15 minutes) depends on this machine's speed at the
    moment (a timed forward pass): on a busy machine a test's patching run was estimated at
    30 minutes and refused. Tests that are not about that question run every job; those that
    are set runner.LONG_JOB_SECONDS themselves, which wins over this."""
    from workbench.plugin_api import runner

    monkeypatch.setattr(runner, "LONG_JOB_SECONDS", float("inf"))
