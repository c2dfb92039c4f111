"""The analyses on a CUDA GPU against the same analyses on the CPU (issue 20). Skipped where
torch sees no GPU: nothing in CI depends on one; run `pytest -m cuda` on a GPU machine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.models import load_model
from workbench.plugin_api import AnalysisContext, discover_plugins, run_analysis
from workbench.progress import run_to_completion

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]

PROMPT = "The Eiffel Tower is located in the city of"
CASES = {
    "logit-lens": ([PROMPT], dict(top_k=3), lambda r: r.p_final_top, 1e-3),
    "attention": ([PROMPT], dict(layer=1, head=1), lambda r: r.thumbnails, 1e-3),
    "causal-trace": ([PROMPT], dict(subject="The Eiffel Tower", samples=2), lambda r: r.scores, 1e-3),
    "patching": ([PROMPT, "The Colosseum is located in the city of"], dict(answer=" Paris", wrong_answer=" Rome"), lambda r: r.resid_pre, 1e-2),
}


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_results_equal_the_cpu_s(family, dtype):
    registry = discover_plugins()
    cpu, gpu = load_model(f"zoo:{family}", dtype=dtype), load_model(f"zoo:{family}", device="cuda", dtype=dtype)
    scale = 1.0 if dtype == "float32" else 30.0  # bf16 kernels differ between devices
    for name, (prompts, params, numbers, tolerance) in CASES.items():
        here = numbers(run_to_completion(run_analysis(registry.get(name), AnalysisContext(cpu, prompts), params)))
        there_result = run_to_completion(run_analysis(registry.get(name), AnalysisContext(gpu, prompts), params))
        assert there_result.meta.device.startswith("cuda")
        np.testing.assert_allclose(numbers(there_result), here, atol=tolerance * scale, err_msg=f"{family} {dtype} {name}")
