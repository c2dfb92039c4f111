"""The qk-ov plugin on real models: circuits against the raw Hugging Face weights, spectra and
self-top fractions against full matrices built in numpy, composition scores against
TransformerLens' own, and the lab model's known induction circuit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import run_cli
from workbench.errors import InputError
from workbench.plugin_api import AnalysisContext, discover_plugins, run_analysis, summary_json
from workbench.progress import run_to_completion
from workbench.results import load_results, save_result

L0H2 = (0, 2)  # the lab model's previous-token head (assets/lab/README.md)
L1H1 = (1, 1)  # its induction head, which K-composes with L0H2
LAB_TOKENS = [3, 4, 5, 17, 40, 0]  # t1 t2 t3 t15 t38 <bos>


@pytest.fixture(scope="module")
def plugin():
    return discover_plugins().get("qk-ov")


@pytest.fixture(scope="module")
def lab_result(plugin, lab_model):
    return run_to_completion(run_analysis(plugin, AnalysisContext(lab_model), texts={"head": "1.1", "tokens": "t1,t2,t3,t15"}))


def circuits_module():
    from workbench_qk_ov import circuits

    return circuits


# -- an independent statement of the weights, from the wrapped Hugging Face model -------------------


def _np(t) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def gpt2_weights(model, fold_ln: bool) -> dict:
    """Per-head weights straight from GPT-2's own modules: c_attn is a Conv1D ([in, out]) holding q | k | v."""
    hf = model.bridge.original_model
    n_heads, d_model = model.n_heads, int(model.cfg.d_model)
    d_head = d_model // n_heads
    centre = np.eye(d_model) - 1.0 / d_model  # LayerNorm subtracts the mean: x -> x P
    W_E = _np(hf.transformer.wte.weight)
    W_pos = _np(hf.transformer.wpe.weight)
    W_U = _np(hf.lm_head.weight).T
    layers = []
    for block in hf.transformer.h:
        qkv = _np(block.attn.c_attn.weight)  # [d_model, 3 d_model]
        proj = _np(block.attn.c_proj.weight)  # [d_model (heads concatenated), d_model]
        reading = np.diag(_np(block.ln_1.weight))
        if fold_ln:
            reading = centre @ reading
        heads = []
        for h in range(n_heads):
            cols = slice(h * d_head, (h + 1) * d_head)
            q, k, v = (qkv[:, part * d_model : (part + 1) * d_model][:, cols] for part in range(3))
            o = proj[cols, :]
            if fold_ln:
                q, k, v, o = reading @ q, reading @ k, reading @ v, o @ centre
            heads.append({"q": q, "k": k, "v": v, "o": o})
        layers.append(heads)
    if fold_ln:
        W_E, W_pos = W_E @ centre, W_pos @ centre
        W_U = centre @ np.diag(_np(hf.transformer.ln_f.weight)) @ W_U
        W_U = W_U - W_U.mean(1, keepdims=True)
    return {"W_E": W_E, "W_pos": W_pos, "W_U": W_U, "heads": layers}


def full_ov(ref, layer, head) -> np.ndarray:
    h = ref["heads"][layer][head]
    return ref["W_E"] @ h["v"] @ h["o"] @ ref["W_U"]


def full_qk(ref, layer, head) -> np.ndarray:
    h = ref["heads"][layer][head]
    return ref["W_E"] @ h["q"] @ h["k"].T @ ref["W_E"].T


