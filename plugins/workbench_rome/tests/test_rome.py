"""ROME edits (workbench.editing and the rome plugin), checked against independent computations
on real models: the rank-one update's defining property, bit-exact undo and redo, edit files,
the edited model saved as a folder, and clear errors for bad requests."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from workbench.editing import EditStack, load_edit, mlp_output, save_edit, save_edited_model
from workbench.editing.covariance import key_statistics, stats_folder
from workbench.editing.delta_pass import DeltaPass
from workbench.editing.edits import base_fingerprint
from workbench.editing.prompts import make_request, shared_rows, target_ids, target_probabilities
from workbench.editing.rome import RomeHparams, compute_edit
from workbench.errors import InputError
from workbench.hooks.blocks_by_hand import block_arguments
from workbench.models import load_model
from workbench.plugin_api import AnalysisContext, discover_plugins, run_analysis
from workbench.progress import run_to_completion
from workbench.results import load_results, save_result

# The lab model knows no facts; its induction circuit answers "t1 t2 t3 t4 t1 t2 t3" with t4.
# The subject is the last token and the edit at layer 0 rewrites what follows it. Its MLP
# outputs are small, so the norm clamp and penalty are looser than the reference defaults.
LAB_TEMPLATE = "t1 t2 t3 t4 t1 t2 {}"
LAB_SUBJECT = "t3"
LAB_NEW = "t9"
LAB_HP = dict(v_steps=25, v_weight_decay=0.01, clamp_norm_factor=40.0, short_prefixes=3, long_prefixes=3)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rome-cache")
    return folder


@pytest.fixture(autouse=True)
def isolated_cache(cache, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(cache))


@pytest.fixture(scope="module")
def lab_corpus(tmp_path_factory):
    """Random lab tokens: the lab model reads them, and they give a full-rank C quickly."""
    rng = np.random.default_rng(0)
    lines = [" ".join(f"t{i}" for i in rng.integers(0, 64, size=60)) for _ in range(40)]
    path = tmp_path_factory.mktemp("corpus") / "lab-tokens.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def lab():
    return load_model("lab:induction")


@pytest.fixture(scope="module")
def lab_edit(lab, lab_corpus, tmp_path_factory, monkeypatch_module):
    """One computed (not applied) lab edit with its key statistics."""
    request = make_request(LAB_SUBJECT, LAB_NEW, template=LAB_TEMPLATE, target_true="t4")
    stats = run_to_completion(key_statistics(lab, 0, corpus=lab_corpus))
    computation = run_to_completion(compute_edit(lab, request, 0, stats.second_moment, RomeHparams(**LAB_HP)))
    return request, stats, computation


@pytest.fixture(scope="module")
def monkeypatch_module(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("WORKBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("rome-module-cache")))
    yield mp
    mp.undo()


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.bridge.original_model.named_parameters()}


def same_weights(model, saved: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(p, saved[name]) for name, p in model.bridge.original_model.named_parameters())


def test_finds_the_mlp_output_in_either_layout(lab):
    target = mlp_output(lab, 0)
    assert target.layout == "in_out"  # GPT-2 Conv1D: [in, out]
    assert target.name == "transformer.h.0.mlp.c_proj.weight"
    keys = torch.randn(3, int(lab.cfg.d_mlp))
    expected = keys @ target.weight.detach() + target.module.bias.detach()
    assert torch.allclose(target.output(keys), expected, atol=1e-5)


def check_delta_pass(model, layer: int, texts: list[str], edit_pos: list[int]) -> None:
    """v*'s search runs from the edited block on, for positions from the subject on, its
    blocks by hand where that holds and through the bridge otherwise; the reference runs the
    whole model with δ added by a hook. Same logits, same gradient."""
    rows = [model.tokenize(text) for text in texts]
    needed = torch.tensor([[len(row) - 1, max(e, len(row) - 2), e] for row, e in zip(rows, edit_pos)])
    needed[-1] = edit_pos[-1]  # a row read at its edit position alone, as v*'s KL prompt
    reference = DeltaPass(model, mlp_output(model, layer), rows, edit_pos, needed, full_pass=True)
    for by_hand in (None, False):
        fast = DeltaPass(model, mlp_output(model, layer), rows, edit_pos, needed, by_hand=by_hand)
        assert not fast.full_pass
        delta = (torch.randn(int(model.cfg.d_model), generator=torch.Generator().manual_seed(layer)) * 2).requires_grad_(True)
        got, expected = fast(delta), reference(delta)
        assert got.shape == (len(rows), 3, int(model.cfg.d_vocab))
        assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
        probe = torch.randn(got.shape, generator=torch.Generator().manual_seed(1))
        (grad_got,) = torch.autograd.grad((got.log_softmax(-1) * probe).sum(), delta)
        (grad_expected,) = torch.autograd.grad((expected.log_softmax(-1) * probe).sum(), delta)
        assert torch.allclose(grad_got, grad_expected, atol=1e-4, rtol=1e-3), (grad_got - grad_expected).abs().max()


def test_blocks_with_a_hook_are_not_run_by_hand(lab):
    """A run by hand skips the blocks' own hook points: a registered hook keeps them in the bridge."""
    ids = torch.tensor([lab.tokenize("t1 t2 t3 t4")])
    residual = lab.bridge.embed(ids)
    with lab.bridge.hooks(fwd_hooks=[("blocks.1.hook_resid_pre", lambda x, hook=None: None)]):
        assert block_arguments(lab.bridge, 1, residual) is None


