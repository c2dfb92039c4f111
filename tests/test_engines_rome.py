"""ROME through the engine seam (issue 21): the seam's parts ROME needs (RankOneEdit,
TokenScores, mlp.hook_post, fit_delta, second_moment) on TransformerBridge, on nnsight here
and on nnsight's simulation of NDIF; then the rome analysis itself on nnsight, equal to the
TransformerBridge edit made in the weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from workbench.editing import EditStack
from workbench.editing.edits import RomeEdit
from workbench.editing.rome import _TEMPLATES
from workbench.engines import NnsightEngine, RemoteMode
from workbench.engines.base import DeltaFit, RankOneEdit, TokenScores
from workbench.job_context import Interrupted, cancellable
from workbench.plugin_api import AnalysisContext, discover_plugins, run_analysis
from workbench.progress import run_to_completion

LAB_PROMPTS = [[1, 5, 9, 13, 2, 6, 10, 14, 3], [4, 8, 12, 16, 20, 24, 28, 32, 36], [7, 3, 7, 3, 7, 3, 7, 3, 7]]
# The lab ROME case of plugins/workbench_rome/tests (its induction circuit answers t4).
LAB_CASE = dict(
    subject="t3", template="t1 t2 t3 t4 t1 t2 {}", target_new="t9", layer=0, paraphrases="t5 t6 t1 t2 t3 t4 t1 t2 t3",
    neighbours="t1 t2 t3 t4 t1 t2 t7 t3 | t8 t1 t2 t3 t4 t1 t2 t3", gen_tokens=4, v_steps=25, v_weight_decay=0.01, clamp_norm_factor=40.0, short_prefixes=3, long_prefixes=3,
)
SMOLLM2_CASE = dict(subject="Eiffel Tower", target_new="Rome", layer=4, paraphrases="The Eiffel Tower can be found in the city of", neighbours="The Louvre is located in the city of", gen_tokens=3, v_steps=10)
SMOLLM2_PROMPT = "The Eiffel Tower is located in the city of"


def relative(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a, b = torch.as_tensor(np.asarray(a, dtype=np.float64)), torch.as_tensor(np.asarray(b, dtype=np.float64))
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.fixture(scope="module")
def simulated_lab(nnsight_lab):
    engine = NnsightEngine(nnsight_lab.engine.hf_model, nnsight_lab.tokenizer, remote=RemoteMode.simulated())
    return dataclasses.replace(nnsight_lab, engine=engine)


@pytest.fixture(scope="module")
def lab_corpus(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("corpus") / "lab-tokens.txt"
    path.write_text("\n".join(" ".join(f"t{i}" for i in rng.integers(0, 64, size=60)) for _ in range(40)), encoding="utf-8")
    return str(path)


class NextToken:
    """A FitObjective: the NLL of token `target` at every scored position."""

    def __init__(self, target: int) -> None:
        self.target = target

    def loss(self, logits, delta, step):
        loss = -torch.log_softmax(logits.float(), dim=-1)[..., self.target].mean()
        return loss, [float(loss.detach())], False

    def constrain(self, delta):
        pass


def test_edits_scores_fits_and_moments_agree_on_every_engine(lab_model, nnsight_lab, simulated_lab):
    torch.manual_seed(0)
    cfg = lab_model.cfg
    ids = torch.tensor(LAB_PROMPTS)
    edit = RankOneEdit(1, torch.randn(cfg.d_mlp) / 8, torch.randn(cfg.d_model))
    scores = TokenScores(torch.tensor([0, 1, 2, 2]), torch.tensor([3, 4, 8, 0]), torch.tensor([5, 6, 7, 9]))
    reads = {"blocks.1.mlp.hook_post": None, "blocks.1.hook_mlp_out": None}
    engines = (lab_model.engine, nnsight_lab.engine, simulated_lab.engine)
    with torch.inference_mode():
        plain = lab_model.engine.run(ids).logits
        runs = [engine.run(ids, reads=reads, edits=[edit], scores=scores) for engine in engines]
        # The intervention is the weight edit W + right ⊗ left.
        stack = EditStack.of(lab_model)
        stack.apply(RomeEdit(layer=1, left=edit.left.numpy(), right=edit.right.numpy()))
        try:
            in_weights = lab_model.engine.run(ids, reads=reads)
        finally:
            stack.undo()
    assert relative(runs[0].logits, plain) > 0.1  # the edit matters
    assert relative(runs[0].logits, in_weights.logits) < 1e-5
    assert relative(runs[0].activations["blocks.1.hook_mlp_out"], in_weights.activations["blocks.1.hook_mlp_out"]) < 1e-5
    expected = torch.log_softmax(runs[0].logits[scores.rows, scores.positions], -1).gather(-1, scores.tokens[:, None])[:, 0]
    assert torch.allclose(runs[0].scores, expected, atol=1e-6)
    for run in runs[1:]:
        assert relative(run.logits, runs[0].logits) < 1e-4 and relative(run.scores, runs[0].scores) < 1e-4
        assert all(relative(run.activations[name], runs[0].activations[name]) < 1e-4 for name in reads)

    fit = DeltaFit(ids, "blocks.0.hook_mlp_out", [2, 3, 4], torch.tensor([[2, 6], [3, 7], [4, 8]]), NextToken(5), cfg.d_model, 5, 0.5)
    fits = [engine.fit_delta(fit) for engine in engines]
    losses = [record[0] for record in fits[0].records]
    assert len(losses) == 5 and losses[-1] < losses[0] - 0.1  # the steps lower the loss
    for other in fits[1:]:
        assert np.allclose([record[0] for record in other.records], losses, rtol=1e-4) and relative(other.delta, fits[0].delta) < 1e-4

    mask = torch.ones(3, ids.shape[1], dtype=torch.bool)
    mask[0, 5:] = False
    batches = [(ids, mask), (ids[:2], mask[:2])]
    moments = [engine.second_moment(batches, "blocks.1.mlp.hook_post") for engine in engines]
    assert moments[0][1] == int(mask.sum() + mask[:2].sum())
    for moment, count in moments[1:]:
        assert count == moments[0][1] and relative(moment, moments[0][0]) < 1e-5


def test_a_fit_here_reports_each_step_and_stops_on_cancel(nnsight_lab):
    import threading

    ids = torch.tensor(LAB_PROMPTS)
    fit = DeltaFit(ids, "blocks.0.hook_mlp_out", [2, 3, 4], torch.tensor([[2], [3], [4]]), NextToken(5), nnsight_lab.cfg.d_model, 20, 0.5)
    event, steps = threading.Event(), []

    def on_step(step, record):
        steps.append(step)
        if step == 2:
            event.set()
        from workbench.job_context import raise_if_cancelled

        raise_if_cancelled()

    with cancellable(event), pytest.raises(Interrupted):
        nnsight_lab.engine.fit_delta(fit, on_step=on_step)
    assert steps == [0, 1, 2]


def rome_on(model, prompts, params, cache, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(cache))  # each engine computes its own C
    return run_to_completion(run_analysis(discover_plugins().get("rome"), AnalysisContext(model, prompts), params))


def assert_same_edit(ours, theirs):
    """The nnsight edit (an intervention) against the bridge's (in the weights)."""
    assert (ours.applied_as, theirs.applied_as) == ("intervention", "weights")
    assert ours.target_true == theirs.target_true and ours.layer == theirs.layer
    assert len(ours.losses) == len(theirs.losses)
    for name in ("p_before", "p_after", "losses", "target_prob"):
        assert np.allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-4, atol=1e-6), name
    for name in ("delta_norm", "v0_norm", "k_norm", "right_norm"):
        assert getattr(ours, name) == pytest.approx(getattr(theirs, name), rel=1e-4), name
    assert ours.generations_after == theirs.generations_after


def test_rome_on_nnsight_equals_the_bridge_edit_on_the_lab_model(lab_model, nnsight_lab, lab_corpus, tmp_path, monkeypatch):
    params = dict(LAB_CASE, corpus=lab_corpus)
    theirs = rome_on(lab_model, [], params, tmp_path / "bridge", monkeypatch)
    EditStack.of(lab_model).undo()
    ours = rome_on(nnsight_lab, [], params, tmp_path / "nnsight", monkeypatch)
    assert_same_edit(ours, theirs)
    assert ours.p_after[0, 0] > ours.p_after[0, 1] and ours.p_before[0, 0] < ours.p_before[0, 1]
    assert nnsight_lab.current_fingerprint() == nnsight_lab.fingerprint == ours.fingerprint_after  # the weights are untouched
    assert "intervention" in " ".join(ours.report().notes)


def test_rome_on_simulated_ndif_is_the_same_edit_in_few_jobs(nnsight_lab, simulated_lab, lab_corpus, tmp_path, monkeypatch):
    params = dict(LAB_CASE, corpus=lab_corpus)
    here = rome_on(nnsight_lab, [], params, tmp_path / "here", monkeypatch)
    _TEMPLATES.clear()  # sample the context prefixes again, as a first edit does
    jobs = []
    real = simulated_lab.engine._backend
    monkeypatch.setattr(simulated_lab.engine, "_backend", lambda: jobs.append(1) or real())
    there = rome_on(simulated_lab, [], params, tmp_path / "there", monkeypatch)
    for name in ("p_before", "p_after", "losses"):
        assert np.allclose(getattr(there, name), getattr(here, name), rtol=1e-4, atol=1e-6), name
    assert there.generations_after == here.generations_after and there.generations_before == here.generations_before
    assert there.contexts == here.contexts  # the prefixes drawn there are the ones drawn here
    # The answer (1), the probes before (1), the generations before (2 prompts), the short and
    # long prefixes (1 each), C (1), k* and v0 (1), every v* step (1), the probes after (1),
    # the generations after (2).
    assert len(jobs) == 1 + 1 + 2 + 2 + 1 + 1 + 1 + 1 + 2


@pytest.mark.smollm2
@pytest.mark.slow
def test_rome_on_nnsight_equals_the_bridge_edit_on_smollm2(smollm2, nnsight_smollm2, tmp_path, monkeypatch):
    # One cache: the nnsight run reads the key statistics the bridge computed (the lab test
    # compares C computed on each engine), which saves a pass over the corpus.
    theirs = rome_on(smollm2, [SMOLLM2_PROMPT], SMOLLM2_CASE, tmp_path, monkeypatch)
    EditStack.of(smollm2).undo()
    ours = rome_on(nnsight_smollm2, [SMOLLM2_PROMPT], SMOLLM2_CASE, tmp_path, monkeypatch)
    assert_same_edit(ours, theirs)
    assert ours.target_true.strip() == "Paris" and ours.p_after[0, 0] > 0.9


def test_the_causal_trace_rome_chooses_its_layer_with_runs_on_nnsight(lab_model, nnsight_lab):
    """layer=-1: the causal-trace plugin's provided causal_trace, on the engine path there."""
    causal_trace = discover_plugins().provided("causal-trace", "causal_trace")
    ids = lab_model.tokenize("t1 t2 t3 t4 t1 t2 t3")  # BOS first: ids[4] is t4, the induction answer
    traces = [run_to_completion(causal_trace(model, ids, (2, 4), [ids[4]], kinds=("mlp",), samples=3, seed=1)) for model in (lab_model, nnsight_lab)]
    ours, theirs = traces[1], traces[0]
    assert np.abs(ours.scores["mlp"] - theirs.scores["mlp"]).max() <= 1e-5
    assert ours.high_score == pytest.approx(theirs.high_score, rel=1e-5)
