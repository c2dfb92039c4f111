"""The architecture's import rules are checked by import-linter (`make check`, run by `make
test`); these tests prove the contracts bite: the same check on a copy of the code with one
forbidden import added fails, naming the contract and the import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_copy(tmp_path: Path, edit: tuple[str, str] | None) -> subprocess.CompletedProcess:
    """lint-imports on a copy of workbench/ (with `edit`: (file, line to add at its top))."""
    shutil.copytree(REPO / "workbench", tmp_path / "workbench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    if edit is not None:
        target = tmp_path / edit[0]
        target.write_text(edit[1] + "\n" + target.read_text(encoding="utf-8"), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))  # the copy shadows the installed workbench
    return subprocess.run([str(LINT_IMPORTS), "--no-logo", "--config", str(tmp_path / "pyproject.toml")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (make setup installs it)")
def test_the_contracts_hold_on_the_code_as_it_is(tmp_path):
    done = lint_copy(tmp_path, None)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (make setup installs it)")
@pytest.mark.parametrize(
    "edit, contract, chain",
    [
        (("workbench/store/reader.py", "import PySide6"), "Qt (PySide6", "workbench.store.reader -> PySide6"),
        (("workbench/store/reader.py", "from workbench import plugin_api"), "layers", "workbench.store.reader -> workbench.plugin_api"),
        (("workbench/results/base.py", "import workbench_attention"), "does not import the built-in plugins", "workbench.results.base -> workbench_attention"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(tmp_path, edit, contract, chain):
    done = lint_copy(tmp_path, edit)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "BROKEN" in done.stdout and contract in done.stdout and chain in done.stdout, done.stdout