@pytest.mark.parametrize("layer", [0, 1])
def test_v_star_pass_from_the_edit_equals_the_whole_model(lab, layer):
    check_delta_pass(lab, layer, ["t1 t2 t3 t4 t5", "t5 t6", "t7 t8 t9 t1 t2 t3 t4 t5 t6"], [2, 1, 5])


def test_keys_of_a_pass_stopped_after_the_block_equal_the_whole_model(lab):
    target = mlp_output(lab, 0)
    ids = torch.tensor([lab.tokenize("t1 t2 t3 t4 t1 t2"), lab.tokenize("t5 t6 t7 t8 t9 t1")])
    _, cache = lab.bridge.run_with_cache(ids, names_filter=[target.key_hook])
    assert torch.equal(target.keys_of(lab.bridge, ids), cache[target.key_hook])


def test_shared_rows_hold_every_sequence_as_a_beginning():
    rows, host = shared_rows([[1, 2], [1, 2, 3], [4], [1], [1, 2, 3]])
    assert rows == [[1, 2, 3], [4]] and host == [0, 0, 1, 0, 0]


def reference_probability(model, prompt: str, target: str) -> float:
    """P(target | prompt) from one whole pass of prompt + target[:-1], every logit computed."""
    ids, tokens = model.tokenize(prompt), target_ids(model, prompt, target)
    with torch.no_grad():
        log_probs = model.bridge(torch.tensor([ids + tokens[:-1]])).float().log_softmax(-1)[0]
    return float(torch.exp(sum(log_probs[len(ids) - 1 + j, t] for j, t in enumerate(tokens))))


def test_target_probabilities_sharing_passes_equal_one_pass_per_pair(lab):
    """New and true targets of several lengths on prompts of several lengths: the rows they
    share and the positions projected onto the vocabulary give each pair's own probability."""
    pairs = [(p, t) for p in ("t1 t2 t3 t4 t1 t2", "t5 t6 t7", "t5 t6 t7 t8") for t in ("t3", "t3 t4", "t9", "t8 t9 t1")]
    got = target_probabilities(lab, [p for p, _ in pairs], [t for _, t in pairs], batch=5)
    expected = [reference_probability(lab, p, t) for p, t in pairs]
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-9)


