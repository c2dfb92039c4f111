"""rome-eval: CounterFact-format data, per-case edit / measure / exact restore, and the --json format."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import REPO
from workbench.errors import InputError
from workbench.models import load_model
from workbench.plugin_api import AnalysisContext, discover_plugins, run_analysis, summary_json
from workbench.progress import run_to_completion

DATA = REPO / "examples" / "counterfact_smollm2.json"
HELDOUT = REPO / "examples" / "counterfact_heldout_smollm2.json"  # longer prompts, subjects of several tokens
LAB_HP = dict(v_steps=25, v_weight_decay=0.01, clamp_norm_factor=40.0, short_prefixes=2, long_prefixes=2)
CASE_KEYS = {"case_id", "ES", "PS", "NS", "EM", "PM", "NM", "seconds"}
SUMMARY_KEYS = {"ES", "PS", "NS", "S", "EM", "PM", "NM", "seconds_per_edit"}


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "rome-eval-cache"))


@pytest.fixture(scope="module")
def lab():
    return load_model("lab:induction")


@pytest.fixture(scope="module")
def lab_corpus(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("corpus") / "lab-tokens.txt"
    path.write_text("\n".join(" ".join(f"t{i}" for i in rng.integers(0, 64, size=60)) for _ in range(40)), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def lab_dataset(tmp_path_factory):
    """Induction 'facts' of the lab model: after 't1 t2 ... t1 t2 tX' it answers with what followed tX."""
    records = []
    for case_id, (a, b, c, d) in enumerate([(1, 2, 3, 4), (5, 6, 7, 8)]):
        records.append({
            "case_id": case_id,
            "requested_rewrite": {"prompt": f"t{a} t{b} t{c} t{d} t{a} t{b} {{}}", "subject": f"t{c}", "target_new": {"str": "t30"}, "target_true": {"str": f"t{d}"}},
            "paraphrase_prompts": [f"t40 t{a} t{b} t{c} t{d} t{a} t{b} t{c}"],
            "neighborhood_prompts": [f"t{a} t{b} t{c} t{d} t41 t{c}"],
        })
    path = tmp_path_factory.mktemp("data") / "lab_counterfact.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return str(path)


def run_eval(model, **params):
    plugin = discover_plugins().get("rome-eval")
    return run_to_completion(run_analysis(plugin, AnalysisContext(model, []), params))


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.bridge.original_model.named_parameters()}


def same_weights(model, saved):
    return all(torch.equal(p, saved[n]) for n, p in model.bridge.original_model.named_parameters())


def test_eval_on_lab_restores_the_weights_and_writes_the_issue_format(lab, lab_dataset, lab_corpus):
    before, fingerprint = snapshot(lab), lab.fingerprint
    result = run_eval(lab, dataset=lab_dataset, layer=0, corpus=lab_corpus, **LAB_HP)
    assert same_weights(lab, before) and lab.fingerprint == fingerprint == lab.current_fingerprint()
    out = summary_json(result)
    assert [set(c) for c in out["cases"]] == [CASE_KEYS, CASE_KEYS]
    assert set(out["summary"]) == SUMMARY_KEYS
    for key in ("ES", "PS", "NS", "S"):
        assert 0.0 <= out["summary"][key] <= 1.0
    # The metrics are recomputed from the per-case numbers, independently of the result's code.
    es = np.mean([c["ES"] for c in out["cases"]])
    assert out["summary"]["ES"] == pytest.approx(es)
    assert out["summary"]["ES"] == 1.0  # the lab edit at the subject's own position always takes
    json.dumps(out)
    assert result.report().figures


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), ("{not json", "not valid JSON"), ("[]", "non-empty list"), ('[{"prompt": "x"}]', "Record 0 of data.json: requested_rewrite is missing")],
)
def test_bad_datasets_are_refused(lab, tmp_path, content, message):
    path = tmp_path / "data.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        run_eval(lab, dataset=str(path), layer=0)


@pytest.mark.parametrize(("path", "count"), [(DATA, 20), (HELDOUT, 10)], ids=["benchmark", "held-out"])
def test_dataset_file_is_counterfact_format(path, count):
    records = json.loads(path.read_text(encoding="utf-8"))
    assert len(records) >= count
    for record in records:
        rw = record["requested_rewrite"]
        assert "{}" in rw["prompt"] and rw["subject"] and rw["target_new"]["str"] and rw["target_true"]["str"]
        assert len(record["paraphrase_prompts"]) >= 2 and len(record["neighborhood_prompts"]) >= 2


@pytest.mark.smollm2
def test_smollm2_eval_meets_the_targets_on_a_few_cases(tmp_path):
    """Through the CLI, as users run it: a few cases (the 20-case run is benchmarks/bench_rome.py)."""
    out = tmp_path / "eval.json"
    # --yes: whether the job counts as long rests on one timed forward pass, which a busy
    # machine slows (CI once estimated these 4 cases at 63 minutes and asked).
    command = [sys.executable, "-m", "workbench", "run", "rome-eval", "--model", "smollm2", "--param", f"dataset={DATA}", "--param", "max_cases=4", "--param", "layer=4", "--yes", "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(out.read_text())["summary"]
    assert summary["ES"] >= 0.95 and summary["PS"] >= 0.8 and summary["NS"] >= 0.7