# -- circuits ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fold_ln", [False, True])
def test_restricted_circuits_equal_the_raw_gpt2_weights(lab_model, fold_ln):
    from workbench_qk_ov.analysis import head_circuits

    C = circuits_module()
    weights = C.circuit_weights(lab_model.bridge, fold_ln=fold_ln)
    ref = gpt2_weights(lab_model, fold_ln)
    for layer in range(lab_model.n_layers):
        for head in range(lab_model.n_heads):
            got = head_circuits(lab_model, weights, layer, head, LAB_TOKENS, positional=64)
            idx = np.ix_(LAB_TOKENS, LAB_TOKENS)
            np.testing.assert_allclose(got.qk, full_qk(ref, layer, head)[idx], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(got.ov, full_ov(ref, layer, head)[idx], rtol=1e-4, atol=1e-5)
            h = ref["heads"][layer][head]
            np.testing.assert_allclose(got.positional_qk, ref["W_pos"] @ h["q"] @ h["k"].T @ ref["W_pos"].T, rtol=1e-4, atol=1e-5)
            # top outputs over the whole vocabulary, and the rank of the token itself
            rows = full_ov(ref, layer, head)[LAB_TOKENS]
            np.testing.assert_array_equal(got.ov_top_ids[:, 0], rows.argmax(1))
            np.testing.assert_array_equal(got.ov_self_rank, (rows > rows[np.arange(len(LAB_TOKENS)), LAB_TOKENS][:, None]).sum(1))


def test_folding_equals_transformer_lens_compatibility_mode(lab_model):
    """fold_ln=True gives the weights enable_compatibility_mode() gives (on a second copy: it edits the model)."""
    from workbench.models import load_model

    C = circuits_module()
    ours = C.circuit_weights(lab_model.bridge, fold_ln=True)
    processed = load_model("lab:induction").bridge
    processed.enable_compatibility_mode(disable_warnings=True)
    for name in ("W_E", "W_U", "W_pos", "W_Q", "W_K", "W_V", "W_O"):
        np.testing.assert_allclose(getattr(ours, name).numpy(), getattr(processed, name).detach().numpy(), atol=1e-6, err_msg=name)
    for mode in "QKV":
        np.testing.assert_allclose(C.composition_scores(ours, mode.lower()), processed.all_composition_scores(mode).scores.detach().numpy(), atol=1e-5)
    # ...and the shared model was left as it was.
    raw = C.circuit_weights(lab_model.bridge, fold_ln=False)
    np.testing.assert_array_equal(raw.W_Q.numpy(), lab_model.bridge.W_Q.detach().numpy())
    assert not np.allclose(raw.W_Q.numpy(), ours.W_Q.numpy())


@pytest.mark.parametrize("fold_ln", [False, True])
def test_spectra_and_self_top_equal_full_matrices(lab_model, fold_ln):
    """The vocabulary is 66 tokens, so the full vocab × vocab circuits can be built here as the check."""
    C = circuits_module()
    weights = C.circuit_weights(lab_model.bridge, fold_ln=fold_ln)
    ref = gpt2_weights(lab_model, fold_ln)
    ov_eig, qk_eig = C.ov_eigenvalues(weights), C.qk_eigenvalues(weights)
    sample = [0, 3, 5, 17, 40, 65]
    for layer in range(lab_model.n_layers):
        for head in range(lab_model.n_heads):
            ov = full_ov(ref, layer, head)
            lam = np.linalg.eigvals(ov)
            # 66 eigenvalues of which d_head = 32 are non-zero: the same trace and the same non-zero set
            assert np.isclose(C.copying_score(ov_eig[layer, head]), lam.sum().real / np.abs(lam).sum(), atol=1e-5)
            big = np.sort_complex(lam[np.abs(lam) > 1e-3 * np.abs(lam).max()])
            ours = ov_eig[layer, head]
            np.testing.assert_allclose(np.sort_complex(ours[np.abs(ours) > 1e-3 * np.abs(ours).max()]), big, rtol=1e-4, atol=1e-5)
            lam_qk = np.linalg.eigvals(full_qk(ref, layer, head))
            assert np.isclose(C.copying_score(qk_eig[layer, head]), lam_qk.sum().real / np.abs(lam_qk).sum(), atol=1e-5)
            # FactoredMatrix, as TransformerLens computes it, agrees on the copying score
            fm = weights.full_ov(layer, head)
            assert np.isclose(C.copying_score(fm.eigenvalues.numpy()), C.copying_score(ov_eig[layer, head]), atol=1e-4)
            # self-top: argmax of each row, in small chunks and blocks to exercise the bookkeeping
            is_top = ov.argmax(1) == np.arange(ov.shape[0])
            np.testing.assert_array_equal(C.ov_self_top(weights, layer, head, row_chunk=7, first_block=3, max_block=10), is_top)
            np.testing.assert_array_equal(C.ov_self_top(weights, layer, head, tokens=sample, row_chunk=4, first_block=2, max_block=9), is_top[sample])


def test_self_top_ties_go_to_the_lowest_index(lab_model):
    """Duplicate embedding rows make exact ties; argmax semantics say only the first of them is its own top."""
    C = circuits_module()
    w = C.circuit_weights(lab_model.bridge, fold_ln=False)
    W_E = w.W_E.clone()
    W_E[10] = W_E[9]
    W_U = w.W_U.clone()
    W_U[:, 10] = W_U[:, 9]
    tied = C.CircuitWeights(W_E=W_E, W_U=W_U, W_pos=w.W_pos, W_Q=w.W_Q, W_K=w.W_K, W_V=w.W_V, W_O=w.W_O, fold_ln=False, positional_embedding_type="standard")
    full = (W_E @ tied.v(1, 1) @ tied.o(1, 1) @ W_U).numpy()
    expected = full.argmax(1) == np.arange(full.shape[0])
    assert expected[9] and not expected[10]
    for chunk, block in ((66, 66), (5, 4), (10, 10), (3, 1)):
        np.testing.assert_array_equal(C.ov_self_top(tied, 1, 1, row_chunk=chunk, first_block=block, max_block=2 * block), expected)


@pytest.mark.parametrize("fold_ln", [False, True])
def test_composition_scores_equal_transformer_lens_and_a_direct_computation(lab_model, fold_ln):
    C = circuits_module()
    weights = C.circuit_weights(lab_model.bridge, fold_ln=fold_ln)
    ref = gpt2_weights(lab_model, fold_ln)
    n_layers, n_heads = lab_model.n_layers, lab_model.n_heads
    for mode in "qkv":
        ours = C.composition_scores(weights, mode)
        if not fold_ln:  # the shared model holds raw weights, which is what its own scores use
            theirs = lab_model.bridge.all_composition_scores(mode.upper()).scores.detach().numpy()
            np.testing.assert_allclose(ours, theirs, atol=1e-5)
        direct = np.zeros_like(ours)
        for l1 in range(n_layers):
            for h1 in range(n_heads):
                a = ref["heads"][l1][h1]
                M1 = a["v"] @ a["o"]
                for l2 in range(l1 + 1, n_layers):
                    for h2 in range(n_heads):
                        b = ref["heads"][l2][h2]
                        M2 = {"q": b["q"] @ b["k"].T, "k": b["k"] @ b["q"].T, "v": b["v"] @ b["o"]}[mode]
                        direct[l1, h1, l2, h2] = np.linalg.norm(M1 @ M2) / (np.linalg.norm(M1) * np.linalg.norm(M2))
        np.testing.assert_allclose(ours, direct, atol=1e-5)


def test_random_baseline_matches_its_definition():
    C = circuits_module()
    mean, std = C.random_composition_baseline(128, 32, samples=64, seed=0)
    again = C.random_composition_baseline(128, 32, samples=64, seed=0)
    assert (mean, std) == again
    rng = np.random.default_rng(1)  # an independent draw: the same distribution, a different generator
    draws = []
    for _ in range(64):
        M1 = rng.standard_normal((128, 32)) @ rng.standard_normal((32, 128))
        M2 = rng.standard_normal((128, 32)) @ rng.standard_normal((32, 128))
        draws.append(np.linalg.norm(M1 @ M2) / (np.linalg.norm(M1) * np.linalg.norm(M2)))
    assert abs(mean - np.mean(draws)) < 4 * (std + np.std(draws)) / np.sqrt(64) + 1e-3


# -- the lab model's known circuit -----------------------------------------------------------------


def test_induction_head_copies_and_k_composes_with_the_previous_token_head(lab_result):
    r = lab_result
    assert r.copying_score[L1H1] > 0.9 and np.argmax(r.copying_score) == L1H1[0] * r.n_heads + L1H1[1]
    assert r.ov_self_top_fraction[L1H1] > 0.8 and r.self_top_tokens == r.d_vocab == 66
    into_induction = r.composition_k[0, :, L1H1[0], L1H1[1]]  # every layer-0 head into L1H1
    assert int(np.argmax(into_induction)) == L0H2[1]
    assert into_induction[L0H2[1]] > r.baseline_mean + 20 * r.baseline_std
    assert into_induction[L0H2[1]] > 2 * r.baseline_mean
    # the chosen head's OV map on the typed tokens: the diagonal wins every row
    assert r.head_name == "L1H1" and r.token_strings == ["t1", "t2", "t3", "t15"]
    assert (np.argmax(r.ov, axis=1) == np.arange(4)).all()


def test_previous_token_head_shows_in_its_positional_term(lab_model):
    """L0H2 attends to q-1; its positional QK term alone already peaks there for every query."""
    from workbench_qk_ov.analysis import head_circuits

    C = circuits_module()
    pos = head_circuits(lab_model, C.circuit_weights(lab_model.bridge), *L0H2, [3], positional=32).positional_qk
    assert [int(np.argmax(pos[q, : q + 1])) for q in range(1, 32)] == list(range(0, 31))


# -- the plugin end to end -------------------------------------------------------------------------


def test_summary_json_has_the_issue_layout(lab_result):
    data = json.loads(json.dumps(summary_json(lab_result)))
    assert data["plugin"] == "qk-ov" and data["head"] == "L1H1"
    assert np.array(data["copying_score"]).shape == (2, 4) and np.array(data["ov_self_top_fraction"]).shape == (2, 4)
    assert set(data["composition"]) == {"q", "k", "v"}
    assert np.array(data["composition"]["k"]).shape == (2, 4, 2, 4)
    assert np.array(data["qk"]).shape == (4, 4) and np.array(data["ov"]).shape == (4, 4)
    assert data["tokens"] == ["t1", "t2", "t3", "t15"] and data["token_ids"] == [3, 4, 5, 17]
    assert data["composition_baseline"]["mean"] > 0 and data["qk_approximate"] is False


def test_report_and_hdf5_round_trip(tmp_path, lab_result):
    section = lab_result.report()
    titles = [f.title for f in section.figures]
    assert any(t.startswith("QK circuit of L1H1") for t in titles) and any(t.startswith("OV circuit of L1H1") for t in titles)
    assert sum("composition" in t for t in titles) == 3 and all(f.svg.startswith("<svg") for f in section.figures)
    assert "L0H2" in section.figures[-2].svg  # composition matrices carry head labels
    assert section.tables[0].rows[0][0] == "L1H1"
    path = tmp_path / "qkov.h5"
    save_result(path, lab_result, title="QK/OV")
    [(info, loaded)] = load_results(path, discover_plugins().result_class)
    assert info.kind == "qk-ov/circuits" and loaded.meta.model_spec == "lab:induction"
    for name in ("qk", "ov", "copying_score", "ov_self_top_fraction", "composition_q", "composition_k", "composition_v", "ov_eig_real", "ov_eig_imag", "ov_top_ids"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(lab_result, name))
    assert loaded.positional_qk is None
    assert loaded.summary() == lab_result.summary()


def test_token_sets_and_errors(plugin, lab_model):
    def run(prompts=(), **texts):
        return run_to_completion(run_analysis(plugin, AnalysisContext(lab_model, list(prompts)), texts=texts))

    prompt = run(["t5 t6 t5 t7"], head="0.2", self_top_tokens="10")
    assert prompt.token_set == "prompt" and prompt.token_strings == ["<bos>", "t5", "t6", "t7"]
    assert prompt.self_top_tokens == 10 and prompt.positional_qk is None
    top = run(head="L0H2", top_k="5", positional="8")
    norms = lab_model.bridge.W_E.detach().norm(dim=-1)
    norms[[0, 1]] = -1  # <bos> and <unk>: special tokens are left out of the top-norm set
    assert top.token_set == "top-norm" and top.token_ids == torch.topk(norms, 5).indices.tolist()
    assert top.positional_qk.shape == (8, 8) and top.head_name == "L0H2"
    auto = run()  # no head: the most copying one
    assert auto.head_name == "L1H1"
    with pytest.raises(InputError, match="2 tokens"):
        run(tokens="t1,t2 t3")
    with pytest.raises(InputError, match="does not exist"):
        run(head="2.0", tokens="t1")
    with pytest.raises(InputError, match="LAYER.HEAD"):
        run(head="one", tokens="t1")
    with pytest.raises(InputError, match="needs a prompt"):
        run(token_set="prompt")


@pytest.mark.slow
def test_cli_run_writes_the_json(tmp_path):
    out = tmp_path / "qkov.json"
    done = run_cli("run", "qk-ov", "--model", "lab:induction", "--param", "head=1.1", "--param", "tokens=t1,t2,t3", "--json", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert data["head"] == "L1H1" and data["tokens"] == ["t1", "t2", "t3"]
    assert np.array(data["composition"]["q"]).shape == (2, 4, 2, 4)
    bad = run_cli("run", "qk-ov", "--model", "lab:induction", "--param", "head=x")
    assert bad.returncode == 2 and "LAYER.HEAD" in bad.stderr and "Traceback" not in bad.stderr


# -- SmolLM2: grouped-query attention and RoPE -----------------------------------------------------


@pytest.mark.smollm2
def test_gqa_head_mapping_against_the_hf_llama_weights(smollm2, plugin):
    """SmolLM2: 9 query heads share 3 key/value heads. Query head 7 reads KV head 7 // 3 = 2
    (repeat_interleave), not 7 % 3 = 1 (tiling): checked against q_proj/k_proj/v_proj/o_proj."""
    from workbench_qk_ov.analysis import head_circuits, typed_token_ids

    C = circuits_module()
    layer, head = 3, 7
    weights = C.circuit_weights(smollm2.bridge, fold_ln=True)
    assert weights.n_heads == 9 and weights.n_kv_heads == 3 and weights.kv_head(head) == 2
    ids = typed_token_ids(smollm2, " Paris, London, the, Paris,ing")
    got = head_circuits(smollm2, weights, layer, head, ids)

    hf = smollm2.bridge.original_model
    attn = hf.model.layers[layer].self_attn
    d_head = 64
    kv = head // 3
    gamma = _np(hf.model.layers[layer].input_layernorm.weight)  # RMSNorm: a scale, no centering
    q = gamma[:, None] * _np(attn.q_proj.weight)[head * d_head : (head + 1) * d_head].T  # nn.Linear is [out, in]
    k = gamma[:, None] * _np(attn.k_proj.weight)[kv * d_head : (kv + 1) * d_head].T
    v = gamma[:, None] * _np(attn.v_proj.weight)[kv * d_head : (kv + 1) * d_head].T
    o = _np(attn.o_proj.weight)[:, head * d_head : (head + 1) * d_head].T
    E = _np(hf.model.embed_tokens.weight)
    U = _np(hf.model.norm.weight)[:, None] * _np(hf.lm_head.weight).T
    rows = E[ids]
    np.testing.assert_allclose(got.qk, (rows @ q) @ (rows @ k).T, rtol=1e-3, atol=1e-3)
    ov_rows = rows @ v @ o
    expected_ov = ov_rows @ U[:, ids] - (ov_rows @ U.mean(1))[:, None]  # W_U centred over the vocabulary
    np.testing.assert_allclose(got.ov, expected_ov, rtol=1e-3, atol=1e-3)
    # The wrong (tiled) mapping would give a different QK map.
    wrong = gamma[:, None] * _np(attn.k_proj.weight)[(head % 3) * d_head : (head % 3 + 1) * d_head].T
    assert not np.allclose(got.qk, (rows @ q) @ (rows @ wrong).T, rtol=1e-2, atol=1e-2)
    # RoPE: no positional term, said plainly and before the slow tables
    with pytest.raises(InputError, match="rotary"):
        run_to_completion(run_analysis(plugin, AnalysisContext(smollm2), texts={"positional": "8", "tokens": " Paris"}))