def test_key_statistics_are_cached_and_symmetric(lab, lab_corpus):
    first = run_to_completion(key_statistics(lab, 1, corpus=lab_corpus))
    again = run_to_completion(key_statistics(lab, 1, corpus=lab_corpus))
    assert not first.from_cache and again.from_cache
    assert np.array_equal(first.second_moment, again.second_moment)
    c = first.second_moment
    assert np.allclose(c, c.T, atol=1e-6)
    assert np.linalg.eigvalsh(c.astype(np.float64)).min() > 0  # full rank: invertible
    assert first.n_keys >= 10 * int(lab.cfg.d_mlp)

    # An entry damaged on disk (a kill, a full disk) is computed again, not an error.
    [entry] = [p for p in stats_folder().rglob("layer1-*.h5") if p.parent.name == base_fingerprint(lab)]
    entry.write_bytes(entry.read_bytes()[:300])
    recomputed = run_to_completion(key_statistics(lab, 1, corpus=lab_corpus))
    assert not recomputed.from_cache and np.array_equal(recomputed.second_moment, first.second_moment)
    assert run_to_completion(key_statistics(lab, 1, corpus=lab_corpus)).from_cache
    assert not list(stats_folder().rglob("*.partial"))


def test_update_solves_with_kept_factors_as_a_direct_solve(monkeypatch):
    """u = C⁻¹k*/‖C⁻¹k*‖ from LU factors kept between edits equals torch.linalg.solve's; a
    changed C is factored anew, a singular one refused, and a C wider than the kept width is
    not kept (an 8B model's factors would hold 1.5 GiB)."""
    from workbench.editing import rome

    generator = torch.Generator().manual_seed(0)
    keys = torch.randn(200, 48, generator=generator, dtype=torch.float64)
    c = (keys.T @ keys / 200).float().numpy()
    k, v, w_k = (torch.randn(48, generator=generator) for _ in range(3))
    rome._FACTORS.clear()
    for second_moment in (c, c, c * 2):
        u, right = rome.rank_one_update(second_moment, k, v, w_k)
        solved = torch.linalg.solve(torch.from_numpy(second_moment).double(), k.double())
        expected = solved / solved.norm()
        assert np.allclose(u, expected.float().numpy(), rtol=1e-6, atol=1e-7)
        assert np.allclose(right, ((v.double() - w_k.double()) / torch.dot(expected, k.double())).float().numpy(), rtol=1e-5)
        assert len(rome._FACTORS) == 1
    with pytest.raises(InputError, match="singular"):
        rome.rank_one_update(np.zeros((48, 48), dtype=np.float32), k, v, w_k)
    monkeypatch.setattr(rome, "_MAX_KEPT_WIDTH", 32)
    rome.rank_one_update(c, k, v, w_k)
    assert not rome._FACTORS


def test_update_writes_v_star_for_k_star_and_spares_c_orthogonal_keys(lab, lab_edit):
    request, stats, computation = lab_edit
    target = mlp_output(lab, 0)
    k_star = torch.from_numpy(computation.k_star)
    old_out = target.output(k_star)
    rng = torch.Generator().manual_seed(3)
    k = torch.rand(8, k_star.shape[0], generator=rng)
    u = torch.from_numpy(computation.edit.left)
    # Keys with u·k = 0, i.e. orthogonal to k* in the C⁻¹ metric (u ∝ C⁻¹k*).
    k_orth = k - (k @ u)[:, None] / torch.dot(u, k_star) * k_star[None, :]
    old_orth = target.output(k_orth)
    stack = EditStack.of(lab)
    stack.apply(computation.edit)
    try:
        new_out = target.output(k_star)
        assert torch.allclose(new_out, torch.from_numpy(computation.v_star), atol=1e-4 * float(new_out.norm()) + 1e-5)
        assert not torch.allclose(old_out, new_out)
        assert torch.allclose(target.output(k_orth), old_orth, atol=1e-4)
        # And the C⁻¹ metric is the key statistics' inverse: u ∝ C⁻¹ k*.
        expected_u = np.linalg.solve(stats.second_moment.astype(np.float64), computation.k_star.astype(np.float64))
        assert np.allclose(computation.edit.left, expected_u / np.linalg.norm(expected_u), atol=1e-4)
    finally:
        stack.undo()


