"""Causal tracing: the fast path against the reference algorithm (one pass per cell), the
exact identities a trace must satisfy, bad requests, and the plugin's result and JSON.

The reference implementation (`workbench_causal_trace.reference`) is the kmeng01/rome
algorithm run through TransformerBridge hooks on full sequences; the fast path shares
only the noise and the scoring with it.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from workbench.errors import InputError
from workbench.job_context import Interrupted, cancellable
from workbench.models import load_model
from workbench.plugin_api import AnalysisContext, discover_plugins, run_analysis, summary_json
from workbench.progress import run_to_completion
from workbench.results import load_results, save_result
from workbench_causal_trace import flops, tracing
from workbench_causal_trace.noise import subject_noise
from workbench_causal_trace.reference import trace_reference, traced_run
from workbench_causal_trace.request import build_request
from workbench_causal_trace.scoring import KINDS, RESTORED_HOOK, restored_layers
from workbench_causal_trace.tracing import causal_trace, trace_with_noise

LAB_PROMPT = "t1 t2 t3 t4 t5 t6 t1 t2 t3"  # the induction head predicts t4 at the end
SMOL_PROMPT = "The Eiffel Tower is located in the city of"


@pytest.fixture(scope="module")
def plugin():
    return discover_plugins().get("causal-trace")


def lab_request(model, subject="t2 t3", target=""):
    return build_request(model, LAB_PROMPT, model.tokenize(LAB_PROMPT), subject, target)


@pytest.mark.parametrize("target", ["", "t4 t5 t6"])
def test_fast_path_equals_the_reference_algorithm(lab_model, target):
    request = lab_request(lab_model, target=target)
    noise = subject_noise(lab_model, request, samples=6, noise=0.0, noise_scale=3.0, seed=3)
    fast = run_to_completion(trace_with_noise(lab_model, request, noise, KINDS, window=1))
    assert len(request.target_ids) == (3 if target else 1)
    for kind in KINDS:
        # window=1 on a 2-layer model keeps MLP/attention windows non-trivial without covering everything
        reference, high, low = run_to_completion(trace_reference(lab_model, request, noise, kind, window=1))
        np.testing.assert_allclose(fast.scores[kind], reference, atol=1e-5)
        assert fast.high_score == pytest.approx(high, abs=1e-6) and fast.low_score == pytest.approx(low, abs=1e-6)
    # The comparison is not vacuous: the noise destroys the prediction and cells differ.
    assert fast.high_score > 10 * fast.low_score
    assert np.ptp(fast.scores["resid"]) > 10 * fast.low_score


def test_fast_path_equals_the_reference_with_the_default_window(lab_model):
    request = lab_request(lab_model, subject="t6")
    noise = subject_noise(lab_model, request, samples=4, noise=0.5, noise_scale=3.0, seed=0)
    fast = run_to_completion(trace_with_noise(lab_model, request, noise, ("mlp", "attn"), window=10))
    for kind in ("mlp", "attn"):
        reference, _, _ = run_to_completion(trace_reference(lab_model, request, noise, kind, window=10))
        np.testing.assert_allclose(fast.scores[kind], reference, atol=1e-5)


def test_trace_identities(lab_model):
    """Restoring a state the noise never reached changes nothing; restoring the last token's
    final state gives back the clean prediction."""
    request = lab_request(lab_model)
    start, end = request.subject_range
    traced = run_to_completion(causal_trace(lab_model, request.token_ids, request.subject_range, request.target_ids, samples=5, seed=2))
    for kind in KINDS:
        np.testing.assert_allclose(traced.scores[kind][:start], traced.low_score, atol=1e-6)
    assert traced.scores["resid"][-1, -1] == pytest.approx(traced.high_score, abs=1e-6)
    assert traced.noise == pytest.approx(3.0 * float(lab_model.bridge.W_E[request.token_ids[start:end]].detach().std()), rel=1e-5)


def test_same_seed_same_noise_other_seed_other_noise(lab_model):
    request = lab_request(lab_model)
    a = subject_noise(lab_model, request, 4, 0.0, 3.0, seed=1).samples
    b = subject_noise(lab_model, request, 4, 0.0, 3.0, seed=1).samples
    c = subject_noise(lab_model, request, 4, 0.0, 3.0, seed=2).samples
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_requests_name_the_fix(lab_model):
    with pytest.raises(InputError, match="not in the prompt") as info:
        lab_request(lab_model, subject="t9")
    assert "copy the subject" in info.value.hint
    with pytest.raises(InputError, match="No subject"):
        lab_request(lab_model, subject="  ")
    with pytest.raises(InputError, match="only whitespace"):
        lab_request(lab_model, target="   ")
    long_target = " ".join(["t1"] * 60)
    with pytest.raises(InputError, match="context holds 64"):
        lab_request(lab_model, target=long_target)


def test_plugin_result_json_and_hdf5(lab_model, plugin, tmp_path):
    ctx = AnalysisContext(lab_model, [LAB_PROMPT])
    steps = []
    result = run_to_completion(run_analysis(plugin, ctx, {"subject": "t2 t3", "samples": 4}), on_progress=steps.append)
    # Progress comes per token row (the kinds share passes), and only grows.
    assert [s.message for s in steps if s.message.startswith("token")] == [f"token {i} of 10 (resid, mlp, attn)" for i in range(1, 11)]
    assert all(a.fraction <= b.fraction for a, b in zip(steps, steps[1:]))
    out = json.loads(json.dumps(summary_json(result)))
    for key in ("tokens", "subject_range", "answer", "high_score", "low_score", "noise", "samples", "scores", "seconds"):
        assert key in out
    assert out["subject_range"] == [2, 4] and out["tokens"][0] == "<bos>" and out["answer"] == "t4"
    assert set(out["scores"]) == set(KINDS) and set(out["seconds"]) == set(KINDS)
    assert np.asarray(out["scores"]["mlp"]).shape == (10, 2)
    section = result.report()
    assert len(section.figures) == 3 and all(f.svg.startswith("<svg") for f in section.figures)
    for kind, figure in zip(KINDS, section.figures):
        # The colour scale covers every cell and both reference probabilities, and the caption says so.
        low, high = result.colour_limits(kind)
        table = result.table(kind)
        assert low == min(table.min(), result.low_score) and high == max(table.max(), result.high_score)
        assert f"Colours run from {low:.3g} to {high:.3g}" in figure.caption

    path = tmp_path / "trace.h5"
    save_result(path, result, "trace")
    [(_, loaded)] = load_results(path, discover_plugins().result_class)
    np.testing.assert_array_equal(loaded.scores, result.scores)
    assert loaded.tokens == result.tokens and loaded.meta.params["subject"] == "t2 t3"

    # The reference method through the plugin gives the same numbers.
    reference = run_to_completion(run_analysis(plugin, ctx, {"subject": "t2 t3", "samples": 4, "method": "reference", "kinds": "resid"}))
    np.testing.assert_allclose(reference.table("resid"), result.table("resid"), atol=1e-5)


@pytest.mark.smollm2
def test_smollm2_trace_recovers_clean_and_corrupted(smollm2):
    request = build_request(smollm2, SMOL_PROMPT, smollm2.tokenize(SMOL_PROMPT), "The Eiffel Tower", "")
    assert smollm2.str_tokens(request.target_ids) == [" Paris"]
    noise = subject_noise(smollm2, request, samples=4, noise=0.0, noise_scale=3.0, seed=1)
    traced = run_to_completion(trace_with_noise(smollm2, request, noise, ("resid",)))
    assert traced.high_score > 0.5 and traced.low_score < traced.high_score / 2
    with torch.inference_mode():
        # Nothing restored: the corrupted probability. Everything the noise touched restored: the clean one.
        _, nothing = traced_run(smollm2, request, noise, [])
        start, end = request.subject_range
        _, everything = traced_run(smollm2, request, noise, [("blocks.0.hook_resid_pre", p) for p in range(start, end)])
        assert nothing == pytest.approx(traced.low_score, abs=1e-5)
        assert everything == pytest.approx(traced.high_score, abs=1e-5)
        # The final state of the last token is the prediction itself.
        assert traced.scores["resid"][-1, -1] == pytest.approx(traced.high_score, abs=1e-5)
        # A sample of cells against the reference's one-pass-per-cell computation.
        for position, layer in [(end - 1, 3), (end - 1, 12), (request.n_tokens - 1, 20), (1, 0)]:
            _, expected = traced_run(smollm2, request, noise, [(f"blocks.{layer}.hook_resid_post", position)])
            assert traced.scores["resid"][position, layer] == pytest.approx(expected, abs=1e-4)
    # As in the paper: the subject's tokens carry the fact in early layers, the last token in late ones.
    # (For SmolLM2 it is " iffel", the second subject token, more than the last one.)
    assert traced.scores["resid"][start:end, :10].max() > traced.low_score + 0.2
    assert traced.scores["resid"][-1, 24:].min() > traced.low_score + 0.2


def test_window_shortcut_is_taken_only_where_blocks_decompose(lab_model, monkeypatch):
    request = lab_request(lab_model)
    noise = subject_noise(lab_model, request, samples=3, noise=0.0, noise_scale=3.0, seed=0)
    with torch.inference_mode():
        base = tracing._baselines(lab_model, request, noise, KINDS)
        assert base.corrupted_mlp is not None and base.block_mlp is not None
        # A block whose output is not input + attention + MLP(ln2(.)) (here: an MLP that the
        # check sees doubled) must send windows back to their first block.
        real = tracing._block_mlp
        monkeypatch.setattr(tracing, "_block_mlp", lambda bridge: (lambda layer, x: 2 * real(bridge)(layer, x)))
        base = tracing._baselines(lab_model, request, noise, KINDS)
        assert base.corrupted_mlp is None and base.block_mlp is None
    # Without the shortcut the fast path still equals the reference.
    fast = run_to_completion(trace_with_noise(lab_model, request, noise, ("mlp", "attn"), window=1))
    for kind in ("mlp", "attn"):
        reference, _, _ = run_to_completion(trace_reference(lab_model, request, noise, kind, window=1))
        np.testing.assert_allclose(fast.scores[kind], reference, atol=1e-5)


@pytest.mark.smollm2
def test_smollm2_window_cells_match_the_reference(smollm2):
    # SmolLM2 (Llama blocks) takes the window shortcut; its cells against one-pass-per-cell runs.
    request = build_request(smollm2, SMOL_PROMPT, smollm2.tokenize(SMOL_PROMPT), "The Eiffel Tower", "")
    noise = subject_noise(smollm2, request, samples=3, noise=0.0, noise_scale=3.0, seed=2)
    with torch.inference_mode():
        assert tracing._baselines(smollm2, request, noise, ("mlp", "attn")).block_mlp is not None
    traced = run_to_completion(trace_with_noise(smollm2, request, noise, ("mlp", "attn")))
    end, last = request.subject_range[1], request.n_tokens - 1
    with torch.inference_mode():
        for kind in ("mlp", "attn"):
            for position, layer in [(end - 1, 0), (end - 1, 8), (last, 20), (last, 29)]:
                restored = restored_layers(kind, layer, smollm2.n_layers, 10)
                _, expected = traced_run(smollm2, request, noise, [(RESTORED_HOOK[kind].format(r), position) for r in restored])
                assert traced.scores[kind][position, layer] == pytest.approx(expected, abs=1e-4), (kind, position, layer)


def test_counted_passes_are_the_passes_run(lab_model, monkeypatch):
    """flops.py counts the passes the fast path reports: each is the rows × positions × blocks
    that went through the model's MLPs in a restored run."""
    request = lab_request(lab_model)
    noise = subject_noise(lab_model, request, samples=3, noise=0.0, noise_scale=3.0, seed=0)
    counting, tokens = [False], [0]

    def count(module, args):
        if counting[0]:
            tokens[0] += args[0].shape[:-1].numel()

    real = tracing.logits_from_layer

    def restored_run(*args, **kwargs):
        counting[0] = True
        try:
            return real(*args, **kwargs)
        finally:
            counting[0] = False

    monkeypatch.setattr(tracing, "logits_from_layer", restored_run)
    mlps = [m for m in lab_model.bridge.original_model.modules() if type(m).__name__.endswith("MLP")]
    handles = [m.register_forward_pre_hook(count) for m in mlps]
    try:
        traced = run_to_completion(trace_with_noise(lab_model, request, noise, KINDS, window=1))
    finally:
        for handle in handles:
            handle.remove()
    n_tokens, n_layers = len(request.sequence), lab_model.n_layers
    assert traced.passes and tokens[0] == sum(
        p.rows_per_cell * len(p.entries) * (n_tokens - p.position) * max(0, n_layers - p.entries[0]) for p in traced.passes
    )
    sizes = flops.ModelSizes.of(lab_model)
    assert sizes.block_weights == 4 * 128 * 128 + 2 * 128 * 128  # GPT-2 block: q, k, v, o; MLP in and out
    ran, alone = flops.fast_path_macs(sizes, n_tokens, 3, traced.passes)
    assert alone <= ran < flops.peer_macs(sizes, n_tokens, len(KINDS), 3)


