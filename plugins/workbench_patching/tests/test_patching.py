"""The activation-patching plugin on real models, checked against transformer_lens.patching.

Lab model pairs (assets/lab/README.md: L0H2 previous-token head, L1H1 induction head):
- VALUE_PAIR changes the token after the earlier copy of the last token: the induction head
  attends to the same place in both prompts but reads a different value there.
- KEY_PAIR changes the token before it: in the corrupted prompt the last token has no earlier
  copy, so the previous-token head's output (the induction head's key) is what differs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformer_lens.patching as tl_patching

from tests.conftest import run_cli
from workbench.errors import InputError
from workbench.plugin_api import AnalysisContext, discover_plugins, run_analysis
from workbench.progress import run_to_completion
from workbench.results import load_results, save_result

VALUE_PAIR = ("t1 t2 t3 t4 t5 t6 t7 t8 t5", "t1 t2 t3 t4 t5 t9 t7 t8 t5")  # -> t6 vs t9
KEY_PAIR = ("t1 t2 t3 t4 t5 t6 t7 t8 t5", "t1 t2 t3 t4 t9 t6 t7 t8 t5")  # -> t6 vs something else
IOI_PAIR = (
    "When John and Mary went to the store, John gave a drink to",
    "When John and Mary went to the store, Mary gave a drink to",
)
SHORT_EIFFEL_PAIR = ("The Eiffel Tower", "The Colosseum")  # 4 tokens each on SmolLM2
TOLERANCE = 1e-5
# SmolLM2's raw logit differences are about 6.5: float32 sums of 30 layers in another order
# (TransformerLens patches one cell a pass, we batch a layer's cells) differ by a few 1e-6
# of that, so its comparison is relative (measured: 3.1e-6 at most, transformers 5.25).
RELATIVE_TOLERANCE = 1e-5

TL_FUNCTIONS = {
    "resid_pre": tl_patching.get_act_patch_resid_pre,
    "attn_out": tl_patching.get_act_patch_attn_out,
    "mlp_out": tl_patching.get_act_patch_mlp_out,
    "head_out": tl_patching.get_act_patch_attn_head_out_all_pos,
    "head_pattern": tl_patching.get_act_patch_attn_head_pattern_all_pos,
    "head_out_by_pos": tl_patching.get_act_patch_attn_head_out_by_pos,
}


@pytest.fixture(scope="module")
def registry():
    return discover_plugins()


@pytest.fixture(scope="module")
def plugin(registry):
    return registry.get("patching")


def patch(plugin, model, prompts, **params):
    return run_to_completion(run_analysis(plugin, AnalysisContext(model, list(prompts)), params))


@pytest.fixture(scope="module")
def value_result(plugin, lab_model):
    return patch(plugin, lab_model, VALUE_PAIR, targets="everything")


@pytest.fixture(scope="module")
def key_result(plugin, lab_model):
    return patch(plugin, lab_model, KEY_PAIR, metric="prob")


def tl_metric(result):
    """The result's metric as transformer_lens.patching wants it: logits -> scalar."""
    if result.metric == "logit-diff":
        return lambda logits: logits[0, -1, result.answer_id] - logits[0, -1, result.wrong_answer_id]
    return lambda logits: torch.softmax(logits[0, -1].float(), dim=-1)[result.answer_id]


def tl_grid(model, result, target, index_df=None):
    clean = torch.tensor([result.clean_tokens.tolist()])
    corrupted = torch.tensor([result.corrupted_tokens.tolist()])
    with torch.inference_mode():
        _, cache = model.bridge.run_with_cache(clean)
        if index_df is None:
            return TL_FUNCTIONS[target](model.bridge, corrupted, cache, tl_metric(result)).cpu().numpy()
        return TL_FUNCTIONS[target](model.bridge, corrupted, cache, tl_metric(result), index_axis_names=None, index_df=index_df).cpu().numpy()


# -- agreement with transformer_lens.patching ----------------------------------------------------------


@pytest.mark.parametrize("target", list(TL_FUNCTIONS))
def test_every_target_matches_transformer_lens_logit_diff(lab_model, value_result, target):
    ours = getattr(value_result, target)
    reference = tl_grid(lab_model, value_result, target)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("target", ["resid_pre", "attn_out", "mlp_out", "head_out", "head_pattern"])
def test_default_targets_match_transformer_lens_prob(lab_model, key_result, target):
    assert key_result.targets == ["resid_pre", "attn_out", "mlp_out", "head_out", "head_pattern"]  # "all"
    np.testing.assert_allclose(getattr(key_result, target), tl_grid(lab_model, key_result, target), atol=TOLERANCE, rtol=0)