def test_edit_makes_the_new_target_win_and_undo_redo_are_bit_exact(lab, lab_edit):
    request, _, computation = lab_edit
    before = snapshot(lab)
    fingerprint = lab.fingerprint
    p_new, p_true = target_probabilities(lab, [request.prompt] * 2, [request.target_new, request.target_true])
    assert p_true > p_new
    stack = EditStack.of(lab)
    stack.apply(computation.edit)
    after = snapshot(lab)
    edited_fingerprint = lab.fingerprint
    assert edited_fingerprint != fingerprint
    q_new, q_true = target_probabilities(lab, [request.prompt] * 2, [request.target_new, request.target_true])
    assert q_new > q_true and q_new > p_new

    stack.undo()
    assert same_weights(lab, before)
    assert lab.fingerprint == fingerprint == lab.current_fingerprint()
    stack.redo()
    assert same_weights(lab, after)
    assert lab.fingerprint == edited_fingerprint
    stack.undo()
    assert same_weights(lab, before)


def test_stacked_edits_undo_in_order(lab, lab_edit):
    _, _, computation = lab_edit
    stack = EditStack.of(lab)
    states = [snapshot(lab)]
    prints = [lab.fingerprint]
    for scale in (1.0, 0.5):
        edit = computation.edit.__class__(layer=0, left=computation.edit.left, right=computation.edit.right * scale, request=computation.edit.request)
        stack.apply(edit)
        states.append(snapshot(lab))
        prints.append(lab.fingerprint)
    assert len(set(prints)) == 3
    assert [applied for _, applied in stack.history()] == [True, True]
    for index in (1, 0):
        stack.undo()
        assert same_weights(lab, states[index]) and lab.fingerprint == prints[index]
    assert [applied for _, applied in stack.history()] == [False, False]
    assert stack.undo() is None


def test_undo_and_redo_are_quick(lab, lab_edit):
    import time

    stack = EditStack.of(lab)
    stack.apply(lab_edit[2].edit)
    started = time.perf_counter()
    stack.undo()
    stack.redo()
    stack.undo()
    assert (time.perf_counter() - started) / 3 < 0.05


def test_edit_file_round_trip_and_foreign_model(lab, lab_edit, tmp_path):
    _, _, computation = lab_edit
    stack = EditStack.of(lab)
    before = snapshot(lab)
    stack.apply(computation.edit)
    after = snapshot(lab)
    path = save_edit(tmp_path / "edit.h5", computation.edit)
    stack.undo()
    loaded = load_edit(path, lab)
    assert loaded.layer == 0 and loaded.request["subject"] == LAB_SUBJECT
    stack.apply(loaded)
    assert same_weights(lab, after)
    stack.undo()
    assert same_weights(lab, before)
    with h5py.File(path, "a") as f:
        f.attrs["model_fingerprint"] = "0" * 32
    with pytest.raises(InputError, match="another model"):
        load_edit(path, lab)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError):
        load_edit(tmp_path / "junk.h5", lab)


def test_edited_model_saves_as_a_folder_that_loads_with_the_edit(lab, lab_edit, tmp_path):
    request, _, computation = lab_edit
    stack = EditStack.of(lab)
    stack.apply(computation.edit)
    try:
        folder = save_edited_model(lab, tmp_path / "edited")
        ids = torch.tensor([lab.tokenize(request.prompt)])
        with torch.no_grad():
            expected = lab.bridge(ids)
        reloaded = load_model(str(folder))
        with torch.no_grad():
            got = reloaded.bridge(ids)
        assert torch.allclose(got, expected, atol=1e-5)
        assert torch.equal(mlp_output(reloaded, 0).weight, mlp_output(lab, 0).weight)
        assert json.loads((folder / "workbench-edits.json").read_text())["edits"][0]["layer"] == 0
    finally:
        stack.undo()


# -- the plugin ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rome_plugin():
    return discover_plugins().get("rome")


def run_rome(model, plugin, prompts=(), **params):
    return run_to_completion(run_analysis(plugin, AnalysisContext(model, list(prompts)), params))


