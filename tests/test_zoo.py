"""The model zoo (issue 19): tiny models of every family, built locally, reproducibly, and
loaded through the same path as a user's checkpoint folder; and the shape questions the
analyses ask of a model instead of branching on family names."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import ModelLoadError
from workbench.models import load_model
from workbench.models.shape import expert_count, parallel_blocks, residual_before_mlp
from workbench.models.specs import parse_spec
from workbench.models.zoo import FAMILIES, build_zoo_model


def test_a_family_builds_the_same_weights_every_time(tmp_path):
    from safetensors.torch import load_file

    first = build_zoo_model("qwen3", tmp_path / "a")
    again = build_zoo_model("qwen3", tmp_path / "b")
    a, b = load_file(first / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The family's features are switched on, and the weights are not left at their defaults.
    config = (first / "config.json").read_text()
    assert '"num_key_value_heads": 2' in config and '"head_dim": 16' in config
    assert any("q_norm" in name for name in a) and not any(torch.equal(t, torch.ones_like(t)) for n, t in a.items() if "norm" in n)


def test_zoo_specs_name_their_families_and_refuse_others():
    source = parse_spec("zoo:gemma2")
    assert (source.kind, source.display_name) == ("zoo", "zoo:gemma2")
    with pytest.raises(ModelLoadError, match="zoo:gpt2"):
        parse_spec("zoo:gpt5")
    assert {"gpt2", "pythia", "llama", "gemma2", "mixtral"} <= set(FAMILIES)


@pytest.mark.parametrize(
    ("family", "parallel", "experts"),
    [("llama", False, 0), ("pythia", True, 0), ("gptj", True, 0), ("mixtral", False, 4)],
)
def test_block_shape_is_asked_of_the_model(family, parallel, experts):
    model = load_model(f"zoo:{family}")
    assert parallel_blocks(model.bridge) is parallel
    assert expert_count(model.bridge) == experts
    names = residual_before_mlp(model.bridge, 1)
    assert names == (["blocks.1.hook_resid_pre", "blocks.1.hook_attn_out"] if parallel else ["blocks.1.hook_resid_mid"])
    # The residual the MLP output joins, plus that output, is the block's output.
    ids = torch.tensor([model.tokenize("The Eiffel Tower is located in the city of")])
    wanted = [*names, "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"]
    with torch.inference_mode():
        _, cache = model.bridge.run_with_cache(ids, names_filter=wanted)
    torch.testing.assert_close(sum(cache[n] for n in names) + cache["blocks.1.hook_mlp_out"], cache["blocks.1.hook_resid_post"], atol=1e-5, rtol=1e-4)


def test_a_sliding_window_model_reuses_a_prompt_s_keys_and_values():
    # Mistral's window (4 tokens here) is shorter than the probe: a config-made cache keeps
    # only the window's positions, which the partial runs cannot cut a prefix from.
    from workbench.hooks.kv_cache import check_kv_cache, kv_tensors, logits_and_cache

    model = load_model("zoo:mistral")
    check_kv_cache(model.bridge)
    ids = torch.tensor([model.tokenize("The Eiffel Tower is located in the city of")])
    with torch.inference_mode():
        _, kv = logits_and_cache(model.bridge, ids)
    assert all(keys.shape[2] == ids.shape[1] for keys, _ in kv_tensors(kv))