def _zoo_request(model, target=""):
    # A token before the subject: restored runs read its keys and values from the corrupted run.
    prompt = "Yesterday the Eiffel Tower was located in the city of"
    return build_request(model, prompt, model.tokenize(prompt), "the Eiffel Tower", target)


def _through_the_bridge(monkeypatch):
    monkeypatch.setattr(tracing.JoinedBlocks, "for_token", classmethod(lambda cls, *args: None))


@pytest.mark.parametrize("family", ["llama", "mixtral"])
def test_joined_passes_equal_passes_through_the_bridge(family, monkeypatch):
    """Llama blocks (and Mixtral's, with expert MLPs) run by hand, every cell joining the pass
    at its own entry layer: the same scores as passes through the bridge, and no block run
    for nothing (what flops.py counts as the passes run is then a pass per cell)."""
    model = load_model(f"zoo:{family}")
    request = _zoo_request(model)
    assert request.subject_range[0] > 0
    noise = subject_noise(model, request, samples=3, noise=0.0, noise_scale=3.0, seed=1)
    joined = run_to_completion(trace_with_noise(model, request, noise, KINDS, window=4))
    assert joined.passes and all(p.joined for p in joined.passes)
    ran, alone = flops.fast_path_macs(flops.ModelSizes.of(model), len(request.sequence), 3, joined.passes)
    assert ran == alone
    _through_the_bridge(monkeypatch)
    bridged = run_to_completion(trace_with_noise(model, request, noise, KINDS, window=4))
    assert not any(p.joined for p in bridged.passes)
    for kind in KINDS:
        np.testing.assert_allclose(joined.scores[kind], bridged.scores[kind], rtol=1e-4, atol=1e-7)
        assert np.ptp(bridged.scores[kind]) > 1e-3  # cells differ: the comparison is not vacuous