def test_plugin_edits_the_context_model_and_the_result_round_trips(lab, rome_plugin, lab_corpus, tmp_path):
    before = snapshot(lab)
    fingerprint = lab.fingerprint
    result = run_rome(
        lab, rome_plugin, [], subject="t3", template=LAB_TEMPLATE, target_new="t9", layer=0, corpus=lab_corpus,
        paraphrases="t5 t6 t1 t2 t3 t4 t1 t2 t3", neighbours="t1 t2 t3 t4 t1 t2 t7 t3 | t8 t1 t2 t3 t4 t1 t2 t3", gen_tokens=4, **LAB_HP,
    )
    try:
        assert result.template == LAB_TEMPLATE
        assert result.target_true == " t4" and result.target_new == " t9"
        assert result.p_after[0, 0] > result.p_after[0, 1]
        assert result.p_before[0, 0] < result.p_before[0, 1]
        assert lab.fingerprint == result.fingerprint_after != fingerprint
        assert result.probe_kinds == ["prompt", "paraphrase", "neighbour", "neighbour"]
        assert len(result.losses) >= 1 and result.losses.shape[1] == 4
        section = result.report()
        assert section.figures and all(f.svg.startswith("<svg") for f in section.figures)
        path = tmp_path / "rome.h5"
        save_result(path, result)
        loaded = load_results(path, lambda kind: type(result) if kind == result.kind else None)[0][1]
        assert np.array_equal(loaded.p_after, result.p_after) and loaded.generations_after == result.generations_after
        summary = result.summary()
        assert summary["layer"] == 0 and summary["efficacy"] == 1.0
    finally:
        EditStack.of(lab).undo()
    assert same_weights(lab, before) and lab.fingerprint == fingerprint


def test_auto_layer_comes_from_the_causal_trace_and_is_shown(lab, rome_plugin, lab_corpus):
    causal_trace = discover_plugins().provided("causal-trace", "causal_trace")  # as rome gets it: requires, not an import

    result = run_rome(lab, rome_plugin, [], subject="t3", template=LAB_TEMPLATE, target_new="t9", layer=-1, corpus=lab_corpus, gen_tokens=0, **LAB_HP)
    try:
        assert result.layer_source == "causal trace"
        ids = lab.tokenize(result.prompt)
        assert result.trace_scores.shape == (len(ids), lab.n_layers)
        # The proposed layer is the MLP peak at the last subject token of an independent trace.
        trace = run_to_completion(causal_trace(lab, ids, tuple(result.trace_subject), [lab.tokenize(result.target_true, prepend_bos=False)[0]], kinds=("mlp",)))
        assert result.layer == int(np.argmax(trace.scores["mlp"][result.trace_subject[1] - 1]))
        assert any(f.title.startswith("Causal trace") for f in result.report().figures)
    finally:
        EditStack.of(lab).undo()


@pytest.mark.parametrize(
    ("prompts", "params", "message"),
    [
        (["t1 t2 t3"], dict(subject="t9", target_new="t5"), "not in the prompt"),
        ([], dict(subject="t3", template="t1 t2 t3", target_new="t5"), "has no {}"),
        (["t1 t2 t3"], dict(subject="t3", target_new=" "), "target_new"),
        ([], dict(subject="t3", template=LAB_TEMPLATE, target_new="t4"), "already answers"),
        ([], dict(subject="t3", template=LAB_TEMPLATE, target_new="t9", layer=7), "out of range"),
        ([], dict(subject="t3", target_new="t9"), "no prompt"),
    ],
)
def test_bad_requests_are_refused_clearly(lab, rome_plugin, prompts, params, message):
    fingerprint = lab.fingerprint
    with pytest.raises(InputError, match=message) as info:
        run_rome(lab, rome_plugin, prompts, **params)
    assert info.value.hint
    assert lab.fingerprint == fingerprint


# -- SmolLM2 --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2")


@pytest.mark.smollm2
@pytest.mark.parametrize("layer", [4, 29])
def test_smollm2_v_star_pass_from_the_edit_equals_the_whole_model(smollm2, layer):
    texts = ["The Eiffel Tower is located in the city of", "Because I was there. The Eiffel Tower is in", "The Eiffel Tower is a"]
    check_delta_pass(smollm2, layer, texts, [3, 8, 3])


# Rows as v* makes them: the prompt, bare and behind 10 prefixes of several lengths, and the KL
# prompt, read at its subject alone.
V_STAR_PREFIXES = [
    "", "I went there. ", "The weather was fine that day. ", "You know, ", "Because I was there. ", "Therefore it is said that ",
    "I think ", "The", "Many people who travel to France every summer say that ", "Yes. ", "It is true: ",
]


@pytest.fixture
def one_thread():
    """Bit for bit needs each row of a matrix product to come out the same whatever the other
    rows: MKL gives that with one thread from 4 rows on (with two from 12 on, as in v*)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_same(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Bit for bit on the CPUs this was measured on (MKL, AVX-512: torch.equal held). Another
    CPU or BLAS may pick a kernel whose sums depend on the other rows (below some row count),
    so the assertion allows float32 rounding carried through the blocks (1e-5 of the largest
    value) and nothing more: a wrong position, mask or cache misses by orders of magnitude more."""
    got, expected = got.detach(), expected.detach()
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) <= 1e-5 * float(expected.abs().max()), (got - expected).abs().max()


def v_star_rows(model, prefixes: list[str], prompt: str, subject: str, kl_prompt: str):
    from workbench.editing.prompts import last_subject_token

    end = prompt.index(subject) + len(subject)
    rows, edit_pos = [], []
    for prefix in prefixes:
        row, index = last_subject_token(model, prefix + prompt, len(prefix) + end)
        rows.append(row)
        edit_pos.append(index)
    row, index = last_subject_token(model, kl_prompt, kl_prompt.index(subject) + len(subject))
    needed = torch.tensor([[len(r) - 1] for r in rows] + [[index]])
    return rows + [row], edit_pos + [index], needed


@pytest.mark.smollm2
@pytest.mark.parametrize("attention", ["by hand", "bridge"])
def test_smollm2_v_star_blocks_by_hand_equal_the_bridge(smollm2, one_thread, attention):
    """The blocks after the edited one run by hand at the positions a read one depends on (not
    behind the KL prompt's subject; the last block's queries and MLP only where logits are
    read) give the bridge's logits and δ's gradient (bit for bit on this machine; assert_same),
    with attention computed by hand or by the bridge's module: v*, its losses and the edit are those of the blocks run
    through the bridge."""
    rows, edit_pos, needed = v_star_rows(smollm2, V_STAR_PREFIXES, "The Eiffel Tower is located in the city of", "Eiffel Tower", "The Eiffel Tower is a")
    target = mlp_output(smollm2, 4)
    by_hand = DeltaPass(smollm2, target, rows, edit_pos, needed)
    assert by_hand.by_hand is not None and all(by_hand.by_hand.plain_attention)
    if attention == "bridge":
        by_hand.by_hand.plain_attention = [False] * len(by_hand.by_hand.plain_attention)
    width = by_hand.block_output.shape[1]
    assert by_hand.kept is not None and len(by_hand.kept) == (len(rows) - 1) * width + 1
    assert by_hand.scored is not None and len(by_hand.scored) == len(rows)
    bridge = DeltaPass(smollm2, target, rows, edit_pos, needed, by_hand=False)
    assert bridge.by_hand is None
    probe = torch.randn(len(rows), 1, int(smollm2.cfg.d_vocab), generator=torch.Generator().manual_seed(1))
    results = []
    for delta_pass in (by_hand, bridge):
        delta = (torch.randn(int(smollm2.cfg.d_model), generator=torch.Generator().manual_seed(0)) * 2).requires_grad_(True)
        logits = delta_pass(delta)
        (gradient,) = torch.autograd.grad((logits.log_softmax(-1) * probe).sum(), delta)
        results.append((logits, gradient))
    assert_same(results[0][0], results[1][0])
    assert_same(results[0][1], results[1][1])


