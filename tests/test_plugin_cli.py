"""`workbench plugins`, `workbench run` and `workbench new-plugin`, as users run them."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import run_cli
from workbench.cli.main import main
from workbench.plugin_api import discover_plugins
from workbench.results import load_results

PROMPT = "t1 t2 t3 t4 t1 t2 t3"


def test_plugins_json_lists_builtins_with_status(capsys):
    assert main(["plugins", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["api_version"] == "1.2"
    by_id = {p["id"]: p for p in listing["plugins"]}
    assert by_id["logit-lens"]["status"] == "ok" and by_id["logit-lens"]["version"] == "1.0.0"
    assert "entry point" in by_id["logit-lens"]["source"]


def test_run_writes_json_and_hdf5(tmp_path, capsys):
    out, summary = tmp_path / "lens.h5", tmp_path / "lens.json"
    code = main(["run", "logit-lens", "--model", "lab:induction", "--prompt", PROMPT, "--param", "top_k=2", "--out", str(out), "--json", str(summary), "--quiet"])
    assert code == 0
    data = json.loads(summary.read_text())
    assert data["plugin"] == "logit-lens" and data["model"] == "lab:induction" and data["params"]["top_k"] == 2
    assert data["tokens"][0] == "<bos>" and len(data["p_prediction_by_layer"]) == 3
    assert data["saved"] == {"file": str(out), "result": "result-0001"}
    [(info, result)] = load_results(out, discover_plugins().result_class)
    assert np.isclose(result.p_final_top[-1, -1], data["p_prediction_by_layer"][-1], atol=1e-6)
    assert main(["inspect", str(out)]) == 0
    assert "result-0001  logit-lens/lens" in capsys.readouterr().out


@pytest.mark.slow
def test_run_errors_are_one_line_and_name_the_fix(tmp_path):
    cases = [
        (["run", "logit-lens", "--model", "lab:induction", "--prompt", PROMPT, "--param", "top_k=0"], "'top_k'", "from 1 to 50"),
        (["run", "logit-lens", "--model", "lab:induction", "--prompt", PROMPT, "--param", "topk=2"], "Unknown parameter 'topk'", "top_k"),
        (["run", "logit-lens", "--model", "lab:induction"], "needs a prompt", "--prompt"),
        (["run", "no-such-plugin", "--model", "lab:induction"], "No plugin 'no-such-plugin'", "logit-lens"),
        (["run", "logit-lens", "--model", "lab:induction", "--prompt", ""], "empty", ""),
    ]
    for args, problem, fix in cases:
        done = run_cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        error_lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(error_lines) == 1 and problem in error_lines[0] and fix in error_lines[0], done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_new_plugin_is_found_runs_and_its_own_test_passes(tmp_path):
    assert main(["new-plugin", "resid-norms", "--dir", str(tmp_path)]) == 0
    env = {"WORKBENCH_PLUGIN_PATH": str(tmp_path)}
    listing = run_cli("plugins", "--json", env=env)
    by_id = {p["id"]: p for p in json.loads(listing.stdout)["plugins"]}
    assert by_id["resid-norms"]["status"] == "ok", by_id["resid-norms"]
    assert by_id["resid-norms"]["panel"] and by_id["resid-norms"]["analysis"]
    summary = tmp_path / "norms.json"
    done = run_cli("run", "resid-norms", "--model", "lab:induction", "--prompt", PROMPT, "--json", str(summary), "--quiet", env=env)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(summary.read_text())["by_layer_last_token"]) == 3
    test = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "wbplugin_resid_norms" / "tests")],
        capture_output=True, text=True, cwd=str(tmp_path), env={**os.environ, **env}, timeout=300,
    )
    assert test.returncode == 0, test.stdout + test.stderr
    assert "2 passed" in test.stdout  # the analysis and its query
    again = run_cli("new-plugin", "resid-norms", "--dir", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr
