"""Reusing a prompt's keys and values (workbench.hooks.kv_cache), on the installed versions
of transformers and TransformerLens: a pass that reads a prefix's cache must equal a whole
pass, on the lab model (GPT-2 style) and SmolLM2 (Llama style, grouped-query attention)."""

from __future__ import annotations

import pytest
import torch

from workbench.hooks import kv_cache
from workbench.hooks.kv_cache import KVCacheUnsupported, check_kv_cache, kv_tensors, prefix_cache


def cached_suffix_matches_whole_pass(model, tokens: list[int], split: int, copies: int) -> float:
    """Max |difference| between the suffix's logits read through a tiled prefix cache and a
    whole pass of the same rows."""
    bridge = model.bridge
    ids = torch.tensor([tokens])
    with torch.no_grad():
        whole, kv = bridge(ids, return_type="logits_and_cache")
        positions = torch.arange(split, len(tokens)).expand(copies, -1)
        cached = bridge(ids[:, split:].repeat(copies, 1), past_key_values=prefix_cache(kv, split, copies), position_ids=positions, return_type="logits")
    return float((cached - whole[:, split:]).abs().max())


def test_lab_model_cache_round_trip_equals_a_whole_pass(lab_model):
    check_kv_cache(lab_model.bridge)
    tokens = lab_model.tokenize("t1 t2 t3 t4 t5 t6 t1 t2 t3")
    assert cached_suffix_matches_whole_pass(lab_model, tokens, 4, copies=3) < 1e-5


@pytest.mark.smollm2
def test_smollm2_cache_round_trip_equals_a_whole_pass(smollm2):
    check_kv_cache(smollm2.bridge)
    tokens = smollm2.tokenize("The Eiffel Tower is located in the city of")
    assert cached_suffix_matches_whole_pass(smollm2, tokens, 5, copies=2) < 1e-4


def test_the_cache_holds_every_layer_and_position_after_the_check(lab_model):
    check_kv_cache(lab_model.bridge)
    with torch.no_grad():
        _, kv = lab_model.bridge(torch.tensor([[1, 2, 3, 4, 5]]), return_type="logits_and_cache")
    tensors = kv_tensors(kv)
    assert len(tensors) == lab_model.n_layers
    assert all(keys.shape[2] == values.shape[2] == 5 for keys, values in tensors)
    # The prefix is a copy: a cache built from it grows without touching the original.
    prefix = prefix_cache(kv, 2, copies=2)
    assert [k.shape[:3] for k, _ in kv_tensors(prefix)] == [(2, lab_model.n_kv_heads, 2)] * lab_model.n_layers
    assert all(keys.shape[2] == 5 for keys, _ in kv_tensors(kv))
    assert prefix_cache(kv, 0) is None


def test_checking_twice_changes_nothing(lab_model):
    bridge = lab_model.bridge
    check_kv_cache(bridge)
    hooks = [len(block.attn._forward_pre_hooks) for block in bridge.blocks]
    kv_cache._checked.discard(bridge)  # forget the verdict: the probe runs again
    check_kv_cache(bridge)
    assert [len(block.attn._forward_pre_hooks) for block in bridge.blocks] == hooks


def test_an_unknown_cache_layout_is_refused_naming_the_versions():
    import transformers

    legacy = ((torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4)),)  # the tuple layout of transformers 4.x
    with pytest.raises(KVCacheUnsupported) as raised:
        kv_tensors(legacy)
    assert f"transformers {transformers.__version__}" in str(raised.value) and "make setup" in str(raised.value)
    with pytest.raises(KVCacheUnsupported, match="returned no cache"):
        kv_tensors(None)


def test_an_unfilled_layer_is_refused():
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), 0)
    cache.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), 1)
    cache.layers[1].keys = None  # what transformers 5.25 leaves in a layer nobody wrote
    with pytest.raises(KVCacheUnsupported, match="layer 1"):
        kv_tensors(cache)