@pytest.mark.smollm2
@pytest.mark.parametrize(
    ("prefixes", "short"),
    [(V_STAR_PREFIXES[:4], True), ([*V_STAR_PREFIXES[:3], "When the weather was fine for weeks last year, many people who travel to France said that "], False)],
    ids=["short-prefix", "long-prefix"],
)
def test_smollm2_v_star_cache_equals_a_whole_pass(smollm2, prefixes, short, one_thread):
    """The prefix's keys and values in the blocks after the edited one come from a pass over the
    prefix's columns alone; they are those of a pass over every column (assert_same) at every
    real position, with a prefix shorter than a CPU vector of floats (16) and with a longer one."""
    from workbench.hooks.kv_cache import kv_tensors, logits_and_cache

    rows, edit_pos, needed = v_star_rows(smollm2, prefixes, "The Eiffel Tower is located in the city of", "Eiffel Tower", "The Eiffel Tower is a")
    delta_pass = DeltaPass(smollm2, mlp_output(smollm2, 4), rows, edit_pos, needed)
    first, mask = delta_pass.first, delta_pass.mask
    assert (first < 16) == short and mask.shape[1] > 16
    ids = torch.zeros_like(mask)
    positions = torch.ones_like(mask)
    for r, (row, e) in enumerate(zip(rows, edit_pos)):
        ids[r, first - e : first - e + len(row)] = torch.tensor(row)
        positions[r, first - e : first - e + len(row)] = torch.arange(len(row))
    with torch.no_grad():
        _, whole = logits_and_cache(smollm2.bridge, ids, attention_mask=mask, position_ids=positions)
    real = mask[:, :first].bool()
    for (keys, values), (whole_keys, whole_values) in zip(delta_pass.kv, kv_tensors(whole), strict=True):
        assert_same(keys[:, :, :first].transpose(1, 2)[real], whole_keys[:, :, :first].transpose(1, 2)[real])
        assert_same(values[:, :, :first].transpose(1, 2)[real], whole_values[:, :, :first].transpose(1, 2)[real])
    assert_same(delta_pass.block_output, whole_block_output(smollm2, ids, mask, positions, 4)[:, first:])


def whole_block_output(model, ids, mask, positions, layer: int) -> torch.Tensor:
    kept: dict[str, torch.Tensor] = {}
    with torch.no_grad(), model.bridge.hooks(fwd_hooks=[(f"blocks.{layer}.hook_resid_post", lambda x, hook=None: kept.setdefault("post", x))]):
        model.bridge(ids, attention_mask=mask, position_ids=positions)
    return kept["post"]


@pytest.mark.smollm2
def test_smollm2_edit_moves_the_fact_and_undo_restores_every_weight(smollm2, rome_plugin, lab, lab_edit, tmp_path):
    model = smollm2
    before = snapshot(model)
    fingerprint = model.fingerprint
    result = run_rome(
        model, rome_plugin, ["The Eiffel Tower is located in the city of"], subject="Eiffel Tower", target_new="Rome", layer=4,
        paraphrases="The Eiffel Tower can be found in the city of", neighbours="The Louvre is located in the city of", gen_tokens=8,
    )
    assert mlp_output(model, 4).layout == "out_in"  # Llama nn.Linear down_proj: [out, in]
    assert result.target_true.strip() == "Paris"
    assert result.p_before[0, 1] > result.p_before[0, 0]
    assert result.p_after[0, 0] > result.p_after[0, 1]
    assert "Rome" in result.generations_after[0]
    # The defining property on the Llama layout.
    edit = EditStack.of(model).applied[-1]
    # An edit made on the lab model is refused on SmolLM2.
    path = save_edit(tmp_path / "lab-edit.h5", lab_edit[2].edit.__class__(layer=0, left=lab_edit[2].edit.left, right=lab_edit[2].edit.right, base_fingerprint=lab.fingerprint))
    with pytest.raises(InputError, match="another model"):
        load_edit(path, model)
    assert edit.layer == 4
    EditStack.of(model).undo()
    assert same_weights(model, before)
    assert model.fingerprint == fingerprint == model.current_fingerprint()
