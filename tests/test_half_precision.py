"""Every analysis on SmolLM2 in bfloat16 against the same analysis in float32 (issue 20).

A bfloat16 model is a slightly different function (8 bits of mantissa), so the results
differ; the bounds below are what was measured on this machine (transformers 5.25, torch
2.13 CPU) times a margin of about three, in the units each result is read in. A result
computed in half precision says so (its provenance, the panel's status line, the report).
"""

from __future__ import annotations

import numpy as np
import pytest

from workbench.editing import EditStack
from workbench.models import load_model
from workbench.plugin_api import AnalysisContext, discover_plugins, run_analysis
from workbench.progress import run_to_completion
from workbench.report.format import provenance_rows

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]

PROMPT = "The Eiffel Tower is located in the city of"
CORRUPTED = "The Colosseum is located in the city of"

# analysis: (prompts, params, the numbers compared, max |bf16 - fp32| allowed, measured)
CASES = {
    "logit-lens": ([PROMPT], dict(top_k=3), lambda r: r.p_final_top, 0.1),
    "attention": ([PROMPT], dict(layer=5, head=2), lambda r: r.thumbnails, 0.3),  # measured 0.11 (mean 8e-4)
    "induction": ([], dict(batch=2), lambda r: np.stack([r.scores(k) for k in ("induction", "previous_token", "duplicate_token")]), 0.02),  # 0.004
    "qk-ov": ([PROMPT], dict(head="29.2", self_top_tokens=256), lambda r: r.copying_score, 0.005),  # 0.00046
    "causal-trace": ([PROMPT], dict(subject="The Eiffel Tower", samples=2, kinds="resid"), lambda r: r.scores, 0.05),  # 0.015
    "patching": ([PROMPT, CORRUPTED], dict(targets="resid_pre", answer=" Paris", wrong_answer=" Rome"), lambda r: r.resid_pre, 0.8),  # 0.26 of logit differences up to 10
    "rome": ([], dict(subject="Eiffel Tower", template="{} is located in the city of", target_new="Rome", layer=14, gen_tokens=0, short_prefixes=2, long_prefixes=2, v_steps=12), lambda r: r.p_after, 0.05),
}


@pytest.fixture(scope="module")
def results(smollm2):
    registry = discover_plugins()
    half = load_model("smollm2", dtype="bfloat16")
    found = {}
    for dtype, model in (("float32", smollm2), ("bfloat16", half)):
        for name, (prompts, params, numbers, _) in CASES.items():
            result = run_to_completion(run_analysis(registry.get(name), AnalysisContext(model, prompts), params))
            if name == "rome":
                EditStack.of(model).undo()
            found[dtype, name] = (result, np.asarray(numbers(result), dtype=np.float64))
    return found


@pytest.mark.parametrize("name", list(CASES))
def test_bfloat16_results_stay_close_to_float32(results, name):
    (full, expected), (half, got) = results["float32", name], results["bfloat16", name]
    assert got.shape == expected.shape and np.isfinite(got).all()
    difference = float(np.abs(got - expected).max())
    print(f"{name}: max |bf16 - fp32| = {difference:.3g} (bound {CASES[name][3]})")
    assert difference <= CASES[name][3]
    # The half-precision result says what it is; the float32 one does not warn.
    assert half.meta.dtype == "bfloat16" and half.meta.half_precision and not full.meta.half_precision
    rows = dict(provenance_rows(type("Entry", (), {"result": half})(), type("Report", (), {"model_fingerprint": "", "prompts": []})()))
    assert "bfloat16 (half precision" in rows["computed on"]


def test_the_answer_survives_half_precision(results):
    full, half = results["float32", "logit-lens"][0], results["bfloat16", "logit-lens"][0]
    assert full.final_top_tokens[-1] == half.final_top_tokens[-1] == " Paris"
