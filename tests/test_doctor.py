"""`workbench doctor` and the lock it compares against."""

from __future__ import annotations

import json
import re
import tomllib

import pytest
from packaging.requirements import Requirement

from tests.conftest import REPO, run_cli
from workbench.doctor import environment

STEPS = [
    "cache folder is writable",
    "load lab:induction",
    "activation store round trip",
    "causal trace equals the reference algorithm",
    "ROME edit and its exact undo",
]


@pytest.mark.slow
def test_doctor_passes_and_reports_what_a_bug_report_needs(tmp_path):
    done = run_cli("doctor", "--json", str(tmp_path / "doctor.json"), env={"WORKBENCH_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stdout + done.stderr
    for label in ("python", "torch", "transformers", "TransformerLens", "Qt (PySide6)", "h5py", "devices", "cache folder", "lock"):
        assert re.search(rf"^{re.escape(label)}\s", done.stdout, re.MULTILINE), label
    assert str(tmp_path / "cache") in done.stdout
    report = json.loads((tmp_path / "doctor.json").read_text())
    assert report["ok"] is True
    assert [step["step"] for step in report["self_check"]] == STEPS
    assert all(step["status"] == "ok" for step in report["self_check"])
    import transformers

    assert report["packages"]["transformers"] == transformers.__version__
    assert "all checks passed" in done.stdout


@pytest.mark.slow
def test_doctor_fails_naming_the_step_when_the_cache_folder_cannot_be_written(tmp_path):
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("a file where the cache folder should be")
    done = run_cli("doctor", env={"WORKBENCH_CACHE_DIR": str(not_a_folder)})
    assert done.returncode == 1
    assert re.search(r"FAILED\s+cache folder is writable .*cannot be written", done.stdout)
    assert re.search(r"skipped\s+ROME edit and its exact undo .*needs: cache folder is writable", done.stdout)
    assert re.search(r"ok\s+causal trace equals the reference algorithm", done.stdout)  # the rest still runs
    assert "FAILED: cache folder is writable" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_the_lock_pins_every_dependency_within_pyproject_ranges():
    pins = environment.read_lock()
    assert pins, "requirements/lock.txt is missing or empty"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["test"]
    for text in wanted:
        requirement = Requirement(text)
        name = environment.normalise(requirement.name)
        assert name in pins, f"{name} is not in the lock"
        version = pins[name].split("+")[0]
        assert requirement.specifier.contains(version, prereleases=True), f"the lock pins {name} {pins[name]}, outside {requirement.specifier}"
    lock_text = (REPO / "requirements" / "lock.txt").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", lock_text)
    pinned = [block for block in blocks if re.match(r"^[A-Za-z0-9][\w.-]*==", block)]
    assert len(pinned) == len(pins) and all("--hash=sha256:" in block for block in pinned)


def test_lock_comparison_names_what_differs(tmp_path):
    import numpy
    import torch

    lock = tmp_path / "lock.txt"
    lock.write_text(
        f"numpy=={numpy.__version__} \\\n    --hash=sha256:00\n"
        "torch==0.0.1 \\\n    --hash=sha256:00\n"
        "not-a-real-package-xyz==1.0\n",
        encoding="utf-8",
    )
    comparison = environment.compare_with_lock(lock)
    assert comparison.pinned == 3 and not comparison.matches
    assert ("torch", torch.__version__, "0.0.1") in comparison.differ
    assert ("not-a-real-package-xyz", None, "1.0") in comparison.differ
    assert all(name != "numpy" for name, _, _ in comparison.differ)
    assert environment.compare_with_lock(tmp_path / "missing.txt") is None