def test_joined_passes_split_to_bound_their_intermediates(monkeypatch):
    model = load_model("zoo:llama")
    request = _zoo_request(model)
    noise = subject_noise(model, request, samples=2, noise=0.0, noise_scale=3.0, seed=1)
    whole = run_to_completion(trace_with_noise(model, request, noise, KINDS, window=4))
    traced_rows = request.n_tokens - request.subject_range[0]
    assert len(whole.passes) == traced_rows  # a pass per token row
    # Room for 5 cells of the first row traced (the widest): its widest intermediate per cell is
    # samples x positions x (d_mlp hidden units, or a score per head and key), in float32.
    first, n_positions = request.subject_range[0], len(request.sequence)
    per_cell = 2 * (n_positions - first) * max(int(model.cfg.d_mlp), model.n_heads * n_positions) * 4
    monkeypatch.setattr(tracing, "MAX_ACTIVATION_BYTES", 5 * per_cell)
    split = run_to_completion(trace_with_noise(model, request, noise, KINDS, window=4))
    assert all(p.joined for p in split.passes) and len(split.passes) > traced_rows
    cells = 3 * model.n_layers
    assert [len(p.entries) for p in split.passes if p.position == first] == [5] * (cells // 5) + ([cells % 5] if cells % 5 else [])
    for kind in KINDS:
        np.testing.assert_allclose(split.scores[kind], whole.scores[kind], rtol=1e-5, atol=1e-9)


def test_blocks_by_hand_that_miss_send_the_trace_through_the_bridge(monkeypatch):
    model = load_model("zoo:llama")
    request = _zoo_request(model)
    noise = subject_noise(model, request, samples=2, noise=0.0, noise_scale=3.0, seed=1)
    real = tracing.JoinedBlocks.residual_out
    monkeypatch.setattr(tracing.JoinedBlocks, "residual_out", lambda self, cells, first: real(self, cells, first) * 1.001)
    traced = run_to_completion(trace_with_noise(model, request, noise, ("resid", "mlp"), window=4))
    assert traced.passes and not any(p.joined for p in traced.passes)
    for kind in ("resid", "mlp"):
        reference, _, _ = run_to_completion(trace_reference(model, request, noise, kind, window=4))
        np.testing.assert_allclose(traced.scores[kind], reference, atol=1e-6)


def test_cancel_stops_blocks_run_by_hand():
    # Blocks by hand never call a block's forward, where the app's interrupt hook sits: they ask themselves.
    model = load_model("zoo:llama")
    request = _zoo_request(model)
    noise = subject_noise(model, request, samples=2, noise=0.0, noise_scale=3.0, seed=1)
    event = threading.Event()
    steps = trace_with_noise(model, request, noise, KINDS, window=4)
    with cancellable(event):
        for _ in range(request.subject_range[0]):  # the clean and corrupted runs, and the tokens before the subject
            next(steps)
        event.set()
        with pytest.raises(Interrupted):
            next(steps)


@pytest.mark.smollm2
def test_smollm2_joined_passes_with_a_target_of_several_tokens(smollm2, monkeypatch):
    # The last block computes only the scored positions; with a target of several tokens
    # there are several, and the restored token is not among them.
    prompt = "In 1889 the Eiffel Tower opened in"
    request = build_request(smollm2, prompt, smollm2.tokenize(prompt), "the Eiffel Tower", " Paris, France")
    assert len(request.target_ids) > 1 and request.subject_range[0] > 0
    noise = subject_noise(smollm2, request, samples=2, noise=0.0, noise_scale=3.0, seed=1)
    joined = run_to_completion(trace_with_noise(smollm2, request, noise, KINDS))
    assert all(p.joined for p in joined.passes)
    _through_the_bridge(monkeypatch)
    bridged = run_to_completion(trace_with_noise(smollm2, request, noise, KINDS))
    for kind in KINDS:
        np.testing.assert_allclose(joined.scores[kind], bridged.scores[kind], rtol=1e-4, atol=1e-6)
    assert joined.high_score > 10 * joined.low_score