def test_batch_size_does_not_change_the_numbers(plugin, lab_model, value_result):
    one_by_one = patch(plugin, lab_model, VALUE_PAIR, targets="head_out_by_pos,resid_pre", max_batch=1)
    odd_chunks = patch(plugin, lab_model, VALUE_PAIR, targets="head_out_by_pos,resid_pre", max_batch=7)
    for target in ("head_out_by_pos", "resid_pre"):
        np.testing.assert_allclose(one_by_one.raw(target), value_result.raw(target), atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(odd_chunks.raw(target), value_result.raw(target), atol=TOLERANCE, rtol=0)
    assert one_by_one.patched_passes == one_by_one.cells_run
    assert odd_chunks.patched_passes < one_by_one.patched_passes


# -- runs from the patched layer (TransformerBridge) against whole passes (the engine seam) ----------------


def whole_passes(monkeypatch):
    """Patch through the engine seam on the bridge too: every patched run a whole pass."""
    import workbench_patching.analysis as analysis

    monkeypatch.setattr(analysis, "bridge_for_runs_from_layer", lambda engine: None)


@pytest.mark.parametrize(("pair", "metric"), [(VALUE_PAIR, "logit-diff"), (KEY_PAIR, "prob")])
def test_runs_from_the_patched_layer_equal_whole_passes(plugin, lab_model, monkeypatch, pair, metric):
    from_layer = patch(plugin, lab_model, pair, targets="everything", metric=metric, max_batch=5)
    whole_passes(monkeypatch)
    whole = patch(plugin, lab_model, pair, targets="everything", metric=metric, max_batch=5)
    assert from_layer.cells_run == whole.cells_run > 0
    for target in whole.targets:
        np.testing.assert_allclose(from_layer.raw(target), whole.raw(target), atol=TOLERANCE, rtol=0, err_msg=target)


# -- what the numbers mean --------------------------------------------------------------------------------


def test_patching_the_changed_embedding_gives_back_the_clean_run(value_result, key_result):
    for result in (value_result, key_result):
        (changed,) = result.differing_positions
        # resid_pre of layer 0 is the embedding: at the one changed position it makes the prompts identical.
        assert result.raw("resid_pre")[0, changed] == pytest.approx(result.clean_value, abs=TOLERANCE)
        assert result.normalised("resid_pre")[0, changed] == pytest.approx(1.0, abs=1e-4)
        # Everywhere else in layer 0 the two runs already agree: patching changes nothing.
        others = np.delete(result.raw("resid_pre")[0], changed)
        np.testing.assert_allclose(others, result.corrupted_value, atol=TOLERANCE)
        # Before the changed token nothing can matter, at any layer (the model is causal).
        for target in ("resid_pre", "attn_out", "mlp_out"):
            np.testing.assert_allclose(result.raw(target)[:, :changed], result.corrupted_value, atol=TOLERANCE)
    assert value_result.cells_skipped > 0


def test_value_pair_runs_through_the_induction_heads_output(value_result):
    heads = value_result.normalised("head_out")
    assert np.unravel_index(np.argmax(heads), heads.shape) == (1, 1)  # L1H1
    assert heads[1, 1] > 0.9
    # Its attention goes to the same position in both prompts, so its pattern alone restores little.
    assert value_result.normalised("head_pattern")[1, 1] < 0.2
    assert value_result.top_cells("head_out", 1)[0][0] == (1, 1)


def test_key_pair_runs_through_the_previous_token_head_and_the_induction_pattern(key_result):
    heads = key_result.normalised("head_out")
    assert int(np.argmax(heads[0])) == 2 and heads[0, 2] > 0.7  # L0H2 writes "the previous token was t5"
    patterns = key_result.normalised("head_pattern")
    assert np.unravel_index(np.argmax(patterns), patterns.shape) == (1, 1) and patterns[1, 1] > 0.9
    # The last layer's attention output at the last position carries the answer (L1H1 writes it there).
    assert key_result.normalised("attn_out")[1, -1] > 0.9


# -- inputs --------------------------------------------------------------------------------------------


def test_corrupted_prompt_from_the_parameter_or_the_second_prompt(plugin, lab_model, value_result):
    from_param = patch(plugin, lab_model, VALUE_PAIR[:1], corrupted=VALUE_PAIR[1], targets="head_out")
    np.testing.assert_allclose(from_param.head_out, value_result.head_out, atol=TOLERANCE)
    assert from_param.corrupted_prompt == VALUE_PAIR[1]
    assert value_result.answer == "t6" and value_result.wrong_answer == "t9"
    assert value_result.position_labels[6] == "t6/t9"


def test_typed_answers(plugin, lab_model, value_result):
    typed = patch(plugin, lab_model, VALUE_PAIR, answer="t6", wrong_answer="t9", targets="head_out")
    assert typed.clean_value == pytest.approx(value_result.clean_value, abs=1e-6)
    other = patch(plugin, lab_model, VALUE_PAIR, answer="t6", wrong_answer="t0", targets="head_out", normalise=False)
    assert other.wrong_answer == "t0" and other.clean_value != pytest.approx(value_result.clean_value)


def test_unequal_lengths_show_both_tokenisations(plugin, lab_model):
    with pytest.raises(InputError) as caught:
        patch(plugin, lab_model, ("t1 t2 t3 t1 t2", "t1 t2 t3 t1 t2 t3"))
    message = str(caught.value)
    assert "6 tokens" in message and "7" in message
    assert "<bos>|t1|t2|t3|t1|t2" in message and "as many tokens" in message


def test_multi_token_answer_says_how_it_tokenises(plugin, lab_model):
    with pytest.raises(InputError) as caught:
        patch(plugin, lab_model, VALUE_PAIR, answer="t6 t7")
    assert "2 tokens (t6|t7)" in str(caught.value) and "single" in str(caught.value)


def test_missing_and_empty_prompts(plugin, lab_model):
    with pytest.raises(InputError, match="corrupted prompt"):
        patch(plugin, lab_model, VALUE_PAIR[:1])
    with pytest.raises(InputError, match="empty"):
        patch(plugin, lab_model, ["   "], corrupted=VALUE_PAIR[1])
    with pytest.raises(InputError, match="same tokens"):
        patch(plugin, lab_model, (VALUE_PAIR[0], VALUE_PAIR[0]))


def test_answers_that_cannot_be_told_apart(plugin, lab_model):
    with pytest.raises(InputError, match="same token"):
        patch(plugin, lab_model, VALUE_PAIR, answer="t6", wrong_answer="t6")


def test_bad_targets_fail_before_any_work(plugin):
    with pytest.raises(InputError) as caught:
        plugin.analysis.resolve({"targets": "resid_pre,attention"})
    assert "head_pattern" in str(caught.value)
    assert plugin.analysis.resolve(texts={"targets": "layers, head-out"})["targets"] == "layers, head-out"


# -- result: files, summary, report -------------------------------------------------------------------------


def test_result_round_trips_and_reports(tmp_path, registry, value_result):
    path = tmp_path / "patching.h5"
    save_result(path, value_result, title="Activation patching")
    [(_info, loaded)] = load_results(path, registry.result_class)
    for target in value_result.targets:
        np.testing.assert_array_equal(loaded.raw(target), value_result.raw(target))
    assert loaded.answer == "t6" and loaded.targets == value_result.targets and loaded.meta.plugin_id == "patching"

    summary = json.loads(json.dumps(value_result.to_json_dict()))
    assert summary["top_cells"]["head_out"][0]["cell"] == "L1H1"
    assert summary["clean_value"] > summary["corrupted_value"]
    assert summary["differing_positions"] == [6]

    section = value_result.report()
    assert [f.title for f in section.figures][:2] == ["Residual stream (resid_pre)", "Attention output (attn_out)"]
    assert all(f.svg.startswith("<svg") for f in section.figures)
    assert "t6/t9" in section.figures[0].svg
    assert "Normalised" in section.figures[0].caption and "centred at 0" in section.figures[0].caption


@pytest.mark.slow
def test_cli_run_writes_the_summary(tmp_path):
    out = tmp_path / "patching.json"
    done = run_cli(
        "run", "patching", "--model", "lab:induction", "--prompt", VALUE_PAIR[0], "--prompt", VALUE_PAIR[1],
        "--param", "targets=heads", "--json", str(out),
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(out.read_text())
    assert summary["targets"] == ["head_out", "head_pattern"] and summary["top_cells"]["head_out"][0]["cell"] == "L1H1"


# -- SmolLM2: grouped-query attention -------------------------------------------------------------------------


@pytest.mark.smollm2
def test_smollm2_head_outputs_match_transformer_lens(plugin, smollm2):
    clean, corrupted = (smollm2.tokenize(p) for p in IOI_PAIR)
    assert len(clean) == len(corrupted)
    result = patch(plugin, smollm2, IOI_PAIR, targets="head_out")
    assert result.answer == " Mary" and result.wrong_answer == " John"
    # hook_z has one slot per query head (9), not per key/value head (3).
    assert result.head_out.shape == (30, 9) and result.n_kv_heads == 3
    import pandas as pd

    layers = [0, 9, 20, 29]
    index = pd.DataFrame([(layer, head) for layer in layers for head in range(9)], columns=["layer", "head_index"])
    reference = tl_grid(smollm2, result, "head_out", index_df=index).reshape(len(layers), 9)
    np.testing.assert_allclose(result.head_out[layers], reference, atol=TOLERANCE, rtol=RELATIVE_TOLERANCE)
    assert result.cell_name("head_out", (9, 7)) == "L9H7 (KV 2)"


@pytest.mark.smollm2
@pytest.mark.parametrize(("pair", "metric", "targets"), [(IOI_PAIR, "logit-diff", "all"), (SHORT_EIFFEL_PAIR, "prob", "resid_pre,head_out_by_pos")])
def test_smollm2_runs_from_the_patched_layer_equal_whole_passes(plugin, smollm2, monkeypatch, pair, metric, targets):
    """Rotary positions and grouped-query heads through a KV-cache prefix: every default target
    on the IOI pair, and heads by position on a pair that differs from position 1 on."""
    from_layer = patch(plugin, smollm2, pair, targets=targets, metric=metric)
    whole_passes(monkeypatch)
    whole = patch(plugin, smollm2, pair, targets=targets, metric=metric)
    for target in whole.targets:
        np.testing.assert_allclose(from_layer.raw(target), whole.raw(target), atol=TOLERANCE, rtol=RELATIVE_TOLERANCE, err_msg=target)
