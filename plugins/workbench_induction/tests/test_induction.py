"""The induction plugin on real models: the lab model's known circuit, the head detector, the causal check."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import run_cli
from workbench.doctor.families import stripe_scores  # earlier copies found by token identity, not the analysis' position arithmetic
from workbench.errors import InputError
from workbench.plugin_api import AnalysisContext, discover_plugins, run_analysis, summary_json
from workbench.progress import run_to_completion
from workbench.results import load_results, save_result

L0H2 = (0, 2)  # the lab model's previous-token head (assets/lab/README.md)
L1H1 = (1, 1)  # its induction head
L1H3 = (1, 3)  # its duplicate-token head


@pytest.fixture(scope="module")
def registry():
    return discover_plugins()


@pytest.fixture(scope="module")
def plugin(registry):
    return registry.get("induction")


@pytest.fixture(scope="module")
def lab_result(plugin, lab_model):
    """One run with the defaults (length 31, batch 8, top 3 heads, zero and mean ablation)."""
    return run_to_completion(run_analysis(plugin, AnalysisContext(lab_model)))


def run(plugin, model, **params):
    return run_to_completion(run_analysis(plugin, AnalysisContext(model), params))


def test_discovered_with_its_result_type(registry, plugin):
    assert plugin.analysis is not None and plugin.analysis.needs_prompt is False
    assert registry.result_class("induction/scores").__name__ == "InductionResult"


def test_defaults_fit_the_lab_model(lab_result, lab_model):
    # 64-token context: BOS + 2 x 31 tokens = 63, inside the context and below it as detect_head needs.
    assert lab_result.length == 31 and lab_result.prepend_bos
    assert lab_result.tokens.shape == (8, 63)
    assert (lab_result.tokens[:, 0] == lab_model.bos_token_id).all()
    np.testing.assert_array_equal(lab_result.tokens[:, 1:32], lab_result.tokens[:, 32:])
    # Blocks draw from t0..t63 only (no <bos>, no <unk>), each token once per block.
    assert lab_result.tokens[:, 1:].min() >= 2
    assert all(len(set(row[1:32].tolist())) == 31 for row in lab_result.tokens)
    assert lab_result.induction.shape == lab_result.previous_token.shape == lab_result.duplicate_token.shape == (2, 4)


def test_finds_the_known_circuit(lab_result):
    top = {kind: lab_result.top(kind) for kind in ("induction", "previous_token", "duplicate_token")}
    assert tuple(top["induction"][0][:2]) == L1H1 and top["induction"][0][2] > 0.9
    assert tuple(top["previous_token"][0][:2]) == L0H2 and top["previous_token"][0][2] > 0.95
    assert tuple(top["duplicate_token"][0][:2]) == L1H3 and top["duplicate_token"][0][2] > 0.5
    # No other head comes close.
    assert top["induction"][1][2] < 0.2 and top["previous_token"][1][2] < 0.2
    for ranking in top.values():
        scores = [score for _, _, score in ranking]
        assert scores == sorted(scores, reverse=True)


def test_scores_agree_with_transformer_lens_head_detector(lab_result, lab_model):
    """detect_head's "mul" score is Σ(A⊙D)/ΣA over the whole pattern. Without excluding BOS each row
    sums to 1, so ΣA = seq_len; its pattern D marks (i, i-1) for every i >= 1 (previous token), and
    with each token once per block, exactly the rows of the second copy for duplicate and induction.
    Our scores are means over those rows, so detect_head = ours x rows / seq_len, prompt by prompt."""
    from transformer_lens.head_detector import detect_head

    bridge = lab_model.bridge
    texts = [lab_model.tokenizer.decode(row[1:].tolist()) for row in lab_result.tokens]
    assert torch.equal(bridge.to_tokens(texts).cpu(), torch.as_tensor(lab_result.tokens))  # the same inputs
    n, seq_len = lab_result.length, lab_result.seq_len
    expected_rows = {"previous_token_head": seq_len - 1, "duplicate_token_head": n, "induction_head": n}
    ours = {"previous_token_head": lab_result.previous_token, "duplicate_token_head": lab_result.duplicate_token, "induction_head": lab_result.induction}
    for name, rows in expected_rows.items():
        theirs = detect_head(bridge, texts, name, exclude_bos=False, error_measure="mul").numpy()
        np.testing.assert_allclose(ours[name] * rows / seq_len, theirs, atol=1e-5, err_msg=name)


def test_scores_agree_with_full_patterns(lab_result, lab_model):
    tokens = torch.as_tensor(lab_result.tokens)
    with torch.inference_mode():
        _, cache = lab_model.bridge.run_with_cache(tokens, names_filter=lambda name: name.endswith("attn.hook_pattern"), return_type=None)
    for layer in range(lab_result.n_layers):
        expected = stripe_scores(cache[f"blocks.{layer}.attn.hook_pattern"].double().numpy(), lab_result.tokens)
        for kind, values in expected.items():
            np.testing.assert_allclose(lab_result.scores(kind)[layer], values, atol=1e-5, err_msg=f"{kind} layer {layer}")


def test_ablating_the_previous_token_head_breaks_induction(lab_result, lab_model):
    assert [0, 2] in lab_result.ablated_heads and [1, 1] in lab_result.ablated_heads
    prev_index = lab_result.ablated_heads.index([0, 2])
    ind_index = lab_result.ablated_heads.index([1, 1])
    clean = lab_result.clean_loss
    assert clean < 0.5 < 4.0 < lab_result.first_copy_loss(lab_result.clean_loss_curve)
    for kind in ("zero", "mean"):
        # Without either head of the circuit the repeat is as hard as the first copy.
        assert lab_result.ablated_loss(prev_index, kind) - clean > 3.0
        assert lab_result.ablated_loss(ind_index, kind) - clean > 3.0
    # K-composition: without L0H2's output, L1H1 no longer finds the token to copy.
    zero = lab_result.ablation_kinds.index("zero")
    after = lab_result.ablated_induction[prev_index, zero, 1, 1]
    assert lab_result.induction[1, 1] > 0.9 and after < 0.2

    # The same number measured directly: zero L0H2's z and read L1H1's pattern.
    def zero_head(z, hook):
        z = z.clone()
        z[:, :, 2, :] = 0
        return z

    patterns = {}

    def keep(pattern, hook):
        patterns["l1"] = pattern.detach().double().numpy()

    with torch.inference_mode():
        lab_model.bridge.run_with_hooks(
            torch.as_tensor(lab_result.tokens),
            fwd_hooks=[("blocks.0.attn.hook_z", zero_head), ("blocks.1.attn.hook_pattern", keep)],
            return_type=None,
        )
    direct = stripe_scores(patterns["l1"], lab_result.tokens)["induction"][1]
    assert direct == pytest.approx(float(after), abs=1e-5)


def test_loss_on_repeat_matches_a_direct_computation(lab_result, lab_model):
    tokens = torch.as_tensor(lab_result.tokens)
    with torch.inference_mode():
        logits = lab_model.bridge(tokens, return_type="logits")
    logp = torch.log_softmax(logits.double(), -1)
    n, start = lab_result.length, lab_result.second_start
    # r_2..r_n of the second copy sit at positions start+1 .. start+n-1, predicted one position earlier.
    targets = [(b, p) for b in range(tokens.shape[0]) for p in range(start + 1, start + n)]
    expected = -np.mean([float(logp[b, p - 1, tokens[b, p]]) for b, p in targets])
    assert lab_result.clean_loss == pytest.approx(expected, abs=1e-4)
    assert lab_result.chance_loss == pytest.approx(math.log(64))


def test_summary_json(lab_result):
    summary = summary_json(lab_result)
    assert summary["model"] == "lab:induction" and summary["plugin"] == "induction"
    assert set(summary["scores"]) == {"induction", "previous_token", "duplicate_token"}
    assert np.array(summary["scores"]["induction"]).shape == (2, 4)
    assert summary["top_heads"]["induction"][0][:2] == [1, 1]
    assert summary["top_heads"]["previous_token"][0][:2] == [0, 2]
    ablation = summary["ablation"]
    heads = {(h["layer"], h["head"]): h for h in ablation["heads"]}
    assert heads[L0H2]["zero"]["rise"] > 3 and heads[L0H2]["matters"] is True
    assert heads[L0H2]["zero"]["induction_scores_after"]["L1H1"] < 0.2
    curve = summary["loss_curve"]
    assert len(curve["clean"]) == len(curve["target_positions"]) == 62
    assert {c["kind"] for c in curve["ablated"]} == {"zero", "mean"}
    json.dumps(summary)  # strictly JSON


def test_report_and_hdf5_round_trip(tmp_path, lab_result, registry):
    section = lab_result.report()
    assert len(section.figures) == 5 and all(f.svg.startswith("<svg") for f in section.figures)
    assert section.tables[0].rows[0][1] == "L1H1"
    assert any("L0H2" in note and "L1H1" in note for note in section.notes)

    path = tmp_path / "induction.h5"
    save_result(path, lab_result, title="Induction heads")
    [(info, loaded)] = load_results(path, registry.result_class)
    assert info.kind == "induction/scores" and loaded.meta.model_spec == "lab:induction"
    for name in ("tokens", "induction", "previous_token", "duplicate_token", "ablated_loss_curves", "ablated_induction", "example_patterns"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(lab_result, name))
    assert loaded.summary() == lab_result.summary()


def test_parameters(plugin, lab_model):
    small = run(plugin, lab_model, length=6, batch=3, seed=5, top_n=1, ablation="zero")
    assert small.tokens.shape == (3, 13) and small.ablation_kinds == ["zero"]
    assert small.ablated_heads[0] == [1, 1] and [0, 2] in small.ablated_heads
    assert small.verdict_kind == "zero" and small.report().tables[1].rows
    assert [c["kind"] for c in json.loads(json.dumps(summary_json(small)))["loss_curve"]["ablated"]] == ["zero"]
    again = run(plugin, lab_model, length=6, batch=3, seed=5, top_n=1, ablation="zero")
    np.testing.assert_array_equal(small.tokens, again.tokens)
    other = run(plugin, lab_model, length=6, batch=3, seed=6, top_n=1, ablation="zero")
    assert not np.array_equal(small.tokens, other.tokens)
    with pytest.raises(InputError, match="2 to 31"):
        run(plugin, lab_model, length=32)


def test_batches_split_for_memory_give_the_same_result(plugin, lab_model, monkeypatch):
    import workbench_induction.analysis as analysis

    params = dict(length=10, batch=5, top_n=1, ablation="mean")
    whole = run(plugin, lab_model, **params)
    per_sequence = 21 * 66 * 8 + 4 * 21 * 21 * 12
    monkeypatch.setattr(analysis, "MEMORY_BUDGET_BYTES", 2 * per_sequence)  # 2 sequences per pass: 3 passes
    assert analysis.chunk_size(4, 21, 66) == 2
    split = run(plugin, lab_model, **params)
    for name in ("induction", "previous_token", "duplicate_token", "clean_loss_curve", "ablated_loss_curves", "ablated_induction", "example_patterns"):
        np.testing.assert_allclose(getattr(split, name), getattr(whole, name), atol=1e-5, err_msg=name)
    assert split.example_heads == whole.example_heads


@pytest.mark.slow
def test_cli_writes_the_json(tmp_path):
    out = tmp_path / "out.json"
    done = run_cli("run", "induction", "--model", "lab:induction", "--param", "top_n=1", "--json", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    summary = json.loads(out.read_text())
    assert summary["model"] == "lab:induction"
    assert summary["top_heads"]["induction"][0][:2] == [1, 1]
    assert summary["top_heads"]["previous_token"][0][:2] == [0, 2]
    assert {"scores", "ablation", "top_heads", "loss_curve"} <= set(summary)


@pytest.mark.smollm2
def test_smollm2_grouped_query_heads(plugin, smollm2):
    result = run(plugin, smollm2, length=20, batch=2, top_n=1, ablation="zero")
    assert result.induction.shape == (30, 9) and result.n_kv_heads == 3
    assert not result.prepend_bos and result.tokens.shape == (2, 40)  # SmolLM2's tokenizer adds no BOS
    special = set(smollm2.tokenizer.all_special_ids)
    assert not special & set(result.tokens.ravel().tolist())
    # Scores per query head agree with the full patterns, found by token identity.
    tokens = torch.as_tensor(result.tokens)
    layers = sorted({layer for layer, _, _ in result.top("induction", 3)} | {result.top("previous_token", 1)[0][0]})
    with torch.inference_mode():
        _, cache = smollm2.bridge.run_with_cache(tokens, names_filter=[f"blocks.{layer}.attn.hook_pattern" for layer in layers], return_type=None)
    for layer in layers:
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        assert pattern.shape == (2, 9, 40, 40)
        expected = stripe_scores(pattern.double().numpy(), result.tokens)
        for kind, values in expected.items():
            np.testing.assert_allclose(result.scores(kind)[layer], values, atol=1e-5)
    # SmolLM2 copies in context, and its top induction head carries part of that.
    assert result.in_context_gain > 2.0
    assert result.top("induction", 1)[0][2] > 0.5
    assert result.ablated_loss(0, "zero") > result.clean_loss
