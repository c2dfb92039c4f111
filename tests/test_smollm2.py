"""Integration tests on the embedded SmolLM2-135M-Instruct (Llama architecture, grouped-query attention)."""

import numpy as np
import pytest
import torch

from workbench.capture import capture_activations
from workbench.models.loading import load_hf_model
from workbench.predict import predict_next
from workbench.progress import run_to_completion
from workbench.store import ActivationStore

pytestmark = pytest.mark.smollm2
EIFFEL = "The Eiffel Tower is located in the city of"


def test_embedded_model_answers_paris(smollm2):
    assert smollm2.describe()["architecture"] == "LlamaForCausalLM"
    assert (smollm2.n_layers, smollm2.n_heads, smollm2.n_kv_heads) == (30, 9, 3)
    assert not smollm2.tokenizer_prepends_bos  # SmolLM2's tokenizer adds no BOS
    plain = predict_next(smollm2, EIFFEL, k=3)
    assert plain.str_tokens[0] == "The" and plain.top[0][0] == " Paris"
    assert plain.top[0][2] == pytest.approx(0.70, abs=0.03)
    with_bos = predict_next(smollm2, EIFFEL, k=3, prepend_bos=True)
    assert with_bos.str_tokens[0] == "<|im_start|>" and with_bos.top[0][0] == " Paris"
    assert with_bos.top[0][2] == pytest.approx(0.30, abs=0.03)


def test_bridge_matches_the_hf_model_and_output_attentions(smollm2):
    # A fresh HF model: the bridge wraps its own copy's modules, which stops HF from
    # recording attentions there.
    _, hf, _ = load_hf_model("smollm2")
    hf.set_attn_implementation("eager")
    ids = torch.tensor([smollm2.tokenize(EIFFEL)])
    with torch.inference_mode():
        expected = hf(ids, output_attentions=True)
        logits, cache = smollm2.bridge.run_with_cache(ids, names_filter=["blocks.7.attn.hook_pattern"])
    torch.testing.assert_close(logits, expected.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cache["blocks.7.attn.hook_pattern"], expected.attentions[7], atol=1e-6, rtol=1e-5)


def test_store_equals_run_with_cache(smollm2, tmp_path):
    prompts = [EIFFEL, "Water boils at a temperature of", "The capital of Japan is"]
    hooks = ["residual", "attention", "blocks.12.hook_mlp_out"]
    path = tmp_path / "smol.h5"
    for dtype in ("float32", "float16"):
        run_to_completion(capture_activations(smollm2, prompts, hooks, path, storage_dtype=dtype, batch_size=1))
    with ActivationStore(path) as store:
        full, half = store.runs()
        assert full.attrs["storage_dtype"] == "float32" and half.attrs["storage_dtype"] == "float16"
        names = ["blocks.0.hook_resid_pre", "blocks.15.hook_resid_post", "blocks.29.hook_resid_post", "blocks.3.attn.hook_pattern", "blocks.12.hook_mlp_out"]
        for i, prompt in enumerate(prompts):
            ids = torch.tensor([smollm2.tokenize(prompt)])
            with torch.inference_mode():
                _, cache = smollm2.bridge.run_with_cache(ids, names_filter=names)
            for name in names:
                expected = cache[name][0].numpy()
                np.testing.assert_array_equal(full.read(name, i), expected, err_msg=name)
                np.testing.assert_allclose(half.read(name, i).astype(np.float32), expected, rtol=2**-10, atol=2e-3, err_msg=name)
        # Grouped-query attention: a pattern per query head (9), not per key/value head (3).
        assert full.read("blocks.3.attn.hook_pattern", 0).shape == (9, 10, 10)
        hit = store.find(smollm2.fingerprint, smollm2.tokenize(EIFFEL), ["blocks.3.attn.hook_pattern"])
        assert hit is not None and hit.prompt == 0
